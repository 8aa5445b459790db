//! The daemon's model: where its bundle is, whether it opens, and the preprocessing the beds
//! run.
//!
//! Policy when the bundle is missing or refused (a checksum, a format version, ONNX Runtime
//! missing): the daemon still starts and keeps every bed's signal quality and measurements
//! flowing, logs the reason once at startup as an error, and every reportable window carries
//! it as its outcome (`no_model`: "no report generated: model bundle ... cannot be used:
//! ..."). A nurse still sees rate and lead-off on the station screen, and the biomedical
//! engineer sees on every window why there is no text. `[model] required = true` makes the
//! daemon refuse to start instead (for deployments where reports are the point).

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::dsp::normalize::Normalization;
use crate::dsp::{DspConfig, PreprocessSpec};
use crate::ecg::LeadSet;
use crate::infer::bundle::{Bundle, MANIFEST_FILE, read_manifest};
use crate::infer::config::{ModelConfig, RuntimeConfig};
use crate::infer::engine::{Engine, EngineError};
use crate::infer::runtime::{CpuSessionOptions, OnnxRuntime};

/// Environment variable naming an installed data directory holding `bundles/<name>/`.
pub const ENV_DATA_DIR: &str = "MEIT_DATA_DIR";
/// Installed data directories searched after `MEIT_DATA_DIR`.
pub const SYSTEM_DATA_DIRS: [&str; 2] = ["/usr/local/share/meit", "/usr/share/meit"];
/// The model rate used when no manifest says otherwise: the default model's (100 Hz, mV).
const FALLBACK_MODEL_RATE_HZ: f64 = 100.0;

/// Where a relative bundle path is looked for, in order: the working directory, the
/// executable's folder and its ancestors (a build tree or an unpacked release), then the data
/// directories (`$MEIT_DATA_DIR`, `/usr/local/share/meit`, `/usr/share/meit`) as `DIR/PATH` and
/// `DIR/bundles/NAME`. An absolute path is taken as it is.
pub fn bundle_candidates(configured: &Path) -> Vec<PathBuf> {
    if configured.is_absolute() {
        return vec![configured.to_path_buf()];
    }
    let mut out = vec![configured.to_path_buf()];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.extend(exe_dir.ancestors().map(|a| a.join(configured)));
    }
    let mut data_dirs: Vec<PathBuf> = std::env::var_os(ENV_DATA_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    data_dirs.extend(SYSTEM_DATA_DIRS.iter().map(PathBuf::from));
    for dir in data_dirs {
        out.push(dir.join(configured));
        if let Some(name) = configured.file_name() {
            out.push(dir.join("bundles").join(name));
        }
    }
    out.dedup();
    out
}

/// The first candidate holding a manifest, or `None` with every place tried.
pub fn resolve_bundle(configured: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let candidates = bundle_candidates(configured);
    candidates
        .iter()
        .find(|c| c.join(MANIFEST_FILE).is_file())
        .cloned()
        .ok_or(candidates)
}

/// The model as the daemon will run it.
pub struct LoadedModel {
    /// The engine, or why there is none.
    pub engine: Result<Engine, String>,
    /// The preprocessing every bed runs (the manifest's when one could be read).
    pub spec: PreprocessSpec,
    /// The bundle directory found, if any.
    pub bundle_dir: Option<PathBuf>,
    /// A required execution provider could not run the bundle: the daemon must not start,
    /// whatever `[model] required` says (the deployment asked for that hardware).
    pub provider_refused: bool,
    /// The window, in seconds, the bundle's encoder takes (its samples at the model rate),
    /// when a manifest could be read: every bed's window must be this long.
    pub encoder_window_seconds: Option<f64>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("ready", &self.engine.is_ok())
            .field("bundle_dir", &self.bundle_dir)
            .finish_non_exhaustive()
    }
}

/// What the manifest of `model`'s bundle says about preprocessing, read without opening the
/// model: the spec the beds run (with the site's mains notch; `[dsp]` without a manifest),
/// the window the encoder takes, and the bundle directory found.
pub fn read_spec(
    model: &ModelConfig,
    dsp: &DspConfig,
) -> (PreprocessSpec, Option<f64>, Option<PathBuf>) {
    let mut spec = fallback_spec(dsp);
    let mut encoder_window_seconds = None;
    let bundle_dir = resolve_bundle(&model.bundle).ok();
    // Only a manifest that passes its own checks: a refused bundle's preprocessing (a rate of
    // 0 Hz, a window the encoder does not take) must not become every bed's, or the beds'
    // quality and measurements would stop with the reports (`required = false`).
    let checked = |dir: &Path| {
        let manifest = read_manifest(dir).ok()?;
        manifest.check(&dir.join(MANIFEST_FILE)).ok()?;
        Some(manifest)
    };
    if let Some(manifest) = bundle_dir.as_deref().and_then(checked) {
        encoder_window_seconds =
            Some(manifest.encoder.samples as f64 / manifest.preprocess.model_rate_hz);
        spec = with_site_mains(manifest.preprocess, dsp);
    }
    if !model.required_leads.is_empty() {
        spec.required_leads = model.required_leads.clone();
    }
    (spec, encoder_window_seconds, bundle_dir)
}

/// Finds, verifies and opens the bundle of `model` on ONNX Runtime. Never fails: an unusable
/// bundle is an `Err` reason in [`LoadedModel::engine`] (see the module docs for the policy).
pub fn load(model: &ModelConfig, runtime: &RuntimeConfig, dsp: &DspConfig) -> LoadedModel {
    let (spec, encoder_window_seconds, bundle_dir) = read_spec(model, dsp);
    let mut provider_refused = false;
    let engine = match &bundle_dir {
        None => Err(format!(
            "no report generated: no model bundle at {} (looked in the working directory, next to the executable and in the data directories; set [model] bundle or {ENV_DATA_DIR})",
            model.bundle.display()
        )),
        Some(dir) => open(dir, runtime).map_err(|e| match e {
            OpenError::Unusable(reason) => format!(
                "no report generated: model bundle {} cannot be used: {reason}",
                dir.display()
            ),
            OpenError::ProviderRequired(reason) => {
                provider_refused = true;
                reason
            }
        }),
    };
    LoadedModel {
        engine,
        spec,
        bundle_dir,
        provider_refused,
        encoder_window_seconds,
    }
}

/// Checks every bed's window policy of `config` (read from `path`) against the model's
/// preprocessing `spec` and the window its encoder takes (when a bundle was found).
pub fn check_beds(
    spec: &PreprocessSpec,
    encoder_window_seconds: Option<f64>,
    config: &Config,
    path: &Path,
) -> Result<(), ConfigError> {
    for (i, source) in config.sources.iter().enumerate() {
        if let Err((field, reason)) = source.window().apply(spec, encoder_window_seconds) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: format!("source[{i}].{field}"),
                reason,
            });
        }
    }
    Ok(())
}

impl LoadedModel {
    /// Checks every bed's window policy of `config` (read from `path`) against this model
    /// ([`check_beds`]).
    pub fn check_beds(&self, config: &Config, path: &Path) -> Result<(), ConfigError> {
        check_beds(&self.spec, self.encoder_window_seconds, config, path)
    }
}

/// The bundle's preprocessing `spec` with the site's mains notch (`[dsp] notch_hz`): the mains
/// frequency is a property of the installation, not of the model, so a model trained where
/// mains is 50 Hz gets a 60 Hz notch at a 60 Hz site. Everything else of the manifest's spec
/// (band-pass, notch width and harmonics, rate, windows, normalisation) stays the model's.
pub fn with_site_mains(mut spec: PreprocessSpec, dsp: &DspConfig) -> PreprocessSpec {
    if spec.filter.notch_hz != dsp.notch_hz {
        tracing::info!(
            bundle_notch_hz = spec.filter.notch_hz,
            site_notch_hz = dsp.notch_hz,
            "the site's mains notch ([dsp] notch_hz) replaces the bundle's"
        );
        spec.filter.notch_hz = dsp.notch_hz;
    }
    spec
}

/// Why a bundle did not open: a reason to publish on every window, or a required execution
/// provider that cannot run (a startup error whatever `[model] required` says).
enum OpenError {
    Unusable(String),
    ProviderRequired(String),
}

fn open(dir: &Path, runtime: &RuntimeConfig) -> Result<Engine, OpenError> {
    let unusable = |e: &dyn std::fmt::Display| OpenError::Unusable(e.to_string());
    // Manifest, checksums and preprocessing first: they name the bundle's own files.
    Bundle::open_unchecked_graphs(dir).map_err(|e| unusable(&e))?;
    let ort = OnnxRuntime::load(runtime.onnxruntime.as_deref()).map_err(|e| unusable(&e))?;
    let bundle = Bundle::open(dir, &ort).map_err(|e| unusable(&e))?;
    let options = CpuSessionOptions {
        inter_threads: runtime.inter_threads,
        spinning: Some(runtime.intra_op_spinning),
        ..Engine::session_options(runtime.intra_threads)
    };
    let mut engine = Engine::with_providers(bundle, &ort, &options, &runtime.execution_providers)
        .map_err(|e| match e {
        EngineError::ProviderRequired(_) => OpenError::ProviderRequired(e.to_string()),
        other => unusable(&other),
    })?;
    engine.set_draft_tokens(runtime.draft_tokens);
    Ok(engine)
}

/// The preprocessing without a manifest: the deployment's `[dsp]` filters and windows, with
/// the default model's conventions (12 standard leads, 100 Hz, millivolts), so quality and
/// measurements still run.
pub fn fallback_spec(dsp: &DspConfig) -> PreprocessSpec {
    PreprocessSpec::from_config(
        dsp,
        FALLBACK_MODEL_RATE_HZ,
        LeadSet::standard_12(),
        Normalization::Millivolts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_bundle_is_looked_for_next_to_the_executable_and_in_data_dirs() {
        let c = bundle_candidates(Path::new("models/bundles/tiny"));
        assert_eq!(c[0], Path::new("models/bundles/tiny"));
        let exe_dir = std::env::current_exe().unwrap();
        let exe_dir = exe_dir.parent().unwrap();
        assert!(c.contains(&exe_dir.join("models/bundles/tiny")));
        assert!(c.contains(&PathBuf::from("/usr/share/meit/bundles/tiny")));
        assert_eq!(
            bundle_candidates(Path::new("/opt/b")),
            [PathBuf::from("/opt/b")]
        );
    }

    #[test]
    fn a_missing_bundle_is_a_reason_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let model = ModelConfig {
            bundle: dir.path().join("nothing-here"),
            ..ModelConfig::default()
        };
        let loaded = load(&model, &RuntimeConfig::default(), &DspConfig::default());
        let reason = loaded.engine.err().unwrap();
        assert!(
            reason.contains("no model bundle at") && reason.contains("nothing-here"),
            "{reason}"
        );
        assert_eq!(loaded.spec.model_rate_hz, FALLBACK_MODEL_RATE_HZ);
    }

    #[test]
    fn the_site_mains_notch_replaces_the_bundles_and_nothing_else() {
        let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny");
        let manifest = read_manifest(&bundle).unwrap().preprocess;
        assert_eq!(manifest.filter.notch_hz, 50.0);
        let model = ModelConfig {
            bundle,
            ..ModelConfig::default()
        };
        let site = DspConfig {
            notch_hz: 60.0,
            // The deployment's other [dsp] settings do not override the model's.
            lowpass_hz: 100.0,
            window_seconds: 5.0,
            ..DspConfig::default()
        };
        let spec = load(&model, &RuntimeConfig::default(), &site).spec;
        assert_eq!(spec.filter.notch_hz, 60.0);
        let mut expected = manifest;
        expected.filter.notch_hz = 60.0;
        assert_eq!(spec, expected);
    }

    #[test]
    fn a_corrupt_bundle_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), "{").unwrap();
        let model = ModelConfig {
            bundle: dir.path().to_path_buf(),
            ..ModelConfig::default()
        };
        let reason = load(&model, &RuntimeConfig::default(), &DspConfig::default())
            .engine
            .err()
            .unwrap();
        assert!(
            reason.contains("cannot be used") && reason.contains("manifest.json"),
            "{reason}"
        );
    }
}
