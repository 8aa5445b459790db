//! The `[runtime]` and `[model]` tables: ONNX Runtime and the model bundle to serve.

use std::path::PathBuf;

use serde::Deserialize;

use crate::ecg::Lead;

/// An ONNX Runtime execution provider the engine may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    /// The CPU provider (always available; ONNX Runtime runs every node the others do not take
    /// on it).
    #[default]
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT (Jetson).
    Tensorrt,
}

impl ExecutionProviderKind {
    /// The name ONNX Runtime gives the provider (`CUDAExecutionProvider`, ...).
    pub fn ort_name(self) -> &'static str {
        use ort::ep::ExecutionProvider as _;
        match self {
            ExecutionProviderKind::Cpu => ort::ep::CPU::NAME,
            ExecutionProviderKind::Cuda => ort::ep::CUDA::NAME,
            ExecutionProviderKind::Tensorrt => ort::ep::TensorRT::NAME,
        }
    }

    /// The name the configuration uses (`cuda`).
    pub fn config_name(self) -> &'static str {
        match self {
            ExecutionProviderKind::Cpu => "cpu",
            ExecutionProviderKind::Cuda => "cuda",
            ExecutionProviderKind::Tensorrt => "tensorrt",
        }
    }
}

/// What happens when a configured provider cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderPolicy {
    /// Startup fails with an error naming the provider and why (the default: a deployment that
    /// asked for a GPU is not silently 20x slower).
    #[default]
    Required,
    /// A warning is logged and the next provider in the list is used.
    Preferred,
}

/// One entry of `[runtime] execution_providers`: either a bare name (`"cuda"`, required) or a
/// table with a policy and the provider's own settings:
///
/// ```toml
/// [[runtime.execution_providers]]
/// kind = "tensorrt"
/// policy = "preferred"
/// fp16 = true
/// engine_cache_dir = "/var/lib/meit/tensorrt"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderConfig {
    /// Which provider.
    pub kind: ExecutionProviderKind,
    /// Required or preferred.
    pub policy: ProviderPolicy,
    /// GPU ordinal (CUDA, TensorRT); ONNX Runtime's default (0) when absent.
    pub device_id: Option<u32>,
    /// TensorRT: build fp16 engines.
    pub fp16: bool,
    /// TensorRT: directory of the serialized-engine cache (engines are built once, at the
    /// first session on a machine, then loaded from here).
    pub engine_cache_dir: Option<PathBuf>,
    /// TensorRT: directory of the timing cache (speeds up rebuilding engines).
    pub timing_cache_dir: Option<PathBuf>,
    /// TensorRT: run on this DLA core (Jetson Orin has 0 and 1); layers the DLA cannot run fall
    /// back to the GPU.
    pub dla_core: Option<u32>,
    /// TensorRT: shape profile, minimum shapes (`ecg:1x12x1000`), as ONNX Runtime spells them.
    pub profile_min_shapes: Option<String>,
    /// TensorRT: shape profile, shapes to optimise for.
    pub profile_opt_shapes: Option<String>,
    /// TensorRT: shape profile, maximum shapes.
    pub profile_max_shapes: Option<String>,
}

impl ProviderConfig {
    /// A provider with its defaults and `policy`.
    pub fn new(kind: ExecutionProviderKind, policy: ProviderPolicy) -> ProviderConfig {
        ProviderConfig {
            kind,
            policy,
            ..ProviderConfig::default()
        }
    }

    /// The settings given that `kind` does not have, by their configuration names.
    pub fn foreign_settings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let gpu = self.kind != ExecutionProviderKind::Cpu;
        let trt = self.kind == ExecutionProviderKind::Tensorrt;
        let checks: [(&'static str, bool, bool); 8] = [
            ("device_id", self.device_id.is_some(), gpu),
            ("fp16", self.fp16, trt),
            ("engine_cache_dir", self.engine_cache_dir.is_some(), trt),
            ("timing_cache_dir", self.timing_cache_dir.is_some(), trt),
            ("dla_core", self.dla_core.is_some(), trt),
            ("profile_min_shapes", self.profile_min_shapes.is_some(), trt),
            ("profile_opt_shapes", self.profile_opt_shapes.is_some(), trt),
            ("profile_max_shapes", self.profile_max_shapes.is_some(), trt),
        ];
        for (name, given, allowed) in checks {
            if given && !allowed {
                out.push(name);
            }
        }
        out
    }
}

/// The table form of [`ProviderConfig`], parsed with unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderTable {
    kind: ExecutionProviderKind,
    #[serde(default)]
    policy: ProviderPolicy,
    device_id: Option<u32>,
    #[serde(default)]
    fp16: bool,
    engine_cache_dir: Option<PathBuf>,
    timing_cache_dir: Option<PathBuf>,
    dla_core: Option<u32>,
    profile_min_shapes: Option<String>,
    profile_opt_shapes: Option<String>,
    profile_max_shapes: Option<String>,
}

impl<'de> Deserialize<'de> for ProviderConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ProviderConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a provider name (\"cpu\", \"cuda\", \"tensorrt\") or a table with `kind`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProviderConfig, E> {
                let kind = ExecutionProviderKind::deserialize(
                    serde::de::value::StrDeserializer::<E>::new(v),
                )?;
                Ok(ProviderConfig::new(kind, ProviderPolicy::Required))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<ProviderConfig, M::Error> {
                let t =
                    ProviderTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ProviderConfig {
                    kind: t.kind,
                    policy: t.policy,
                    device_id: t.device_id,
                    fp16: t.fp16,
                    engine_cache_dir: t.engine_cache_dir,
                    timing_cache_dir: t.timing_cache_dir,
                    dla_core: t.dla_core,
                    profile_min_shapes: t.profile_min_shapes,
                    profile_opt_shapes: t.profile_opt_shapes,
                    profile_max_shapes: t.profile_max_shapes,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path to `libonnxruntime.so*`; when absent, `ORT_DYLIB_PATH` and then the project-local
    /// folder `.onnxruntime/<arch>/` are tried.
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers in priority order. A `required` provider that cannot start stops the
    /// daemon at startup with the reason; a `preferred` one is skipped with a warning. The CPU
    /// provider, when listed, must come last (it takes every node).
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<ProviderConfig>,
    /// Intra-op threads per inference session (parallelism inside one operator).
    #[serde(default = "default_threads")]
    pub intra_threads: usize,
    /// Inter-op threads per session (parallel branches of the graph); ONNX Runtime's default
    /// (sequential execution) when absent.
    pub inter_threads: Option<usize>,
    /// Whether idle intra-op threads spin for a while before sleeping. Spinning saves the
    /// wake-up of every operator's worker threads (lower latency per token on a box whose
    /// cores are the daemon's); sleeping leaves the cores to other processes between
    /// operators (a gateway shared with other services). Default: sleep
    /// (`docs/bench/infer.md` measures both).
    #[serde(default)]
    pub intra_op_spinning: bool,
    /// Lookup drafts a decoder call when a window is generated alone on a host cache: up to
    /// this many guessed tokens (n-grams of this report and of recent ones) are checked in one
    /// call, and the ones greedy decoding confirms save a call each. Off by default (0: one
    /// token a call): a call of several tokens rounds int4 products differently from a call of
    /// one, so where greedy decoding is a near-tie a report can differ from the evaluated
    /// one-token path and, through the drafts, depend on other beds' recent reports
    /// (`src/infer/draft.rs`).
    #[serde(default)]
    pub draft_tokens: usize,
}

fn default_providers() -> Vec<ProviderConfig> {
    vec![ProviderConfig::new(
        ExecutionProviderKind::Cpu,
        ProviderPolicy::Required,
    )]
}
fn default_threads() -> usize {
    2
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            onnxruntime: None,
            execution_providers: default_providers(),
            intra_threads: default_threads(),
            inter_threads: None,
            intra_op_spinning: false,
            draft_tokens: 0,
        }
    }
}

impl RuntimeConfig {
    /// Checks the provider list: `(field, reason)` for the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let field = "runtime.execution_providers";
        if self.execution_providers.is_empty() {
            return Err((
                field.into(),
                "is empty; allowed: a list of \"cpu\", \"cuda\", \"tensorrt\" (or tables with `kind`)".into(),
            ));
        }
        let mut seen = Vec::new();
        for (i, p) in self.execution_providers.iter().enumerate() {
            if seen.contains(&p.kind) {
                return Err((
                    format!("{field}[{i}]"),
                    format!("{} is listed twice", p.kind.config_name()),
                ));
            }
            seen.push(p.kind);
            if p.kind == ExecutionProviderKind::Cpu && i + 1 != self.execution_providers.len() {
                return Err((
                    format!("{field}[{i}]"),
                    "cpu must be the last provider: it takes every node, so providers after it would never run".into(),
                ));
            }
            let foreign = p.foreign_settings();
            if !foreign.is_empty() {
                return Err((
                    format!("{field}[{i}]"),
                    format!(
                        "{} has no setting {}",
                        p.kind.config_name(),
                        foreign.join(", ")
                    ),
                ));
            }
        }
        if self.intra_threads == 0 {
            return Err((
                "runtime.intra_threads".into(),
                "is 0; allowed: 1 or more".into(),
            ));
        }
        if self.inter_threads == Some(0) {
            return Err((
                "runtime.inter_threads".into(),
                "is 0; allowed: 1 or more".into(),
            ));
        }
        Ok(())
    }
}

/// Which model bundle to serve.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Directory of the model bundle (manifest, encoder, decoder, tokenizer).
    #[serde(default = "default_bundle")]
    pub bundle: PathBuf,
    /// Leads the daemon insists on before it reports (others are masked and flagged); empty:
    /// the leads each device provides.
    #[serde(default)]
    pub required_leads: Vec<Lead>,
    /// Refuse to start when the bundle cannot be used (default: start, publish quality and
    /// measurements, and say on every reportable window why there is no report).
    #[serde(default)]
    pub required: bool,
}

fn default_bundle() -> PathBuf {
    PathBuf::from("models/bundles/tiny")
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            bundle: default_bundle(),
            required_leads: Vec::new(),
            required: false,
        }
    }
}
