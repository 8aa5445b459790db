//! WFDB files and data-set trees: exact round trips, parsers that survive arbitrary bytes, and
//! PTB-XL / MIMIC-IV-ECG layouts a loader can walk.

use meit::ecg::Lead;
use meit::synth::dataset::{DatasetSpec, DatasetStyle, write_dataset};
use meit::synth::{Acquisition, Adc, ConditionSet, RecordSpec, generate};
use meit::wfdb::{
    Header, SignalFormat, WriteOptions, decode_record, decode_samples, encode_samples, read_record,
    write_record,
};
use proptest::prelude::*;

fn quantised_record(uv_per_count: f32, bits: u8) -> meit::synth::SynthRecord {
    let spec = RecordSpec {
        acquisition: Acquisition {
            adc: Some(Adc { uv_per_count, bits }),
            ..Acquisition::uniform(0.3)
        },
        ..RecordSpec::ten_seconds(ConditionSet::parse_list("af,lbbb").unwrap())
    };
    generate(&spec, 21).unwrap()
}

#[test]
fn quantised_recordings_round_trip_exactly_through_format_16_and_212() {
    let dir = tempfile::tempdir().unwrap();
    for (format, gain, uv_per_count, bits) in [
        (SignalFormat::Format16, 1000.0, 1.0, 16),
        (SignalFormat::Format212, 200.0, 5.0, 12),
    ] {
        let rec = quantised_record(uv_per_count, bits);
        let name = format!("rec{}", format.code());
        let options = WriteOptions {
            format,
            adc_gain_per_mv: gain,
        };
        write_record(
            dir.path(),
            &name,
            &rec.recording,
            options,
            &["synthetic".into()],
        )
        .unwrap();
        let back = read_record(&dir.path().join(format!("{name}.hea"))).unwrap();
        assert_eq!(back.header.comments, vec!["synthetic".to_string()]);
        let recording = back.to_recording().unwrap();
        assert_eq!(recording, rec.recording, "format {}", format.code());
    }
}

#[test]
fn written_checksums_and_initial_values_match_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let rec = quantised_record(1.0, 16);
    let options = WriteOptions {
        format: SignalFormat::Format16,
        adc_gain_per_mv: 1000.0,
    };
    write_record(dir.path(), "r", &rec.recording, options, &[]).unwrap();
    let back = read_record(&dir.path().join("r.hea")).unwrap();
    assert!(back.checksum_mismatches().is_empty());
    for (s, row) in back.header.signals.iter().zip(back.digital.rows()) {
        let sum = row.iter().fold(0i32, |a, &v| a.wrapping_add(v)) as u16;
        assert_eq!(s.checksum, Some(i32::from(sum)));
        assert_eq!(s.initial_value, row.first().copied());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn digital_samples_round_trip_in_every_format(
        samples in prop::collection::vec(-2047i32..=2047, 0..200),
        which in 0usize..3,
    ) {
        let format = [SignalFormat::Format16, SignalFormat::Format212, SignalFormat::Format80][which];
        let (lo, hi) = format.valid_range();
        let samples: Vec<i32> = samples.into_iter().map(|v| v.clamp(lo, hi)).collect();
        let bytes = encode_samples(format, &samples).unwrap();
        let mut back = decode_samples(format, &bytes);
        back.truncate(samples.len());
        prop_assert_eq!(back, samples);
    }

    #[test]
    fn the_header_parser_survives_arbitrary_text(text in ".{0,400}") {
        let _ = Header::parse(&text);
    }

    #[test]
    fn the_header_parser_survives_mutated_valid_headers(
        pos in 0usize..200, junk in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let valid = "r 2 500 4\nr.dat 212 200(0)/mV 12 0 0 0 0 I\nr.dat 212 200(0)/mV 12 0 0 0 0 aVF\n";
        let mut bytes = valid.as_bytes().to_vec();
        let at = pos.min(bytes.len());
        bytes.splice(at..at, junk);
        let _ = Header::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn the_signal_reader_survives_arbitrary_headers_and_data(
        text in "[a-z0-9 ./()+:x#\n-]{0,200}",
        data in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok(h) = Header::parse(&text)
            && let Ok(rec) = decode_record(h, |_| Ok(data.clone()))
        {
            let _ = rec.to_recording();
        }
    }
}

#[test]
fn ptbxl_tree_has_index_records_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        n: 6,
        style: DatasetStyle::Ptbxl,
        seed: 5,
        max_noise: 0.3,
    };
    let summary = write_dataset(dir.path(), &spec, |_| {}).unwrap();
    assert_eq!(summary.records, 6);
    let db = std::fs::read_to_string(dir.path().join("ptbxl_database.csv")).unwrap();
    let lines: Vec<&str> = db.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("ecg_id,patient_id"));
    assert!(lines[1].contains("records500/00000/00001_hr"));
    let hr = read_record(&dir.path().join("records500/00000/00001_hr.hea")).unwrap();
    assert_eq!(hr.digital.dim(), (12, 5000));
    let lr = read_record(&dir.path().join("records100/00000/00001_lr.hea")).unwrap();
    assert_eq!(
        (lr.header.sample_rate_hz, lr.digital.ncols()),
        (100.0, 1000)
    );
    let labels = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(labels.lines().count(), 6);
}

#[test]
fn mimic_tree_stores_avf_before_avl_and_reports_in_columns() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        n: 4,
        style: DatasetStyle::Mimic,
        seed: 6,
        max_noise: 0.0,
    };
    write_dataset(dir.path(), &spec, |_| {}).unwrap();
    let list = std::fs::read_to_string(dir.path().join("record_list.csv")).unwrap();
    let first = list.lines().nth(1).unwrap();
    let path = first.rsplit(',').next().unwrap();
    assert_eq!(path, "files/p1000/p10000000/s40000000/40000000");
    let rec = read_record(&dir.path().join(format!("{path}.hea"))).unwrap();
    let recording = rec.to_recording().unwrap();
    assert_eq!(recording.leads.position(Lead::AVF), Some(4));
    assert_eq!(recording.leads.position(Lead::AVL), Some(5));
    let mm = std::fs::read_to_string(dir.path().join("machine_measurements.csv")).unwrap();
    let header: Vec<&str> = mm.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header.iter().filter(|h| h.starts_with("report_")).count(),
        18
    );
    let row = mm.lines().nth(1).unwrap();
    assert!(row.contains("ECG"), "no verdict statement in {row}");
}
