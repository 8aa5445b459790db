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

/// A lead name that is not one of the twelve standard leads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lead `{0}` (expected one of I, II, III, aVR, aVL, aVF, V1..V6)")]
pub struct UnknownLead(pub String);

impl FromStr for Lead {
    type Err = UnknownLead;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lead::STANDARD_12
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLead(s.to_string()))
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
