//! Is sinus arrhythmia in the synthetic test records readable from beat timing at all? The
//! question behind issue #17's weakest code: every model here confuses sinus arrhythmia (SARRH)
//! with sinus rhythm (SR). For each held-out test record whose rhythm is one of the two (and
//! without premature beats, which make any rhythm's intervals uneven), the shared
//! preprocessing's R-R interval statistics (`meit::dsp::rhythm::RhythmFeatures`: the daemon's
//! beat analysis on the filtered recording at the device rate, exactly what an encoder with
//! `rhythm_features` reads) are measured; this prints how well two of them separate the classes:
//! the coefficient of variation (std / mean, slow respiratory modulation) and the RMSSD / mean
//! (beat-to-beat). Figures: the area under the ROC curve and the best
//! balanced accuracy of one threshold, on the test records as drawn (12 leads, a share with
//! artefacts) and on the same draws without artefacts (`noisy_fraction` 0).
//!
//! ```text
//! cargo run --release -p meit-models --example rhythm_separability -- --model models/trained/tiny [--records 3000]
//! ```

use std::path::PathBuf;

use meit::dsp::Preprocessor;
use meit_models::data::{RunData, Split};
use meit_models::train::config::RunConfig;

/// One record's rhythm class and timing statistics.
struct Timing {
    sinus_arrhythmia: bool,
    cv: f32,
    rmssd: f32,
}

/// Command-line options.
#[derive(clap::Parser)]
struct Args {
    /// A trained model directory: its run.toml names the synthetic data.
    #[arg(long)]
    model: PathBuf,
    /// Test records to read (those of other rhythms are skipped).
    #[arg(long, default_value_t = 3000)]
    records: u64,
}

fn main() -> anyhow::Result<()> {
    let Args { model, records } = clap::Parser::parse();
    let config = RunConfig::from_toml(&std::fs::read_to_string(model.join("run.toml"))?)?;
    let mut clean = config.data.clone();
    let synth = clean
        .synth
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the model was not trained on synthetic data"))?;
    synth.noisy_fraction = 0.0;
    println!("# Is sinus arrhythmia readable from beat timing?\n");
    println!(
        "Written by `cargo run --release -p meit-models --example rhythm_separability -- --model {} \
         --records {records}` (do not edit by hand): the first {records} held-out synthetic test \
         records of that model's data, those whose rhythm is sinus rhythm (SR) or sinus \
         arrhythmia (SARRH) and without premature beats; the R-R interval statistics of the \
         shared preprocessing (`meit::dsp::rhythm::RhythmFeatures`, the daemon's beat analysis \
         on the filtered recording at the device rate: what an encoder with `rhythm_features` \
         reads); one threshold on one statistic (SARRH when above).\n",
        model.display()
    );
    println!(
        "| test records | statistic | SR / SARRH | AUC | best balanced accuracy (recall per class) | threshold |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut spec = config.preprocess.clone();
    spec.rhythm_features = true;
    let preprocessor = Preprocessor::new(spec)?;
    for (subset, data_config) in [("as drawn", &config.data), ("no artefacts", &clean)] {
        let timings = timings(&RunData::open(data_config)?, &preprocessor, records)?;
        for (name, stat) in [
            ("R-R std / mean", (|t: &Timing| t.cv) as fn(&Timing) -> f32),
            ("RMSSD / mean", |t: &Timing| t.rmssd),
        ] {
            let scored: Vec<(f32, bool)> = timings
                .iter()
                .map(|t| (stat(t), t.sinus_arrhythmia))
                .filter(|(s, _)| s.is_finite())
                .collect();
            let positives = scored.iter().filter(|s| s.1).count();
            let (auc, (accuracy, threshold, tpr, tnr)) = separability(&scored);
            println!(
                "| {subset} | {name} | {} / {positives} | {auc:.3} | {accuracy:.3} (SARRH {tpr:.3}, SR {tnr:.3}) | {threshold:.4} |",
                scored.len() - positives
            );
        }
    }
    Ok(())
}

/// The timing statistics of the first `records` test records whose rhythm is SR or SARRH
/// (records the beat analysis cannot read, or with fewer than 3 intervals, are left out).
fn timings(
    data: &RunData,
    preprocessor: &Preprocessor,
    records: u64,
) -> anyhow::Result<Vec<Timing>> {
    let mut timings = Vec::new();
    for index in 0..records {
        let record = data.record(Split::Test, index)?;
        let has = |code: &str| record.codes.iter().any(|c| c == code);
        let sinus_arrhythmia = has("SARRH");
        // Premature beats make any rhythm's intervals uneven: left out of both classes.
        if !(sinus_arrhythmia || has("SR")) || has("PAC") || has("PVC") {
            continue;
        }
        let Some(rhythm) = preprocessor.process_recording(&record.recording)?.rhythm else {
            continue;
        };
        if !rhythm.measured {
            continue;
        }
        timings.push(Timing {
            sinus_arrhythmia,
            cv: rhythm.interval_variation,
            rmssd: rhythm.successive_variation,
        });
    }
    Ok(timings)
}

/// AUC (the probability a random positive scores above a random negative, ties half) and the
/// best balanced accuracy of "positive when score > threshold", with that threshold and its
/// true-positive and true-negative rates.
fn separability(scored: &[(f32, bool)]) -> (f64, (f64, f32, f64, f64)) {
    let positives: Vec<f32> = scored.iter().filter(|s| s.1).map(|s| s.0).collect();
    let negatives: Vec<f32> = scored.iter().filter(|s| !s.1).map(|s| s.0).collect();
    if positives.is_empty() || negatives.is_empty() {
        return (f64::NAN, (f64::NAN, f32::NAN, f64::NAN, f64::NAN));
    }
    let mut wins = 0.0;
    for p in &positives {
        for n in &negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (positives.len() * negatives.len()) as f64;
    let mut best = (0.0, f32::NAN, 0.0, 0.0);
    for &(threshold, _) in scored {
        let tpr =
            positives.iter().filter(|&&p| p > threshold).count() as f64 / positives.len() as f64;
        let tnr =
            negatives.iter().filter(|&&n| n <= threshold).count() as f64 / negatives.len() as f64;
        if (tpr + tnr) / 2.0 > best.0 {
            best = ((tpr + tnr) / 2.0, threshold, tpr, tnr);
        }
    }
    (auc, best)
}
