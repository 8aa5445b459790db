//! Continuous synthesis, sample by sample and beat after beat: the source behind the device
//! simulator and the 10 s training records.
//!
//! The per-sample path allocates nothing: active waves live in a fixed array, beats are
//! materialised a little ahead of time, and artefacts run on oscillators and a small PRNG.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::SynthError;
use super::acquisition::{Acquisition, AcquisitionState, LeadOff};
use super::condition::ConditionSet;
use super::geometry::{ELECTRODES, LEADS, Vec3, leads_from_electrodes};
use super::morphology::{BeatKind, BeatModel, Overrides, Wave};
use super::rhythm::{BeatScheduler, ScheduledBeat};
use super::variability::{VARIABILITY_SEED_TAG, Variability};

/// Sample rates the synthesizer supports, Hz.
pub const SAMPLE_RATE_RANGE_HZ: std::ops::RangeInclusive<f64> = 100.0..=1000.0;

/// How far ahead of its QRS onset a beat's waves are materialised (its P wave starts earlier).
const LOOKAHEAD_S: f64 = 0.7;

/// Most waves alive at once (a beat has at most 10; two or three beats overlap).
const MAX_WAVES: usize = 48;

/// What a stream produces.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Sample rate in Hz (100-1000).
    pub sample_rate_hz: f64,
    /// Conditions of the first beats.
    pub conditions: ConditionSet,
    /// Acquisition artefacts.
    pub acquisition: Acquisition,
    /// Seed of every random choice.
    pub seed: u64,
    /// Frames a lead-off episode may span (the record length; any value for endless streams).
    pub expected_frames: u64,
    /// Parameters fixed instead of drawn (kept across condition changes).
    pub overrides: Overrides,
}

/// One beat as generated, for ground truth.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BeatEvent {
    /// Kind of beat.
    pub kind: BeatKind,
    /// QRS onset (pacing spike for paced beats), seconds from the stream start.
    pub onset_s: f64,
    /// Fiducial point (peak of the dominant QRS wave), seconds.
    pub fiducial_s: f64,
    /// Interval from the previous beat's onset, seconds.
    pub rr_s: f32,
    /// QT of this beat, seconds.
    pub qt_s: f32,
}

/// An endless 12-lead ECG source.
#[derive(Debug, Clone)]
pub struct EcgStream {
    sample_rate_hz: f64,
    rng: StdRng,
    overrides: Overrides,
    model: BeatModel,
    pending_model: Option<BeatModel>,
    scheduler: BeatScheduler,
    fields: [Vec3; ELECTRODES],
    waves: [Wave; MAX_WAVES],
    n_waves: usize,
    next_beat: ScheduledBeat,
    frame: u64,
    acquisition: AcquisitionState,
    log: Option<Vec<BeatEvent>>,
    variability: Variability,
    /// The randomised synthesizer's own generator (unused in the default mode).
    variability_rng: StdRng,
}

impl EcgStream {
    /// Starts a stream with the default variability (what every seed always drew).
    pub fn new(config: &StreamConfig) -> Result<Self, SynthError> {
        Self::with_variability(config, Variability::Fixed)
    }

    /// Starts a stream whose physiology and electrodes vary as `variability` says.
    pub fn with_variability(
        config: &StreamConfig,
        variability: Variability,
    ) -> Result<Self, SynthError> {
        if !SAMPLE_RATE_RANGE_HZ.contains(&config.sample_rate_hz) {
            return Err(SynthError::SampleRate(config.sample_rate_hz));
        }
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut variability_rng = StdRng::seed_from_u64(config.seed ^ VARIABILITY_SEED_TAG);
        let fields = variability.electrode_fields(&mut variability_rng);
        let mut model = BeatModel::sample_with(
            &config.conditions,
            &config.overrides,
            config.sample_rate_hz,
            &mut rng,
        );
        variability.vary(&mut model, &config.overrides, &fields, &mut variability_rng);
        let mut scheduler = BeatScheduler::new(&model.rhythm, -1.0, &mut rng);
        let next_beat = scheduler.next_beat(&mut rng);
        let acquisition = AcquisitionState::new(
            config.acquisition,
            config.sample_rate_hz,
            config.expected_frames,
            &mut rng,
        );
        Ok(EcgStream {
            sample_rate_hz: config.sample_rate_hz,
            rng,
            overrides: config.overrides,
            model,
            pending_model: None,
            scheduler,
            fields,
            waves: [Wave::new(0.0, 1.0, Vec3::ZERO); MAX_WAVES],
            n_waves: 0,
            next_beat,
            frame: 0,
            acquisition,
            log: None,
            variability,
            variability_rng,
        })
    }

    /// Starts keeping a log of every beat generated from now on.
    pub fn record_beats(&mut self) {
        self.log = Some(Vec::new());
    }

    /// Takes the beat log collected so far.
    pub fn take_beats(&mut self) -> Vec<BeatEvent> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The model of the beats currently generated.
    pub fn model(&self) -> &BeatModel {
        &self.model
    }

    /// The lead-off episode of this stream, if one was drawn.
    pub fn lead_off(&self) -> Option<LeadOff> {
        self.acquisition.lead_off()
    }

    /// Sample rate in Hz.
    pub fn sample_rate_hz(&self) -> f64 {
        self.sample_rate_hz
    }

    /// Frames produced so far.
    pub fn frames(&self) -> u64 {
        self.frame
    }

    /// Switches to new conditions from the next beat on (a new morphology and rhythm are
    /// drawn; the beat sequence continues without a gap).
    pub fn set_conditions(&mut self, conditions: &ConditionSet) {
        let mut model = BeatModel::sample_with(
            conditions,
            &self.overrides,
            self.sample_rate_hz,
            &mut self.rng,
        );
        self.variability.vary(
            &mut model,
            &self.overrides,
            &self.fields,
            &mut self.variability_rng,
        );
        self.pending_model = Some(model);
    }

    /// The next frame: one sample per lead in the standard order, microvolts.
    #[inline]
    pub fn next_frame(&mut self) -> [f32; LEADS] {
        let t = self.frame as f64 / self.sample_rate_hz;
        while self.next_beat.onset_s - LOOKAHEAD_S <= t {
            self.start_beat(t);
        }
        let mut dipole = Vec3::ZERO;
        for w in &self.waves[..self.n_waves] {
            w.accumulate(t, &mut dipole);
        }
        let atrial = self.scheduler.atrial().value(t);
        if atrial != 0.0 {
            dipole = dipole + self.model.atrial_vector.scale(atrial);
        }
        let mut e = [0.0f32; ELECTRODES];
        for (p, f) in e.iter_mut().zip(&self.fields) {
            *p = dipole.dot(*f);
        }
        self.acquisition.add_electrode_noise(&mut e);
        let mut leads = leads_from_electrodes(&e);
        self.acquisition.finish_frame(&mut leads);
        self.frame += 1;
        leads
    }

    /// Fills `out` with whole interleaved frames (`out.len() / 12` of them).
    pub fn fill(&mut self, out: &mut [f32]) {
        for chunk in out.chunks_exact_mut(LEADS) {
            chunk.copy_from_slice(&self.next_frame());
        }
    }

    /// Materialises the next scheduled beat and schedules the one after it.
    fn start_beat(&mut self, now: f64) {
        if let Some(model) = self.pending_model.take() {
            self.scheduler.retune(&model.rhythm, &mut self.rng);
            self.model = model;
        }
        let beat = self.next_beat;
        // Drop waves that have ended.
        let mut kept = 0;
        for i in 0..self.n_waves {
            if self.waves[i].end_s() >= now {
                self.waves[kept] = self.waves[i];
                kept += 1;
            }
        }
        self.n_waves = kept;
        let qt = self.model.qt_for_rr(beat.rr_s);
        // Respiration moves the heart and changes the thoracic impedance: the beat's size
        // follows the breathing that also modulates the sinus rate.
        let breathing = self.model.rhythm.resp_amplitude_fraction;
        let size = 1.0 + breathing * self.scheduler.respiration(beat.onset_s);
        for template in self.model.beat_waves(beat.kind) {
            if self.n_waves == MAX_WAVES {
                // Cannot happen with the built-in beats; keep the newest beat whole.
                self.waves.copy_within(1.., 0);
                self.n_waves -= 1;
            }
            let mut wave = template.place(beat.onset_s, qt);
            if breathing != 0.0 {
                wave.vector = wave.vector.scale(size);
            }
            self.waves[self.n_waves] = wave;
            self.n_waves += 1;
        }
        if let Some(log) = self.log.as_mut() {
            log.push(BeatEvent {
                kind: beat.kind,
                onset_s: beat.onset_s,
                fiducial_s: beat.onset_s + f64::from(self.model.fiducial_offset_s(beat.kind)),
                rr_s: beat.rr_s,
                qt_s: qt,
            });
        }
        self.next_beat = self.scheduler.next_beat(&mut self.rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(list: &str, seed: u64) -> EcgStream {
        EcgStream::new(&StreamConfig {
            sample_rate_hz: 500.0,
            conditions: ConditionSet::parse_list(list).unwrap(),
            acquisition: Acquisition::clean(),
            seed,
            expected_frames: 5000,
            overrides: Overrides::default(),
        })
        .unwrap()
    }

    #[test]
    fn same_seed_gives_the_same_samples() {
        let (mut a, mut b) = (stream("af", 5), stream("af", 5));
        for _ in 0..3000 {
            assert_eq!(a.next_frame(), b.next_frame());
        }
        let mut c = stream("af", 6);
        let differs = (0..3000).any(|_| a.next_frame() != c.next_frame());
        assert!(differs);
    }

    #[test]
    fn unsupported_sample_rate_is_rejected() {
        let mut cfg = StreamConfig {
            sample_rate_hz: 20.0,
            conditions: ConditionSet::normal(),
            acquisition: Acquisition::clean(),
            seed: 1,
            expected_frames: 1,
            overrides: Overrides::default(),
        };
        assert!(matches!(
            EcgStream::new(&cfg),
            Err(SynthError::SampleRate(_))
        ));
        cfg.sample_rate_hz = 5000.0;
        assert!(EcgStream::new(&cfg).is_err());
    }

    #[test]
    fn a_condition_change_takes_effect_from_the_next_beats() {
        let mut s = stream("normal", 2);
        s.record_beats();
        for _ in 0..2500 {
            s.next_frame();
        }
        s.set_conditions(&ConditionSet::parse_list("paced").unwrap());
        for _ in 0..5000 {
            s.next_frame();
        }
        let beats = s.take_beats();
        assert_eq!(beats.first().map(|b| b.kind), Some(BeatKind::Sinus));
        assert_eq!(beats.last().map(|b| b.kind), Some(BeatKind::Paced));
    }

    #[test]
    fn fill_writes_interleaved_frames_equal_to_next_frame() {
        let (mut a, mut b) = (stream("normal", 9), stream("normal", 9));
        let mut buf = vec![0.0f32; 12 * 100];
        a.fill(&mut buf);
        for t in 0..100 {
            assert_eq!(&buf[t * 12..t * 12 + 12], &b.next_frame());
        }
    }
}
