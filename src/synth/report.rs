//! Ground-truth statements and report text in two styles: MIMIC-IV-ECG machine statements and
//! PTB-XL report phrasing, so a model trained on one style can be tested on the other.
//!
//! Statements are ordered rhythm, conduction/axis, hypertrophy/voltage, ischaemia/infarct,
//! intervals, then the overall verdict ("Normal ECG", "Borderline ECG", "Abnormal ECG").
//!
//! [`parse_report`] reads either style back into statement codes, matching sentences against
//! the phrasings [`statements`] itself writes (one vocabulary, used both ways).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::condition::{Condition, ConditionSet};
use crate::ecg::Lead;

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

/// The leads a statement must be read from: every lead listed must be available (measured, or
/// derived from measured leads) before a report may make the statement. Rhythm, ectopy and
/// interval statements need one lead; the frontal axis needs I and aVF; conduction blocks,
/// voltage criteria and territorial ST/T or infarct statements need their leads; low voltage and
/// the verdict (`NORM`, `BORD`, `ABN`) need all twelve: nobody calls an ECG normal from one lead.
/// An unknown code needs all twelve.
pub fn leads_needed(code: &str) -> &'static [Lead] {
    use Lead::*;
    const ANY_ONE: &[Lead] = &[];
    const AXIS: &[Lead] = &[I, AVF];
    const INFERIOR: &[Lead] = &[II, III, AVF];
    const ANTERIOR: &[Lead] = &[V1, V2, V3, V4];
    const ANTEROSEPTAL: &[Lead] = &[V1, V2, V3];
    const LATERAL: &[Lead] = &[I, AVL, V5, V6];
    const BUNDLE: &[Lead] = &[I, V1, V6];
    const CHEST_VOLTAGE: &[Lead] = &[I, AVL, V1, V2, V5, V6];
    const DIFFUSE_ST: &[Lead] = &[I, II, V4, V5, V6];
    const ANTEROLATERAL_T: &[Lead] = &[I, AVL, V2, V3, V4, V5, V6];
    const ALL: &[Lead] = &Lead::STANDARD_12;
    match code {
        "SR" | "SBRAD" | "STACH" | "SARRH" | "AFIB" | "AFLT" | "PACE" | "PVC" | "PAC" | "1AVB"
        | "LNGQT" => ANY_ONE,
        "LAD" | "RAD" | "LAFB" => AXIS,
        "CLBBB" | "CRBBB" => BUNDLE,
        "LVH" => CHEST_VOLTAGE,
        "INJIN" | "IMI" => INFERIOR,
        "INJAS" => ANTERIOR,
        "ASMI" => ANTEROSEPTAL,
        "INJLA" => LATERAL,
        "STD_" => DIFFUSE_ST,
        "INVT" => ANTEROLATERAL_T,
        // Low voltage is "limb leads < 0.5 mV and chest leads < 1 mV": every lead.
        "LVOLT" => ALL,
        _ => ALL,
    }
}

/// Whether `code` may be stated when only the leads for which `available` is true are usable.
pub fn is_supported(code: &str, available: impl Fn(Lead) -> bool) -> bool {
    leads_needed(code).iter().all(|&lead| available(lead))
}

/// The statements a report may make from the `available` leads: those whose leads are all there,
/// and the verdict only when all twelve are (a reduced lead set gets no overall verdict).
pub fn supported_statements(
    statements: &[Statement],
    available: impl Fn(Lead) -> bool,
) -> Vec<Statement> {
    statements
        .iter()
        .filter(|s| is_supported(s.code, &available))
        .cloned()
        .collect()
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

/// A report read back into statement codes (see [`parse_report`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ParsedReport {
    /// Statement codes of the sentences recognised, in order of first appearance, without
    /// repeats.
    pub codes: Vec<&'static str>,
    /// Sentences (trimmed, as written) that match no statement and are not a rate.
    pub unknown: Vec<String>,
    /// The first ventricular (or unqualified) rate the text states, bpm ("rate 72",
    /// "ventricular rate of 72 bpm", "at 72 bpm"); atrial rates are not the heart rate.
    pub rate_bpm: Option<f32>,
}

/// Ventricular rates that give each atrial-fibrillation wording (slow, controlled, rapid).
const AF_RATE_VARIANTS_BPM: [f32; 3] = [50.0, 80.0, 130.0];
/// Fixed flutter conduction ratios phrased as "k:1" (variable conduction is phrased apart).
const FLUTTER_RATIOS: [u8; 3] = [2, 3, 4];
/// Stated rates outside this range are not read as heart rates, bpm.
const PLAUSIBLE_RATE_BPM: std::ops::RangeInclusive<f32> = 10.0..=350.0;

/// Every phrasing [`statements`] can write (both styles), keyed by its normalised words, with
/// its code (see [`phrasings`]).
fn phrase_table() -> &'static HashMap<String, &'static str> {
    static TABLE: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
        let mut table = HashMap::new();
        for (key, code) in phrasings() {
            table.entry(key).or_insert(code);
        }
        table
    });
    &TABLE
}

/// Every phrasing [`statements`] writes, as (normalised words joined by " ", code), repeats
/// included. Enumerates the generator itself — every condition alone (which also yields the
/// three verdicts), each atrial-fibrillation rate wording, each flutter ratio and variable
/// conduction, LVH with and without strain — so the parser cannot drift from it.
fn phrasings() -> Vec<(String, &'static str)> {
    let mut details = Vec::new();
    for ventricular_rate_bpm in AF_RATE_VARIANTS_BPM {
        for flutter_ratio in FLUTTER_RATIOS.map(Some).into_iter().chain([None]) {
            for lvh_strain in [false, true] {
                details.push(RhythmDetail {
                    ventricular_rate_bpm,
                    flutter_ratio,
                    lvh_strain,
                });
            }
        }
    }
    let mut out = Vec::new();
    for c in Condition::ALL {
        let Ok(set) = ConditionSet::new([c]) else {
            continue;
        };
        for &detail in &details {
            for s in statements(&set, detail) {
                for phrase in [&s.mimic, &s.ptbxl] {
                    out.push((sentence_words(phrase).0.join(" "), s.code));
                }
            }
        }
    }
    out
}

/// Reads report text back into statement codes: the text is split into sentences at "." (not a
/// decimal point) and line breaks, each sentence is lower-cased and reduced to its words (so
/// case, white space, punctuation and the " ." spacing of tokenised text do not matter), a
/// stated rate is taken out, and what is left must equal a phrasing [`statements`] writes, in
/// either style. Sentences that match nothing land in [`ParsedReport::unknown`]. Never panics.
pub fn parse_report(text: &str) -> ParsedReport {
    let table = phrase_table();
    let mut parsed = ParsedReport::default();
    for sentence in sentences(text) {
        let (words, rates) = sentence_words(sentence);
        if parsed.rate_bpm.is_none() {
            parsed.rate_bpm = rates.iter().find(|r| !r.atrial).map(|r| r.bpm);
        }
        if words.is_empty() {
            if rates.is_empty() {
                parsed.unknown.push(sentence.to_string());
            }
            continue;
        }
        match table.get(&words.join(" ")) {
            Some(code) if !parsed.codes.contains(code) => parsed.codes.push(code),
            Some(_) => {}
            None => parsed.unknown.push(sentence.to_string()),
        }
    }
    parsed
}

/// Every ventricular (or unqualified) rate a text states, in order: "rate 75", "rate of 75",
/// "heart rate 75 bpm", "75 bpm", "at 75 /min". Atrial rates ("atrial rate 300") are left out.
pub fn stated_rates(text: &str) -> Vec<f32> {
    sentences(text)
        .into_iter()
        .flat_map(|s| sentence_words(s).1)
        .filter(|r| !r.atrial)
        .map(|r| r.bpm)
        .collect()
}

/// The sentences of a text: split at "." unless it sits between two digits (a decimal point)
/// and at line breaks, trimmed, empty ones dropped.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let decimal_point = c == '.'
            && prev.is_some_and(|p: char| p.is_ascii_digit())
            && next.is_some_and(|n| n.is_ascii_digit());
        if (c == '.' && !decimal_point) || c == '\n' {
            out.push(text.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
        prev = Some(c);
    }
    out.push(text.get(start..).unwrap_or_default());
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A rate stated in a sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StatedRate {
    /// The rate, bpm.
    bpm: f32,
    /// Qualified as the atrial rate (not the heart rate).
    atrial: bool,
}

/// A sentence's lower-cased words (runs of letters, digits and decimal points) with the rate
/// phrases taken out, and the rates those phrases state.
fn sentence_words(sentence: &str) -> (Vec<String>, Vec<StatedRate>) {
    let lower = sentence.to_lowercase();
    let all: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    let word = |i: usize| all.get(i).copied().unwrap_or_default();
    let number = |i: usize| {
        word(i)
            .parse::<f32>()
            .ok()
            .filter(|v| PLAUSIBLE_RATE_BPM.contains(v))
    };
    let is_unit = |i: usize| matches!(word(i), "bpm" | "min");
    let mut words = Vec::new();
    let mut rates = Vec::new();
    let mut i = 0;
    while i < all.len() {
        // "[heart|ventricular|atrial] rate [of] N [bpm]"
        let qualified =
            matches!(word(i), "heart" | "ventricular" | "atrial") && word(i + 1) == "rate";
        let rate_at = if qualified { i + 1 } else { i };
        if word(rate_at) == "rate" {
            let n = if word(rate_at + 1) == "of" {
                rate_at + 2
            } else {
                rate_at + 1
            };
            if let Some(bpm) = number(n) {
                let atrial = qualified && word(i) == "atrial";
                rates.push(StatedRate { bpm, atrial });
                i = n + 1 + usize::from(is_unit(n + 1));
                continue;
            }
        }
        // "[at] N bpm"
        let n = if word(i) == "at" { i + 1 } else { i };
        if let Some(bpm) = number(n).filter(|_| is_unit(n + 1)) {
            rates.push(StatedRate { bpm, atrial: false });
            i = n + 2;
            continue;
        }
        words.push(word(i).to_string());
        i += 1;
    }
    (words, rates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

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
    fn a_reduced_lead_set_keeps_rhythm_but_not_territorial_or_verdict_statements() {
        let set = ConditionSet::parse_list("af,pvc,lbbb,ste-inferior,lad").unwrap();
        let all = statements(&set, detail());
        let codes = |leads: &[Lead]| -> Vec<&str> {
            supported_statements(&all, |l| leads.contains(&l))
                .iter()
                .map(|s| s.code)
                .collect()
        };
        assert_eq!(codes(&[Lead::II]), ["AFIB", "PVC"]);
        let monitor = [
            Lead::I,
            Lead::II,
            Lead::III,
            Lead::AVR,
            Lead::AVL,
            Lead::AVF,
        ];
        assert_eq!(codes(&monitor), ["AFIB", "PVC", "LAD", "INJIN"]);
        assert_eq!(
            codes(&Lead::STANDARD_12),
            all.iter().map(|s| s.code).collect::<Vec<_>>()
        );
        assert_eq!(all.last().map(|s| s.code), Some("ABN"));
    }

    #[test]
    fn every_statement_code_has_its_lead_requirement() {
        // A code the table does not know falls to "all twelve": check each code the
        // synthesizer writes is listed on purpose (only low voltage and the verdicts need all
        // twelve).
        for c in Condition::ALL {
            let set = ConditionSet::new([c]).unwrap_or_else(|_| ConditionSet::normal());
            for s in statements(&set, detail()) {
                let whole = matches!(s.code, "NORM" | "BORD" | "ABN" | "LVOLT");
                assert_eq!(leads_needed(s.code).len() == 12, whole, "{}", s.code);
            }
        }
    }

    #[test]
    fn minor_findings_are_borderline() {
        let set = ConditionSet::parse_list("brady,avb1").unwrap();
        assert_eq!(verdict(&set), Verdict::Borderline);
        let set = ConditionSet::parse_list("rbbb").unwrap();
        assert_eq!(verdict(&set), Verdict::Abnormal);
    }

    fn random_detail(rng: &mut StdRng) -> RhythmDetail {
        let ratios = [Some(2), Some(3), Some(4), None];
        RhythmDetail {
            ventricular_rate_bpm: rng.random_range(35.0..170.0),
            flutter_ratio: ratios[rng.random_range(0..ratios.len())],
            lvh_strain: rng.random_bool(0.5),
        }
    }

    #[test]
    fn parse_round_trips_random_condition_sets_in_both_styles() {
        for seed in 0..400 {
            let mut rng = StdRng::seed_from_u64(seed);
            let set = ConditionSet::random(&mut rng);
            let s = statements(&set, random_detail(&mut rng));
            let codes: Vec<&str> = s.iter().map(|s| s.code).collect();
            for text in [mimic_report(&s), ptbxl_report(&s)] {
                let parsed = parse_report(&text);
                assert_eq!(parsed.codes, codes, "seed {seed}: {text}");
                assert!(parsed.unknown.is_empty(), "seed {seed}: {parsed:?}");
                assert_eq!(parsed.rate_bpm, None, "seed {seed}: {text}");
            }
        }
    }

    #[test]
    fn parse_ignores_case_spacing_punctuation_and_tokenised_periods() {
        let set = ConditionSet::parse_list("aflutter,lvh,long-qt").unwrap();
        let detail = RhythmDetail {
            ventricular_rate_bpm: 75.0,
            flutter_ratio: Some(2),
            lvh_strain: true,
        };
        let s = statements(&set, detail);
        let codes: Vec<&str> = s.iter().map(|s| s.code).collect();
        for text in [mimic_report(&s), ptbxl_report(&s)] {
            // The paper's tokenisation (" ."), upper case, line breaks, extra blanks.
            let variants = [
                text.replace('.', " ."),
                text.to_uppercase(),
                text.replace(". ", ".\n  "),
                text.replace(',', " , ").replace(' ', "   "),
            ];
            for variant in variants {
                let parsed = parse_report(&variant);
                assert_eq!(parsed.codes, codes, "{variant}");
                assert!(parsed.unknown.is_empty(), "{variant}: {parsed:?}");
            }
        }
    }

    #[test]
    fn no_phrasing_belongs_to_two_codes() {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (key, code) in phrasings() {
            let first = *seen.entry(key.clone()).or_insert(code);
            assert_eq!(first, code, "\"{key}\" is written for {first} and {code}");
        }
    }

    #[test]
    fn the_phrase_table_knows_every_code_and_the_three_verdicts() {
        let known: Vec<&str> = phrase_table().values().copied().collect();
        for c in Condition::ALL {
            let set = ConditionSet::new([c]).unwrap();
            for s in statements(&set, detail()) {
                assert!(known.contains(&s.code), "{}", s.code);
            }
        }
        for verdict in ["NORM", "BORD", "ABN"] {
            assert!(known.contains(&verdict), "{verdict}");
        }
    }

    #[test]
    fn repeated_statements_are_listed_once_in_first_order() {
        let parsed = parse_report("Left axis deviation. sinus rhythm. LEFT AXIS DEVIATION.");
        assert_eq!(parsed.codes, ["LAD", "SR"]);
    }

    #[test]
    fn stated_rates_are_read_and_taken_out_of_the_sentence() {
        let parsed = parse_report("Sinus rhythm, rate 72 bpm. Normal ECG");
        assert_eq!(parsed.codes, ["SR", "NORM"]);
        assert_eq!(parsed.rate_bpm, Some(72.0));
        assert!(parsed.unknown.is_empty(), "{parsed:?}");
        // A sentence that only states a rate is not unknown; decimals are not sentence ends.
        let parsed = parse_report("Ventricular rate of 72.5 bpm. atrial fibrillation at 140 bpm.");
        assert_eq!(parsed.codes, ["AFIB"]);
        assert_eq!(parsed.rate_bpm, Some(72.5));
        assert!(parsed.unknown.is_empty(), "{parsed:?}");
        // The atrial rate of a flutter is not the heart rate.
        let parsed = parse_report("atrial rate 300, ventricular rate 150. Abnormal ECG");
        assert_eq!(parsed.rate_bpm, Some(150.0));
        assert_eq!(
            stated_rates("atrial rate 300, ventricular rate 150"),
            [150.0]
        );
        // Numbers out of range are not rates.
        assert_eq!(parse_report("rate 5000 bpm").rate_bpm, None);
    }

    #[test]
    fn garbage_empty_and_unicode_text_lands_in_unknown() {
        assert_eq!(parse_report(""), ParsedReport::default());
        assert_eq!(parse_report(" . .. \n"), ParsedReport::default());
        let parsed = parse_report("Sinus rhythm. Ça va 💓 très bien. ---. Normal ECG");
        assert_eq!(parsed.codes, ["SR", "NORM"]);
        assert_eq!(parsed.unknown, ["Ça va 💓 très bien", "---"]);
        // A statement glued to other words is not the statement.
        let parsed = parse_report("no atrial fibrillation");
        assert!(parsed.codes.is_empty());
        assert_eq!(parsed.unknown, ["no atrial fibrillation"]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_unknown_sentences_come_from_the_text(text in "\\PC{0,200}") {
            let parsed = parse_report(&text);
            let known: Vec<&str> = phrase_table().values().copied().collect();
            for code in &parsed.codes {
                proptest::prop_assert!(known.contains(code));
            }
            for sentence in &parsed.unknown {
                proptest::prop_assert!(!sentence.is_empty() && text.contains(sentence.as_str()));
            }
        }
    }
}
