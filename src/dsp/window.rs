//! Windowing: turns a device's stream of [`SampleBlock`]s into fixed-length [`Window`]s.
//!
//! The [`Windower`] runs the causal [`FilterChain`] as blocks arrive (so its state survives
//! across windows), keeps the raw samples beside the filtered ones (quality is judged on the
//! raw signal), and emits a window every hop once a full window is buffered.
//!
//! Gaps are found from the device timestamps: a block that starts later than the previous one
//! ended is missing frames. A short gap (at most `max_gap_seconds`) is bridged by linear
//! interpolation, and the window records where ([`Gap`]); a longer gap, or a clock that jumps
//! back, closes the window being filled: its frames are dropped and the filter starts afresh.
//!
//! A whole recording (training, evaluation, `meit-models generate`) is cut where a [`Windower`]
//! would cut it streamed: [`recording_windows`], with the same frame counts.

use ndarray::Array2;

use crate::dsp::filter::{FilterChain, FilterError, FilterSpec};
use crate::ecg::{LeadSet, Recording, SampleBlock};

const NS_PER_S: f64 = 1e9;

/// Lengths, in device frames, that govern windowing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowTiming {
    /// Window length in seconds.
    pub window_seconds: f64,
    /// Hop between window starts in seconds (at most the window length).
    pub hop_seconds: f64,
    /// Longest gap, in seconds, that is interpolated.
    pub max_gap_seconds: f64,
}

/// A run of interpolated frames inside a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// First interpolated frame, counted from the window start.
    pub start_frame: usize,
    /// Number of interpolated frames.
    pub frames: usize,
}

/// A complete window at the device rate, in device channel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Unfiltered samples in microvolts.
    pub raw: Recording,
    /// The causal filter's output; `None` when the spec filters zero-phase per window.
    pub filtered: Option<Recording>,
    /// Device time of the first frame (ns).
    pub start_device_time_ns: u64,
    /// Device time just after the last frame (ns).
    pub end_device_time_ns: u64,
    /// Interpolated stretches.
    pub gaps: Vec<Gap>,
    /// Fraction of frames the device flagged lead-off, per channel.
    pub lead_off_fraction: Vec<f64>,
}

impl Window {
    /// Fraction of the window's frames that were interpolated.
    pub fn interpolated_fraction(&self) -> f64 {
        let frames: usize = self.gaps.iter().map(|g| g.frames).sum();
        if self.raw.is_empty() {
            0.0
        } else {
            frames as f64 / self.raw.len() as f64
        }
    }
}

/// Counters a daemon can publish as telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowerStats {
    /// Windows emitted.
    pub windows: u64,
    /// Gaps bridged by interpolation.
    pub gaps_bridged: u64,
    /// Frames interpolated.
    pub frames_interpolated: u64,
    /// Times a long gap or a clock jump closed a window unfinished.
    pub windows_closed: u64,
    /// Frames dropped with closed windows.
    pub frames_dropped: u64,
}

/// Why a block could not be windowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowError {
    /// Window, hop or gap settings are unusable.
    #[error("window timing {0:?} is not usable (window > 0, 0 < hop <= window, gap >= 0)")]
    Timing(WindowTiming),
    /// The block's lead set differs from the windower's.
    #[error("block has leads {got:?}, the windower was built for {expected:?}")]
    Leads {
        /// The windower's lead set.
        expected: LeadSet,
        /// The block's lead set.
        got: LeadSet,
    },
    /// The block's sample rate differs from the windower's.
    #[error("block at {got} Hz given to a windower for {expected} Hz")]
    Rate {
        /// The windower's rate.
        expected: f64,
        /// The block's rate.
        got: f64,
    },
    /// The block's samples or lead-off flags do not match its lead count.
    #[error(
        "block {sequence} holds {samples} samples and {flags} lead-off flags for {leads} leads"
    )]
    Shape {
        /// Block sequence number.
        sequence: u64,
        /// Samples in the block.
        samples: usize,
        /// Lead-off flags in the block.
        flags: usize,
        /// Leads in the block.
        leads: usize,
    },
    /// The filter could not be built.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The block's frames would carry device times beyond the range of a `u64` of nanoseconds.
    #[error(
        "block {sequence}: device_time_ns {device_time_ns} plus {frames} frames at {sample_rate_hz} Hz overflows the device clock (u64 nanoseconds)"
    )]
    DeviceTime {
        /// Block sequence number.
        sequence: u64,
        /// The block's `device_time_ns`.
        device_time_ns: u64,
        /// Frames in the block.
        frames: usize,
        /// The block's rate.
        sample_rate_hz: f64,
    },
}

/// Buffers one device's blocks and emits windows (see the module documentation).
#[derive(Debug)]
pub struct Windower {
    leads: LeadSet,
    sample_rate_hz: f64,
    window_frames: usize,
    hop_frames: usize,
    max_gap_frames: usize,
    filter: Option<FilterChain>,
    /// Interleaved raw frames not yet dropped by a hop.
    raw: Vec<f32>,
    /// The same frames filtered (empty without a causal filter).
    filtered: Vec<f32>,
    /// Interleaved lead-off flags.
    lead_off: Vec<bool>,
    /// Per frame: interpolated?
    interpolated: Vec<bool>,
    /// Per frame: device time (ns).
    times_ns: Vec<u64>,
    /// The last frame received (interpolation starts from it).
    last_frame: Vec<f32>,
    /// Device time expected for the next block's first frame.
    next_time_ns: Option<u64>,
    stats: WindowerStats,
}

/// Window, hop and longest interpolated gap in frames at `sample_rate_hz` (seconds x rate,
/// rounded), or an error when they cannot window anything.
fn frame_counts(
    timing: WindowTiming,
    sample_rate_hz: f64,
) -> Result<(usize, usize, usize), WindowError> {
    let frames = |s: f64| (s * sample_rate_hz).round();
    let (window, hop, gap) = (
        frames(timing.window_seconds),
        frames(timing.hop_seconds),
        frames(timing.max_gap_seconds),
    );
    let usable = sample_rate_hz.is_finite()
        && sample_rate_hz > 0.0
        && (1.0..=1e8).contains(&window)
        && hop >= 1.0
        && hop <= window
        && gap >= 0.0;
    if !usable {
        return Err(WindowError::Timing(timing));
    }
    Ok((window as usize, hop as usize, gap as usize))
}

/// A whole recording cut into the windows a [`Windower`] would emit from it streamed without
/// gaps: window `k` starts at frame `k x hop` (frames counted as the [`Windower`] counts them);
/// a tail shorter than a window is left out. Each item is the window's start in seconds from
/// the recording's start and its samples (the training and evaluation path, which filters
/// each window from its first sample with [`crate::dsp::Preprocessor::process_recording`]).
pub fn recording_windows(
    recording: &Recording,
    timing: WindowTiming,
) -> Result<Vec<(f64, Recording)>, WindowError> {
    let rate = recording.sample_rate_hz;
    let (window, hop, _) = frame_counts(timing, rate)?;
    let frames = recording.len();
    let starts = (0..frames)
        .step_by(hop)
        .take_while(|s| s + window <= frames);
    Ok(starts
        .map(|start| {
            let slice = Recording {
                sample_rate_hz: rate,
                leads: recording.leads.clone(),
                samples_uv: recording
                    .samples_uv
                    .slice(ndarray::s![.., start..start + window])
                    .to_owned(),
            };
            (start as f64 / rate, slice)
        })
        .collect())
}

impl Windower {
    /// A windower for one device; `filter` runs causally unless it asks for zero-phase.
    pub fn new(
        leads: &LeadSet,
        sample_rate_hz: f64,
        timing: WindowTiming,
        filter: &FilterSpec,
    ) -> Result<Self, WindowError> {
        let (window, hop, gap) = frame_counts(timing, sample_rate_hz)?;
        let chain = if filter.zero_phase {
            None
        } else {
            Some(FilterChain::new(filter, sample_rate_hz, leads.len())?)
        };
        let capacity = (window + 1) * leads.len() * 2;
        Ok(Windower {
            leads: leads.clone(),
            sample_rate_hz,
            window_frames: window,
            hop_frames: hop,
            max_gap_frames: gap,
            filter: chain,
            raw: Vec::with_capacity(capacity),
            filtered: Vec::with_capacity(capacity),
            lead_off: Vec::with_capacity(capacity),
            interpolated: Vec::with_capacity(window * 2),
            times_ns: Vec::with_capacity(window * 2),
            last_frame: Vec::with_capacity(leads.len()),
            next_time_ns: None,
            stats: WindowerStats::default(),
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> WindowerStats {
        self.stats
    }

    /// Window length in device frames.
    pub fn window_frames(&self) -> usize {
        self.window_frames
    }

    /// Adds a block; returns the windows it completes (usually none or one).
    pub fn push(&mut self, block: &SampleBlock) -> Result<Vec<Window>, WindowError> {
        self.check(block)?;
        let n = self.leads.len();
        let frames = block.frames();
        if frames == 0 {
            return Ok(Vec::new());
        }
        let period_ns = NS_PER_S / self.sample_rate_hz;
        // Device time after the block's last frame; every frame time below is smaller.
        let end_ns = offset_ns(frames, period_ns)
            .and_then(|d| block.device_time_ns.checked_add(d))
            .ok_or(WindowError::DeviceTime {
                sequence: block.sequence,
                device_time_ns: block.device_time_ns,
                frames,
                sample_rate_hz: self.sample_rate_hz,
            })?;
        if let Some(expected) = self.next_time_ns {
            let late_ns = block.device_time_ns as f64 - expected as f64;
            let missing = (late_ns / period_ns).round();
            if missing < 0.0 || missing > self.max_gap_frames as f64 {
                self.close_window();
            } else if missing >= 1.0 {
                self.bridge(
                    missing as usize,
                    &block.samples_uv[..n],
                    expected,
                    period_ns,
                )?;
            }
        }
        let start = self.raw.len();
        self.raw.extend_from_slice(&block.samples_uv);
        for t in 0..frames {
            self.lead_off.extend_from_slice(&block.lead_off);
            self.interpolated.push(false);
            // At most `end_ns`, which did not overflow.
            let offset = offset_ns(t, period_ns).unwrap_or(u64::MAX);
            self.times_ns
                .push(block.device_time_ns.saturating_add(offset).min(end_ns));
        }
        self.filter_from(start)?;
        self.last_frame.clear();
        self.last_frame
            .extend_from_slice(&block.samples_uv[(frames - 1) * n..]);
        self.next_time_ns = Some(end_ns);
        Ok(self.emit())
    }

    fn check(&self, block: &SampleBlock) -> Result<(), WindowError> {
        if block.leads != self.leads {
            return Err(WindowError::Leads {
                expected: self.leads.clone(),
                got: block.leads.clone(),
            });
        }
        if block.sample_rate_hz != self.sample_rate_hz {
            return Err(WindowError::Rate {
                expected: self.sample_rate_hz,
                got: block.sample_rate_hz,
            });
        }
        let n = self.leads.len();
        if n == 0 || !block.samples_uv.len().is_multiple_of(n) || block.lead_off.len() != n {
            return Err(WindowError::Shape {
                sequence: block.sequence,
                samples: block.samples_uv.len(),
                flags: block.lead_off.len(),
                leads: n,
            });
        }
        Ok(())
    }

    /// Appends `missing` frames interpolated from the last buffered frame to `next`.
    fn bridge(
        &mut self,
        missing: usize,
        next: &[f32],
        first_time_ns: u64,
        period_ns: f64,
    ) -> Result<(), WindowError> {
        let n = self.leads.len();
        let start = self.raw.len();
        for k in 1..=missing {
            let w = k as f32 / (missing + 1) as f32;
            for (a, b) in self.last_frame.iter().zip(next) {
                self.raw.push(a + (b - a) * w);
            }
            self.lead_off.extend(std::iter::repeat_n(false, n));
            self.interpolated.push(true);
            // Interpolated frames lie before the next block's start, which is a valid time.
            let offset = offset_ns(k - 1, period_ns).unwrap_or(u64::MAX);
            self.times_ns.push(first_time_ns.saturating_add(offset));
        }
        self.stats.gaps_bridged += 1;
        self.stats.frames_interpolated += missing as u64;
        self.filter_from(start)
    }

    /// Filters the raw frames from interleaved position `start` into the filtered buffer.
    fn filter_from(&mut self, start: usize) -> Result<(), WindowError> {
        if let Some(chain) = &mut self.filter {
            let from = self.filtered.len();
            debug_assert_eq!(from, start);
            self.filtered.extend_from_slice(&self.raw[start..]);
            chain.process_block(&mut self.filtered[from..])?;
        }
        Ok(())
    }

    /// Drops everything buffered: a long gap or clock jump.
    fn close_window(&mut self) {
        let frames = self.interpolated.len() as u64;
        if frames > 0 {
            self.stats.windows_closed += 1;
            self.stats.frames_dropped += frames;
        }
        self.raw.clear();
        self.filtered.clear();
        self.lead_off.clear();
        self.interpolated.clear();
        self.times_ns.clear();
        if let Some(chain) = &mut self.filter {
            chain.reset();
        }
    }

    /// Emits every complete window, dropping one hop of frames after each.
    fn emit(&mut self) -> Vec<Window> {
        let mut out = Vec::new();
        let n = self.leads.len();
        while self.interpolated.len() >= self.window_frames {
            out.push(self.window());
            let hop = self.hop_frames;
            self.raw.drain(..hop * n);
            if !self.filtered.is_empty() {
                self.filtered.drain(..hop * n);
            }
            self.lead_off.drain(..hop * n);
            self.interpolated.drain(..hop);
            self.times_ns.drain(..hop);
            self.stats.windows += 1;
        }
        out
    }

    /// The window at the front of the buffer.
    fn window(&self) -> Window {
        let n = self.leads.len();
        let len = self.window_frames;
        let recording = |interleaved: &[f32]| Recording {
            sample_rate_hz: self.sample_rate_hz,
            leads: self.leads.clone(),
            samples_uv: Array2::from_shape_fn((n, len), |(l, t)| {
                interleaved.get(t * n + l).copied().unwrap_or(0.0)
            }),
        };
        let mut gaps: Vec<Gap> = Vec::new();
        for (t, _) in self.interpolated[..len]
            .iter()
            .enumerate()
            .filter(|(_, i)| **i)
        {
            match gaps.last_mut() {
                Some(g) if g.start_frame + g.frames == t => g.frames += 1,
                _ => gaps.push(Gap {
                    start_frame: t,
                    frames: 1,
                }),
            }
        }
        let lead_off_fraction = (0..n)
            .map(|l| {
                let flagged = (0..len).filter(|t| self.lead_off[t * n + l]).count();
                flagged as f64 / len as f64
            })
            .collect();
        let period_ns = NS_PER_S / self.sample_rate_hz;
        let start = self.times_ns.first().copied().unwrap_or(0);
        let last = self.times_ns.get(len - 1).copied().unwrap_or(start);
        Window {
            raw: recording(&self.raw),
            filtered: self.filter.as_ref().map(|_| recording(&self.filtered)),
            start_device_time_ns: start,
            end_device_time_ns: last.saturating_add(offset_ns(1, period_ns).unwrap_or(u64::MAX)),
            gaps,
            lead_off_fraction,
        }
    }
}

/// `frames` sample periods in whole nanoseconds, or `None` when that does not fit a `u64`.
fn offset_ns(frames: usize, period_ns: f64) -> Option<u64> {
    let ns = (frames as f64 * period_ns).round();
    // 2^64 is exactly representable; anything at or above it (or NaN) does not fit.
    (ns.is_finite() && (0.0..18_446_744_073_709_551_616.0).contains(&ns)).then_some(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::filter::filter_recording;
    use crate::ecg::Lead;

    const FS: f64 = 500.0;
    const PERIOD_NS: u64 = 2_000_000;

    fn timing(window: f64, hop: f64) -> WindowTiming {
        WindowTiming {
            window_seconds: window,
            hop_seconds: hop,
            max_gap_seconds: 0.1,
        }
    }

    fn leads() -> LeadSet {
        LeadSet(vec![Lead::I, Lead::II])
    }

    /// Frame `t` of a two-lead test signal: a ramp and its negative plus an offset.
    fn frame(t: u64) -> [f32; 2] {
        let v = (t % 1000) as f32;
        [v, 50_000.0 - 2.0 * v]
    }

    fn block(first_frame: u64, frames: u64) -> SampleBlock {
        SampleBlock {
            sequence: first_frame,
            device_time_ns: 7_000_000_000 + first_frame * PERIOD_NS,
            sample_rate_hz: FS,
            leads: leads(),
            samples_uv: (first_frame..first_frame + frames)
                .flat_map(frame)
                .collect(),
            lead_off: vec![false, first_frame % 2 == 1],
        }
    }

    fn push_all(w: &mut Windower, blocks: impl IntoIterator<Item = SampleBlock>) -> Vec<Window> {
        blocks
            .into_iter()
            .flat_map(|b| w.push(&b).unwrap())
            .collect()
    }

    #[test]
    fn rolling_windows_carry_device_timestamps() {
        let mut w = Windower::new(&leads(), FS, timing(2.0, 0.5), &FilterSpec::default()).unwrap();
        let windows = push_all(&mut w, (0..20).map(|i| block(i * 125, 125)));
        // 2500 frames: windows start at 0, 250, ..., 1500.
        assert_eq!(windows.len(), 7);
        for (k, win) in windows.iter().enumerate() {
            let start = 7_000_000_000 + k as u64 * 250 * PERIOD_NS;
            assert_eq!(win.start_device_time_ns, start);
            assert_eq!(win.end_device_time_ns, start + 1000 * PERIOD_NS);
            assert_eq!(win.raw.len(), 1000);
            assert_eq!(win.raw.samples_uv[[0, 0]], frame(k as u64 * 250)[0]);
            assert!(win.gaps.is_empty());
        }
        assert_eq!(w.stats().windows, 7);
    }

    #[test]
    fn a_recording_is_cut_where_the_windower_cuts_its_stream() {
        let (t, frames) = (timing(2.0, 0.5), 2600);
        let mut w = Windower::new(&leads(), FS, t, &FilterSpec::default()).unwrap();
        let streamed = push_all(&mut w, (0..frames / 100).map(|i| block(i * 100, 100)));
        let samples: Vec<f32> = (0..frames).flat_map(frame).collect();
        let recording = Recording {
            sample_rate_hz: FS,
            leads: leads(),
            samples_uv: Array2::from_shape_vec((frames as usize, 2), samples)
                .unwrap()
                .reversed_axes()
                .as_standard_layout()
                .to_owned(),
        };
        let cut = recording_windows(&recording, t).unwrap();
        // 2600 frames: windows start at 0, 250, ..., 1500; the 100-frame tail is left out.
        assert_eq!(cut.len(), 7);
        assert_eq!(cut.len(), streamed.len());
        for (k, ((start_s, slice), win)) in cut.iter().zip(&streamed).enumerate() {
            assert_eq!(*start_s, k as f64 * 0.5);
            assert_eq!(slice, &win.raw);
        }
        assert!(matches!(
            recording_windows(&recording, timing(2.0, 3.0)),
            Err(WindowError::Timing(_))
        ));
    }

    #[test]
    fn filtered_windows_equal_the_batch_filter_of_the_stream() {
        let spec = FilterSpec::default();
        let mut w = Windower::new(&leads(), FS, timing(2.0, 2.0), &spec).unwrap();
        let windows = push_all(&mut w, (0..16).map(|i| block(i * 125, 125)));
        assert_eq!(windows.len(), 2);
        let whole = Recording {
            sample_rate_hz: FS,
            leads: leads(),
            samples_uv: Array2::from_shape_fn((2, 2000), |(l, t)| frame(t as u64)[l]),
        };
        let batch = filter_recording(&spec, &whole).unwrap();
        for (k, win) in windows.iter().enumerate() {
            let expected = batch
                .samples_uv
                .slice(ndarray::s![.., k * 1000..(k + 1) * 1000]);
            assert_eq!(win.filtered.as_ref().unwrap().samples_uv, expected);
        }
    }

    #[test]
    fn short_gap_is_interpolated_and_flagged() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        // Frames 100..120 never arrive (20 frames = 40 ms < 100 ms).
        let windows = push_all(&mut w, [block(0, 100), block(120, 400), block(520, 500)]);
        assert_eq!(windows.len(), 2);
        assert!(windows[1].gaps.is_empty());
        let win = &windows[0];
        assert_eq!(
            win.gaps,
            vec![Gap {
                start_frame: 100,
                frames: 20
            }]
        );
        assert!((win.interpolated_fraction() - 0.04).abs() < 1e-12);
        // Linear between frame 99 and frame 120.
        let (a, b) = (frame(99)[0], frame(120)[0]);
        let mid = win.raw.samples_uv[[0, 110]];
        assert!((mid - (a + (b - a) * 11.0 / 21.0)).abs() < 1e-3, "{mid}");
        assert_eq!(
            win.end_device_time_ns - win.start_device_time_ns,
            500 * PERIOD_NS
        );
        assert_eq!(w.stats().frames_interpolated, 20);
    }

    #[test]
    fn long_gap_closes_the_window() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        // 300 frames, then a 200-frame (400 ms) hole, then 600 frames.
        let windows = push_all(&mut w, [block(0, 300), block(500, 600)]);
        assert_eq!(windows.len(), 1);
        assert_eq!(
            windows[0].start_device_time_ns,
            7_000_000_000 + 500 * PERIOD_NS
        );
        assert!(windows[0].gaps.is_empty());
        let stats = w.stats();
        assert_eq!((stats.windows_closed, stats.frames_dropped), (1, 300));
    }

    #[test]
    fn clock_jumping_back_closes_the_window() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        assert!(push_all(&mut w, [block(1000, 300), block(0, 300)]).is_empty());
        assert_eq!(w.stats().windows_closed, 1);
    }

    #[test]
    fn lead_off_fraction_counts_flagged_frames() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        // Lead II is flagged off in blocks 1 and 3 of five 100-frame blocks.
        let blocks = (0..5).map(|i| {
            let mut b = block(i * 100, 100);
            b.lead_off = vec![false, i % 2 == 1];
            b
        });
        let windows = push_all(&mut w, blocks);
        let win = &windows[0];
        assert_eq!(win.lead_off_fraction[0], 0.0);
        assert!(
            (win.lead_off_fraction[1] - 0.4).abs() < 1e-12,
            "{:?}",
            win.lead_off_fraction
        );
    }

    #[test]
    fn zero_phase_windows_carry_no_causal_output() {
        let spec = FilterSpec {
            zero_phase: true,
            ..FilterSpec::default()
        };
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &spec).unwrap();
        let windows = push_all(&mut w, [block(0, 500)]);
        assert!(windows[0].filtered.is_none());
    }

    #[test]
    fn device_times_that_overflow_are_errors_not_panics_or_wraps() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        // 100 frames of 2 ms from 1 ms before the end of the u64 clock.
        let mut b = block(0, 100);
        b.device_time_ns = u64::MAX - 1_000_000;
        let e = w.push(&b).unwrap_err();
        assert!(
            matches!(
                e,
                WindowError::DeviceTime {
                    sequence: 0,
                    frames: 100,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("device_time_ns"), "{e}");
        // One frame still fits exactly at the end of the clock: its window ends at u64::MAX.
        let mut w =
            Windower::new(&leads(), FS, timing(0.002, 0.002), &FilterSpec::default()).unwrap();
        let mut last = block(0, 1);
        last.device_time_ns = u64::MAX - PERIOD_NS;
        let windows = w.push(&last).unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].end_device_time_ns, u64::MAX);
        // The refused block changed nothing: the stream goes on from where it was.
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        assert!(push_all(&mut w, [block(0, 300)]).is_empty());
        assert!(w.push(&b).is_err());
        let windows = push_all(&mut w, [block(300, 200)]);
        assert_eq!(windows.len(), 1);
        assert!(windows[0].gaps.is_empty());
        assert_eq!(w.stats().windows_closed, 0);
    }

    #[test]
    fn a_non_finite_sample_spoils_its_window_only() {
        let spec = FilterSpec::default();
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &spec).unwrap();
        let mut clean = Windower::new(&leads(), FS, timing(1.0, 1.0), &spec).unwrap();
        let blocks: Vec<SampleBlock> = (0..30).map(|i| block(i * 100, 100)).collect();
        let mut hostile = blocks.clone();
        hostile[1].samples_uv[2 * 10] = f32::NAN; // lead I, frame 110
        let bad = push_all(&mut w, hostile);
        let good = push_all(&mut clean, blocks);
        assert_eq!((bad.len(), good.len()), (6, 6));
        let lead_i_finite = |win: &Window| {
            win.filtered
                .as_ref()
                .unwrap()
                .samples_uv
                .row(0)
                .iter()
                .all(|v| v.is_finite())
        };
        assert!(!lead_i_finite(&bad[0]));
        for k in 1..6 {
            assert!(lead_i_finite(&bad[k]), "window {k}");
            let filtered = |win: &Window| win.filtered.as_ref().unwrap().samples_uv.clone();
            // Lead II never saw the NaN; lead I re-settled and has caught up by window 3.
            assert_eq!(filtered(&bad[k]).row(1), filtered(&good[k]).row(1));
            if k >= 3 {
                let diff = (&filtered(&bad[k]).row(0) - &filtered(&good[k]).row(0))
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(diff < 1.0, "window {k}: lead I off by {diff} uV");
            }
        }
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut w = Windower::new(&leads(), FS, timing(1.0, 1.0), &FilterSpec::default()).unwrap();
        let mut b = block(0, 10);
        b.samples_uv.pop();
        assert!(matches!(w.push(&b), Err(WindowError::Shape { .. })));
        let mut b = block(0, 10);
        b.sample_rate_hz = 250.0;
        assert!(matches!(w.push(&b), Err(WindowError::Rate { .. })));
        let mut b = block(0, 10);
        b.leads = LeadSet(vec![Lead::I]);
        assert!(matches!(w.push(&b), Err(WindowError::Leads { .. })));
        assert!(Windower::new(&leads(), FS, timing(1.0, 2.0), &FilterSpec::default()).is_err());
    }
}
