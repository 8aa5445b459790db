//! End-to-end tests of `meit-models score` and the not-yet-implemented subcommands.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn meit_models(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meit-models"))
        .args(args)
        .output()
        .expect("the meit-models binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path.to_string_lossy().into_owned()
}

#[test]
fn a_reader_of_standard_output_that_went_away_ends_the_command_quietly() {
    // `meit-models tokenize FILE | head -0`: the pipe's reading end is closed before it writes.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "reports.txt", "sinus rhythm. normal ecg.\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_meit-models"))
        .args(["tokenize", &file])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Before: `println!` panicked ("failed printing to stdout: Broken pipe").
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.is_empty(), "nothing to say about a closed pipe: {err}");
}

#[test]
fn score_prints_json_with_corpus_and_batch_scores() {
    let dir = tempfile::tempdir().unwrap();
    let hyp = write(
        dir.path(),
        "hyp.txt",
        "sinus rhythm. normal ecg\nleft axis deviation\n",
    );
    let refs = write(
        dir.path(),
        "ref.txt",
        "sinus rhythm. normal ecg\nleft axis deviation. abnormal ecg ||| right axis deviation\n",
    );
    let out = meit_models(&["score", "--hyp", &hyp, "--ref", &refs, "--batch", "32"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pairs"], 2);
    assert_eq!(json["tokenization"], "ptb");
    for metric in [
        "bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d",
    ] {
        let corpus = json["corpus"][metric].as_f64().unwrap();
        assert!(corpus.is_finite() && corpus > 0.0, "{metric} = {corpus}");
        // One batch of 32 holds both lines: the batch mean equals the corpus score.
        assert_eq!(
            json["per_batch"]["mean"][metric].as_f64(),
            Some(corpus),
            "{metric}"
        );
    }
    assert!(
        json["meteor_matching"]
            .as_str()
            .unwrap()
            .contains("no WordNet synonyms")
    );
}

#[test]
fn score_writes_to_out_file() {
    let dir = tempfile::tempdir().unwrap();
    let hyp = write(dir.path(), "hyp.txt", "a b c\n");
    let refs = write(dir.path(), "ref.txt", "a b c\n");
    let out_path = dir.path().join("scores.json");
    let out_arg = out_path.to_string_lossy().into_owned();
    let out = meit_models(&[
        "score",
        "--hyp",
        &hyp,
        "--ref",
        &refs,
        "--tokenize",
        "paper",
        "--out",
        &out_arg,
    ]);
    assert!(out.status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(json["tokenization"], "paper");
    assert!(json["per_batch"].is_null());
}

#[test]
fn score_rejects_files_that_are_not_line_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let hyp = write(dir.path(), "hyp.txt", "a\nb\n");
    let refs = write(dir.path(), "ref.txt", "a\n");
    let out = meit_models(&["score", "--hyp", &hyp, "--ref", &refs]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line-aligned"));
}

#[test]
fn model_commands_name_their_missing_arguments() {
    for (command, flag) in [
        ("train", "--config"),
        ("eval", "--model"),
        ("generate", "--model"),
    ] {
        let out = meit_models(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{command} names {flag}"
        );
    }
}
