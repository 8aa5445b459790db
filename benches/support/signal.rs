//! The benchmark signal shared by `benches/dsp.rs` and `examples/dsp_sosfilt_bench.rs`:
//! 12 leads of a deterministic ECG-like waveform with an electrode offset, respiration,
//! 50 Hz hum and pseudo-random noise, in microvolts.

/// Leads in the benchmark signal.
pub const LEADS: usize = 12;
/// Sample rate of the benchmark signal.
pub const RATE_HZ: f64 = 500.0;
/// Frames in the benchmark signal (10 s).
pub const FRAMES: usize = 5000;

/// Interleaved frames (`FRAMES x LEADS`), the layout a device block has.
pub fn interleaved() -> Vec<f32> {
    let mut out = Vec::with_capacity(FRAMES * LEADS);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for t in 0..FRAMES {
        let time = t as f64 / RATE_HZ;
        let phase = (time * 1.2).fract();
        let qrs = if phase < 0.04 { 1200.0 } else { 0.0 };
        let tw = 250.0 * (-((phase - 0.3) / 0.05).powi(2)).exp();
        for lead in 0..LEADS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let v = 10_000.0 * lead as f64 - 40_000.0
                + (0.5 + 0.1 * lead as f64) * (qrs + tw)
                + 300.0 * (2.0 * std::f64::consts::PI * 0.25 * time).sin()
                + 100.0 * (2.0 * std::f64::consts::PI * 50.0 * time).sin()
                + 40.0 * noise;
            out.push(v as f32);
        }
    }
    out
}
