//! Domain types shared by every stage: leads, lead sets and blocks of samples.
//!
//! Samples travel in microvolts as `f32` from the moment a source has decoded them; raw ADC
//! counts never leave the source that understands their scaling.

use std::fmt;
use std::str::FromStr;

/// One ECG lead, in the standard order I, II, III, aVR, aVL, aVF, V1..V6 (PTB-XL order).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String")]
pub enum Lead {
    /// Limb lead I (LA - RA).
    I,
    /// Limb lead II (LL - RA).
    II,
    /// Limb lead III (LL - LA).
    III,
    /// Augmented lead aVR.
    #[serde(rename = "aVR")]
    AVR,
    /// Augmented lead aVL.
    #[serde(rename = "aVL")]
    AVL,
    /// Augmented lead aVF.
    #[serde(rename = "aVF")]
    AVF,
    /// Precordial lead V1.
    V1,
    /// Precordial lead V2.
    V2,
    /// Precordial lead V3.
    V3,
    /// Precordial lead V4.
    V4,
    /// Precordial lead V5.
    V5,
    /// Precordial lead V6.
    V6,
}

impl Lead {
    /// All twelve leads in the standard order.
    pub const STANDARD_12: [Lead; 12] = [
        Lead::I,
        Lead::II,
        Lead::III,
        Lead::AVR,
        Lead::AVL,
        Lead::AVF,
        Lead::V1,
        Lead::V2,
        Lead::V3,
        Lead::V4,
        Lead::V5,
        Lead::V6,
    ];

    /// The conventional name ("I", "aVR", "V1", ...).
    pub fn name(self) -> &'static str {
        match self {
            Lead::I => "I",
            Lead::II => "II",
            Lead::III => "III",
            Lead::AVR => "aVR",
            Lead::AVL => "aVL",
            Lead::AVF => "aVF",
            Lead::V1 => "V1",
            Lead::V2 => "V2",
            Lead::V3 => "V3",
            Lead::V4 => "V4",
            Lead::V5 => "V5",
            Lead::V6 => "V6",
        }
    }

    /// Position of this lead in [`Lead::STANDARD_12`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Lead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A lead name that none of the spellings [`LeadName::parse`] knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lead `{0}` (known: {known})", known = LeadName::KNOWN)]
pub struct UnknownLead(pub String);

/// How a signal name relates to the standard lead it is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadKind {
    /// The standard lead itself, in any spelling (`II`, `ii`, `ECG lead II`, `Lead_II`).
    Standard,
    /// A modified limb lead (`MLI`, `MLII`, `MLIII`): the limb electrodes moved to the torso,
    /// as on Holter and monitor recordings (the MIT-BIH Arrhythmia Database). Close to the
    /// standard lead and read as it; the frontal axis shifts slightly.
    ModifiedLimb,
    /// A chest-lead approximation: a bipolar monitoring lead (`MCL1`, `MCL6`: the positive
    /// electrode at V1 or V6, the negative below the left clavicle) or a monitor's single chest
    /// lead named only `V`, whose electrode position was not recorded (read as V1, the position
    /// hospital monitoring standards recommend; Drew et al., Circulation 110:2721-2746, 2004).
    /// Its morphology can differ from the standard chest lead.
    ChestApproximation,
}

/// A signal name read as a standard lead, with how closely it matches
/// ([`LeadName::parse`]): the one mapping from the names in files and device descriptions to
/// [`Lead`], used by replay, the training data loaders and live devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeadName {
    /// The lead it is read as.
    pub lead: Lead,
    /// Whether it is that lead or an approximation of it.
    pub kind: LeadKind,
}

impl LeadName {
    /// The spellings [`LeadName::parse`] accepts, for error messages.
    pub const KNOWN: &'static str = "I, II, III, aVR, aVL, aVF, V1-V6 in any case, optionally \
        after `ECG`, `lead` or `ECG lead` (`ECG lead II`, `Lead_II`); modified limb leads MLI, \
        MLII, MLIII (`ML II`); chest approximations MCL1, MCL6 and an unnamed `V` (read as V1)";

    /// Reads a signal name as PhysioNet files and monitors spell it: the standard names in
    /// any case, optionally after an `ECG`, `lead` or `ECG lead` prefix (separated by spaces,
    /// `_`, `-` or `:`); `MLI`/`MLII`/`MLIII` (also `ML II`) as [`LeadKind::ModifiedLimb`];
    /// `MCL1`, `MCL6` and a bare `V` as [`LeadKind::ChestApproximation`]. Anything else (`vx`,
    /// `Resp`, `V7`) is an [`UnknownLead`] whose message lists the known spellings.
    pub fn parse(name: &str) -> Result<LeadName, UnknownLead> {
        let unknown = || UnknownLead(name.to_string());
        let separators = [' ', '_', '-', ':'];
        let mut bare = name.trim();
        for prefix in ["ecg", "lead"] {
            if let Some(head) = bare.get(..prefix.len())
                && head.eq_ignore_ascii_case(prefix)
                && bare.len() > prefix.len()
            {
                bare = bare[prefix.len()..].trim_start_matches(separators);
            }
        }
        let compact: String = bare
            .chars()
            .filter(|c| !separators.contains(c))
            .collect::<String>()
            .to_ascii_uppercase();
        let with = |lead, kind| Ok(LeadName { lead, kind });
        match compact.as_str() {
            "MLI" => return with(Lead::I, LeadKind::ModifiedLimb),
            "MLII" => return with(Lead::II, LeadKind::ModifiedLimb),
            "MLIII" => return with(Lead::III, LeadKind::ModifiedLimb),
            "MCL1" | "V" => return with(Lead::V1, LeadKind::ChestApproximation),
            "MCL6" => return with(Lead::V6, LeadKind::ChestApproximation),
            _ => {}
        }
        Lead::STANDARD_12
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(bare))
            .map(|lead| LeadName {
                lead,
                kind: LeadKind::Standard,
            })
            .ok_or_else(unknown)
    }

    /// True unless the name is the standard lead itself or a modified limb lead.
    pub fn is_approximation(&self) -> bool {
        self.kind == LeadKind::ChestApproximation
    }
}

impl FromStr for Lead {
    type Err = UnknownLead;
    /// Any spelling [`LeadName::parse`] accepts; call that to see whether the name was an
    /// approximation.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeadName::parse(s).map(|n| n.lead)
    }
}

impl TryFrom<String> for Lead {
    type Error = UnknownLead;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The leads a device delivers, in the order its channels arrive.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LeadSet(pub Vec<Lead>);

impl LeadSet {
    /// The standard 12-lead set.
    pub fn standard_12() -> Self {
        LeadSet(Lead::STANDARD_12.to_vec())
    }
    /// Number of channels.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when the set has no leads.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Channel index of `lead`, if the set has it.
    pub fn position(&self, lead: Lead) -> Option<usize> {
        self.0.iter().position(|&l| l == lead)
    }
}

/// A block of consecutive multi-lead samples from one device, as a source delivers it.
///
/// `samples_uv` is interleaved: frame `t` holds one sample per lead in `leads` order.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleBlock {
    /// Device sequence number of this block (gaps mean lost blocks).
    pub sequence: u64,
    /// Device timestamp of the first frame, in nanoseconds of the device clock.
    pub device_time_ns: u64,
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Leads, in channel order.
    pub leads: LeadSet,
    /// Interleaved samples in microvolts, `frames * leads.len()` long.
    pub samples_uv: Vec<f32>,
    /// Per-lead lead-off flags reported by the device, in channel order.
    pub lead_off: Vec<bool>,
}

impl SampleBlock {
    /// Number of frames (time points) in the block.
    pub fn frames(&self) -> usize {
        if self.leads.is_empty() {
            0
        } else {
            self.samples_uv.len() / self.leads.len()
        }
    }
}

/// A multi-lead ECG recording held in memory: `leads x samples` in microvolts at one rate.
///
/// This is what the synthesizer produces, what WFDB files load into, what a dsp window holds and
/// (after normalisation) what the ECG encoder sees as `[1, leads, samples]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Lead of each row of `samples_uv`.
    pub leads: LeadSet,
    /// Samples in microvolts, shape `(leads.len(), samples)`.
    pub samples_uv: ndarray::Array2<f32>,
}

impl Recording {
    /// Number of samples per lead.
    pub fn len(&self) -> usize {
        self.samples_uv.ncols()
    }
    /// True when the recording holds no samples.
    pub fn is_empty(&self) -> bool {
        self.samples_uv.ncols() == 0
    }
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.len() as f64 / self.sample_rate_hz
    }
    /// The samples of `lead`, if the recording has it.
    pub fn lead(&self, lead: Lead) -> Option<ndarray::ArrayView1<'_, f32>> {
        self.leads.position(lead).map(|i| self.samples_uv.row(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_names_round_trip_through_parsing() {
        for lead in Lead::STANDARD_12 {
            assert_eq!(lead.name().parse::<Lead>().unwrap(), lead);
            assert_eq!(Lead::STANDARD_12[lead.index()], lead);
        }
        assert_eq!("avf".parse::<Lead>().unwrap(), Lead::AVF);
        assert!("V7".parse::<Lead>().is_err());
    }

    #[test]
    fn lead_aliases_as_files_and_devices_spell_them() {
        use LeadKind::*;
        for (name, lead, kind) in [
            ("II", Lead::II, Standard),
            ("ii", Lead::II, Standard),
            ("aVR", Lead::AVR, Standard),
            ("AVL", Lead::AVL, Standard),
            ("avf", Lead::AVF, Standard),
            (" V6 ", Lead::V6, Standard),
            ("v1", Lead::V1, Standard),
            ("ECG I", Lead::I, Standard),
            ("ECG lead II", Lead::II, Standard),
            ("ecg lead ii", Lead::II, Standard),
            ("Lead_II", Lead::II, Standard),
            ("lead-aVF", Lead::AVF, Standard),
            ("ECG:V2", Lead::V2, Standard),
            ("MLII", Lead::II, ModifiedLimb),
            ("ML II", Lead::II, ModifiedLimb),
            ("mlii", Lead::II, ModifiedLimb),
            ("MLI", Lead::I, ModifiedLimb),
            ("MLIII", Lead::III, ModifiedLimb),
            ("MCL1", Lead::V1, ChestApproximation),
            ("mcl6", Lead::V6, ChestApproximation),
            ("V", Lead::V1, ChestApproximation),
            ("ECG V", Lead::V1, ChestApproximation),
        ] {
            let read = LeadName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((read.lead, read.kind), (lead, kind), "{name}");
            assert_eq!(
                read.is_approximation(),
                kind == ChestApproximation,
                "{name}"
            );
            assert_eq!(name.parse::<Lead>().unwrap(), lead, "{name}");
        }
        for name in [
            "MLIV", "vx", "X", "Resp", "ECG", "", "V7", "lead", "ABP", "MCL2", "VV",
        ] {
            let e = LeadName::parse(name).unwrap_err();
            assert_eq!(e.0, name);
            // The message lists the known names.
            let message = e.to_string();
            assert!(
                message.contains("aVR") && message.contains("MLII"),
                "{message}"
            );
        }
    }

    #[test]
    fn lead_lists_in_configurations_accept_the_aliases() {
        #[derive(serde::Deserialize)]
        struct Device {
            leads: Vec<Lead>,
        }
        let d: Device = toml::from_str(r#"leads = ["MLII", "aVF", "V5", "mcl1"]"#).unwrap();
        assert_eq!(d.leads, vec![Lead::II, Lead::AVF, Lead::V5, Lead::V1]);
        let e = toml::from_str::<Device>(r#"leads = ["Resp"]"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown lead `Resp`"), "{e}");
        // Serialised names stay the standard ones.
        assert_eq!(serde_json::to_string(&Lead::AVR).unwrap(), "\"aVR\"");
    }

    #[test]
    fn frames_counts_interleaved_samples() {
        let block = SampleBlock {
            sequence: 0,
            device_time_ns: 0,
            sample_rate_hz: 500.0,
            leads: LeadSet(vec![Lead::I, Lead::II]),
            samples_uv: vec![0.0; 10],
            lead_off: vec![false; 2],
        };
        assert_eq!(block.frames(), 5);
    }
}
