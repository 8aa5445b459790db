//! End-to-end tests of the `meit` binary's foundation commands: `doctor` and `check-config`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn meit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meit"));
    cmd.env_remove("ORT_DYLIB_PATH")
        .env_remove("MEIT_LOG")
        .env_remove("RUST_LOG");
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_misspelled_field_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ward.toml");
    std::fs::write(
        &file,
        "[site]\nname = \"h\"\nunit = \"u\"\n\n[dsp]\nhighpass_hz = 0.5\nlowpas_hz = 40\n",
    )
    .unwrap();
    let out = meit().arg("check-config").arg(&file).output().unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:7:1:", file.display())), "{err}");
    assert!(
        err.contains("unknown field `lowpas_hz`") && err.contains("`lowpass_hz`"),
        "{err}"
    );
    assert!(err.contains("[dsp]"), "{err}");
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/meit.toml");
    let out = meit().arg("check-config").arg(&file).output().unwrap();
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("ok (1 source(s)"), "{stdout}");
}

#[test]
fn a_reader_of_standard_output_that_went_away_ends_the_command_quietly() {
    // `meit check-config ... | head -0`: the pipe's reading end is closed before meit writes.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/meit.toml");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = meit()
        .arg("check-config")
        .arg(&file)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    // Before: `println!` panicked ("failed printing to stdout: Broken pipe").
    assert!(
        !err.contains("panicked") && !err.contains("error:"),
        "nothing to say about a closed pipe: {err}"
    );
}

#[test]
fn doctor_without_onnx_runtime_prints_the_fix_and_fails() {
    // A copy of the binary far from the project, so no project-local library can be found.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("meit");
    std::fs::copy(env!("CARGO_BIN_EXE_meit"), &exe).unwrap();
    let out = Command::new(&exe)
        .arg("doctor")
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let (stdout, err) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(!err.contains("panicked"), "{err}");
    let line = stdout
        .lines()
        .find(|l| l.contains("onnxruntime"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("FAIL") && line.contains("ONNX Runtime not found"),
        "{line}"
    );
    assert!(
        line.contains("fix: run `scripts/fetch-onnxruntime.sh`"),
        "{line}"
    );
}

#[test]
fn doctor_with_a_bad_ort_dylib_path_fails_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"definitely not ELF").unwrap();
    let out = meit()
        .arg("doctor")
        .env("ORT_DYLIB_PATH", &fake)
        .output()
        .unwrap();
    let (stdout, err) = text(&out);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        stdout.contains("is not a loadable ONNX Runtime library")
            && stdout.contains("from ORT_DYLIB_PATH"),
        "{stdout}"
    );
}

#[test]
fn doctor_with_onnx_runtime_prints_version_and_providers() {
    let out = meit()
        .arg("doctor")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{stdout}\n{err}");
    let line = stdout.lines().find(|l| l.contains("onnxruntime")).unwrap();
    assert!(
        line.starts_with("[ok  ]") && line.contains("1.") && line.contains("libonnxruntime.so"),
        "{line}"
    );
    assert!(stdout.contains("CPUExecutionProvider"), "{stdout}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/meit.toml");
    let out = meit()
        .args(["--log-format", "json", "check-config"])
        .arg(&file)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("configuration valid"))
        .unwrap_or_else(|| panic!("{err}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["sources"], 1);
}

#[test]
fn an_error_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let hea = dir.path().join("empty.hea");
    std::fs::write(&hea, "# only a comment\n").unwrap();
    let out = meit()
        .arg("replay")
        .arg("--fast")
        .arg(&hea)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        err.matches("WFDB header line 1: no record line").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: {}: WFDB header line 1: no record line",
            hea.display()
        )),
        "{err}"
    );
}
