//! Times the filter chain on the benchmark signal and exports everything scipy needs to run
//! `sosfilt` on the same coefficients and data (`scripts/bench_dsp_scipy.py` drives it).
//!
//! ```text
//! cargo run --release --example dsp_sosfilt_bench -- OUT_DIR
//! ```
//!
//! For each filter configuration it writes `OUT_DIR/<name>.sos.json` (scipy `sos` rows),
//! `OUT_DIR/input.f64` (leads x samples, little-endian f64, the exact f32 input values) and
//! `OUT_DIR/<name>.rust.f64` (the streaming output), and prints one JSON line with the timing.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use meit::dsp::filter::{FilterChain, FilterSpec};

#[path = "../benches/support/signal.rs"]
mod signal;

/// The two deployments the issue names.
fn configurations() -> [(&'static str, FilterSpec); 2] {
    let monitoring = FilterSpec {
        highpass_hz: 0.5,
        notch_hz: 50.0,
        notch_harmonics: false,
        notch_q: FilterSpec::DEFAULT_NOTCH_Q,
        lowpass_hz: 40.0,
        order: 2,
        zero_phase: false,
    };
    let diagnostic = FilterSpec {
        highpass_hz: 0.05,
        notch_harmonics: true,
        lowpass_hz: 150.0,
        order: 4,
        ..monitoring.clone()
    };
    [("monitoring", monitoring), ("diagnostic", diagnostic)]
}

/// Nanoseconds per sample per lead of one streaming pass over `input` (copy included), as
/// (best, median) over `rounds` rounds of `reps` passes.
fn time_streaming(spec: &FilterSpec, input: &[f32], rounds: usize, reps: usize) -> (f64, f64) {
    let mut chain = FilterChain::new(spec, signal::RATE_HZ, signal::LEADS).expect("filter design");
    let mut work = input.to_vec();
    let mut per_round = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..reps {
            work.copy_from_slice(input);
            chain.process_block(&mut work).expect("whole frames");
            std::hint::black_box(&work);
        }
        let ns = start.elapsed().as_nanos() as f64;
        per_round.push(ns / (reps * input.len()) as f64);
    }
    per_round.sort_by(f64::total_cmp);
    (per_round[0], per_round[rounds / 2])
}

fn write_f64(path: &PathBuf, leads_major: impl Iterator<Item = f64>) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in leads_major {
        file.write_all(&v.to_le_bytes())?;
    }
    file.flush()
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "out/dsp-bench".into()),
    );
    std::fs::create_dir_all(&out)?;
    let input = signal::interleaved();
    let (n, frames) = (signal::LEADS, signal::FRAMES);
    let leads_major = |data: &[f32]| -> Vec<f64> {
        (0..n)
            .flat_map(|l| (0..frames).map(move |t| (l, t)))
            .map(|(l, t)| f64::from(data[t * n + l]))
            .collect()
    };
    write_f64(&out.join("input.f64"), leads_major(&input).into_iter())?;
    for (name, spec) in configurations() {
        let mut chain = FilterChain::new(&spec, signal::RATE_HZ, n).expect("filter design");
        let mut filtered = input.clone();
        chain.process_block(&mut filtered).expect("whole frames");
        write_f64(
            &out.join(format!("{name}.rust.f64")),
            leads_major(&filtered).into_iter(),
        )?;
        let sos = chain.design().sos();
        std::fs::write(
            out.join(format!("{name}.sos.json")),
            serde_json::to_string(&sos)?,
        )?;
        let (best, median) = time_streaming(&spec, &input, 15, 40);
        let realtime = 1e9 / (best * n as f64 * signal::RATE_HZ);
        println!(
            "{}",
            serde_json::json!({
                "config": name,
                "spec": spec,
                "sections": sos.len(),
                "leads": n,
                "samples_per_lead": frames,
                "ns_per_sample_per_lead_best": best,
                "ns_per_sample_per_lead_median": median,
                "realtime_factor_12_leads_500hz": realtime,
            })
        );
    }
    Ok(())
}
