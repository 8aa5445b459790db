use meit::dsp::beats::analyze;
use meit::synth::{ConditionSet, RecordSpec, generate};
#[test]
fn dbg() {
    for (list, seed) in [("brady", 0u64), ("brady", 2)] {
        let rec = generate(&RecordSpec::ten_seconds(ConditionSet::parse_list(list).unwrap()), seed).unwrap();
        let a = analyze(&rec.recording).unwrap();
        println!("{list}: truth {:?}\n  found {:?} {:?}", rec.truth.r_peak_samples(500.0), a.r_peaks, rec.truth.beats.first());
    }
}
