//! Ground-truth statements and report text in two styles: MIMIC-IV-ECG machine statements and
//! PTB-XL report phrasing, so a model trained on one style can be tested on the other.
//!
//! Statements are ordered rhythm, conduction/axis, hypertrophy/voltage, ischaemia/infarct,
//! intervals, then the overall verdict ("Normal ECG", "Borderline ECG", "Abnormal ECG").

use super::condition::{Condition, ConditionSet};

/// Report section of a statement (statements are ordered by section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Rhythm and ectopy.
    Rhythm,
    /// AV and intraventricular conduction, axis.
    Conduction,
    /// Hypertrophy and voltage.
    Hypertrophy,
    /// ST-T changes and infarction.
    Ischemia,
    /// Intervals.
    Intervals,
    /// Overall verdict.
    Overall,
}

/// One diagnostic statement with its code and both phrasings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// Statement code (PTB-XL SCP code where one exists).
    pub code: &'static str,
    /// Report section.
    pub section: Section,
    /// MIMIC-IV-ECG machine-statement phrasing.
    pub mimic: String,
    /// PTB-XL report phrasing.
    pub ptbxl: String,
}

impl Statement {
    fn new(code: &'static str, section: Section, mimic: &str, ptbxl: &str) -> Self {
        Statement {
            code,
            section,
            mimic: mimic.to_string(),
            ptbxl: ptbxl.to_string(),
        }
    }
}

/// Details of the rhythm that change the wording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RhythmDetail {
    /// Ventricular rate, bpm.
    pub ventricular_rate_bpm: f32,
    /// Flutter conduction ratio when fixed (2 for 2:1), none when variable.
    pub flutter_ratio: Option<u8>,
    /// LVH with repolarisation abnormality.
    pub lvh_strain: bool,
}

/// The overall verdict of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Normal ECG.
    Normal,
    /// Borderline ECG (minor findings only).
    Borderline,
    /// Abnormal ECG.
    Abnormal,
}

/// Findings that alone make an ECG borderline rather than abnormal.
fn is_minor(c: Condition) -> bool {
    use Condition::*;
    matches!(
        c,
        NormalSinus
            | SinusBradycardia
            | SinusTachycardia
            | SinusArrhythmia
            | PrematureAtrial
            | FirstDegreeAvBlock
            | LeftAxisDeviation
            | LowQrsVoltage
    )
}

/// The verdict for a set of conditions.
pub fn verdict(conditions: &ConditionSet) -> Verdict {
    if conditions.iter().all(|c| c == Condition::NormalSinus) {
        Verdict::Normal
    } else if conditions.iter().all(is_minor) {
        Verdict::Borderline
    } else {
        Verdict::Abnormal
    }
}

/// The statements of a record, in report order, ending with the verdict.
pub fn statements(conditions: &ConditionSet, detail: RhythmDetail) -> Vec<Statement> {
    use Condition::*;
    use Section::*;
    let mut out: Vec<Statement> = Vec::new();
    for c in conditions.iter() {
        let s = match c {
            NormalSinus => Statement::new("SR", Rhythm, "Sinus rhythm", "sinus rhythm"),
            SinusBradycardia => {
                Statement::new("SBRAD", Rhythm, "Sinus bradycardia", "sinus bradycardia")
            }
            SinusTachycardia => {
                Statement::new("STACH", Rhythm, "Sinus tachycardia", "sinus tachycardia")
            }
            SinusArrhythmia => {
                Statement::new("SARRH", Rhythm, "Sinus arrhythmia", "sinus arrhythmia")
            }
            AtrialFibrillation => {
                let rate = detail.ventricular_rate_bpm;
                let mimic = if rate > 100.0 {
                    "Atrial fibrillation with rapid ventricular response"
                } else if rate < 60.0 {
                    "Atrial fibrillation with slow ventricular response"
                } else {
                    "Atrial fibrillation"
                };
                Statement::new("AFIB", Rhythm, mimic, "atrial fibrillation")
            }
            AtrialFlutter => match detail.flutter_ratio {
                Some(k) => Statement {
                    code: "AFLT",
                    section: Rhythm,
                    mimic: format!("Atrial flutter with {k}:1 A-V conduction"),
                    ptbxl: format!("atrial flutter, {k}:1 conduction"),
                },
                None => Statement::new(
                    "AFLT",
                    Rhythm,
                    "Atrial flutter with variable A-V block",
                    "atrial flutter with irregular av conduction",
                ),
            },
            VentricularPaced => {
                Statement::new("PACE", Rhythm, "Ventricular paced rhythm", "pacemaker ecg")
            }
            PrematureVentricular => Statement::new(
                "PVC",
                Rhythm,
                "Premature ventricular complexes",
                "ventricular extrasystole(s)",
            ),
            PrematureAtrial => Statement::new(
                "PAC",
                Rhythm,
                "Premature atrial complexes",
                "supraventricular extrasystole(s)",
            ),
            FirstDegreeAvBlock => {
                Statement::new("1AVB", Conduction, "1st degree A-V block", "av block i")
            }
            LeftBundleBranchBlock => Statement::new(
                "CLBBB",
                Conduction,
                "Left bundle branch block",
                "complete left bundle branch block",
            ),
            RightBundleBranchBlock => Statement::new(
                "CRBBB",
                Conduction,
                "Right bundle branch block",
                "complete right bundle branch block",
            ),
            LeftAnteriorFascicularBlock => Statement::new(
                "LAFB",
                Conduction,
                "Left anterior fascicular block",
                "left anterior hemiblock",
            ),
            LeftAxisDeviation => {
                Statement::new("LAD", Conduction, "Left axis deviation", "left type")
            }
            RightAxisDeviation => {
                Statement::new("RAD", Conduction, "Right axis deviation", "right type")
            }
            LeftVentricularHypertrophy if detail.lvh_strain => Statement::new(
                "LVH",
                Hypertrophy,
                "Left ventricular hypertrophy with repolarization abnormality",
                "left ventricular hypertrophy with secondary repolarisation disturbance",
            ),
            LeftVentricularHypertrophy => Statement::new(
                "LVH",
                Hypertrophy,
                "Left ventricular hypertrophy",
                "voltage criteria for left ventricular hypertrophy",
            ),
            LowQrsVoltage => Statement::new(
                "LVOLT",
                Hypertrophy,
                "Low QRS voltages",
                "low qrs voltage in limb and chest leads",
            ),
            StElevationInferior => Statement::new(
                "INJIN",
                Ischemia,
                "ST elevation, consider inferior injury or acute infarct",
                "st elevation in ii, iii, avf, acute inferior injury possible",
            ),
            StElevationAnterior => Statement::new(
                "INJAS",
                Ischemia,
                "ST elevation, consider anterior injury or acute infarct",
                "st elevation in v1-v4, acute anterior injury possible",
            ),
            StElevationLateral => Statement::new(
                "INJLA",
                Ischemia,
                "ST elevation, consider lateral injury or acute infarct",
                "st elevation in i, avl, v5, v6, acute lateral injury possible",
            ),
            StDepression => Statement::new(
                "STD_",
                Ischemia,
                "Diffuse ST depression, consider subendocardial ischemia",
                "st depression, possibly ischaemic",
            ),
            TWaveInversion => Statement::new(
                "INVT",
                Ischemia,
                "Anterolateral T wave inversion, consider ischemia",
                "negative t waves anterolateral",
            ),
            OldInferiorInfarct => Statement::new(
                "IMI",
                Ischemia,
                "Inferior infarct - age undetermined",
                "inferior myocardial infarction, age undetermined",
            ),
            OldAnteriorInfarct => Statement::new(
                "ASMI",
                Ischemia,
                "Anteroseptal infarct - age undetermined",
                "anteroseptal myocardial infarction, age undetermined",
            ),
            ProlongedQt => Statement::new(
                "LNGQT",
                Intervals,
                "Prolonged QT interval",
                "qt prolongation",
            ),
        };
        out.push(s);
    }
    out.sort_by_key(|s| s.section);
    out.push(match verdict(conditions) {
        Verdict::Normal => Statement::new("NORM", Overall, "Normal ECG", "normal ecg"),
        Verdict::Borderline => Statement::new("BORD", Overall, "Borderline ECG", "borderline ecg"),
        Verdict::Abnormal => Statement::new("ABN", Overall, "Abnormal ECG", "pathological ecg"),
    });
    out
}

/// The MIMIC-IV-ECG-style report: the machine statements joined with ". ".
pub fn mimic_report(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| s.mimic.as_str())
        .collect::<Vec<_>>()
        .join(". ")
}

/// The PTB-XL-style report: lower-case phrases joined with ". ", ending with a period.
pub fn ptbxl_report(statements: &[Statement]) -> String {
    let body = statements
        .iter()
        .map(|s| s.ptbxl.as_str())
        .collect::<Vec<_>>()
        .join(". ");
    format!("{body}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail() -> RhythmDetail {
        RhythmDetail {
            ventricular_rate_bpm: 120.0,
            flutter_ratio: None,
            lvh_strain: false,
        }
    }

    #[test]
    fn normal_sinus_alone_reads_normal_ecg() {
        let s = statements(&ConditionSet::normal(), detail());
        assert_eq!(mimic_report(&s), "Sinus rhythm. Normal ECG");
        assert_eq!(ptbxl_report(&s), "sinus rhythm. normal ecg.");
    }

    #[test]
    fn statements_follow_section_order_and_end_with_the_verdict() {
        let set = ConditionSet::parse_list("long-qt,lbbb,af,old-mi-inferior").unwrap();
        let s = statements(&set, detail());
        assert_eq!(
            mimic_report(&s),
            "Atrial fibrillation with rapid ventricular response. Left bundle branch block. \
             Inferior infarct - age undetermined. Prolonged QT interval. Abnormal ECG"
        );
        assert!(s.windows(2).all(|w| w[0].section <= w[1].section));
    }

    #[test]
    fn minor_findings_are_borderline() {
        let set = ConditionSet::parse_list("brady,avb1").unwrap();
        assert_eq!(verdict(&set), Verdict::Borderline);
        let set = ConditionSet::parse_list("rbbb").unwrap();
        assert_eq!(verdict(&set), Verdict::Abnormal);
    }
}
