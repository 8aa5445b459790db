//! The conditions the synthesizer can produce, how they combine, and how a random mix is drawn
//! for a data set.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::SynthError;

/// One cardiac condition (a rhythm, a conduction defect, a morphology change...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// Normal sinus rhythm, 60-100 bpm.
    NormalSinus,
    /// Sinus bradycardia, < 60 bpm.
    SinusBradycardia,
    /// Sinus tachycardia, > 100 bpm.
    SinusTachycardia,
    /// Sinus arrhythmia: marked respiratory variation of the sinus rate.
    SinusArrhythmia,
    /// Atrial fibrillation: irregular RR, no P waves, fibrillatory baseline.
    AtrialFibrillation,
    /// Atrial flutter: sawtooth flutter waves with fixed or variable AV block.
    AtrialFlutter,
    /// Ventricular pacing (VVI): pacing spikes followed by wide complexes.
    VentricularPaced,
    /// Premature ventricular complexes.
    PrematureVentricular,
    /// Premature atrial complexes.
    PrematureAtrial,
    /// First-degree AV block (PR > 200 ms).
    FirstDegreeAvBlock,
    /// Left bundle branch block.
    LeftBundleBranchBlock,
    /// Right bundle branch block.
    RightBundleBranchBlock,
    /// Left anterior fascicular block (QRS axis -45 to -90).
    LeftAnteriorFascicularBlock,
    /// Left axis deviation (QRS axis -30 to -45 without fascicular block).
    LeftAxisDeviation,
    /// Right axis deviation (QRS axis > 90).
    RightAxisDeviation,
    /// Left ventricular hypertrophy by voltage, optionally with strain.
    LeftVentricularHypertrophy,
    /// ST elevation in the inferior leads (II, III, aVF).
    StElevationInferior,
    /// ST elevation in the anterior leads (V1-V4).
    StElevationAnterior,
    /// ST elevation in the lateral leads (I, aVL, V5, V6).
    StElevationLateral,
    /// Diffuse ST depression (subendocardial ischaemia).
    StDepression,
    /// T-wave inversion in the lateral and anterior leads.
    TWaveInversion,
    /// Old inferior infarct: pathological Q waves in II, III, aVF.
    OldInferiorInfarct,
    /// Old anterior infarct: QS complexes in V1-V3.
    OldAnteriorInfarct,
    /// Prolonged QT interval (QTc > 470 ms).
    ProlongedQt,
    /// Low QRS voltage (limb leads < 0.5 mV, precordial < 1 mV).
    LowQrsVoltage,
}

/// The family a condition belongs to: a record has exactly one rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    /// The underlying rhythm.
    Rhythm,
    /// Everything else.
    Finding,
}

impl Condition {
    /// Every condition, in report order.
    pub const ALL: [Condition; 25] = [
        Condition::NormalSinus,
        Condition::SinusBradycardia,
        Condition::SinusTachycardia,
        Condition::SinusArrhythmia,
        Condition::AtrialFibrillation,
        Condition::AtrialFlutter,
        Condition::VentricularPaced,
        Condition::PrematureVentricular,
        Condition::PrematureAtrial,
        Condition::FirstDegreeAvBlock,
        Condition::LeftBundleBranchBlock,
        Condition::RightBundleBranchBlock,
        Condition::LeftAnteriorFascicularBlock,
        Condition::LeftAxisDeviation,
        Condition::RightAxisDeviation,
        Condition::LeftVentricularHypertrophy,
        Condition::StElevationInferior,
        Condition::StElevationAnterior,
        Condition::StElevationLateral,
        Condition::StDepression,
        Condition::TWaveInversion,
        Condition::OldInferiorInfarct,
        Condition::OldAnteriorInfarct,
        Condition::ProlongedQt,
        Condition::LowQrsVoltage,
    ];

    /// The command-line name (`af`, `lbbb`, `ste-inferior`, ...).
    pub fn slug(self) -> &'static str {
        use Condition::*;
        match self {
            NormalSinus => "normal",
            SinusBradycardia => "brady",
            SinusTachycardia => "tachy",
            SinusArrhythmia => "sinus-arrhythmia",
            AtrialFibrillation => "af",
            AtrialFlutter => "flutter",
            VentricularPaced => "paced",
            PrematureVentricular => "pvc",
            PrematureAtrial => "pac",
            FirstDegreeAvBlock => "avb1",
            LeftBundleBranchBlock => "lbbb",
            RightBundleBranchBlock => "rbbb",
            LeftAnteriorFascicularBlock => "lafb",
            LeftAxisDeviation => "lad",
            RightAxisDeviation => "rad",
            LeftVentricularHypertrophy => "lvh",
            StElevationInferior => "ste-inferior",
            StElevationAnterior => "ste-anterior",
            StElevationLateral => "ste-lateral",
            StDepression => "st-depression",
            TWaveInversion => "t-inversion",
            OldInferiorInfarct => "old-mi-inferior",
            OldAnteriorInfarct => "old-mi-anterior",
            ProlongedQt => "long-qt",
            LowQrsVoltage => "low-voltage",
        }
    }

    /// Whether this condition is a rhythm.
    pub fn kind(self) -> ConditionKind {
        use Condition::*;
        match self {
            NormalSinus | SinusBradycardia | SinusTachycardia | SinusArrhythmia
            | AtrialFibrillation | AtrialFlutter | VentricularPaced => ConditionKind::Rhythm,
            _ => ConditionKind::Finding,
        }
    }

    /// True for the sinus rhythms (which have P waves and a PR interval).
    pub fn is_sinus(self) -> bool {
        use Condition::*;
        matches!(
            self,
            NormalSinus | SinusBradycardia | SinusTachycardia | SinusArrhythmia
        )
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

impl FromStr for Condition {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let alias = match s.as_str() {
            "nsr" | "sinus" | "sr" => Some(Condition::NormalSinus),
            "afib" => Some(Condition::AtrialFibrillation),
            "aflutter" | "afl" => Some(Condition::AtrialFlutter),
            "stemi" => Some(Condition::StElevationInferior),
            _ => None,
        };
        alias
            .or_else(|| Condition::ALL.into_iter().find(|c| c.slug() == s))
            .ok_or(SynthError::UnknownCondition(s))
    }
}

/// Pairs of conditions that cannot be synthesized together (or that one implies the other's
/// opposite), checked by [`ConditionSet::new`].
const EXCLUSIVE: &[(Condition, Condition)] = {
    use Condition::*;
    &[
        (LeftBundleBranchBlock, RightBundleBranchBlock),
        (LeftBundleBranchBlock, LeftAnteriorFascicularBlock),
        (LeftBundleBranchBlock, LeftVentricularHypertrophy),
        (LeftAnteriorFascicularBlock, LeftAxisDeviation),
        (LeftAnteriorFascicularBlock, RightAxisDeviation),
        (LeftAxisDeviation, RightAxisDeviation),
        (LeftVentricularHypertrophy, LowQrsVoltage),
        (StElevationInferior, StDepression),
        (StElevationAnterior, StDepression),
        (StElevationLateral, StDepression),
        (StElevationInferior, StElevationAnterior),
        (StElevationInferior, StElevationLateral),
        (StElevationAnterior, StElevationLateral),
    ]
};

/// Findings that need a particular rhythm family.
fn rhythm_allows(rhythm: Condition, finding: Condition) -> bool {
    use Condition::*;
    match finding {
        PrematureAtrial | FirstDegreeAvBlock => rhythm.is_sinus(),
        PrematureVentricular => rhythm != VentricularPaced,
        // A paced complex has its own morphology: bundle branch, axis, hypertrophy and ST
        // findings are not read on it.
        _ if rhythm == VentricularPaced => matches!(finding, ProlongedQt | LowQrsVoltage),
        _ => true,
    }
}

/// A validated combination of conditions: exactly one rhythm plus compatible findings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConditionSet(BTreeSet<Condition>);

impl ConditionSet {
    /// Validates a combination; without a rhythm, normal sinus rhythm is assumed.
    pub fn new(conditions: impl IntoIterator<Item = Condition>) -> Result<Self, SynthError> {
        let mut set: BTreeSet<Condition> = conditions.into_iter().collect();
        let rhythms: Vec<Condition> = set
            .iter()
            .copied()
            .filter(|c| c.kind() == ConditionKind::Rhythm)
            .collect();
        let rhythm = match rhythms.as_slice() {
            [] => {
                set.insert(Condition::NormalSinus);
                Condition::NormalSinus
            }
            [one] => *one,
            [a, b, ..] => return Err(SynthError::Incompatible(*a, *b)),
        };
        for &(a, b) in EXCLUSIVE {
            if set.contains(&a) && set.contains(&b) {
                return Err(SynthError::Incompatible(a, b));
            }
        }
        if let Some(&f) = set
            .iter()
            .find(|&&f| f.kind() == ConditionKind::Finding && !rhythm_allows(rhythm, f))
        {
            return Err(SynthError::Incompatible(rhythm, f));
        }
        Ok(ConditionSet(set))
    }

    /// Normal sinus rhythm and nothing else.
    pub fn normal() -> Self {
        ConditionSet([Condition::NormalSinus].into_iter().collect())
    }

    /// Parses a comma-separated list of condition names (`af,lbbb`).
    pub fn parse_list(s: &str) -> Result<Self, SynthError> {
        let list = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Condition>, _>>()?;
        ConditionSet::new(list)
    }

    /// The rhythm of this set.
    pub fn rhythm(&self) -> Condition {
        self.0
            .iter()
            .copied()
            .find(|c| c.kind() == ConditionKind::Rhythm)
            .unwrap_or(Condition::NormalSinus)
    }

    /// Whether `c` is in the set.
    pub fn has(&self, c: Condition) -> bool {
        self.0.contains(&c)
    }

    /// The conditions, in report order.
    pub fn iter(&self) -> impl Iterator<Item = Condition> + '_ {
        self.0.iter().copied()
    }

    /// The set as a comma-separated list of slugs.
    pub fn slugs(&self) -> String {
        self.iter()
            .map(Condition::slug)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Draws a plausible mix for a training set: about a third normal records, the rest one
    /// rhythm with up to three compatible findings.
    pub fn random(rng: &mut impl Rng) -> Self {
        use Condition::*;
        if rng.random_bool(0.3) {
            return ConditionSet::normal();
        }
        const RHYTHMS: [(Condition, u32); 7] = [
            (NormalSinus, 50),
            (SinusBradycardia, 10),
            (SinusTachycardia, 10),
            (SinusArrhythmia, 5),
            (AtrialFibrillation, 14),
            (AtrialFlutter, 5),
            (VentricularPaced, 4),
        ];
        let rhythm = pick_weighted(rng, &RHYTHMS);
        let findings: Vec<Condition> = Condition::ALL
            .into_iter()
            .filter(|c| c.kind() == ConditionKind::Finding)
            .collect();
        let mut set = vec![rhythm];
        let wanted = rng.random_range(usize::from(rhythm == NormalSinus)..=3);
        for _ in 0..wanted * 4 {
            if set.len() > wanted {
                break;
            }
            let Some(&candidate) = findings.get(rng.random_range(0..findings.len())) else {
                break;
            };
            let mut trial = set.clone();
            trial.push(candidate);
            if ConditionSet::new(trial.iter().copied()).is_ok() {
                set = trial;
            }
        }
        ConditionSet::new(set).unwrap_or_else(|_| ConditionSet::normal())
    }
}

fn pick_weighted(rng: &mut impl Rng, items: &[(Condition, u32)]) -> Condition {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total.max(1));
    for &(c, w) in items {
        if r < w {
            return c;
        }
        r -= w;
    }
    Condition::NormalSinus
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn every_slug_parses_back_to_its_condition() {
        for c in Condition::ALL {
            assert_eq!(c.slug().parse::<Condition>().ok(), Some(c));
        }
    }

    #[test]
    fn missing_rhythm_defaults_to_normal_sinus() {
        let set = ConditionSet::parse_list("lbbb").unwrap();
        assert_eq!(set.rhythm(), Condition::NormalSinus);
    }

    #[test]
    fn two_rhythms_or_exclusive_findings_are_rejected() {
        assert!(ConditionSet::parse_list("af,flutter").is_err());
        assert!(ConditionSet::parse_list("lbbb,rbbb").is_err());
        assert!(ConditionSet::parse_list("af,avb1").is_err());
        assert!(ConditionSet::parse_list("bogus").is_err());
    }

    #[test]
    fn random_sets_are_always_valid_and_varied() {
        let mut rng = StdRng::seed_from_u64(7);
        let sets: Vec<ConditionSet> = (0..300).map(|_| ConditionSet::random(&mut rng)).collect();
        for s in &sets {
            assert!(ConditionSet::new(s.iter()).is_ok());
        }
        let distinct: BTreeSet<String> = sets.iter().map(ConditionSet::slugs).collect();
        assert!(
            distinct.len() > 40,
            "only {} distinct mixes",
            distinct.len()
        );
    }
}
