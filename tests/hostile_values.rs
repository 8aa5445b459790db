//! Values at the edge, end to end: a WFDB "no sample" value or an infinite device sample
//! refuses its own window (for a non-finite sample) and leaves the rest of the stream as it
//! would have been without it.

use meit::acquire::SourceEvent;
use meit::acquire::replay::{self, ReplaySettings};
use meit::config::Config;
use meit::dsp::quality::{LeadIssue, QualityReason};
use meit::ecg::{Lead, Recording, SampleBlock};
use meit::pipeline::BedPipeline;
use meit::pipeline::model::fallback_spec;
use meit::report::{Outcome, WindowReport};
use meit::synth::{ConditionSet, RecordSpec, generate};
use meit::wfdb::{SignalFormat, WriteOptions, write_record};
use tokio::sync::mpsc;

/// A clean 40 s, 500 Hz, 12-lead sinus record.
fn forty_seconds() -> Recording {
    let spec = RecordSpec {
        seconds: 40.0,
        ..RecordSpec::ten_seconds(ConditionSet::parse_list("normal").unwrap())
    };
    generate(&spec, 18).unwrap().recording
}

/// Writes `recording` with the project's WFDB writer and reads it back through replay's loader.
fn through_wfdb(recording: &Recording, dir: &std::path::Path, name: &str) -> Recording {
    let options = WriteOptions {
        format: SignalFormat::Format16,
        adc_gain_per_mv: 1000.0,
    };
    write_record(dir, name, recording, options, &[]).unwrap();
    replay::load(&dir.join(format!("{name}.hea")), None).unwrap()
}

/// Every window report of `recording` replayed through the daemon's bed pipeline.
fn replay_reports(recording: &Recording) -> Vec<WindowReport> {
    let config = Config::default();
    let spec = fallback_spec(&config.dsp);
    let mut bed = BedPipeline::new("hostile", spec, Some("no model in this test".into()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(4096);
        let settings = ReplaySettings {
            block_frames: 50,
            realtime: false,
        };
        replay::stream(recording, settings, &tx).await.unwrap();
        drop(tx);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    events
        .iter()
        .flat_map(|e| bed.on_event(e))
        .map(|o| o.report().clone())
        .collect()
}

fn axis(report: &WindowReport) -> f32 {
    report
        .measurements
        .as_ref()
        .and_then(|m| m.axis_deg)
        .unwrap_or_else(|| panic!("window {} has no axis: {report:?}", report.window_index))
}

fn is_reportable(report: &WindowReport) -> bool {
    matches!(report.outcome, Outcome::NoModel { .. })
}

/// Window 0 is refused for lead I's non-finite samples; windows 1-3 equal the clean record's.
fn assert_only_window_0_refused(bad: &[WindowReport], clean: &[WindowReport]) {
    assert_eq!((bad.len(), clean.len()), (4, 4));
    let Outcome::NoReport { reasons } = &bad[0].outcome else {
        panic!("window 0 was not refused: {:?}", bad[0].outcome)
    };
    assert!(
        reasons
            .iter()
            .any(|r| r == "I non-finite samples (required)"),
        "{reasons:?}"
    );
    assert!(bad[0].quality_reasons.contains(&QualityReason::Lead {
        lead: Lead::I,
        issue: LeadIssue::NonFinite,
        required: true,
    }));
    // No measurement is made from a window holding a non-finite sample.
    assert_eq!(bad[0].measurements, None);
    assert!(is_reportable(&clean[0]), "{:?}", clean[0].outcome);
    assert!(clean[0].measurements.is_some());
    for k in 1..4 {
        assert!(
            is_reportable(&bad[k]),
            "window {k}: {:?} {:?}",
            bad[k].outcome,
            bad[k].quality_reasons
        );
        assert!(is_reportable(&clean[k]), "clean window {k}");
        assert!(
            (bad[k].quality_index - clean[k].quality_index).abs() < 1e-9,
            "window {k}: quality {} vs {}",
            bad[k].quality_index,
            clean[k].quality_index
        );
        let (a, b) = (axis(&bad[k]), axis(&clean[k]));
        assert!(
            (a - b).abs() < 0.5,
            "window {k}: axis {a} deg, clean {b} deg"
        );
        assert_eq!(
            bad[k].measurements.as_ref().map(|m| m.beats),
            clean[k].measurements.as_ref().map(|m| m.beats),
            "window {k}"
        );
    }
}

#[test]
fn one_invalid_wfdb_sample_refuses_only_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let original = forty_seconds();
    let mut damaged = original.clone();
    // Lead I (row 0) at 0.2 s: written as WFDB's "no sample" value.
    damaged.samples_uv[[0, 100]] = f32::NAN;
    let clean = through_wfdb(&original, dir.path(), "clean");
    let bad = through_wfdb(&damaged, dir.path(), "bad");
    assert!(
        bad.samples_uv[[0, 100]].is_nan(),
        "the invalid value reads as NaN"
    );
    assert_only_window_0_refused(&replay_reports(&bad), &replay_reports(&clean));
}

#[test]
fn an_infinite_device_sample_refuses_only_its_window() {
    let recording = forty_seconds();
    let blocks: Vec<SourceEvent> = (0..recording.len())
        .step_by(25)
        .enumerate()
        .map(|(k, first)| {
            let last = (first + 25).min(recording.len());
            let window = recording.samples_uv.slice(ndarray::s![.., first..last]);
            SourceEvent::Block(SampleBlock {
                sequence: k as u64,
                device_time_ns: first as u64 * 2_000_000,
                sample_rate_hz: recording.sample_rate_hz,
                leads: recording.leads.clone(),
                samples_uv: window.t().iter().copied().collect(),
                lead_off: vec![false; recording.leads.len()],
            })
        })
        .collect();
    let run = |events: &[SourceEvent]| {
        let config = Config::default();
        let spec = fallback_spec(&config.dsp);
        let mut bed = BedPipeline::new("device", spec, Some("no model in this test".into()));
        events
            .iter()
            .flat_map(|e| bed.on_event(e))
            .map(|o| o.report().clone())
            .collect::<Vec<_>>()
    };
    let clean = run(&blocks);
    let mut hostile = blocks.clone();
    // Block 4 holds frames 100..125; lead I of its first frame overflows to +inf, as a device
    // scale of 1e38 uV per count would make it.
    let SourceEvent::Block(b) = &mut hostile[4] else {
        unreachable!()
    };
    b.samples_uv[0] = f32::INFINITY;
    assert_only_window_0_refused(&run(&hostile), &clean);
}
