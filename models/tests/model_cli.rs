//! End-to-end tests of `meit-models train-tokenizer` and `meit-models check-config`.

use std::process::{Command, Output};

fn meit_models(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meit-models"))
        .args(args)
        .output()
        .expect("the meit-models binary runs")
}

#[test]
fn train_tokenizer_writes_a_loadable_tokenizer_json() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let reports = dir.path().join("reports.txt");
    let lines = "sinus rhythm. normal ecg\n\nsinus bradycardia. abnormal ecg\natrial fibrillation. abnormal ecg\n";
    std::fs::write(&reports, lines.repeat(10))?;
    let out = dir.path().join("tokenizer.json");
    let run = meit_models(&[
        "train-tokenizer",
        "--reports",
        &reports.to_string_lossy(),
        "--vocab-size",
        "300",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tokenizer = meit_models::tokenizer::ReportTokenizer::load(&out)?;
    let ids = tokenizer.encode("sinus rhythm. abnormal ecg")?;
    assert_eq!(tokenizer.decode(&ids, false)?, "sinus rhythm. abnormal ecg");
    Ok(())
}

#[test]
fn check_config_accepts_the_shipped_configs_and_rejects_a_broken_one()
-> Result<(), Box<dyn std::error::Error>> {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    for name in ["tiny.toml", "smollm2-edge.toml"] {
        let run = meit_models(&["check-config", &format!("{configs}/{name}")]);
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&run.stdout)?;
        assert!(
            json["model"]["decoder"]["num_layers"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
    }
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(format!("{configs}/tiny.toml"))?
        .replace("head_dim = 32 ", "head_dim = 16 ");
    std::fs::write(&broken, text)?;
    let run = meit_models(&["check-config", &broken.to_string_lossy()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("head_dim"));
    Ok(())
}
