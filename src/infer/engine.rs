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
//! back as the next call's past inputs without copying them through Rust.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, Array3, ArrayView2, Axis};
use ort::session::Session;
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor};

use super::bundle::{Bundle, BundleError};
use super::detokenize::{DetokenizeError, Detokenizer};
use super::runtime::OnnxRuntime;

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

fn run_error(graph: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |e| EngineError::Run {
        graph,
        reason: e.to_string(),
    }
}

/// One layer's key and value cache as ONNX Runtime values (`[batch, kv_heads, len, head_dim]`).
pub type LayerKv = (DynValue, DynValue);

/// One generated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated ids (the stop id included when one was generated).
    pub ids: Vec<u32>,
    /// The text: special tokens left out, trimmed.
    pub text: String,
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
    /// Decode steps run.
    pub decode_steps: usize,
}

/// The two sessions of a bundle and its tokenizer.
pub struct Engine {
    bundle: Bundle,
    encoder: Session,
    decoder: Session,
    detokenizer: Detokenizer,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bundle", &self.bundle.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens `bundle`'s graphs on the CPU provider with `threads` intra-op threads.
    pub fn new(
        bundle: Bundle,
        runtime: &OnnxRuntime,
        threads: usize,
    ) -> Result<Engine, EngineError> {
        let open = |file: &str| {
            let path = bundle.path(file);
            runtime
                .cpu_session(&path, threads)
                .map_err(|e| EngineError::Session {
                    path,
                    reason: e.to_string(),
                })
        };
        let manifest = &bundle.manifest;
        let encoder = open(&manifest.encoder_graph.file)?;
        let decoder = open(&manifest.decoder_graph.file)?;
        let detokenizer = Detokenizer::from_file(&bundle.path(&manifest.tokenizer))?;
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
        })
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
    pub fn slots(&mut self, ecg: Array3<f32>) -> Result<Vec<LayerKv>, EngineError> {
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
        let input = Tensor::from_array(ecg).map_err(run_error("encoder"))?;
        let mut outputs = self
            .encoder
            .run(ort::inputs!["ecg" => input])
            .map_err(run_error("encoder"))?;
        self.present_names
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut take = |name: String| {
                    outputs.remove(&name).ok_or(EngineError::Run {
                        graph: "encoder",
                        reason: format!("no output {name}"),
                    })
                };
                Ok((
                    take(format!("slot.{i}.key"))?,
                    take(format!("slot.{i}.value"))?,
                ))
            })
            .collect()
    }

    /// One decoder call: `ids`, `positions` `[batch, T]`, `mask` `[batch, past + T]` after
    /// `past`; returns the logits `[batch, T, vocab]` and the present cache.
    pub fn decode(
        &mut self,
        ids: Array2<i64>,
        positions: Array2<i64>,
        mask: Array2<i64>,
        past: Vec<LayerKv>,
    ) -> Result<(Array3<f32>, Vec<LayerKv>), EngineError> {
        let tensor = |a: Array2<i64>| Tensor::from_array(a).map_err(run_error("decoder"));
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), tensor(ids)?.into()),
            ("attention_mask".into(), tensor(mask)?.into()),
            ("position_ids".into(), tensor(positions)?.into()),
        ];
        for ((k, v), (k_name, v_name)) in past.into_iter().zip(&self.past_names) {
            inputs.push((k_name.clone(), k.into()));
            inputs.push((v_name.clone(), v.into()));
        }
        let mut outputs = self.decoder.run(inputs).map_err(run_error("decoder"))?;
        let logits = outputs["logits"]
            .try_extract_array::<f32>()
            .map_err(run_error("decoder"))?
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| EngineError::Run {
                graph: "decoder",
                reason: format!("logits: {e}"),
            })?
            .to_owned();
        let mut present = Vec::with_capacity(self.present_names.len());
        for (k_name, v_name) in &self.present_names {
            let missing = |name: &str| EngineError::Run {
                graph: "decoder",
                reason: format!("no output {name}"),
            };
            let k = outputs.remove(k_name).ok_or_else(|| missing(k_name))?;
            let v = outputs.remove(v_name).ok_or_else(|| missing(v_name))?;
            present.push((k, v));
        }
        Ok((logits, present))
    }

    /// Greedy reports for a batch of preprocessed windows (each `leads x samples`, the same
    /// length), generated together.
    pub fn generate(
        &mut self,
        windows: &[ArrayView2<'_, f32>],
    ) -> Result<(Vec<Generated>, Timings), EngineError> {
        let Some(first) = windows.first() else {
            return Ok((Vec::new(), Timings::default()));
        };
        let (leads, samples) = first.dim();
        if windows.iter().any(|w| w.dim() != (leads, samples)) {
            return Err(EngineError::Input(
                "windows of different shapes in one batch".into(),
            ));
        }
        let batch = windows.len();
        let mut ecg = Array3::<f32>::zeros((batch, leads, samples));
        for (mut row, w) in ecg.axis_iter_mut(Axis(0)).zip(windows) {
            row.assign(w);
        }
        let manifest = &self.bundle.manifest;
        let prompt: Vec<i64> = manifest.prompt.ids.iter().map(|&i| i64::from(i)).collect();
        let stop_ids = manifest.tokens.stop_ids.clone();
        let max_new = manifest.tokens.max_new_tokens;
        let max_positions = manifest.decoder.max_positions;
        let pad = i64::from(manifest.tokens.pad_id);
        if prompt.is_empty() {
            return Err(EngineError::Input("the manifest's prompt is empty".into()));
        }

        let mut timings = Timings::default();
        let start = Instant::now();
        let mut past = self.slots(ecg)?;
        timings.encode_ms = ms(start);

        // Mirrors `Meit::generate_greedy`: before each call the cache holds `cache_len`
        // entries (the slot, then text); stop at max_new tokens or the last position.
        let mut cache_len = 1usize;
        let mut ids = Array2::from_shape_fn((batch, prompt.len()), |(_, t)| prompt[t]);
        let mut positions = Array2::from_shape_fn((batch, prompt.len()), |(_, t)| (t + 1) as i64);
        let mut mask_row: Vec<Vec<i64>> = vec![vec![1; 1 + prompt.len()]; batch];
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
        let mut done = vec![false; batch];
        let mut step = 0usize;
        while step < max_new && cache_len < max_positions && done.iter().any(|d| !d) {
            let t0 = Instant::now();
            let new = ids.ncols();
            let total = cache_len + new;
            let mask = Array2::from_shape_fn((batch, total), |(b, j)| mask_row[b][j]);
            let (logits, present) = self.decode(ids, positions, mask, past)?;
            past = present;
            cache_len = total;
            let last = logits.index_axis(Axis(1), new - 1);
            let mut next = Array2::<i64>::from_elem((batch, 1), pad);
            for b in 0..batch {
                if done[b] {
                    mask_row[b].push(0);
                    continue;
                }
                let token = argmax(last.row(b));
                generated[b].push(token);
                next[[b, 0]] = i64::from(token);
                done[b] = stop_ids.contains(&token);
                mask_row[b].push(1);
            }
            if step == 0 {
                timings.prefill_ms = ms(t0);
            } else {
                timings.decode_ms += ms(t0);
                timings.decode_steps += 1;
            }
            step += 1;
            ids = next;
            positions = Array2::from_elem((batch, 1), cache_len as i64);
        }
        let reports = generated
            .into_iter()
            .map(|ids| Generated {
                text: self.detokenizer.decode(&ids, true).trim().to_string(),
                ids,
            })
            .collect();
        Ok((reports, timings))
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
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
    fn argmax_takes_the_first_maximum_and_ignores_nan() {
        let row = ndarray::arr1(&[0.5f32, 2.0, f32::NAN, 2.0, -1.0]);
        assert_eq!(argmax(row.view()), 1);
    }
}
