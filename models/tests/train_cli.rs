//! End-to-end tests of `meit-models train`, `generate` and `eval` on a run small enough for CI:
//! the tiny config with a few dozen synthetic records.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Tensor;
use meit::ecg::{Lead, LeadSet, Recording};
use meit::wfdb::{SignalFormat, WriteOptions};

fn meit_models(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meit-models"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the meit-models binary runs")
}

/// `meit-models train --config CONFIG --out OUT --quiet` and `extra` flags.
fn train_run(config: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.to_string_lossy();
    let mut args = vec!["train", "--config", config, "--out", &out, "--quiet"];
    args.extend_from_slice(extra);
    meit_models(&args)
}

/// `meit-models train --config CONFIG --out OUT --quiet`: its JSON summary.
fn train_quiet(config: &str, out: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let summary = ok(&train_run(config, out, &[]));
    Ok(serde_json::from_str(&summary)?)
}

fn ok(run: &Output) -> String {
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status.code(),
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// The tiny config's text with each `key = value` line of `values` set (every line with that
/// key, in any section), so the test follows the config when its figures change.
fn with_values(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match values.iter().find(|(k, _)| *k == key && line.contains('=')) {
            Some((k, v)) => out.push_str(&format!("{k} = {v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (k, _) in values {
        assert!(
            text.lines()
                .any(|l| l.split('=').next().unwrap_or("").trim() == *k),
            "tiny.toml no longer has `{k}`"
        );
    }
    out
}

/// The tiny config shrunk to 24 training records, 6 steps of 4, checkpoints every 2 steps, an
/// encoder warm-up of two steps; `edit` changes its text further.
fn small_config_with(
    dir: &Path,
    edit: impl Fn(String) -> String,
) -> Result<String, Box<dyn std::error::Error>> {
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml"))?;
    let text = with_values(
        &tiny,
        &[
            ("train_records", "24"),
            ("validation_records", "4"),
            ("test_records", "4"),
            ("tokenizer_records", "24"),
            ("batch_size", "4"),
            ("epochs", "1"),
            ("records", "8"),
            ("checkpoint_every", "2"),
            ("validate_every", "2"),
        ],
    );
    let path = dir.join("small.toml");
    std::fs::write(&path, edit(text))?;
    Ok(path.to_string_lossy().into_owned())
}

fn small_config(dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    small_config_with(dir, |text| text)
}

/// The `[data.synth]` table of `text` replaced by `source`.
fn replace_synth_source(text: &str, source: &str) -> String {
    let start = text
        .find("[data.synth]")
        .expect("tiny.toml has [data.synth]");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i + 1);
    format!("{}{source}\n\n{}", &text[..start], &text[end..])
}

#[test]
fn trains_from_a_ptbxl_tree_on_disk_and_refuses_a_run_larger_than_the_tree()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let tree = dir.path().join("ptbxl");
    meit::synth::dataset::write_dataset(
        &tree,
        &meit::synth::dataset::DatasetSpec {
            n: 80,
            style: meit::synth::dataset::DatasetStyle::Ptbxl,
            seed: 5,
            max_noise: 0.2,
        },
        |_| {},
    )?;
    let source = format!(
        "[data.ptbxl]\nroot = {:?}\nresolution = \"hz500\"",
        tree.to_string_lossy()
    );
    let config = small_config_with(dir.path(), |text| replace_synth_source(&text, &source))?;
    let model = dir.path().join("model");
    let summary = train_quiet(&config, &model)?;
    assert_eq!(summary["steps"], 6);
    assert!(model.join("model.safetensors").is_file());
    let metrics = std::fs::read_to_string(model.join("metrics.jsonl"))?;
    assert!(
        metrics.lines().any(|l| l.contains("validation_loss")),
        "validated on the tree's fold 9: {metrics}"
    );

    let too_many = small_config_with(dir.path(), |text| {
        with_values(
            &replace_synth_source(&text, &source),
            &[("train_records", "500")],
        )
    })?;
    let run = meit_models(&[
        "train",
        "--config",
        &too_many,
        "--out",
        &model.to_string_lossy(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the Train split has") && stderr.contains("asks for 500"),
        "{stderr}"
    );

    let two = small_config_with(dir.path(), |text| format!("{text}\n{source}\n"))?;
    assert_check_config_refuses(&two, "name exactly one source");
    Ok(())
}

#[test]
fn a_resumed_run_ends_with_the_same_weights_as_a_straight_one()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = small_config(dir.path())?;
    let straight = dir.path().join("straight");
    let summary = train_quiet(&config, &straight)?;
    assert_eq!(summary["steps"], 6);
    for file in [
        "run.toml",
        "tokenizer.json",
        "model.safetensors",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(straight.join(file).is_file(), "{file} missing");
    }
    let png = std::fs::read(straight.join("loss.png"))?;
    assert_eq!(&png[1..4], b"PNG");
    assert_resumed_runs_end_as_the_straight_one(dir.path(), &config, &straight)
}

#[test]
fn a_lora_run_with_dropout_resumes_exactly() -> Result<(), Box<dyn std::error::Error>> {
    // Adapter dropout draws a mask per step: a resumed run must draw the straight run's masks
    // (mask streams keyed by layer name and count, the counts in the checkpoint).
    let dir = tempfile::tempdir()?;
    let config = small_config_with(dir.path(), |text| {
        format!(
            "{text}\n[model.lora]\nrank = 4\nalpha = 8.0\ndropout = 0.3\ntargets = [\"q\", \"v\", \"down\"]\n"
        )
    })?;
    let straight = dir.path().join("straight");
    train_quiet(&config, &straight)?;
    let checkpoint = std::fs::read_to_string(straight.join("checkpoint/trainer.json"))?;
    assert!(
        checkpoint.contains("lora_dropout"),
        "dropout counts not saved: {checkpoint}"
    );
    assert_resumed_runs_end_as_the_straight_one(dir.path(), &config, &straight)
}

/// Runs of `config` stopped after 4 steps, right after the encoder warm-up (0 steps: a checkpoint
/// at step 0 exists and the resumed run skips the warm-up), and killed after logging steps 3-4
/// but before their checkpoint (the step-2 checkpoint put back): each, resumed, ends with the
/// weights of the straight run in `straight` and logs each step once.
fn assert_resumed_runs_end_as_the_straight_one(
    dir: &Path,
    config: &str,
    straight: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    for stop_after in ["4", "0", "killed"] {
        let split = dir.join(format!("split-{stop_after}"));
        let split_s = split.to_string_lossy();
        let first = ["train", "--config", config, "--out", &split_s, "--quiet"];
        if stop_after == "killed" {
            ok(&meit_models(&[&first[..], &["--max-steps", "2"]].concat()));
            let saved = dir.join("saved-checkpoint");
            std::fs::rename(split.join("checkpoint"), &saved)?;
            std::fs::create_dir(split.join("checkpoint"))?;
            for file in std::fs::read_dir(&saved)? {
                let file = file?;
                std::fs::copy(file.path(), split.join("checkpoint").join(file.file_name()))?;
            }
            ok(&meit_models(
                &[&first[..], &["--resume", "--max-steps", "4"]].concat(),
            ));
            std::fs::remove_dir_all(split.join("checkpoint"))?;
            std::fs::rename(&saved, split.join("checkpoint"))?;
        } else {
            ok(&meit_models(
                &[&first[..], &["--max-steps", stop_after]].concat(),
            ));
        }
        assert!(
            split.join("checkpoint/model.safetensors").is_file(),
            "no checkpoint after {stop_after} steps"
        );
        ok(&meit_models(&[&first[..], &["--resume"]].concat()));
        let metrics = std::fs::read_to_string(split.join("metrics.jsonl"))?;
        assert_eq!(metrics.matches("\"warmup_steps\"").count(), 1, "{metrics}");
        for step in 1..=6 {
            let lines = metrics
                .lines()
                .filter(|l| l.starts_with(&format!("{{\"step\":{step},\"epoch\"")))
                .count();
            assert_eq!(
                lines, 1,
                "step {step} logged {lines} times ({stop_after}):\n{metrics}"
            );
        }
        assert_eq!(
            std::fs::read(straight.join("model.safetensors"))?,
            std::fs::read(split.join("model.safetensors"))?,
            "resuming ({stop_after}) changed the result"
        );
    }
    Ok(())
}

/// `text` without its `[train.encoder_warmup]` table and with `[train] init_from = dir`.
fn continued_from(text: &str, dir: &Path) -> String {
    let start = text
        .find("[train.encoder_warmup]")
        .expect("tiny.toml has an encoder warm-up");
    let end = start + text[start + 1..].find("\n[").expect("a table follows") + 2;
    let text = format!("{}{}", &text[..start], &text[end..]);
    text.replacen(
        "[train]\n",
        &format!("[train]\ninit_from = {:?}\n", dir.to_string_lossy()),
        1,
    )
}

/// A small model trained into `DIR/trained` of a fresh temporary directory.
fn trained_small_model()
-> Result<(tempfile::TempDir, std::path::PathBuf), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let trained = dir.path().join("trained");
    train_quiet(&small_config(dir.path())?, &trained)?;
    Ok((dir, trained))
}

/// The largest absolute element of `t`.
fn max_abs(t: &candle_core::Tensor) -> candle_core::Result<f32> {
    t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// `meit-models check-config CONFIG` fails with a message containing `needle`.
fn assert_check_config_refuses(config: &str, needle: &str) {
    let run = meit_models(&["check-config", config]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(needle), "{stderr}");
}

/// `meit-models train --config CONFIG --out OUT --quiet --max-steps 1`, which must succeed.
fn train_one_step(config: &str, out: &Path) {
    ok(&train_run(config, out, &["--max-steps", "1"]));
}

/// Every tensor of a trained model directory's `model.safetensors`, by name.
fn weights_of(
    dir: &Path,
) -> candle_core::Result<std::collections::HashMap<String, candle_core::Tensor>> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
}

/// `meit-models train --config CONFIG --out OUT` fails, naming `init_from` and `[model]`.
fn assert_init_from_refuses_the_model(config: &str, out: &Path) {
    let run = train_run(config, out, &[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("init_from") && stderr.contains("[model]"),
        "{stderr}"
    );
}

/// `encoder_from`: a model with another decoder (wider MLP) starts its encoder trunk and the
/// projection's first layer from a trained model, and nothing else; another trunk is refused,
/// and so is `encoder_from` beside `init_from`.
#[test]
fn encoder_from_reuses_a_trained_encoder_trunk_under_another_decoder()
-> Result<(), Box<dyn std::error::Error>> {
    let (dir, trained) = trained_small_model()?;
    let encoder_from = |text: &str, values: &[(&str, &str)]| {
        with_values(text, values).replacen(
            "[train]\n",
            &format!("[train]\nencoder_from = {:?}\n", trained.to_string_lossy()),
            1,
        )
    };
    let config = small_config_with(dir.path(), |text| {
        encoder_from(
            &text,
            &[("learning_rate", "1e-12"), ("intermediate_size", "352")],
        )
    })?;
    // Every `learning_rate` line is set, the encoder warm-up's too: nothing trained moves.
    let other = dir.path().join("other-decoder");
    train_one_step(&config, &other);
    let (before, after) = (weights_of(&trained)?, weights_of(&other)?);
    let mut carried = 0;
    for (name, a) in &before {
        let Some(b) = after.get(name) else { continue };
        let trunk = [
            "encoder.stem.",
            "encoder.stages.",
            "encoder.projection.hidden",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if trunk {
            if !name.contains("running_") {
                assert!(max_abs(&(a - b)?)? < 1e-6, "{name} was not carried over");
                carried += 1;
            }
        } else if a.dims() == b.dims() && !name.contains("running_") {
            assert!(
                max_abs(&(a - b)?)? > 1e-6,
                "{name} came from the trained model"
            );
        }
    }
    assert!(carried >= 10, "{carried} encoder tensors carried");

    // Another trunk width: refused, naming encoder_from.
    let wider = small_config_with(dir.path(), |text| {
        encoder_from(&text, &[("base_width", "12")])
    })?;
    let run = train_run(&wider, &dir.path().join("wider"), &[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("encoder_from") && stderr.contains("trunk"),
        "{stderr}"
    );
    // Beside init_from: refused when the config is read.
    let both = small_config_with(dir.path(), |text| {
        encoder_from(&continued_from(&text, &trained), &[])
    })?;
    assert_check_config_refuses(&both, "remove encoder_from or init_from");
    Ok(())
}

/// Asserts every trained tensor of `before` is in `after` and where it was (to 1e-6), but
/// `except` and the BatchNorm running statistics (they move with the batch, not the learning
/// rate); more than 20 tensors must have been compared.
fn assert_unmoved_but(
    before: &std::collections::HashMap<String, Tensor>,
    after: &std::collections::HashMap<String, Tensor>,
    except: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut compared = 0;
    for (name, a) in before {
        if name.contains("running_") || Some(name.as_str()) == except {
            continue;
        }
        let b = after.get(name).ok_or_else(|| format!("{name} missing"))?;
        let diff = max_abs(&(a - b)?)?;
        assert!(diff < 1e-6, "{name} moved by {diff}");
        compared += 1;
    }
    assert!(compared > 20, "{compared} tensors compared");
    Ok(())
}

/// The small trained model continued one step at a vanishing learning rate with `added` (lines
/// for `[model.encoder]`): checks that every weight but the projection's first is where it was
/// and returns (tempdir, continued model, the projection's first weight before and after).
#[allow(clippy::type_complexity)]
fn continued_with_encoder_lines(
    added: &str,
) -> Result<(tempfile::TempDir, PathBuf, Tensor, Tensor), Box<dyn std::error::Error>> {
    let (dir, trained) = trained_small_model()?;
    let config = small_config_with(dir.path(), |text| {
        assert!(text.contains("[model.encoder]\n"));
        with_values(
            &continued_from(&text, &trained),
            &[("learning_rate", "1e-12")],
        )
        .replacen("[model.encoder]\n", &format!("[model.encoder]\n{added}"), 1)
    })?;
    let continued = dir.path().join("continued");
    train_one_step(&config, &continued);
    let (before, after) = (weights_of(&trained)?, weights_of(&continued)?);
    let projection = "encoder.projection.hidden.weight";
    assert_unmoved_but(&before, &after, Some(projection))?;
    let (a, b) = (before[projection].clone(), after[projection].clone());
    Ok((dir, continued, a, b))
}

/// `[model.encoder] lead_presence = true` on a model trained without it: the continued run
/// starts from the trained weights with one zero column per lead added to the projection's
/// first weight (so it starts from the trained model's function); the other direction is refused.
#[test]
fn init_from_adds_lead_presence_flags_as_zero_columns_of_the_projection()
-> Result<(), Box<dyn std::error::Error>> {
    let (dir, continued, a, b) = continued_with_encoder_lines("lead_presence = true\n")?;
    let (rows, cols) = a.dims2()?;
    assert_eq!(b.dims(), &[rows, cols + 12], "one column per lead");
    assert!(max_abs(&(&a - b.narrow(1, 0, cols)?)?)? < 1e-6);
    assert!(
        max_abs(&b.narrow(1, cols, 12)?)? < 1e-6,
        "new columns start at zero"
    );

    // Flags off again on a model that has them: refused.
    let back = small_config_with(dir.path(), |text| continued_from(&text, &continued))?;
    assert_init_from_refuses_the_model(&back, &dir.path().join("back"));
    Ok(())
}

/// `rhythm_features = true` on a trained model, with the warm-up scoped to the new inputs
/// (`scope = "rhythm_inputs"`): the projection's four new columns are fitted by the sentence
/// read-out and nothing else the trained model had moves (the instruction step runs at a
/// vanishing rate); the scope on an encoder without the statistics is refused, and so is an
/// unscoped warm-up beside `init_from`.
#[test]
fn a_rhythm_scoped_warm_up_fits_only_the_new_columns_of_a_continued_model()
-> Result<(), Box<dyn std::error::Error>> {
    let (dir, trained) = trained_small_model()?;
    let warmup = "[train.encoder_warmup]\nrecords = 16\nbatch_size = 4\nlearning_rate = 1e-2\n";
    let with_warmup = |text: &str, scope: &str| {
        let text = with_values(
            &continued_from(text, &trained),
            &[("learning_rate", "1e-12")],
        );
        text.replacen(
            "[model.encoder]\n",
            &format!("{warmup}{scope}\n[model.encoder]\n"),
            1,
        )
    };
    let rhythm = |text: String| {
        assert!(text.contains("[model.encoder]\n") && text.contains("[preprocess]\n"));
        text.replacen(
            "[model.encoder]\n",
            "[model.encoder]\nrhythm_features = true\n",
            1,
        )
        .replacen(
            "[preprocess]\n",
            "[preprocess]\nrhythm_features = true\n",
            1,
        )
    };
    let config = small_config_with(dir.path(), |text| {
        rhythm(with_warmup(&text, "scope = \"rhythm_inputs\"\n"))
    })?;
    let continued = dir.path().join("continued");
    train_one_step(&config, &continued);
    let (before, after) = (weights_of(&trained)?, weights_of(&continued)?);
    let projection = "encoder.projection.hidden.weight";
    assert_unmoved_but(&before, &after, Some(projection))?;
    let (a, b) = (&before[projection], &after[projection]);
    let (rows, cols) = a.dims2()?;
    assert_eq!(b.dims(), &[rows, cols + 4], "four R-R statistics columns");
    let kept = max_abs(&(a - b.narrow(1, 0, cols)?)?)?;
    assert!(kept < 1e-6, "a trained column moved by {kept}");
    let fitted = max_abs(&b.narrow(1, cols, 4)?)?;
    assert!(
        fitted > 1e-4,
        "the warm-up left the new columns at zero ({fitted})"
    );

    // The scope without the statistics, and an unscoped warm-up beside init_from: refused.
    let without = small_config_with(dir.path(), |text| {
        with_warmup(&text, "scope = \"rhythm_inputs\"\n")
    })?;
    assert_check_config_refuses(&without, "rhythm_features = true");
    let unscoped = small_config_with(dir.path(), |text| rhythm(with_warmup(&text, "")))?;
    assert_check_config_refuses(&unscoped, "scope = \"rhythm_inputs\"");
    Ok(())
}

/// `pooling = "mean_std"` (with lead flags, both new) on a model trained with mean pooling: one
/// zero column per channel after the trained means, then one per lead; back to the mean alone
/// is refused.
#[test]
fn init_from_adds_standard_deviation_pooling_as_zero_columns_after_the_means()
-> Result<(), Box<dyn std::error::Error>> {
    let (dir, continued, a, b) =
        continued_with_encoder_lines("pooling = \"mean_std\"\nlead_presence = true\n")?;
    let (rows, channels) = a.dims2()?;
    assert_eq!(b.dims(), &[rows, 2 * channels + 12]);
    assert!(max_abs(&(&a - b.narrow(1, 0, channels)?)?)? < 1e-6);
    assert!(
        max_abs(&b.narrow(1, channels, channels + 12)?)? < 1e-6,
        "standard deviation and flag columns start at zero"
    );
    let back = small_config_with(dir.path(), |text| {
        continued_from(&text, &continued).replacen(
            "[model.encoder]\n",
            "[model.encoder]\nlead_presence = true\n",
            1,
        )
    })?;
    assert_init_from_refuses_the_model(&back, &dir.path().join("back"));
    Ok(())
}

#[test]
fn init_from_continues_from_a_trained_models_weights_and_refuses_another_shape()
-> Result<(), Box<dyn std::error::Error>> {
    let (dir, trained) = trained_small_model()?;

    // A step at a vanishing learning rate leaves the trained weights where they were (BatchNorm
    // running statistics move with the batch, not the learning rate, so they are left out).
    let config = small_config_with(dir.path(), |text| {
        with_values(
            &continued_from(&text, &trained),
            &[("learning_rate", "1e-12")],
        )
    })?;
    let continued = dir.path().join("continued");
    train_one_step(&config, &continued);
    assert_eq!(
        std::fs::read(trained.join("tokenizer.json"))?,
        std::fs::read(continued.join("tokenizer.json"))?,
        "the trained model's tokenizer, not a new one"
    );
    let (before, after) = (weights_of(&trained)?, weights_of(&continued)?);
    assert_unmoved_but(&before, &after, None)?;
    // Without init_from the same step starts elsewhere.
    let fresh = dir.path().join("fresh");
    let scratch = small_config_with(dir.path(), |text| {
        with_values(
            &continued_from(&text, &trained),
            &[("learning_rate", "1e-12")],
        )
        .replace(
            &format!("init_from = {:?}\n", trained.to_string_lossy()),
            "",
        )
    })?;
    train_one_step(&scratch, &fresh);
    let fresh = weights_of(&fresh)?;
    let name = "decoder.embed_tokens.weight";
    let (Some(a), Some(b)) = (before.get(name), fresh.get(name)) else {
        return Err(format!("{name} missing").into());
    };
    assert!((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? > 1e-3);

    // Another shape: refused, naming what differs.
    let wider = small_config_with(dir.path(), |text| {
        with_values(
            &continued_from(&text, &trained),
            &[("intermediate_size", "352")],
        )
    })?;
    assert_init_from_refuses_the_model(&wider, &dir.path().join("wider"));
    // With a warm-up as well: refused when the config is read.
    let both = small_config_with(dir.path(), |text| {
        text.replacen(
            "[train]\n",
            &format!("[train]\ninit_from = {:?}\n", trained.to_string_lossy()),
            1,
        )
    })?;
    assert_check_config_refuses(&both, "remove [train.encoder_warmup]");
    Ok(())
}

/// Writes a 25 s, 360 Hz record `name` with leads I, II, V1 and a Frank lead `vx` (not
/// ECG-standard); with `flat_ii` lead II is a flat line (an electrode off).
fn reduced_record(
    dir: &Path,
    name: &str,
    flat_ii: bool,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let spec = meit::synth::RecordSpec {
        sample_rate_hz: 360.0,
        seconds: 25.0,
        ..meit::synth::RecordSpec::ten_seconds(meit::synth::ConditionSet::parse_list("af")?)
    };
    let synth = meit::synth::generate(&spec, 4)?;
    let rows: Vec<usize> = [Lead::I, Lead::II, Lead::V1]
        .iter()
        .filter_map(|l| synth.recording.leads.position(*l))
        .collect();
    let mut samples = synth.recording.samples_uv.select(ndarray::Axis(0), &rows);
    let frank = samples.row(0).to_owned();
    samples.push_row(frank.view())?;
    if flat_ii {
        samples.row_mut(1).fill(0.0);
    }
    let recording = Recording {
        sample_rate_hz: 360.0,
        leads: LeadSet(vec![Lead::I, Lead::II, Lead::V1, Lead::V6]),
        samples_uv: samples,
    };
    let hea = dir.join(format!("{name}.hea"));
    let options = WriteOptions {
        format: SignalFormat::Format16,
        adc_gain_per_mv: 1000.0,
    };
    meit::wfdb::write_record(dir, name, &recording, options, &[])?;
    // Rename the fourth signal to a Frank lead: the reader must ignore it.
    let header = std::fs::read_to_string(&hea)?;
    let renamed: Vec<String> = header
        .lines()
        .map(|l| match l.strip_suffix(" V6") {
            Some(head) => format!("{head} vx"),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(&hea, renamed.join("\n") + "\n")?;
    Ok(hea)
}

#[test]
fn generate_reports_each_window_of_any_record_and_eval_writes_its_tables()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = small_config(dir.path())?;
    let model = dir.path().join("model");
    let model_s = model.to_string_lossy();
    train_quiet(&config, &model)?;

    let hea = reduced_record(dir.path(), "r1", false)?;
    let run = meit_models(&[
        "generate",
        "--model",
        &model_s,
        "--record",
        &hea.to_string_lossy(),
        "--json",
    ]);
    let stdout = ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("vx"),
        "the Frank lead is named as ignored: {stderr}"
    );
    assert!(
        stderr.contains("5.0 s"),
        "the short tail is named: {stderr}"
    );
    let windows: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(windows.len(), 2, "25 s = two whole 10 s windows");
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["start_s"].as_f64(), Some(10.0 * i as f64));
        let masked: Vec<&str> = w["masked_leads"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            masked,
            ["V2", "V3", "V4", "V5", "V6"],
            "I, II, V1 measured; limb leads derived"
        );
        assert_eq!(
            w["outcome"]["kind"].as_str(),
            Some("report"),
            "the leads it lacks are masked, not a reason to refuse: {w}"
        );
        assert!(!w["outcome"]["text"].as_str().unwrap_or("").is_empty());
    }

    // An electrode off: every window refused, with the lead named, never a sentence.
    let flat = reduced_record(dir.path(), "r2", true)?;
    let run = meit_models(&[
        "generate",
        "--model",
        &model_s,
        "--record",
        &flat.to_string_lossy(),
        "--json",
    ]);
    let stdout = ok(&run);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for line in stdout.lines() {
        let w: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(w["outcome"]["kind"].as_str(), Some("no_report"), "{w}");
        let reasons = w["outcome"]["reasons"].to_string();
        assert!(reasons.contains("II flat (required)"), "{reasons}");
    }

    let json = dir.path().join("eval.json");
    let md = dir.path().join("eval.md");
    let external = Path::new(env!("CARGO_MANIFEST_DIR")).join("external");
    ok(&meit_models(&[
        "eval",
        "--model",
        &model_s,
        "--suite",
        "quick",
        "--records",
        "4",
        "--external",
        &external.to_string_lossy(),
        "--json",
        &json.to_string_lossy(),
        "--markdown",
        &md.to_string_lossy(),
    ]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let rows: Vec<&str> = report["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["variant"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(rows, ["test", "clean", "shuffled-ecg"]);
    assert!(
        report["results"][0]["text"]["meteor_matching"]
            .as_str()
            .is_some_and(|m| m.contains("WordNet"))
    );
    // Each row's macro F1 comes with its bootstrap interval, in the JSON and the table.
    for row in report["results"].as_array().into_iter().flatten() {
        let f1 = row["clinical"]["macro_f1"].as_f64();
        let interval = &row["macro_f1_interval"];
        assert_eq!(f1.is_some(), interval.is_object(), "{row}");
        if f1.is_some() {
            let (low, high) = (interval["low"].as_f64(), interval["high"].as_f64());
            assert!(
                matches!((low, high), (Some(l), Some(h)) if 0.0 <= l && l <= h && h <= 1.0),
                "{interval}"
            );
            assert_eq!(interval["level"].as_f64(), Some(0.95), "{interval}");
        }
    }
    // The test row record by record, and `compare` reads it back: against itself, nothing moved.
    let kept = report["test_records"].as_array().map_or(0, Vec::len);
    assert_eq!(kept, 4, "{}", report["test_records"]);
    let compared = meit_models(&[
        "compare",
        "--baseline",
        &json.to_string_lossy(),
        "--candidate",
        &json.to_string_lossy(),
        "--json",
    ]);
    ok(&compared);
    let compared: serde_json::Value = serde_json::from_slice(&compared.stdout)?;
    assert_eq!(compared["records"].as_u64(), Some(4), "{compared}");
    assert_eq!(compared["changed_reports"].as_u64(), Some(0), "{compared}");
    assert_eq!(
        compared["baseline_macro_f1"], report["results"][0]["clinical"]["macro_f1"],
        "{compared}"
    );
    let table = std::fs::read_to_string(&md)?;
    assert!(table.contains("| shuffled-ecg |"));
    assert!(table.contains("macro F1 (95 % interval)"), "{table}");
    // The external set: every test window scored, each either reported or refused with reasons.
    let total = &report["external"]["total"];
    assert_eq!(total["windows"].as_u64(), Some(47), "{total}");
    let windows = report["external"]["windows"].as_array().map_or(0, Vec::len);
    assert_eq!(windows, 47);
    for w in report["external"]["windows"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(
            w["report"].is_string()
                || w["no_report_reasons"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
            "{w}"
        );
    }
    assert!(table.contains("## External set") && table.contains("| nk2-multileads |"));
    Ok(())
}

#[test]
fn a_missing_model_directory_is_a_clear_error() {
    let run = meit_models(&[
        "generate",
        "--model",
        "/nonexistent/model",
        "--record",
        "/nonexistent/r.hea",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent/model"), "{stderr}");
}

#[test]
fn smollm2_lora_config_trains_end_to_end_on_a_truncated_decoder()
-> Result<(), Box<dyn std::error::Error>> {
    let check = "smollm2_lora_config_trains_end_to_end_on_a_truncated_decoder";
    let Some(gguf) = meit_models::model::gguf::smollm2_gguf_or_skip(check) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/smollm2-lora.toml"
    ))?;
    let mut text = shipped.clone();
    for (from, to) in [
        (
            "gguf = \".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\"",
            format!("gguf = {:?}\nmax_layers = 2", gguf.to_string_lossy()),
        ),
        ("batch_size = 64", "batch_size = 2".into()),
        ("train_records = 32000", "train_records = 4".into()),
        ("validation_records = 64", "validation_records = 2".into()),
        ("test_records = 512", "test_records = 2".into()),
    ] {
        assert!(
            text.contains(from),
            "smollm2-lora.toml no longer has `{from}`"
        );
        text = text.replace(from, &to);
    }
    let config = dir.path().join("smollm2-small.toml");
    std::fs::write(&config, text)?;
    let model = dir.path().join("model");
    let model_s = model.to_string_lossy();
    let summary = ok(&meit_models(&[
        "train",
        "--config",
        &config.to_string_lossy(),
        "--out",
        &model_s,
        "--quiet",
        "--max-steps",
        "2",
    ]));
    let summary: serde_json::Value = serde_json::from_str(&summary)?;
    assert_eq!(summary["steps"], 2);
    assert!(summary["final_loss"].as_f64().is_some_and(f64::is_finite));
    // The trained adapters load back and generate through the checkpoint's tokenizer.
    let hea = reduced_record(dir.path(), "r1", false)?;
    let out = ok(&meit_models(&[
        "generate",
        "--model",
        &model_s,
        "--record",
        &hea.to_string_lossy(),
        "--json",
    ]));
    assert_eq!(out.lines().count(), 2);
    // Only what training changed is stored; the base's weights come from the GGUF.
    let stored =
        candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu)?;
    assert!(
        stored
            .keys()
            .all(|n| !meit_models::model::params::is_base_weight(n)),
        "base weights stored"
    );
    // The bundle has the kept layers, not the checkpoint's 30.
    let bundle = dir.path().join("bundle");
    ok(&meit_models(&[
        "export",
        "--model",
        &model_s,
        "--out",
        &bundle.to_string_lossy(),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json"))?)?;
    assert_eq!(
        manifest["decoder"]["num_layers"], 2,
        "{}",
        manifest["decoder"]
    );
    Ok(())
}
