//! Property tests of the streaming path: whatever the block sizes, gaps, flags, non-finite
//! samples and device times a device sends, the windower never panics, every window has the
//! configured length and honest timestamps, and the causal filter equals the batch filter of
//! the same samples.

use meit::dsp::filter::{FilterChain, FilterSpec, filter_recording};
use meit::dsp::window::{WindowTiming, Windower};
use meit::ecg::{Lead, LeadSet, Recording, SampleBlock};
use ndarray::Array2;
use proptest::prelude::*;

const FS: f64 = 250.0;
const PERIOD_NS: u64 = 4_000_000;

fn leads() -> LeadSet {
    LeadSet(vec![Lead::I, Lead::II, Lead::V1])
}

fn sample(t: u64, lead: usize) -> f32 {
    ((t * 37 + lead as u64 * 101) % 997) as f32 * 3.0 - 1500.0 + 20_000.0 * lead as f32
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn streaming_filter_equals_batch_for_any_block_split(
        splits in prop::collection::vec(1usize..300, 1..20),
        zero_dc in any::<bool>(),
    ) {
        let n = 3;
        let frames: usize = splits.iter().sum();
        let offset = if zero_dc { 0.0 } else { 1.0 };
        let data = Array2::from_shape_fn((n, frames), |(l, t)| sample(t as u64, l) * offset + (t % 50) as f32);
        let rec = Recording { sample_rate_hz: FS, leads: leads(), samples_uv: data.clone() };
        let spec = FilterSpec { highpass_hz: 0.05, lowpass_hz: 100.0, order: 4, ..FilterSpec::default() };
        let batch = filter_recording(&spec, &rec).unwrap();
        let mut chain = FilterChain::new(&spec, FS, n).unwrap();
        let mut interleaved: Vec<f32> = data.t().iter().copied().collect();
        let mut start = 0;
        for len in splits {
            chain.process_block(&mut interleaved[start * n..(start + len) * n]).unwrap();
            start += len;
        }
        let streamed = Array2::from_shape_vec((frames, n), interleaved).unwrap().reversed_axes();
        prop_assert_eq!(streamed, batch.samples_uv);
    }

    #[test]
    fn non_finite_samples_pass_through_alone_and_streaming_still_equals_batch(
        splits in prop::collection::vec(1usize..300, 1..12),
        bad in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3, 0u8..3), 0..6),
    ) {
        let n = 3;
        let frames: usize = splits.iter().sum();
        let mut data = Array2::from_shape_fn((n, frames), |(l, t)| sample(t as u64, l));
        for (at, lead, kind) in &bad {
            data[[*lead, at.index(frames)]] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][*kind as usize];
        }
        let rec = Recording { sample_rate_hz: FS, leads: leads(), samples_uv: data.clone() };
        let spec = FilterSpec { highpass_hz: 0.5, lowpass_hz: 40.0, notch_hz: 50.0, order: 4, ..FilterSpec::default() };
        let batch = filter_recording(&spec, &rec).unwrap();
        // Exactly the non-finite inputs come out non-finite, unchanged.
        for (x, y) in data.iter().zip(batch.samples_uv.iter()) {
            prop_assert_eq!(x.is_finite(), y.is_finite());
            if !x.is_finite() {
                prop_assert_eq!(x.to_bits(), y.to_bits());
            }
        }
        let mut chain = FilterChain::new(&spec, FS, n).unwrap();
        let mut interleaved: Vec<f32> = data.t().iter().copied().collect();
        let mut start = 0;
        for len in splits {
            chain.process_block(&mut interleaved[start * n..(start + len) * n]).unwrap();
            start += len;
        }
        let streamed = Array2::from_shape_vec((frames, n), interleaved).unwrap().reversed_axes();
        let same = streamed.iter().zip(batch.samples_uv.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
        prop_assert!(same);
    }

    #[test]
    fn extreme_device_times_are_errors_or_windows_never_panics(
        starts in prop::collection::vec(prop_oneof![any::<u64>(), (u64::MAX - 10_000_000)..=u64::MAX], 1..20),
        frames in 1u64..200,
    ) {
        let timing = WindowTiming { window_seconds: 0.2, hop_seconds: 0.2, max_gap_seconds: 0.1 };
        let mut windower = Windower::new(&leads(), FS, timing, &FilterSpec::default()).unwrap();
        for (seq, start) in starts.into_iter().enumerate() {
            let block = SampleBlock {
                sequence: seq as u64,
                device_time_ns: start,
                sample_rate_hz: FS,
                leads: leads(),
                samples_uv: (0..frames).flat_map(|f| (0..3).map(move |l| sample(f, l))).collect(),
                lead_off: vec![false; 3],
            };
            let fits = start.checked_add(frames * PERIOD_NS).is_some();
            match windower.push(&block) {
                Ok(windows) => {
                    prop_assert!(fits);
                    for w in windows {
                        prop_assert!(w.end_device_time_ns >= w.start_device_time_ns);
                    }
                }
                Err(e) => {
                    prop_assert!(!fits, "{}", e);
                    prop_assert!(e.to_string().contains("device_time_ns"));
                }
            }
        }
    }

    #[test]
    fn windows_keep_their_length_and_timestamps_whatever_the_stream(
        blocks in prop::collection::vec((1u64..120, 0u64..60, any::<bool>(), any::<bool>()), 1..60),
    ) {
        let timing = WindowTiming { window_seconds: 1.0, hop_seconds: 0.5, max_gap_seconds: 0.1 };
        let mut windower = Windower::new(&leads(), FS, timing, &FilterSpec::default()).unwrap();
        let mut t = 0u64;
        for (seq, (frames, gap, back, off)) in blocks.into_iter().enumerate() {
            // Occasionally the clock jumps back; otherwise a gap of `gap` frames (0 = none).
            t = if back && t > 500 { t - 500 } else { t + gap };
            let block = SampleBlock {
                sequence: seq as u64,
                device_time_ns: 1_000_000_000 + t * PERIOD_NS,
                sample_rate_hz: FS,
                leads: leads(),
                samples_uv: (t..t + frames).flat_map(|f| (0..3).map(move |l| sample(f, l))).collect(),
                lead_off: vec![off, false, false],
            };
            t += frames;
            for window in windower.push(&block).unwrap() {
                prop_assert_eq!(window.raw.len(), 250);
                prop_assert_eq!(window.filtered.as_ref().map(Recording::len), Some(250));
                prop_assert_eq!(window.end_device_time_ns - window.start_device_time_ns, 250 * PERIOD_NS);
                prop_assert!(window.interpolated_fraction() <= 1.0);
                for gap in &window.gaps {
                    prop_assert!(gap.frames <= 25 && gap.start_frame + gap.frames <= 250);
                }
                prop_assert!(window.lead_off_fraction.iter().all(|f| (0.0..=1.0).contains(f)));
                prop_assert!(window.filtered.as_ref().unwrap().samples_uv.iter().all(|v| v.is_finite()));
            }
        }
    }
}
