//! Execution-provider priority on the real ONNX Runtime: this project's ONNX Runtime is the CPU
//! build from PyPI, which has no CUDA or TensorRT, so the fallback rules are exercised for real:
//! a `required` GPU provider is a startup error that names it and why; a `preferred` one is
//! skipped with a warning and the reports come from the CPU, identical to a CPU-only engine's.
//!
//! Needs the project-local ONNX Runtime (`scripts/fetch-onnxruntime.sh`, run by `make test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use meit::infer::bench::bench_windows;
use meit::infer::bundle::Bundle;
use meit::infer::config::{ExecutionProviderKind, ProviderConfig, ProviderPolicy};
use meit::infer::engine::{Engine, EngineError};
use meit::infer::runtime::OnnxRuntime;

const CUDA: &str = "CUDAExecutionProvider";
const TENSORRT: &str = "TensorrtExecutionProvider";
const CPU: &str = "CPUExecutionProvider";

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny")
}

/// ONNX Runtime allows one environment per process: the tests share it.
fn runtime() -> &'static OnnxRuntime {
    static RT: std::sync::OnceLock<OnnxRuntime> = std::sync::OnceLock::new();
    RT.get_or_init(|| OnnxRuntime::load(None).unwrap_or_else(|e| panic!("{e}")))
}

fn engine(providers: &[ProviderConfig]) -> Result<Engine, EngineError> {
    let bundle = Bundle::open(&committed(), runtime()).unwrap_or_else(|e| panic!("{e}"));
    Engine::with_providers(bundle, runtime(), &Engine::session_options(1), providers)
}

fn provider(kind: ExecutionProviderKind, policy: ProviderPolicy) -> ProviderConfig {
    ProviderConfig::new(kind, policy)
}

/// The precondition of every test here: this ONNX Runtime really lacks the GPU providers.
fn assert_cpu_only_build() {
    let available: Vec<_> = runtime()
        .providers()
        .into_iter()
        .filter(|p| p.available)
        .map(|p| p.name)
        .collect();
    assert_eq!(
        available,
        vec![CPU],
        "these tests need the CPU-only ONNX Runtime the project fetches"
    );
}

#[test]
fn a_required_cuda_provider_without_cuda_is_an_error_naming_it_and_why() {
    assert_cpu_only_build();
    let err = engine(&[
        provider(ExecutionProviderKind::Cuda, ProviderPolicy::Required),
        provider(ExecutionProviderKind::Cpu, ProviderPolicy::Required),
    ])
    .expect_err("CUDA is required and this build has none");
    assert!(matches!(err, EngineError::ProviderRequired(_)), "{err:?}");
    let message = err.to_string();
    for part in [
        "required execution provider CUDAExecutionProvider",
        "encoder.onnx",
        "compiled without it",
        "it has: CPUExecutionProvider",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn preferred_gpu_providers_fall_back_to_the_cpu_with_the_same_reports() {
    assert_cpu_only_build();
    let mut fallback = engine(&[
        provider(ExecutionProviderKind::Tensorrt, ProviderPolicy::Preferred),
        provider(ExecutionProviderKind::Cuda, ProviderPolicy::Preferred),
        provider(ExecutionProviderKind::Cpu, ProviderPolicy::Required),
    ])
    .unwrap_or_else(|e| panic!("preferred providers must fall back: {e}"));
    for session in fallback.providers() {
        assert_eq!(session.active, vec![CPU]);
        let skipped: Vec<_> = session.skipped.iter().map(|s| s.provider).collect();
        assert_eq!(skipped, vec![TENSORRT, CUDA]);
        assert!(
            session
                .skipped
                .iter()
                .all(|s| s.reason.contains("compiled without it")),
            "{:?}",
            session.skipped
        );
    }
    assert_eq!(fallback.primary_provider(), CPU);

    let mut cpu = engine(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cpu.providers()[1].active, vec![CPU]);
    assert!(cpu.providers()[1].skipped.is_empty());
    let windows = bench_windows(&fallback.bundle().manifest, 3, 7).unwrap();
    let (got, _) = fallback.generate(&windows).unwrap();
    let (want, _) = cpu.generate(&windows).unwrap();
    assert_eq!(got, want);
    assert!(got.iter().all(|g| !g.text.is_empty()), "{got:?}");
}

/// `meit replay` with a configuration: the daemon's startup path.
fn replay_with(runtime_table: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let synth = Command::new(env!("CARGO_BIN_EXE_meit"))
        .args(["synth", "--seconds", "10", "--seed", "3", "--wfdb"])
        .arg(&record)
        .output()
        .unwrap();
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let config = dir.path().join("meit.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbundle = {:?}\n\n[runtime]\n{runtime_table}\n",
            committed()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_meit"))
        .args(["replay", "--fast", "--config"])
        .arg(&config)
        .arg(record.with_extension("hea"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn the_daemon_refuses_to_start_on_a_required_provider_and_falls_back_on_a_preferred_one() {
    assert_cpu_only_build();
    let refused = replay_with("execution_providers = [\"cuda\", \"cpu\"]");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("required execution provider CUDAExecutionProvider")
            && stderr.contains("make it `preferred` to fall back"),
        "{stderr}"
    );

    let fell_back =
        replay_with("execution_providers = [{ kind = \"cuda\", policy = \"preferred\" }, \"cpu\"]");
    let stderr = String::from_utf8_lossy(&fell_back.stderr);
    let stdout = String::from_utf8_lossy(&fell_back.stdout);
    assert!(fell_back.status.success(), "{stderr}");
    assert!(
        stderr.contains("preferred execution provider not used") && stderr.contains(CUDA),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("provider={CPU}")) || stderr.contains(CPU),
        "{stderr}"
    );
    assert!(stdout.contains("window 0"), "{stdout}");
    assert!(!stdout.contains("no report"), "{stdout}");
}
