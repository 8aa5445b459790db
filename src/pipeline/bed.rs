//! The dsp stage of one bed: source events in, windows out ([`BedPipeline::windows`], cheap),
//! and the judging of one window ([`WindowJob::judge`], milliseconds: the shared dsp threads
//! of [`super::dsp`] run it).
//!
//! [`BedPipeline`] is plain synchronous state (one per bed) so that it can be tested without a
//! runtime. Each finished window becomes a [`BedOutput`]: a finished [`WindowReport`] when the
//! signal cannot be judged (the reasons) or no model is available (why not), or a
//! [`PendingWindow`] holding the model input for the shared inference worker.
//!
//! The preprocessing is the model's ([`PreprocessSpec`] from the bundle's manifest), fitted to
//! each device's lead set with [`PreprocessSpec::for_device`]: a 2- or 3-lead device gets the
//! leads it lacks masked (and named in the report), not "missing (required)" for every lead.

use std::time::Instant;

use ndarray::Array2;

use crate::acquire::SourceEvent;
use crate::dsp::quality::QualityReason;
use crate::dsp::rhythm::RhythmFeatures;
use crate::dsp::window::{Window, Windower};
use crate::dsp::{DspError, ModelInput, PreprocessSpec, Preprocessor};
use crate::ecg::{LeadSet, SampleBlock};
use crate::report::{Measurements, Outcome, WindowReport, WindowTimings};

/// A reportable window waiting for the model.
#[derive(Debug, Clone)]
pub struct PendingWindow {
    /// The report so far: everything but the outcome, which the worker fills in.
    pub report: WindowReport,
    /// The model input (`lead_order x samples`, normalised, masked leads zero).
    pub samples: Array2<f32>,
    /// The window's R-R interval statistics, when the model reads them.
    pub rhythm: Option<RhythmFeatures>,
    /// When the window's last block arrived.
    pub completed_at: Instant,
}

impl crate::infer::engine::EncoderInput for PendingWindow {
    fn samples(&self) -> ndarray::ArrayView2<'_, f32> {
        self.samples.view()
    }
    fn rhythm(&self) -> Option<RhythmFeatures> {
        self.rhythm
    }
}

/// A window's report on its way to the publisher, with when its last block arrived.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The report.
    pub report: WindowReport,
    /// When the window's last block arrived (for the end-to-end latency).
    pub completed_at: Instant,
}

/// What a finished window yields at the dsp stage.
#[derive(Debug, Clone)]
pub enum BedOutput {
    /// Nothing more to do: publish it.
    Done(Finished),
    /// Reportable: generate its report first.
    Pending(PendingWindow),
}

impl BedOutput {
    /// The report (final or so far).
    pub fn report(&self) -> &WindowReport {
        match self {
            BedOutput::Done(f) => &f.report,
            BedOutput::Pending(p) => &p.report,
        }
    }
}

/// The per-bed state between a source and the inference worker.
pub struct BedPipeline {
    bed: String,
    spec: PreprocessSpec,
    device: Option<Device>,
    next_index: u64,
    model_unavailable: Option<String>,
}

/// The windower and preprocessing fitted to the device now connected.
struct Device {
    leads: LeadSet,
    rate_hz: f64,
    windower: Windower,
    preprocessor: Preprocessor,
}

impl BedPipeline {
    /// A pipeline for `bed` with the model's preprocessing `spec` (fitted to each device's
    /// leads as it connects). `model_unavailable` says why no model runs, when none does:
    /// reportable windows then carry that reason instead of going to the worker.
    pub fn new(
        bed: impl Into<String>,
        spec: PreprocessSpec,
        model_unavailable: Option<String>,
    ) -> Self {
        BedPipeline {
            bed: bed.into(),
            spec,
            device: None,
            next_index: 0,
            model_unavailable,
        }
    }

    /// This pipeline numbering its windows from `index` (a bed restarted by a configuration
    /// reload goes on where it stopped).
    pub fn starting_at(mut self, index: u64) -> Self {
        self.next_index = index;
        self
    }

    /// The index the next window will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The bed.
    pub fn bed(&self) -> &str {
        &self.bed
    }

    /// Takes one source event; returns what the windows it completed yield (windowing and
    /// judging in one call; [`BedPipeline::windows`] leaves the judging to the caller).
    pub fn on_event(&mut self, event: &SourceEvent) -> Vec<BedOutput> {
        self.windows(event)
            .into_iter()
            .map(WindowJob::judge)
            .collect()
    }

    /// Takes one source event; returns the windows it completed, to be judged
    /// ([`WindowJob::judge`], the costly part: run it off the async threads).
    pub fn windows(&mut self, event: &SourceEvent) -> Vec<WindowJob> {
        match event {
            SourceEvent::Block(block) => self.on_block(block),
            SourceEvent::Disconnected { reason } => {
                // A partial window must not be stitched to samples from after a reconnect.
                tracing::warn!(bed = %self.bed, %reason, "device disconnected; partial window dropped");
                self.device = None;
                Vec::new()
            }
            SourceEvent::Connected(info) => {
                tracing::info!(bed = %self.bed, device = ?info, "device connected");
                Vec::new()
            }
            SourceEvent::Waiting { reason } => {
                tracing::warn!(bed = %self.bed, %reason, "waiting for device");
                Vec::new()
            }
            SourceEvent::Gap(gap) => {
                tracing::debug!(bed = %self.bed, ?gap, "blocks lost");
                Vec::new()
            }
            SourceEvent::Status(status) => {
                tracing::debug!(bed = %self.bed, ?status, "device status");
                Vec::new()
            }
        }
    }

    fn on_block(&mut self, block: &SampleBlock) -> Vec<WindowJob> {
        let same_device = self
            .device
            .as_ref()
            .is_some_and(|d| d.leads == block.leads && d.rate_hz == block.sample_rate_hz);
        if !same_device {
            match self.fit(&block.leads, block.sample_rate_hz) {
                Ok(device) => self.device = Some(device),
                Err(e) => {
                    tracing::error!(bed = %self.bed, error = %e, "cannot window this device's signal");
                    self.device = None;
                    return Vec::new();
                }
            }
        }
        let Some(device) = self.device.as_mut() else {
            return Vec::new();
        };
        match device.windower.push(block) {
            Ok(windows) => {
                let completed_at = Instant::now();
                let preprocessor = device.preprocessor.clone();
                windows
                    .into_iter()
                    .map(|window| {
                        let index = self.next_index;
                        self.next_index += 1;
                        WindowJob {
                            bed: self.bed.clone(),
                            index,
                            window,
                            preprocessor: preprocessor.clone(),
                            model_unavailable: self.model_unavailable.clone(),
                            completed_at,
                        }
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(bed = %self.bed, error = %e, "block rejected by the windower");
                Vec::new()
            }
        }
    }

    /// The windower and preprocessor for a device with `leads` at `rate_hz`.
    fn fit(&self, leads: &LeadSet, rate_hz: f64) -> Result<Device, DspError> {
        let spec = self.spec.for_device(leads);
        let preprocessor = Preprocessor::new(spec)?;
        let windower = preprocessor.windower(leads, rate_hz)?;
        let masked = crate::dsp::leads::LeadMapper::new(leads, &self.spec.lead_order)
            .mask()
            .missing();
        if !masked.is_empty() {
            let names =
                |l: &[crate::ecg::Lead]| l.iter().map(|l| l.name()).collect::<Vec<_>>().join(",");
            tracing::info!(bed = %self.bed, device_leads = %names(&leads.0), masked = %names(&masked), "leads this device lacks are masked");
        }
        Ok(Device {
            leads: leads.clone(),
            rate_hz,
            windower,
            preprocessor,
        })
    }
}

/// A finished window of one bed with what is needed to judge it.
pub struct WindowJob {
    bed: String,
    index: u64,
    window: Window,
    preprocessor: Preprocessor,
    model_unavailable: Option<String>,
    completed_at: Instant,
}

impl WindowJob {
    /// Preprocesses the window, judges its quality, measures its beats and decides what it
    /// yields (milliseconds of CPU: run it on a blocking thread in async code).
    pub fn judge(self) -> BedOutput {
        let WindowJob {
            bed,
            index,
            window,
            preprocessor,
            model_unavailable,
            completed_at,
        } = self;
        let window = &window;
        let started = Instant::now();
        let processed = preprocessor.process_window(window);
        let mut report = unjudged_report(bed, index, window);
        let input = match processed {
            Ok(input) => input,
            Err(e) => {
                report.outcome = Outcome::NoReport {
                    reasons: vec![dsp_failure(&e)],
                };
                report.timings.dsp_ms = ms(started);
                return BedOutput::Done(Finished {
                    report,
                    completed_at,
                });
            }
        };
        let ModelInput {
            samples,
            lead_mask,
            quality,
            rhythm,
            beats,
        } = input;
        report.quality_index = quality.index;
        report.masked_leads = lead_mask.missing();
        report.measurements = if whole_window_unusable(&quality.reasons) {
            None
        } else {
            beats
                .filter(|analysis| !analysis.r_peaks.is_empty())
                .map(|analysis| Measurements::from(&analysis))
        };
        let reportable = quality.is_reportable();
        if !reportable {
            report.outcome = Outcome::NoReport {
                reasons: quality.blocking_reasons(),
            };
        }
        report.quality_reasons = quality.reasons;
        report.timings.dsp_ms = ms(started);
        if !reportable {
            return BedOutput::Done(Finished {
                report,
                completed_at,
            });
        }
        match model_unavailable {
            Some(reason) => {
                report.outcome = Outcome::NoModel { reason };
                BedOutput::Done(Finished {
                    report,
                    completed_at,
                })
            }
            None => BedOutput::Pending(PendingWindow {
                report,
                samples,
                rhythm,
                completed_at,
            }),
        }
    }
}

impl WindowJob {
    /// The window's index in its bed's numbering.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// When the window closed: its last block arrived. Staleness is measured from here.
    pub fn completed_at(&self) -> Instant {
        self.completed_at
    }

    /// The window's bed.
    pub fn bed(&self) -> &str {
        &self.bed
    }

    /// The window published without being judged (the signal processing fell behind or the
    /// daemon is stopping): a no-report result with `reason`, no quality or measurements.
    /// The samples are freed here.
    pub fn unjudged(self, reason: &str) -> Finished {
        self.no_report(reason)
    }

    /// The window's no-report result with `reason`, the job kept: what is published in its
    /// place if judging it fails.
    pub fn no_report(&self, reason: &str) -> Finished {
        let mut report = unjudged_report(self.bed.clone(), self.index, &self.window);
        report.outcome = Outcome::NoReport {
            reasons: vec![reason.to_string()],
        };
        Finished {
            report,
            completed_at: self.completed_at,
        }
    }
}

/// A window's report before its signal is judged: identity and timing only.
fn unjudged_report(bed: String, index: u64, window: &Window) -> WindowReport {
    WindowReport {
        bed,
        window_index: index,
        device_start_ns: window.start_device_time_ns,
        device_end_ns: window.end_device_time_ns,
        interpolated_fraction: window.interpolated_fraction(),
        quality_index: 0.0,
        quality_reasons: Vec::new(),
        masked_leads: Vec::new(),
        measurements: None,
        outcome: Outcome::NoReport {
            reasons: Vec::new(),
        },
        timings: WindowTimings::default(),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// True when the window as a whole is unusable for measurements. A missing or noisy chest lead
/// blocks a report but not a heart rate from the limb leads.
fn whole_window_unusable(reasons: &[QualityReason]) -> bool {
    reasons.iter().any(|r| {
        matches!(
            r,
            QualityReason::InterpolatedGaps { .. } | QualityReason::LowIndex { .. }
        )
    })
}

fn dsp_failure(e: &DspError) -> String {
    format!("signal processing failed: {e}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dsp::normalize::Normalization;
    use crate::dsp::quality::LeadIssue;
    use crate::ecg::{Lead, Recording};
    use crate::synth::{ConditionSet, RecordSpec, generate};

    /// The default model's preprocessing (100 Hz, millivolts, 12 leads) with `window_s`
    /// windows.
    pub(crate) fn spec(window_s: f64) -> PreprocessSpec {
        PreprocessSpec {
            model_rate_hz: 100.0,
            normalization: Normalization::Millivolts,
            window_seconds: window_s,
            hop_seconds: window_s,
            ..PreprocessSpec::default()
        }
    }

    /// A pipeline with `window_s` windows and no model.
    fn pipeline(window_s: f64) -> BedPipeline {
        BedPipeline::new("bed-t", spec(window_s), Some("no model in test".into()))
    }

    pub(crate) fn record(conditions: &str, seconds: f64, seed: u64) -> (Recording, f32) {
        let mut spec = RecordSpec::ten_seconds(ConditionSet::parse_list(conditions).unwrap());
        spec.seconds = seconds;
        let r = generate(&spec, seed).unwrap();
        (r.recording, r.truth.measurements.ventricular_rate_bpm)
    }

    /// Cuts a recording into 100 ms sample blocks, as a device would send them.
    pub(crate) fn blocks(
        rec: &Recording,
        lead_off: impl Fn(usize) -> Vec<bool>,
    ) -> Vec<SampleBlock> {
        let per_block = (rec.sample_rate_hz / 10.0) as usize;
        (0..rec.len() / per_block)
            .map(|b| {
                let cols = b * per_block..(b + 1) * per_block;
                let samples_uv = cols
                    .clone()
                    .flat_map(|t| rec.samples_uv.column(t).to_vec())
                    .collect();
                SampleBlock {
                    sequence: b as u64,
                    device_time_ns: (cols.start as f64 / rec.sample_rate_hz * 1e9) as u64,
                    sample_rate_hz: rec.sample_rate_hz,
                    leads: rec.leads.clone(),
                    samples_uv,
                    lead_off: lead_off(b),
                }
            })
            .collect()
    }

    fn feed(p: &mut BedPipeline, blocks: &[SampleBlock]) -> Vec<WindowReport> {
        blocks
            .iter()
            .flat_map(|b| p.on_event(&SourceEvent::Block(b.clone())))
            .map(|o| o.report().clone())
            .collect()
    }

    #[test]
    fn each_bed_windows_with_its_own_hop() {
        let (rec, _) = record("normal", 20.0, 11);
        let blocks = blocks(&rec, |_| vec![false; 12]);
        let model = spec(10.0);
        let overlapping = crate::dsp::config::BedWindow {
            window_seconds: None,
            hop_seconds: Some(5.0),
        }
        .apply(&model, Some(10.0))
        .unwrap();
        let mut every_5_s = BedPipeline::new("bed-5", overlapping, Some("no model".into()));
        let mut every_10_s = BedPipeline::new("bed-10", model, Some("no model".into()));
        let starts = |reports: Vec<WindowReport>| -> Vec<u64> {
            reports
                .iter()
                .map(|r| r.device_start_ns / 1_000_000_000)
                .collect()
        };
        assert_eq!(starts(feed(&mut every_5_s, &blocks)), [0, 5, 10]);
        assert_eq!(starts(feed(&mut every_10_s, &blocks)), [0, 10]);
    }

    #[test]
    fn clean_sinus_windows_are_reportable_with_the_labelled_rate() {
        let (rec, rate) = record("normal", 20.0, 11);
        let reports = feed(&mut pipeline(10.0), &blocks(&rec, |_| vec![false; 12]));
        assert_eq!(reports.len(), 2);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.window_index, i as u64);
            assert!(
                matches!(r.outcome, Outcome::NoModel { .. }),
                "{}",
                r.to_line()
            );
            assert!(r.masked_leads.is_empty());
            let hr = r
                .measurements
                .as_ref()
                .and_then(|m| m.heart_rate_bpm)
                .unwrap();
            assert!((hr - rate).abs() <= 3.0, "measured {hr}, labelled {rate}");
        }
    }

    /// The outputs of a bed with a model for 20 s of a normal 12-lead record whose V2 electrode
    /// comes off in the second window.
    fn two_windows_with_v2_off_in_the_second(spec: PreprocessSpec) -> Vec<BedOutput> {
        let (rec, _) = record("normal", 20.0, 14);
        let v2 = rec.leads.position(Lead::V2).unwrap();
        let mut p = BedPipeline::new("bed-m", spec, None);
        let all = blocks(&rec, |b| (0..12).map(|i| i == v2 && b >= 100).collect());
        let outputs: Vec<BedOutput> = all
            .iter()
            .flat_map(|b| p.on_event(&SourceEvent::Block(b.clone())))
            .collect();
        assert_eq!(outputs.len(), 2);
        outputs
    }

    #[test]
    fn with_a_model_reportable_windows_wait_for_it_and_unreportable_ones_do_not() {
        let outputs = two_windows_with_v2_off_in_the_second(spec(10.0));
        let BedOutput::Pending(first) = &outputs[0] else {
            panic!(
                "a clean window goes to the model: {}",
                outputs[0].report().to_line()
            )
        };
        assert_eq!(first.samples.dim(), (12, 1000), "12 leads x 10 s at 100 Hz");
        let BedOutput::Done(second) = &outputs[1] else {
            panic!("a lead-off window never goes to the model")
        };
        assert!(matches!(second.report.outcome, Outcome::NoReport { .. }));
    }

    /// With `[model] required_leads = ["I", "II"]`, an electrode off at V2 no longer blocks the
    /// window: it goes to the model with V2 masked like a lead the device lacks (so the report
    /// withholds what needs V2), and the published reasons still name it.
    #[test]
    fn a_lead_off_the_report_does_not_require_is_masked_and_the_window_reported() {
        let mut limb = spec(10.0);
        limb.required_leads = vec![Lead::I, Lead::II];
        let outputs = two_windows_with_v2_off_in_the_second(limb);
        let [BedOutput::Pending(clean), BedOutput::Pending(off)] = &outputs[..] else {
            panic!(
                "both windows go to the model: {:?}",
                outputs
                    .iter()
                    .map(|o| o.report().to_line())
                    .collect::<Vec<_>>()
            )
        };
        assert!(clean.report.masked_leads.is_empty());
        assert_eq!(off.report.masked_leads, vec![Lead::V2]);
        assert!(off.samples.row(Lead::V2.index()).iter().all(|v| *v == 0.0));
        assert!(off.report.quality_reasons.iter().any(|r| matches!(
            r,
            QualityReason::Lead {
                lead: Lead::V2,
                issue: LeadIssue::LeadOff,
                required: false
            }
        )));
    }

    /// A model that reads the R-R statistics gets each reportable window's, measured on that
    /// window (its mean interval is the labelled rate's); one that does not gets none.
    #[test]
    fn pending_windows_carry_the_rhythm_statistics_the_model_reads() {
        let (rec, rate) = record("normal", 20.0, 16);
        for wanted in [false, true] {
            let mut with = spec(10.0);
            with.rhythm_features = wanted;
            let mut p = BedPipeline::new("bed-r", with, None);
            let pending: Vec<PendingWindow> = blocks(&rec, |_| vec![false; 12])
                .iter()
                .flat_map(|b| p.on_event(&SourceEvent::Block(b.clone())))
                .filter_map(|o| match o {
                    BedOutput::Pending(w) => Some(w),
                    BedOutput::Done(_) => None,
                })
                .collect();
            assert_eq!(pending.len(), 2, "two clean 10 s windows");
            for w in pending {
                match (wanted, w.rhythm) {
                    (false, None) => {}
                    (true, Some(r)) => {
                        assert!(r.measured, "{r:?}");
                        let bpm = 60.0 / r.mean_interval_s;
                        assert!((bpm - rate).abs() <= 3.0, "{bpm} bpm, labelled {rate}");
                    }
                    (_, got) => panic!("rhythm_features {wanted}: got {got:?}"),
                }
            }
        }
    }

    #[test]
    fn a_three_lead_monitor_gets_its_missing_leads_masked_not_required() {
        let (rec, _) = record("normal", 10.0, 15);
        let keep = [Lead::I, Lead::II, Lead::V1];
        let rows: Vec<usize> = keep
            .iter()
            .map(|l| rec.leads.position(*l).unwrap())
            .collect();
        let monitor = Recording {
            sample_rate_hz: rec.sample_rate_hz,
            leads: LeadSet(keep.to_vec()),
            samples_uv: rec.samples_uv.select(ndarray::Axis(0), &rows),
        };
        let mut p = BedPipeline::new("bed-3", spec(10.0), None);
        let outputs: Vec<BedOutput> = blocks(&monitor, |_| vec![false; 3])
            .iter()
            .flat_map(|b| p.on_event(&SourceEvent::Block(b.clone())))
            .collect();
        assert_eq!(outputs.len(), 1);
        let BedOutput::Pending(w) = &outputs[0] else {
            panic!("{}", outputs[0].report().to_line())
        };
        assert_eq!(
            w.report.masked_leads,
            [Lead::V2, Lead::V3, Lead::V4, Lead::V5, Lead::V6]
        );
        assert!(
            !w.report
                .quality_reasons
                .iter()
                .any(QualityReason::blocks_report),
            "{:?}",
            w.report.quality_reasons
        );
    }

    #[test]
    fn a_lead_off_electrode_gives_no_report_with_the_reason() {
        let (rec, _) = record("normal", 10.0, 12);
        let v2 = rec.leads.position(Lead::V2).unwrap();
        let reports = feed(
            &mut pipeline(10.0),
            &blocks(&rec, |_| (0..12).map(|i| i == v2).collect()),
        );
        assert_eq!(reports.len(), 1);
        let Outcome::NoReport { reasons } = &reports[0].outcome else {
            panic!("{}", reports[0].to_line())
        };
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("V2") && r.contains("lead off")),
            "{reasons:?}"
        );
        assert!(reports[0].quality_reasons.iter().any(|r| matches!(
            r,
            QualityReason::Lead {
                lead: Lead::V2,
                issue: LeadIssue::LeadOff,
                required: true
            }
        )));
        // The limb leads still give a rate.
        assert!(
            reports[0]
                .measurements
                .as_ref()
                .and_then(|m| m.heart_rate_bpm)
                .is_some()
        );
    }

    #[test]
    fn a_disconnect_drops_the_partial_window_instead_of_stitching() {
        let (rec, _) = record("normal", 10.0, 13);
        let all = blocks(&rec, |_| vec![false; 12]);
        let mut p = pipeline(4.0);
        let mut reports = feed(&mut p, &all[..30]); // 3 s: no window yet
        reports.extend(
            p.on_event(&SourceEvent::Disconnected {
                reason: "unplugged".into(),
            })
            .iter()
            .map(|o| o.report().clone()),
        );
        reports.extend(feed(&mut p, &all[30..])); // 7 s after the reconnect: one 4 s window
        assert_eq!(
            reports.len(),
            1,
            "{:?}",
            reports
                .iter()
                .map(WindowReport::to_line)
                .collect::<Vec<_>>()
        );
        assert_eq!(reports[0].device_start_ns, all[30].device_time_ns);
    }
}
