//! Finding, checking and loading the ONNX Runtime shared library.
//!
//! meit links ONNX Runtime dynamically (`ort` with `load-dynamic`) so one binary runs against the
//! CPU build here and the CUDA/TensorRT build on a Jetson. The library is looked for, in order:
//!
//! 1. `runtime.onnxruntime` in the configuration,
//! 2. the `ORT_DYLIB_PATH` environment variable,
//! 3. the project-local folder `.onnxruntime/<arch>/` (filled by `scripts/fetch-onnxruntime.sh`),
//!    searched from the working directory and from the executable's folder upwards.
//!
//! A path given by 1 or 2 that does not work is an error (never a silent fallback). Before the
//! library is handed to `ort`, meit opens it itself and checks that it is ONNX Runtime of a
//! supported version, so `ort`'s own panic on a missing library is never reached.

use std::ffi::{CStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use ort::ep::ExecutionProvider;

use super::config::{ExecutionProviderKind, ProviderConfig, ProviderPolicy};

/// The ONNX Runtime version `scripts/fetch-onnxruntime.sh` provisions.
pub const PINNED_VERSION: &str = "1.31.1";
/// Oldest ONNX Runtime minor version meit accepts: `ort` asks for C API 17 when no `api-N`
/// feature is enabled, which keeps JetPack 6's ONNX Runtime 1.17 usable.
pub const MIN_MINOR_VERSION: u32 = 17;
/// The environment variable that names the library.
pub const ENV_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// The one line that tells an operator how to fix a missing runtime.
pub const FIX_HINT: &str = "fix: run `scripts/fetch-onnxruntime.sh` (or `make onnxruntime`), or set ORT_DYLIB_PATH or runtime.onnxruntime to a libonnxruntime.so of version 1.17 or newer";

/// Where a library path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    /// `runtime.onnxruntime` in the configuration.
    Config,
    /// The `ORT_DYLIB_PATH` environment variable.
    Env,
    /// The project-local `.onnxruntime/<arch>/` folder.
    ProjectLocal,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LibrarySource::Config => "config runtime.onnxruntime",
            LibrarySource::Env => "ORT_DYLIB_PATH",
            LibrarySource::ProjectLocal => "project-local .onnxruntime",
        })
    }
}

/// Everything that can go wrong between "where is ONNX Runtime" and a ready session.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No candidate location held a library.
    #[error("ONNX Runtime not found (tried: {}); {FIX_HINT}", tried.join(", "))]
    NotFound {
        /// Each place looked at, with why it did not count.
        tried: Vec<String>,
    },
    /// An explicitly given path does not exist.
    #[error("ONNX Runtime not found at {} (from {source_}); {FIX_HINT}", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
        /// Who gave it.
        source_: LibrarySource,
    },
    /// The file exists but cannot be loaded as a shared library, or is not ONNX Runtime.
    #[error("{} (from {source_}) is not a loadable ONNX Runtime library: {reason}; {FIX_HINT}", path.display())]
    Unloadable {
        /// The path.
        path: PathBuf,
        /// Who gave it.
        source_: LibrarySource,
        /// The loader's message.
        reason: String,
    },
    /// The library is ONNX Runtime but older than [`MIN_MINOR_VERSION`].
    #[error("{} is ONNX Runtime {version}, older than the 1.{MIN_MINOR_VERSION} meit needs; {FIX_HINT}", path.display())]
    TooOld {
        /// The path.
        path: PathBuf,
        /// Its version string.
        version: String,
    },
    /// ONNX Runtime loaded but its environment could not be created.
    #[error("ONNX Runtime environment could not start: {0}")]
    Environment(String),
    /// An execution provider the configuration requires cannot run this model.
    #[error("required execution provider {provider} cannot be used for {}: {reason}", path.display())]
    ProviderRequired {
        /// ONNX Runtime's name of the provider (`CUDAExecutionProvider`).
        provider: &'static str,
        /// The model file.
        path: PathBuf,
        /// Why: missing from this ONNX Runtime build, or ONNX Runtime's message.
        reason: String,
    },
    /// A model could not be opened as a session.
    #[error("cannot open model {}: {reason}", path.display())]
    Session {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
}

/// A library path and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedLibrary {
    /// Absolute or given path of the shared library.
    pub path: PathBuf,
    /// Where the path came from.
    pub source: LibrarySource,
}

/// The folders searched for a project-local `.onnxruntime/<arch>/`: the working directory and
/// the executable's folder with all their ancestors.
pub fn default_search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    roots.dedup();
    roots
}

/// Decides which library to load, without loading it.
///
/// `configured` is `runtime.onnxruntime`, `env` the value of `ORT_DYLIB_PATH`, `roots` the
/// folders whose `.onnxruntime/<arch>/` may hold a fetched library.
pub fn locate(
    configured: Option<&Path>,
    env: Option<OsString>,
    roots: &[PathBuf],
) -> Result<LocatedLibrary, RuntimeError> {
    let mut tried = Vec::new();
    match configured {
        Some(path) => return existing(path.to_path_buf(), LibrarySource::Config),
        None => tried.push("config runtime.onnxruntime (unset)".to_string()),
    }
    match env.filter(|v| !v.is_empty()) {
        Some(path) => return existing(PathBuf::from(path), LibrarySource::Env),
        None => tried.push(format!("{ENV_DYLIB_PATH} (unset)")),
    }
    let mut searched = Vec::new();
    for root in roots {
        let dir = root.join(".onnxruntime").join(std::env::consts::ARCH);
        if let Some(path) = library_in(&dir) {
            return Ok(LocatedLibrary {
                path,
                source: LibrarySource::ProjectLocal,
            });
        }
        searched.push(dir.display().to_string());
    }
    if searched.is_empty() {
        tried.push("no project-local folder".into());
    } else {
        tried.push(format!(
            "{} (no libonnxruntime.so*)",
            searched.first().cloned().unwrap_or_default()
        ));
        if searched.len() > 1 {
            tried.push(format!("and {} parent folders", searched.len() - 1));
        }
    }
    Err(RuntimeError::NotFound { tried })
}

fn existing(path: PathBuf, source: LibrarySource) -> Result<LocatedLibrary, RuntimeError> {
    if path.is_file() {
        Ok(LocatedLibrary { path, source })
    } else {
        Err(RuntimeError::Missing {
            path,
            source_: source,
        })
    }
}

/// The ONNX Runtime library in `dir`: `libonnxruntime.so` if present, else the highest
/// versioned `libonnxruntime.so.X.Y.Z`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort_by_key(|p| {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let version: Vec<u32> = name
            .trim_start_matches("libonnxruntime.so")
            .split('.')
            .filter_map(|s| s.parse().ok())
            .collect();
        (name == "libonnxruntime.so", version)
    });
    found.pop()
}

/// Opens the library itself and reads its version, so a wrong file is a typed error and never
/// reaches `ort`'s panic.
pub fn probe_version(lib: &LocatedLibrary) -> Result<String, RuntimeError> {
    let unloadable = |reason: String| RuntimeError::Unloadable {
        path: lib.path.clone(),
        source_: lib.source,
        reason,
    };
    // SAFETY: loading a shared library runs its initialisers; the file was chosen by the
    // operator (config/env) or fetched and checksummed by the project's script.
    let library =
        unsafe { libloading::Library::new(&lib.path) }.map_err(|e| unloadable(e.to_string()))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { library.get(b"OrtGetApiBase") }
            .map_err(|_| unloadable("it does not export OrtGetApiBase".into()))?;
    // SAFETY: the base pointer is static data inside the library, which outlives this call.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(unloadable("OrtGetApiBase returned null".into()));
        }
        let raw = ((*base).GetVersionString)();
        if raw.is_null() {
            return Err(unloadable("it reports no version".into()));
        }
        CStr::from_ptr(raw).to_string_lossy().into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if version.starts_with("1.") && m >= MIN_MINOR_VERSION => Ok(version),
        _ => Err(RuntimeError::TooOld {
            path: lib.path.clone(),
            version,
        }),
    }
}

/// Execution providers an ONNX Runtime build was compiled with (of those meit can use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAvailability {
    /// Provider name as ONNX Runtime spells it.
    pub name: &'static str,
    /// Whether this build has it.
    pub available: bool,
}

/// A loaded ONNX Runtime: the library, its version and an environment for sessions.
pub struct OnnxRuntime {
    /// The library that was loaded.
    pub library: LocatedLibrary,
    /// Its version string, e.g. "1.31.1".
    pub version: String,
    environment: ort::environment::Environment,
}

impl fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxRuntime")
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

impl OnnxRuntime {
    /// Locates, checks and loads ONNX Runtime (see the module docs for the search order).
    pub fn load(configured: Option<&Path>) -> Result<OnnxRuntime, RuntimeError> {
        let library = locate(
            configured,
            std::env::var_os(ENV_DYLIB_PATH),
            &default_search_roots(),
        )?;
        OnnxRuntime::load_located(library)
    }

    /// Checks and loads a library that was already located.
    pub fn load_located(library: LocatedLibrary) -> Result<OnnxRuntime, RuntimeError> {
        let version = probe_version(&library)?;
        let builder = ort::init_from(&library.path).map_err(|e| RuntimeError::Unloadable {
            path: library.path.clone(),
            source_: library.source,
            reason: e.to_string(),
        })?;
        let environment = builder
            .with_name("meit")
            .build()
            .map_err(|e| RuntimeError::Environment(e.to_string()))?;
        Ok(OnnxRuntime {
            library,
            version,
            environment,
        })
    }

    /// The execution providers meit knows and whether this build has them.
    pub fn providers(&self) -> Vec<ProviderAvailability> {
        vec![
            ProviderAvailability {
                name: ort::ep::CPU::NAME,
                available: ort::ep::CPU::is_available().unwrap_or(false),
            },
            ProviderAvailability {
                name: ort::ep::CUDA::NAME,
                available: ort::ep::CUDA::is_available().unwrap_or(false),
            },
            ProviderAvailability {
                name: ort::ep::TensorRT::NAME,
                available: ort::ep::TensorRT::is_available().unwrap_or(false),
            },
        ]
    }

    /// Opens an ONNX model on the CPU execution provider with `threads` intra-op threads and
    /// ONNX Runtime's defaults otherwise.
    pub fn cpu_session(
        &self,
        model: &Path,
        threads: usize,
    ) -> Result<ort::session::Session, RuntimeError> {
        self.cpu_session_with(
            model,
            &CpuSessionOptions {
                intra_threads: threads,
                ..CpuSessionOptions::default()
            },
        )
    }

    /// Opens an ONNX model on the CPU execution provider with `options`.
    pub fn cpu_session_with(
        &self,
        model: &Path,
        options: &CpuSessionOptions,
    ) -> Result<ort::session::Session, RuntimeError> {
        self.session(model, options, &[])
            .map(|(session, _)| session)
    }

    /// Opens an ONNX model on `providers` in priority order (CPU always last, for the nodes the
    /// others do not take), with `options` for threads and graph settings.
    ///
    /// A `required` provider that this ONNX Runtime build lacks, that does not register, or
    /// with which the session does not start is a [`RuntimeError::ProviderRequired`] naming it
    /// and why. A `preferred` one is skipped with a warning and the reason is kept in
    /// [`SessionProviders::skipped`].
    pub fn session(
        &self,
        model: &Path,
        options: &CpuSessionOptions,
        providers: &[ProviderConfig],
    ) -> Result<(ort::session::Session, SessionProviders), RuntimeError> {
        self.session_of(model, None, options, providers)
    }

    /// [`OnnxRuntime::session`] of a graph already read into memory (`bytes`, the contents of
    /// `model`, which only names it in logs and errors): the session runs exactly the bytes
    /// that were checksummed, whatever happens to the file afterwards.
    pub fn session_from_bytes(
        &self,
        model: &Path,
        bytes: &[u8],
        options: &CpuSessionOptions,
        providers: &[ProviderConfig],
    ) -> Result<(ort::session::Session, SessionProviders), RuntimeError> {
        self.session_of(model, Some(bytes), options, providers)
    }

    fn session_of(
        &self,
        model: &Path,
        bytes: Option<&[u8]>,
        options: &CpuSessionOptions,
        providers: &[ProviderConfig],
    ) -> Result<(ort::session::Session, SessionProviders), RuntimeError> {
        let mut skipped = Vec::new();
        let mut give_up = |p: &ProviderConfig, reason: String| -> Result<(), RuntimeError> {
            let provider = p.kind.ort_name();
            match p.policy {
                ProviderPolicy::Required => Err(RuntimeError::ProviderRequired {
                    provider,
                    path: model.to_path_buf(),
                    reason,
                }),
                ProviderPolicy::Preferred => {
                    tracing::warn!(
                        provider,
                        model = %model.display(),
                        %reason,
                        "preferred execution provider not used; falling back to the next"
                    );
                    skipped.push(ProviderFallback { provider, reason });
                    Ok(())
                }
            }
        };
        let mut chosen: Vec<&ProviderConfig> = Vec::new();
        for p in providers
            .iter()
            .filter(|p| p.kind != ExecutionProviderKind::Cpu)
        {
            match provider_available(p.kind) {
                Ok(true) => chosen.push(p),
                Ok(false) => give_up(
                    p,
                    format!(
                        "this ONNX Runtime build ({} {}) was compiled without it (it has: {})",
                        self.library.path.display(),
                        self.version,
                        self.available_names().join(", ")
                    ),
                )?,
                Err(e) => give_up(p, e.to_string())?,
            }
        }
        loop {
            let mut builder = self.builder(model, options)?;
            let mut active = Vec::new();
            let mut registered = Vec::new();
            for p in &chosen {
                match register(p, &mut builder) {
                    Ok(()) => {
                        active.push(p.kind.ort_name());
                        registered.push(*p);
                    }
                    Err(e) => give_up(p, format!("it did not register: {e}"))?,
                }
            }
            active.push(ort::ep::CPU::NAME);
            let committed = match bytes {
                Some(bytes) => builder.commit_from_memory(bytes),
                None => builder.commit_from_file(model),
            };
            match committed {
                Ok(session) => {
                    tracing::info!(
                        model = %model.display(),
                        providers = %active.join(", "),
                        "inference session ready"
                    );
                    return Ok((session, SessionProviders { active, skipped }));
                }
                Err(e) => {
                    let reason = format!("the session did not start with it: {e}");
                    if let Some(p) = registered
                        .iter()
                        .find(|p| p.policy == ProviderPolicy::Required)
                        .filter(|_| {
                            registered
                                .iter()
                                .all(|p| p.policy == ProviderPolicy::Required)
                        })
                    {
                        return Err(RuntimeError::ProviderRequired {
                            provider: p.kind.ort_name(),
                            path: model.to_path_buf(),
                            reason,
                        });
                    }
                    if registered.is_empty() {
                        return Err(RuntimeError::Session {
                            path: model.to_path_buf(),
                            reason: e.to_string(),
                        });
                    }
                    // Retry without the preferred providers; the required ones stay.
                    for p in registered
                        .iter()
                        .filter(|p| p.policy == ProviderPolicy::Preferred)
                    {
                        give_up(p, reason.clone())?;
                    }
                    chosen.retain(|p| p.policy == ProviderPolicy::Required);
                }
            }
        }
    }

    /// Names of the providers this build has, of those meit knows.
    fn available_names(&self) -> Vec<&'static str> {
        self.providers()
            .into_iter()
            .filter(|p| p.available)
            .map(|p| p.name)
            .collect()
    }

    /// A session builder with `options` applied.
    fn builder(
        &self,
        model: &Path,
        options: &CpuSessionOptions,
    ) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        let fail = |e: String| RuntimeError::Session {
            path: model.to_path_buf(),
            reason: e,
        };
        let mut builder = ort::session::Session::builder(&self.environment)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(options.intra_threads.max(1))
            .map_err(|e| fail(e.to_string()))?;
        if let Some(threads) = options.inter_threads {
            builder = builder
                .with_parallel_execution(true)
                .map_err(|e| fail(e.to_string()))?
                .with_inter_threads(threads.max(1))
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(level) = options.optimization {
            builder = builder
                .with_optimization_level(level.into())
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(enable) = options.memory_pattern {
            builder = builder
                .with_memory_pattern(enable)
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(enable) = options.spinning {
            builder = builder
                .with_intra_op_spinning(enable)
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(builder)
    }
}

/// Whether this ONNX Runtime build has `kind`.
fn provider_available(kind: ExecutionProviderKind) -> ort::Result<bool> {
    match kind {
        ExecutionProviderKind::Cpu => ort::ep::CPU::is_available(),
        ExecutionProviderKind::Cuda => ort::ep::CUDA::is_available(),
        ExecutionProviderKind::Tensorrt => ort::ep::TensorRT::is_available(),
    }
}

/// Registers `p` with its settings on `builder`.
fn register(
    p: &ProviderConfig,
    builder: &mut ort::session::builder::SessionBuilder,
) -> ort::Result<()> {
    let device = p.device_id.map(|d| d as i32);
    match p.kind {
        ExecutionProviderKind::Cpu => ort::ep::CPU::default().register(builder),
        ExecutionProviderKind::Cuda => {
            let mut ep = ort::ep::CUDA::default();
            if let Some(d) = device {
                ep = ep.with_device_id(d);
            }
            ep.register(builder)
        }
        ExecutionProviderKind::Tensorrt => {
            let mut ep = ort::ep::TensorRT::default().with_fp16(p.fp16);
            if let Some(d) = device {
                ep = ep.with_device_id(d);
            }
            if let Some(dir) = &p.engine_cache_dir {
                ep = ep
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display());
            }
            if let Some(dir) = &p.timing_cache_dir {
                ep = ep
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            if let Some(core) = p.dla_core {
                ep = ep.with_dla(true).with_dla_core(core);
            }
            if let Some(s) = &p.profile_min_shapes {
                ep = ep.with_profile_min_shapes(s);
            }
            if let Some(s) = &p.profile_opt_shapes {
                ep = ep.with_profile_opt_shapes(s);
            }
            if let Some(s) = &p.profile_max_shapes {
                ep = ep.with_profile_max_shapes(s);
            }
            ep.register(builder)
        }
    }
}

/// A preferred provider a session was opened without, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFallback {
    /// ONNX Runtime's name of the provider.
    pub provider: &'static str,
    /// Why it was not used.
    pub reason: String,
}

/// The providers an opened session runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionProviders {
    /// Registered providers in priority order, `CPUExecutionProvider` last (it runs every node
    /// the others do not take).
    pub active: Vec<&'static str>,
    /// Preferred providers that were skipped, with the reason.
    pub skipped: Vec<ProviderFallback>,
}

impl SessionProviders {
    /// The provider that takes the session's nodes first.
    pub fn primary(&self) -> &'static str {
        self.active.first().copied().unwrap_or(ort::ep::CPU::NAME)
    }
}

/// ONNX Runtime's graph optimization levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizationLevel {
    /// No graph rewrites.
    Disable,
    /// Constant folding, redundant node removal, simple fusions.
    Basic,
    /// Basic plus complex fusions (the CPU and CUDA providers).
    Extended,
    /// Everything, layout rewrites included.
    All,
}

impl From<OptimizationLevel> for ort::session::builder::GraphOptimizationLevel {
    fn from(level: OptimizationLevel) -> Self {
        use ort::session::builder::GraphOptimizationLevel as G;
        match level {
            OptimizationLevel::Disable => G::Disable,
            OptimizationLevel::Basic => G::Level1,
            OptimizationLevel::Extended => G::Level2,
            OptimizationLevel::All => G::All,
        }
    }
}

/// How a CPU session is set up; `None` leaves ONNX Runtime's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSessionOptions {
    /// Intra-op threads (at least 1).
    pub intra_threads: usize,
    /// Graph optimization level.
    pub optimization: Option<OptimizationLevel>,
    /// Memory pattern planning (reuses one allocation plan for inputs of the same shape).
    pub memory_pattern: Option<bool>,
    /// Whether intra-op threads spin before sleeping.
    pub spinning: Option<bool>,
    /// Inter-op threads (parallel execution of independent graph branches); sequential
    /// execution when `None`.
    pub inter_threads: Option<usize>,
}

impl Default for CpuSessionOptions {
    fn default() -> Self {
        CpuSessionOptions {
            intra_threads: 1,
            optimization: None,
            memory_pattern: None,
            spinning: None,
            inter_threads: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&lib, b"x").unwrap();
        let got = locate(Some(&lib), Some("/elsewhere".into()), &[]).unwrap();
        assert_eq!(
            got,
            LocatedLibrary {
                path: lib,
                source: LibrarySource::Config
            }
        );
        let err = locate(Some(Path::new("/no/such/lib.so")), None, &[]).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::Missing {
                source_: LibrarySource::Config,
                ..
            }
        ));
        assert!(err.to_string().contains("fetch-onnxruntime.sh"));
    }

    #[test]
    fn env_is_second_and_empty_env_is_unset() {
        let err = locate(None, Some("/no/such/lib.so".into()), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                RuntimeError::Missing {
                    source_: LibrarySource::Env,
                    ..
                }
            ),
            "{err}"
        );
        let err = locate(None, Some("".into()), &[]).unwrap_err();
        assert!(matches!(err, RuntimeError::NotFound { .. }));
    }

    #[test]
    fn project_local_prefers_highest_version() {
        let root = tempfile::tempdir().unwrap();
        let dir = root
            .path()
            .join(".onnxruntime")
            .join(std::env::consts::ARCH);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "libonnxruntime.so.1.17.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let got = locate(
            None,
            None,
            &[PathBuf::from("/nonexistent"), root.path().to_path_buf()],
        )
        .unwrap();
        assert_eq!(got.source, LibrarySource::ProjectLocal);
        assert!(
            got.path.ends_with("libonnxruntime.so.1.31.1"),
            "{}",
            got.path.display()
        );
    }

    #[test]
    fn not_found_is_one_line_with_the_fix() {
        let err = locate(None, None, &[PathBuf::from("/nonexistent")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains("ORT_DYLIB_PATH (unset)") && err.contains("fix: run"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let lib = LocatedLibrary {
            path: fake,
            source: LibrarySource::Env,
        };
        assert!(matches!(
            probe_version(&lib),
            Err(RuntimeError::Unloadable { .. })
        ));
        // A real shared library that is not ONNX Runtime.
        let libc = LocatedLibrary {
            path: PathBuf::from("libc.so.6"),
            source: LibrarySource::Env,
        };
        let err = probe_version(&libc).unwrap_err();
        assert!(err.to_string().contains("OrtGetApiBase"), "{err}");
    }
}
