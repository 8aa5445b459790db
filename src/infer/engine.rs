//! The inference engine: a bundle's two graphs on ONNX Runtime and greedy report generation.
//!
//! ```text
//! ecg [batch, leads, samples] --encoder.onnx--> slot.{i}.key/value   (cache position 0)
//! prompt ids (manifest) at positions 1..=P, past = slot  --decoder.onnx--> logits, present
//! argmax of the last logits -> next token at position P + 1, past = present, ... until a stop
//! id, max_new_tokens, or the decoder's last position
//! ```
//!
//! Windows are generated together as one batch: every row has the same prompt, so prefill
//! needs no padding; a row that has stopped keeps a masked pad token until the batch ends, and
//! its output is ignored (rows never see each other). The present key/value outputs are handed
//! back as the next call's past inputs without copying them through Rust, and stay where the
//! decoder's provider computed them ([`CacheDevice`]): with IoBinding the encoder's slot and every
//! present land on that device and only the logits come to the host, so a CUDA or TensorRT
//! session never moves the cache over the bus between steps.
//!
//! A decoder written with GroupQueryAttention ([`Attention::GroupQuery`]) decodes in place on the
//! host (`super::cache`): after the prompt, the cache moves once into buffers with room for the
//! whole report, bound as both the past input and the present output of every step, so
//! ONNX Runtime writes each new token's key and value where they belong and nothing is allocated
//! or copied per token (onnxruntime-genai's "past-present share buffer"). Its CPU kernel does not
//! take a prompt of several tokens after a past in a batch of more than one, so such a batch is
//! prefilled one row at a time and the rows' caches are stacked into the buffers.
//!
//! A window generated alone may decode with lookup drafts ([`Engine::set_draft_tokens`],
//! [`super::draft`]): each call feeds the last token and a few guessed ones, and keeps the
//! guesses greedy decoding confirms; a grown cache is cut back after a rejected guess, in-place
//! buffers are simply overwritten by the next call.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, Array3, ArrayView2, Axis, s};
use ort::session::Session;
use ort::value::{DynValue, Tensor};

use super::bundle::{
    Attention, Bundle, BundleError, DECODER_INPUTS, ECG_INPUT, LOGITS_OUTPUT, RHYTHM_INPUT,
    SLOT_PREFIX,
};
pub use super::cache::{Cache, CacheDevice};
use super::cache::{
    KvCache, bind_cache_outputs, in_place_buffers, select_rows, set_sentinel, stack_rows,
    take_cache,
};
use super::config::ProviderConfig;
use super::detokenize::{DetokenizeError, Detokenizer};
use super::draft::LookupDrafts;
use super::runtime::{CpuSessionOptions, OnnxRuntime, RuntimeError, SessionProviders};
use crate::dsp::ModelInput;
use crate::dsp::rhythm::{RHYTHM_FEATURES, RhythmFeatures};

/// One preprocessed window as the encoder reads it: the samples (`leads x samples`) and, for a
/// bundle whose encoder reads them (`rhythm_features`), the R-R interval statistics.
pub trait EncoderInput {
    /// The normalised samples, `leads x samples`.
    fn samples(&self) -> ArrayView2<'_, f32>;
    /// The R-R interval statistics; none for a bare array.
    fn rhythm(&self) -> Option<RhythmFeatures>;
}

impl EncoderInput for ArrayView2<'_, f32> {
    fn samples(&self) -> ArrayView2<'_, f32> {
        self.view()
    }
    fn rhythm(&self) -> Option<RhythmFeatures> {
        None
    }
}

impl EncoderInput for ModelInput {
    fn samples(&self) -> ArrayView2<'_, f32> {
        self.samples.view()
    }
    fn rhythm(&self) -> Option<RhythmFeatures> {
        self.rhythm
    }
}

impl<T: EncoderInput + ?Sized> EncoderInput for &T {
    fn samples(&self) -> ArrayView2<'_, f32> {
        (**self).samples()
    }
    fn rhythm(&self) -> Option<RhythmFeatures> {
        (**self).rhythm()
    }
}

/// Why the engine cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bundle does not verify.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle's tokenizer cannot decode.
    #[error(transparent)]
    Tokenizer(#[from] DetokenizeError),
    /// A graph could not be opened.
    #[error("{}: cannot open the graph: {reason}", path.display())]
    Session {
        /// The graph file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// An execution provider the configuration requires cannot run a graph.
    #[error(transparent)]
    ProviderRequired(RuntimeError),
    /// Input that does not fit the model.
    #[error("input: {0}")]
    Input(String),
    /// ONNX Runtime failed while running a graph.
    #[error("{graph}: {reason}")]
    Run {
        /// `encoder` or `decoder`.
        graph: &'static str,
        /// ONNX Runtime's message.
        reason: String,
    },
}

pub(super) fn run_error(graph: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |e| EngineError::Run {
        graph,
        reason: e.to_string(),
    }
}

/// One generated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated ids (the stop id included when one was generated).
    pub ids: Vec<u32>,
    /// The text: special tokens left out, trimmed.
    pub text: String,
    /// The model ended the report itself (its last id is a stop id); false when it was cut at
    /// `max_new_tokens` or the model's last position, and the text may end mid-statement.
    pub finished: bool,
}

/// Where the time of one batch went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Encoder run, ms.
    pub encode_ms: f64,
    /// Prompt prefill, ms.
    pub prefill_ms: f64,
    /// All decode steps, ms.
    pub decode_ms: f64,
    /// Decode calls run (a call with lookup drafts may add several tokens).
    pub decode_steps: usize,
    /// Prompt tokens prefilled per row.
    pub prompt_tokens: usize,
    /// Tokens generated over all rows (the prefill's first token included).
    pub generated_tokens: usize,
    /// Times finished rows were dropped from the batch's cache.
    pub compactions: usize,
    /// Lookup drafts fed to the decoder ([`Engine::set_draft_tokens`]).
    pub drafted_tokens: usize,
    /// Tokens kept beyond one a decode call: the drafts greedy decoding confirmed, each one a
    /// decoder call saved.
    pub accepted_tokens: usize,
}

/// The two sessions of a bundle and its tokenizer.
pub struct Engine {
    bundle: Bundle,
    encoder: Session,
    decoder: Session,
    detokenizer: Detokenizer,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
    threads: usize,
    providers: [SessionProviders; 2],
    cache_device: CacheDevice,
    attention: Attention,
    in_place_steps: u64,
    drafts: LookupDrafts,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bundle", &self.bundle.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens `bundle`'s graphs on the CPU provider with `threads` intra-op threads and the
    /// engine's session settings ([`Engine::session_options`]).
    pub fn new(
        bundle: Bundle,
        runtime: &OnnxRuntime,
        threads: usize,
    ) -> Result<Engine, EngineError> {
        Engine::with_options(bundle, runtime, &Engine::session_options(threads))
    }

    /// The CPU session settings [`Engine::new`] uses with `threads` intra-op threads: ONNX
    /// Runtime's defaults except that idle intra-op threads sleep instead of spinning. On the
    /// 2-core build box, shared with other jobs, spinning threads took the cores the decode
    /// steps needed: tiny int4 report p50 25-40 ms with spinning, 4-12 ms without, same run
    /// (`meit bench infer --spinning true|false`; graph optimization level and memory pattern
    /// made no difference beyond the noise).
    pub fn session_options(threads: usize) -> CpuSessionOptions {
        CpuSessionOptions {
            intra_threads: threads.max(1),
            spinning: Some(false),
            ..CpuSessionOptions::default()
        }
    }

    /// Opens `bundle`'s graphs on the CPU provider with explicit session settings.
    pub fn with_options(
        bundle: Bundle,
        runtime: &OnnxRuntime,
        options: &CpuSessionOptions,
    ) -> Result<Engine, EngineError> {
        Engine::with_providers(bundle, runtime, options, &[])
    }

    /// Opens `bundle`'s graphs on `providers` in priority order (see
    /// [`OnnxRuntime::session`]: a required provider that cannot run a graph is
    /// [`EngineError::ProviderRequired`], a preferred one falls back with a warning).
    pub fn with_providers(
        bundle: Bundle,
        runtime: &OnnxRuntime,
        options: &CpuSessionOptions,
        providers: &[ProviderConfig],
    ) -> Result<Engine, EngineError> {
        // Each graph is checksummed as it is read, and the session built from those bytes.
        let open = |file: &str| -> Result<_, EngineError> {
            let path = bundle.path(file);
            let bytes = bundle.read_verified(file)?;
            runtime
                .session_from_bytes(&path, &bytes, options, providers)
                .map_err(|e| match e {
                    RuntimeError::ProviderRequired { .. } => EngineError::ProviderRequired(e),
                    other => EngineError::Session {
                        path,
                        reason: other.to_string(),
                    },
                })
        };
        let manifest = &bundle.manifest;
        let attention = manifest.decoder_graph.attention;
        let (encoder, encoder_providers) = open(&manifest.encoder_graph.file)?;
        let (decoder, decoder_providers) = open(&manifest.decoder_graph.file)?;
        let detokenizer = Detokenizer::from_bytes(
            &bundle.path(&manifest.tokenizer),
            &bundle.read_verified(&manifest.tokenizer)?,
        )?;
        let layers = manifest.decoder.num_layers;
        let past_names = (0..layers)
            .map(|i| {
                (
                    format!("past_key_values.{i}.key"),
                    format!("past_key_values.{i}.value"),
                )
            })
            .collect();
        let present_names = (0..layers)
            .map(|i| (format!("present.{i}.key"), format!("present.{i}.value")))
            .collect();
        Ok(Engine {
            bundle,
            encoder,
            decoder,
            detokenizer,
            past_names,
            present_names,
            threads: options.intra_threads.max(1),
            cache_device: CacheDevice::for_provider(decoder_providers.primary(), providers),
            providers: [encoder_providers, decoder_providers],
            attention,
            in_place_steps: 0,
            drafts: LookupDrafts::new(0),
        })
    }

    /// Up to `k` lookup drafts a decoder call when one window is generated on a host cache (0,
    /// the default: none). Drafts greedy decoding confirms save a call each; the text is greedy
    /// decoding's up to the rounding of several-token calls ([`super::draft`]). Batches of
    /// several windows, and a cache on a GPU (where cutting rejected entries would move the
    /// cache over the bus), decode one token a call.
    pub fn set_draft_tokens(&mut self, k: usize) {
        self.drafts = LookupDrafts::new(k);
    }

    /// The most lookup drafts a call ([`Engine::set_draft_tokens`]).
    pub fn draft_tokens(&self) -> usize {
        self.drafts.max_tokens()
    }

    /// Forgets the earlier outputs drafts are looked up in (a benchmark that repeats its inputs
    /// would otherwise draft each report from its own earlier copy).
    pub fn forget_drafts(&mut self) {
        self.drafts = LookupDrafts::new(self.drafts.max_tokens());
    }

    /// The providers the encoder and the decoder session run on, in that order.
    pub fn providers(&self) -> &[SessionProviders; 2] {
        &self.providers
    }

    /// The provider that runs the decoder first (what a report's generation mostly ran on).
    pub fn primary_provider(&self) -> &'static str {
        self.providers[1].primary()
    }

    /// Where the decoder's cache stays between calls.
    pub fn cache_device(&self) -> CacheDevice {
        self.cache_device
    }

    /// Whether generation decodes in place (buffers bound as past and present, `super::cache`):
    /// a GroupQueryAttention decoder whose cache lives on the host.
    pub fn decodes_in_place(&self) -> bool {
        self.attention == Attention::GroupQuery && self.cache_device == CacheDevice::Host
    }

    /// Decoder calls so far that were seen to write the cache in place: a sentinel in an unused
    /// entry of the buffers survived the call (ONNX Runtime's kernel zero-fills a present it
    /// does not share with the past, so a lost alias shows here, and as a warning).
    pub fn in_place_steps(&self) -> u64 {
        self.in_place_steps
    }

    /// Intra-op threads of each session.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The bundle the engine runs.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The bundle's detokenizer.
    pub fn detokenizer(&self) -> &Detokenizer {
        &self.detokenizer
    }

    /// Every layer's ECG-slot key and value for a batch `ecg` `[batch, leads, samples]`, as
    /// ONNX Runtime values (the decoder's first past).
    pub fn slots(&mut self, ecg: Array3<f32>) -> Result<Vec<(DynValue, DynValue)>, EngineError> {
        self.slots_with_rhythm(ecg, None)
    }

    /// [`Engine::slots`] with each row's R-R interval statistics `[batch, 4]`
    /// ([`RhythmFeatures::to_array`]), which a bundle with `rhythm_features` requires and any
    /// other ignores.
    pub fn slots_with_rhythm(
        &mut self,
        ecg: Array3<f32>,
        rhythm: Option<Array2<f32>>,
    ) -> Result<Vec<(DynValue, DynValue)>, EngineError> {
        let leads = self.bundle.manifest.encoder.leads;
        if ecg.dim().1 != leads || ecg.dim().0 == 0 || ecg.dim().2 < 8 {
            return Err(EngineError::Input(format!(
                "ECG batch must be [batch >= 1, {leads} leads, >= 8 samples], got {:?}",
                ecg.dim()
            )));
        }
        if ecg.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::Input(
                "ECG batch holds a non-finite sample".into(),
            ));
        }
        let batch = ecg.dim().0;
        let rhythm = match rhythm {
            _ if !self.reads_rhythm() => None,
            None => {
                return Err(EngineError::Input(format!(
                    "this bundle's encoder reads the R-R interval statistics (`{RHYTHM_INPUT}`); \
                     none were given"
                )));
            }
            Some(r) if r.dim() != (batch, RHYTHM_FEATURES) => {
                return Err(EngineError::Input(format!(
                    "R-R interval statistics must be [{batch}, {RHYTHM_FEATURES}], got {:?}",
                    r.dim()
                )));
            }
            Some(r) if r.iter().any(|v| !v.is_finite()) => {
                return Err(EngineError::Input(
                    "R-R interval statistics hold a non-finite value".into(),
                ));
            }
            Some(r) => Some(r),
        };
        let fail = run_error("encoder");
        let input = Tensor::from_array(ecg).map_err(&fail)?;
        let mut binding = self.encoder.create_binding().map_err(&fail)?;
        binding.bind_input(ECG_INPUT, &input).map_err(&fail)?;
        if let Some(r) = rhythm {
            let r = Tensor::from_array(r).map_err(&fail)?;
            binding.bind_input(RHYTHM_INPUT, &r).map_err(&fail)?;
        }
        let slot_names: Vec<(String, String)> = (0..self.present_names.len())
            .map(|i| {
                (
                    format!("{SLOT_PREFIX}.{i}.key"),
                    format!("{SLOT_PREFIX}.{i}.value"),
                )
            })
            .collect();
        bind_cache_outputs(&mut binding, &slot_names, self.cache_device).map_err(&fail)?;
        let mut outputs = self.encoder.run_binding(&binding).map_err(&fail)?;
        take_cache(&mut outputs, &slot_names, "encoder")
    }

    /// Whether this bundle's encoder reads the R-R interval statistics.
    pub fn reads_rhythm(&self) -> bool {
        self.bundle.manifest.preprocess.rhythm_features
    }

    /// The windows' R-R interval statistics as `[batch, 4]` when the encoder reads them (every
    /// window must carry them), else none.
    fn rhythm_rows<W: EncoderInput>(
        &self,
        windows: &[W],
    ) -> Result<Option<Array2<f32>>, EngineError> {
        if !self.reads_rhythm() {
            return Ok(None);
        }
        let mut rows = Array2::<f32>::zeros((windows.len(), RHYTHM_FEATURES));
        for (i, (mut row, w)) in rows.axis_iter_mut(Axis(0)).zip(windows).enumerate() {
            let features = w.rhythm().ok_or_else(|| {
                EngineError::Input(format!(
                    "window {i} carries no R-R interval statistics, which this bundle's encoder \
                     reads (its preprocessing has `rhythm_features`)"
                ))
            })?;
            row.assign(&ndarray::ArrayView1::from(&features.to_array()));
        }
        Ok(Some(rows))
    }

    /// One decoder call: `ids`, `positions` `[batch, T]`, `mask` `[batch, past + T]` after
    /// `past`; returns the logits `[batch, T, vocab]` and the present cache.
    pub fn decode(
        &mut self,
        ids: Array2<i64>,
        positions: Array2<i64>,
        mask: Array2<i64>,
        past: Vec<(DynValue, DynValue)>,
    ) -> Result<(Array3<f32>, Cache), EngineError> {
        let (logits, present) =
            self.decoder_call(ids, positions, mask, KvCache::Grown(past), |logits| {
                logits
                    .into_dimensionality::<ndarray::Ix3>()
                    .map(|l| l.to_owned())
                    .map_err(|e| format!("logits: {e}"))
            })?;
        Ok((logits, present.into_grown()?))
    }

    /// One decoder call that hands the logits view `[batch, T, vocab]` to `read` instead of
    /// copying them out. A grown `past` comes back as the call's present outputs; an in-place
    /// one is bound as both past and present and comes back holding the new entries.
    fn decoder_call<R>(
        &mut self,
        ids: Array2<i64>,
        positions: Array2<i64>,
        mask: Array2<i64>,
        past: KvCache,
        read: impl FnOnce(ndarray::ArrayViewD<'_, f32>) -> Result<R, String>,
    ) -> Result<(R, KvCache), EngineError> {
        let fail = run_error("decoder");
        let entries = mask.ncols();
        let mut binding = self.decoder.create_binding().map_err(&fail)?;
        // DECODER_INPUTS: input_ids, attention_mask, position_ids.
        for (name, a) in DECODER_INPUTS.into_iter().zip([ids, mask, positions]) {
            let value = Tensor::from_array(a).map_err(&fail)?;
            binding.bind_input(name, &value).map_err(&fail)?;
        }
        binding
            .bind_output_to_device(
                LOGITS_OUTPUT,
                &CacheDevice::Host.memory_info().map_err(&fail)?,
            )
            .map_err(&fail)?;
        let in_place = match past {
            KvCache::Grown(past) => {
                for ((k, v), (k_name, v_name)) in past.iter().zip(&self.past_names) {
                    binding.bind_input(k_name, k).map_err(&fail)?;
                    binding.bind_input(v_name, v).map_err(&fail)?;
                }
                // The binding holds the past inputs now; the caller's handles can go.
                drop(past);
                bind_cache_outputs(&mut binding, &self.present_names, self.cache_device)
                    .map_err(&fail)?;
                None
            }
            KvCache::InPlace(mut buffers) => {
                let sentinel = match buffers.first_mut() {
                    Some((k, _)) => set_sentinel(k, entries).map_err(&fail)?,
                    None => None,
                };
                let names = self.past_names.iter().zip(&self.present_names);
                for ((k, v), ((past_k, past_v), (present_k, present_v))) in
                    buffers.iter_mut().zip(names)
                {
                    binding.bind_input(past_k, &*k).map_err(&fail)?;
                    binding.bind_input(past_v, &*v).map_err(&fail)?;
                    binding.bind_output(present_k, &mut *k).map_err(&fail)?;
                    binding.bind_output(present_v, &mut *v).map_err(&fail)?;
                }
                Some((buffers, sentinel))
            }
        };
        let mut outputs = self.decoder.run_binding(&binding).map_err(&fail)?;
        let logits = outputs[LOGITS_OUTPUT]
            .try_extract_array::<f32>()
            .map_err(&fail)?;
        let read = read(logits).map_err(|reason| EngineError::Run {
            graph: "decoder",
            reason,
        })?;
        let present = match in_place {
            Some((buffers, sentinel)) => {
                if let (Some(at), Some((k, _))) = (sentinel, buffers.first()) {
                    let kept = k.try_extract_array::<f32>().map_err(&fail)?[at.as_slice()].is_nan();
                    if kept {
                        self.in_place_steps += 1;
                    } else {
                        tracing::warn!(
                            "the decoder did not write its cache in place (an unused entry was \
                             overwritten): decoding is correct but copies the cache every step"
                        );
                    }
                }
                KvCache::InPlace(buffers)
            }
            None => KvCache::Grown(take_cache(&mut outputs, &self.present_names, "decoder")?),
        };
        Ok((read, present))
    }

    /// One decoder call returning `per_row` of each row's logits at the last new position.
    fn decode_last<R>(
        &mut self,
        ids: Array2<i64>,
        positions: Array2<i64>,
        mask: Array2<i64>,
        past: KvCache,
        per_row: impl Fn(ndarray::ArrayView1<'_, f32>) -> R,
    ) -> Result<(Vec<R>, KvCache), EngineError> {
        let fed = ids.nrows();
        self.decoder_call(ids, positions, mask, past, |logits| {
            last_position_rows(logits, fed, &per_row)
        })
    }

    /// The prompt's call: `ids` `[batch, T]` after the grown `past`, returning `per_row` of each
    /// row's last logits and the cache to decode from: in place with room for `capacity`
    /// entries when [`Engine::decodes_in_place`], grown otherwise. A GroupQueryAttention decoder
    /// prefills a batch one row at a time when the prompt follows a past (its CPU kernel's
    /// constraint), each row exactly as a batch of one.
    fn prefill_last<R>(
        &mut self,
        ids: Array2<i64>,
        positions: Array2<i64>,
        mask: Array2<i64>,
        past: Cache,
        capacity: usize,
        per_row: impl Fn(ndarray::ArrayView1<'_, f32>) -> R,
    ) -> Result<(Vec<R>, KvCache), EngineError> {
        let rows = ids.nrows();
        let past_len = past
            .first()
            .and_then(|(k, _)| k.dtype().tensor_shape())
            .and_then(|shape| shape.get(2).copied());
        let row_by_row = self.attention == Attention::GroupQuery
            && rows > 1
            && ids.ncols() > 1
            && past_len > Some(0);
        let (results, presents) = if row_by_row {
            let mut results = Vec::with_capacity(rows);
            let mut presents = Vec::with_capacity(rows);
            for r in 0..rows {
                let one = |a: &Array2<i64>| a.slice(s![r..r + 1, ..]).to_owned();
                let row_past = select_rows(&past, &[r], self.cache_device)?;
                let (mut result, present) = self.decode_last(
                    one(&ids),
                    one(&positions),
                    one(&mask),
                    KvCache::Grown(row_past),
                    &per_row,
                )?;
                results.append(&mut result);
                presents.push(present.into_grown()?);
            }
            (results, presents)
        } else {
            let (results, present) =
                self.decode_last(ids, positions, mask, KvCache::Grown(past), &per_row)?;
            (results, vec![present.into_grown()?])
        };
        let cache = if self.decodes_in_place() {
            KvCache::InPlace(in_place_buffers(&presents, capacity)?)
        } else if presents.len() == 1 {
            KvCache::Grown(presents.into_iter().flatten().collect())
        } else {
            KvCache::Grown(stack_rows(&presents, self.cache_device)?)
        };
        Ok((results, cache))
    }

    /// Greedy reports for a batch of preprocessed windows (each `leads x samples`, the same
    /// length), generated together. A row that generates a stop id is finished; finished rows
    /// are dropped from the batch (their cache rows removed) once they are a quarter of it, so
    /// the remaining rows decode without carrying them.
    pub fn generate<W: EncoderInput>(
        &mut self,
        windows: &[W],
    ) -> Result<(Vec<Generated>, Timings), EngineError> {
        let Some(first) = windows.first() else {
            return Ok((Vec::new(), Timings::default()));
        };
        let (leads, samples) = first.samples().dim();
        if windows
            .iter()
            .any(|w| w.samples().dim() != (leads, samples))
        {
            return Err(EngineError::Input(
                "windows of different shapes in one batch".into(),
            ));
        }
        let batch = windows.len();
        let mut ecg = Array3::<f32>::zeros((batch, leads, samples));
        for (mut row, w) in ecg.axis_iter_mut(Axis(0)).zip(windows) {
            row.assign(&w.samples());
        }
        let rhythm = self.rhythm_rows(windows)?;
        let manifest = &self.bundle.manifest;
        if manifest.prompt.ids.is_empty() {
            return Err(EngineError::Input("the manifest's prompt is empty".into()));
        }
        let prompt = manifest.prompt.ids.clone();
        let limits = Limits {
            stop_ids: manifest.tokens.stop_ids.clone(),
            max_new: manifest.tokens.max_new_tokens,
            max_positions: manifest.decoder.max_positions,
        };

        let start = Instant::now();
        let past = self.slots_with_rhythm(ecg, rhythm)?;
        let encode_ms = ms(start);
        // Mirrors `Meit::generate_greedy`: the cache starts with the slot (1 entry), text
        // positions start at 1; stop at max_new tokens or the last position.
        let (generated, mut timings) = self.greedy(batch, &prompt, past, 1, &limits)?;
        timings.encode_ms = encode_ms;
        let reports = generated
            .into_iter()
            .map(|ids| Generated {
                text: self.detokenizer.decode(&ids, true).trim().to_string(),
                finished: ids.last().is_some_and(|t| limits.stop_ids.contains(t)),
                ids,
            })
            .collect();
        Ok((reports, timings))
    }

    /// Greedy text-only generation from `prompt` (no ECG slot: an empty cache, positions from
    /// 0), exactly `new_tokens` tokens unless `stop` and a stop id comes first. This is the
    /// decoder alone, as LLM runtimes run it (`bench/compare_llm.py`).
    pub fn generate_text(
        &mut self,
        prompt: &[u32],
        new_tokens: usize,
        stop: bool,
    ) -> Result<(Vec<u32>, Timings), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::Input("empty prompt".into()));
        }
        let d = &self.bundle.manifest.decoder;
        let shape = [1usize, d.num_kv_heads, 0, d.head_dim];
        let empty = || -> Result<DynValue, EngineError> {
            Ok(Tensor::from_array(ndarray::Array4::<f32>::zeros(shape))
                .map_err(run_error("decoder"))?
                .into_dyn())
        };
        let past = (0..d.num_layers)
            .map(|_| Ok((empty()?, empty()?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let limits = Limits {
            stop_ids: if stop {
                self.bundle.manifest.tokens.stop_ids.clone()
            } else {
                Vec::new()
            },
            max_new: new_tokens,
            max_positions: d.max_positions,
        };
        let (mut generated, timings) = self.greedy(1, prompt, past, 0, &limits)?;
        Ok((generated.pop().unwrap_or_default(), timings))
    }

    /// The greedy loop: `prompt` at positions `cache_len..` after `past` (`cache_len` entries),
    /// then one token per call until every row stops or a limit is reached (lookup drafts, for
    /// one row on a host cache: [`Engine::greedy_drafted`]).
    fn greedy(
        &mut self,
        batch: usize,
        prompt: &[u32],
        past: Vec<(DynValue, DynValue)>,
        mut cache_len: usize,
        limits: &Limits,
    ) -> Result<(Vec<Vec<u32>>, Timings), EngineError> {
        if batch == 1 && self.drafts.max_tokens() > 0 && self.cache_device == CacheDevice::Host {
            let (generated, timings) = self.greedy_drafted(prompt, past, cache_len, limits)?;
            self.drafts.remember(&generated);
            return Ok((vec![generated], timings));
        }
        let mut timings = Timings {
            prompt_tokens: prompt.len(),
            ..Timings::default()
        };
        let capacity = limits.capacity(cache_len, prompt.len());
        let mut past = KvCache::Grown(past);
        let first = cache_len as i64;
        let mut ids = Array2::from_shape_fn((batch, prompt.len()), |(_, t)| i64::from(prompt[t]));
        let mut positions = Array2::from_shape_fn((batch, prompt.len()), |(_, t)| first + t as i64);
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
        // The original row of each row of the current batch, and whether it still generates.
        let mut rows: Vec<(usize, bool)> = (0..batch).map(|b| (b, true)).collect();
        let pad = i64::from(self.bundle.manifest.tokens.pad_id);
        let mut step = 0usize;
        while step < limits.max_new && cache_len < limits.max_positions {
            let t0 = Instant::now();
            let total = cache_len + ids.ncols();
            // Every row attends to its whole cache: rows never see each other, and a finished
            // row's entries are never read for an active one.
            let mask = Array2::<i64>::ones((rows.len(), total));
            let (next, present) = match past {
                KvCache::Grown(past) if step == 0 => {
                    self.prefill_last(ids, positions, mask, past, capacity, argmax)?
                }
                past => self.decode_last(ids, positions, mask, past, argmax)?,
            };
            past = present;
            cache_len = total;
            for ((original, active), &token) in rows.iter_mut().zip(&next) {
                if *active {
                    generated[*original].push(token);
                    timings.generated_tokens += 1;
                    *active = !limits.stop_ids.contains(&token);
                }
            }
            let finished = rows.iter().filter(|(_, active)| !active).count();
            if finished == rows.len() {
                record_step(&mut timings, step, t0);
                break;
            }
            let mut tokens: Vec<i64> = next.iter().map(|&t| i64::from(t)).collect();
            if finished > 0 && 4 * finished >= rows.len() {
                let keep: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].1).collect();
                past = past.select_rows(&keep, cache_len, self.cache_device)?;
                rows = keep.iter().map(|&r| rows[r]).collect();
                tokens = keep.iter().map(|&r| tokens[r]).collect();
                timings.compactions += 1;
            }
            for (token, (_, active)) in tokens.iter_mut().zip(&rows) {
                if !active {
                    *token = pad;
                }
            }
            ids = Array2::from_shape_vec((rows.len(), 1), tokens)
                .map_err(|e| EngineError::Input(format!("next ids: {e}")))?;
            positions = Array2::from_elem((rows.len(), 1), cache_len as i64);
            record_step(&mut timings, step, t0);
            step += 1;
        }
        for row in &generated {
            self.drafts.remember(row);
        }
        Ok((generated, timings))
    }

    /// Greedy decoding of one row with lookup drafts ([`super::draft`]): after the prompt, each
    /// call feeds the last token and up to [`LookupDrafts::max_tokens`] drafts at once, keeps
    /// the drafts greedy decoding would have chosen and greedy decoding's own token after the
    /// last of them, and drops the cache entries of the rest. Same arguments and tokens as
    /// [`Engine::greedy`] with a batch of one.
    fn greedy_drafted(
        &mut self,
        prompt: &[u32],
        past: Vec<(DynValue, DynValue)>,
        mut cache_len: usize,
        limits: &Limits,
    ) -> Result<(Vec<u32>, Timings), EngineError> {
        let mut timings = Timings {
            prompt_tokens: prompt.len(),
            ..Timings::default()
        };
        if limits.max_new == 0 || cache_len >= limits.max_positions {
            return Ok((Vec::new(), timings));
        }
        let t0 = Instant::now();
        let capacity = limits.capacity(cache_len, prompt.len());
        let row = |tokens: &[u32], from: usize| {
            let ids = Array2::from_shape_fn((1, tokens.len()), |(_, t)| i64::from(tokens[t]));
            let positions = Array2::from_shape_fn((1, tokens.len()), |(_, t)| (from + t) as i64);
            let mask = Array2::<i64>::ones((1, from + tokens.len()));
            (ids, positions, mask)
        };
        let (ids, positions, mask) = row(prompt, cache_len);
        let (mut generated, mut past) =
            self.prefill_last(ids, positions, mask, past, capacity, argmax)?;
        cache_len += prompt.len();
        timings.generated_tokens = generated.len();
        record_step(&mut timings, 0, t0);
        let mut context: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
        let mut step = 1;
        while let Some(&last) = generated.last() {
            if limits.stop_ids.contains(&last)
                || generated.len() >= limits.max_new
                || cache_len >= limits.max_positions
            {
                break;
            }
            let t0 = Instant::now();
            // Every draft kept adds a token: stay within max_new and the last position.
            let room =
                (limits.max_new - generated.len() - 1).min(limits.max_positions - cache_len - 1);
            let drafts = self.drafts.propose(&context, room);
            let fed: Vec<u32> = std::iter::once(last)
                .chain(drafts.iter().copied())
                .collect();
            let (ids, positions, mask) = row(&fed, cache_len);
            let (chosen, present) = self.decoder_call(ids, positions, mask, past, |logits| {
                let logits = logits
                    .into_dimensionality::<ndarray::Ix3>()
                    .map_err(|e| format!("logits: {e}"))?;
                if logits.dim().0 != 1 || logits.dim().1 != fed.len() {
                    return Err(format!(
                        "logits of shape {:?} for one row of {} tokens",
                        logits.dim(),
                        fed.len()
                    ));
                }
                Ok(logits
                    .index_axis(Axis(0), 0)
                    .rows()
                    .into_iter()
                    .map(argmax)
                    .collect::<Vec<u32>>())
            })?;
            // chosen[i] is greedy's token after fed[..=i]: valid while every draft before it
            // was greedy's own choice.
            let mut kept = 0;
            for (i, &token) in chosen.iter().enumerate() {
                generated.push(token);
                context.push(token);
                kept += 1;
                if limits.stop_ids.contains(&token) || drafts.get(i) != Some(&token) {
                    break;
                }
            }
            timings.drafted_tokens += drafts.len();
            timings.accepted_tokens += kept - 1;
            timings.generated_tokens += kept;
            cache_len += kept;
            let finished = generated
                .last()
                .is_some_and(|t| limits.stop_ids.contains(t))
                || generated.len() >= limits.max_new;
            if finished {
                record_step(&mut timings, step, t0);
                break;
            }
            // The cache holds `last` and the kept drafts; the entries of the others go.
            past = present.keep_entries(cache_len, self.cache_device)?;
            record_step(&mut timings, step, t0);
            step += 1;
        }
        Ok((generated, timings))
    }
}

/// A beam-search result: the best hypothesis and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamReport {
    /// The report of the best hypothesis.
    pub report: Generated,
    /// Its summed log-probability (natural log) over the generated ids, stop id included.
    pub log_prob: f64,
}

/// A hypothesis of [`Engine::generate_beam`].
#[derive(Debug, Clone)]
struct Hypothesis {
    ids: Vec<u32>,
    log_prob: f64,
}

impl Hypothesis {
    /// Length-normalised score (mean log-probability per token): longer reports are not
    /// penalised merely for having more tokens.
    fn normalised(&self) -> f64 {
        self.log_prob / self.ids.len().max(1) as f64
    }
}

impl Engine {
    /// Beam search over one preprocessed window with `beams` hypotheses (1 is greedy). Each
    /// step keeps the `beams` best continuations by summed log-probability; a hypothesis that
    /// generates a stop id is finished. The search ends when `beams` hypotheses have finished,
    /// none is active, or a limit is reached; the best finished one by mean log-probability
    /// per token wins (an unfinished one only when none finished). The cache rows follow
    /// their hypotheses (rows are gathered by parent after every step).
    pub fn generate_beam<W: EncoderInput>(
        &mut self,
        window: W,
        beams: usize,
    ) -> Result<(BeamReport, Timings), EngineError> {
        let beams = beams.max(1);
        let rhythm = self.rhythm_rows(std::slice::from_ref(&window))?;
        let window = window.samples();
        let (leads, samples) = window.dim();
        let ecg = window
            .to_owned()
            .into_shape_with_order((1, leads, samples))
            .map_err(|e| EngineError::Input(format!("window: {e}")))?;
        let manifest = &self.bundle.manifest;
        if manifest.prompt.ids.is_empty() {
            return Err(EngineError::Input("the manifest's prompt is empty".into()));
        }
        let prompt = manifest.prompt.ids.clone();
        let limits = Limits {
            stop_ids: manifest.tokens.stop_ids.clone(),
            max_new: manifest.tokens.max_new_tokens,
            max_positions: manifest.decoder.max_positions,
        };
        let (stop_ids, max_new, max_positions) =
            (&limits.stop_ids, limits.max_new, limits.max_positions);
        let mut timings = Timings {
            prompt_tokens: prompt.len(),
            ..Timings::default()
        };

        let start = Instant::now();
        let mut past = KvCache::Grown(self.slots_with_rhythm(ecg, rhythm)?);
        timings.encode_ms = ms(start);
        let mut cache_len = 1usize;
        let capacity = limits.capacity(cache_len, prompt.len());
        let mut ids = Array2::from_shape_fn((1, prompt.len()), |(_, t)| i64::from(prompt[t]));
        let mut positions =
            Array2::from_shape_fn((1, prompt.len()), |(_, t)| (cache_len + t) as i64);
        let mut active = vec![Hypothesis {
            ids: Vec::new(),
            log_prob: 0.0,
        }];
        let mut finished: Vec<Hypothesis> = Vec::new();
        let mut step = 0usize;
        while step < max_new && cache_len < max_positions {
            let t0 = Instant::now();
            let total = cache_len + ids.ncols();
            let mask = Array2::<i64>::ones((active.len(), total));
            // Per row: the `beams` best (log-probability, token) of the last position.
            let top = |row: ndarray::ArrayView1<'_, f32>| top_log_probs(row, beams);
            let (candidates, present) = match past {
                KvCache::Grown(past) if step == 0 => {
                    self.prefill_last(ids, positions, mask, past, capacity, top)?
                }
                past => self.decode_last(ids, positions, mask, past, top)?,
            };
            cache_len = total;
            let mut expanded: Vec<(f64, usize, u32)> = Vec::new();
            for (parent, (hyp, row)) in active.iter().zip(&candidates).enumerate() {
                for &(lp, token) in row {
                    expanded.push((hyp.log_prob + lp, parent, token));
                }
            }
            expanded.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut next = Vec::with_capacity(beams);
            let mut parents = Vec::with_capacity(beams);
            for (log_prob, parent, token) in expanded {
                if next.len() == beams || finished.len() >= beams {
                    break;
                }
                let mut hyp_ids = active[parent].ids.clone();
                hyp_ids.push(token);
                let hyp = Hypothesis {
                    ids: hyp_ids,
                    log_prob,
                };
                timings.generated_tokens += 1;
                if stop_ids.contains(&token) {
                    finished.push(hyp);
                } else {
                    next.push(hyp);
                    parents.push(parent);
                }
            }
            record_step(&mut timings, step, t0);
            step += 1;
            if next.is_empty() || finished.len() >= beams {
                active = next;
                break;
            }
            ids = Array2::from_shape_fn((next.len(), 1), |(r, _)| {
                i64::from(*next[r].ids.last().unwrap_or(&0))
            });
            positions = Array2::from_elem((next.len(), 1), cache_len as i64);
            past = present.select_rows(&parents, cache_len, self.cache_device)?;
            active = next;
        }
        let pool = if finished.is_empty() {
            active
        } else {
            finished
        };
        let best = pool
            .into_iter()
            .max_by(|a, b| a.normalised().total_cmp(&b.normalised()))
            .unwrap_or(Hypothesis {
                ids: Vec::new(),
                log_prob: 0.0,
            });
        let text = self.detokenizer.decode(&best.ids, true).trim().to_string();
        let finished = best.ids.last().is_some_and(|t| stop_ids.contains(t));
        Ok((
            BeamReport {
                report: Generated {
                    ids: best.ids,
                    text,
                    finished,
                },
                log_prob: best.log_prob,
            },
            timings,
        ))
    }
}

/// The `k` largest log-softmax values of `logits` with their token ids, best first (NaN
/// logits never chosen).
fn top_log_probs(logits: ndarray::ArrayView1<'_, f32>, k: usize) -> Vec<(f64, u32)> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let log_sum = f64::from(max)
        + logits
            .iter()
            .filter(|v| !v.is_nan())
            .map(|&v| f64::from(v - max).exp())
            .sum::<f64>()
            .ln();
    let mut top: Vec<(f64, u32)> = Vec::with_capacity(k + 1);
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let lp = f64::from(v) - log_sum;
        if top.len() < k || lp > top[top.len() - 1].0 {
            let at = top.partition_point(|&(x, _)| x >= lp);
            top.insert(at, (lp, i as u32));
            top.truncate(k);
        }
    }
    top
}

/// When greedy generation stops.
struct Limits {
    stop_ids: Vec<u32>,
    max_new: usize,
    max_positions: usize,
}

impl Limits {
    /// The most cache entries a generation from `cache_len` entries and a `prompt`-token prompt
    /// can reach: the size of in-place buffers.
    fn capacity(&self, cache_len: usize, prompt: usize) -> usize {
        let start = cache_len.saturating_add(prompt);
        start
            .saturating_add(self.max_new)
            .min(self.max_positions)
            .max(start)
    }
}

fn record_step(timings: &mut Timings, step: usize, t0: Instant) {
    if step == 0 {
        timings.prefill_ms = ms(t0);
    } else {
        timings.decode_ms += ms(t0);
        timings.decode_steps += 1;
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// `per_row` of each row's logits at the last position of `logits` `[rows, positions, vocab]`;
/// an error when the decoder returned another number of rows than `fed` (a graph with a fixed
/// batch) or a row without one finite value (NaN everywhere: no token can be chosen, and an
/// argmax would pick id 0 as if it had).
fn last_position_rows<R>(
    logits: ndarray::ArrayViewD<'_, f32>,
    fed: usize,
    per_row: impl Fn(ndarray::ArrayView1<'_, f32>) -> R,
) -> Result<Vec<R>, String> {
    let logits = logits
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|e| format!("logits: {e}"))?;
    if logits.dim().0 != fed {
        return Err(format!("logits: {} rows for the {fed} fed", logits.dim().0));
    }
    let last = logits.dim().1.checked_sub(1).ok_or("logits: no position")?;
    let rows = logits.index_axis(Axis(1), last);
    if let Some(bad) = rows
        .rows()
        .into_iter()
        .position(|row| !row.iter().any(|v| v.is_finite()))
    {
        return Err(format!("logits: row {bad} holds no finite value"));
    }
    Ok(rows.rows().into_iter().map(per_row).collect())
}

/// The index of the largest value (the first one on ties, as candle's argmax); NaN never wins.
fn argmax(row: ndarray::ArrayView1<'_, f32>) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_without_a_finite_value_or_with_other_rows_are_errors_not_token_zero() {
        let mut logits = ndarray::Array3::<f32>::zeros((2, 3, 4));
        logits[[0, 2, 3]] = 1.0;
        logits[[1, 2, 1]] = 1.0;
        let picked = last_position_rows(logits.view().into_dyn(), 2, argmax).unwrap();
        assert_eq!(picked, [3, 1]);
        let err = last_position_rows(logits.view().into_dyn(), 4, argmax).unwrap_err();
        assert!(err.contains("2 rows for the 4 fed"), "{err}");
        logits.slice_mut(ndarray::s![1, 2, ..]).fill(f32::NAN);
        let err = last_position_rows(logits.view().into_dyn(), 2, argmax).unwrap_err();
        assert!(err.contains("row 1 holds no finite value"), "{err}");
        // An earlier position's NaN is not read.
        logits.slice_mut(ndarray::s![1, 2, ..]).fill(0.0);
        logits[[0, 0, 0]] = f32::NAN;
        assert!(last_position_rows(logits.view().into_dyn(), 2, argmax).is_ok());
    }

    #[test]
    fn top_log_probs_are_normalised_sorted_and_skip_nan() {
        let row = ndarray::arr1(&[1.0f32, 3.0, f32::NAN, 2.0, 3.0]);
        let top = top_log_probs(row.view(), 3);
        let ids: Vec<u32> = top.iter().map(|t| t.1).collect();
        assert_eq!(ids, vec![1, 4, 3], "ties keep the first index first");
        let total: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|v| v.exp()).sum::<f64>();
        assert!((top[0].0 - (3.0f64.exp() / total).ln()).abs() < 1e-9);
        assert!(top.windows(2).all(|w| w[0].0 >= w[1].0));
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_ignores_nan() {
        let row = ndarray::arr1(&[0.5f32, 2.0, f32::NAN, 2.0, -1.0]);
        assert_eq!(argmax(row.view()), 1);
    }
}
