//! MEIT: the ECG encoder and the Llama decoder joined by the ECG slot, and the training loss.
//!
//! `loss = mean over target tokens of -log p(token | ECG, earlier tokens)`: the standard causal
//! shift (the logits at position i score token i + 1), counted only on tokens marked as target
//! (the report and `</s>`, see [`super::instruction`]); prompt and padding tokens are read but
//! never scored. The mean is over all target tokens of the batch, as Hugging Face's loss with
//! `-100` labels.
//!
//! Trainable under LoRA: the encoder, the projection and the adapters ([`Meit::trainable_vars`]);
//! BatchNorm running statistics and the frozen decoder are not.

use candle_core::{D, DType, Device, Tensor, Var};
use meit::dsp::rhythm::RHYTHM_FEATURES;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::ecg_encoder::{BlockKind, EcgEncoder, EcgEncoderConfig, Pooling};
use super::instruction::Segments;
use super::llama::{Llama, LlamaConfig};
use super::lora::LoraConfig;
use super::params::Params;
use crate::tokenizer::{TextTokenizer, TokenizerError};

/// The whole model's shape. Serialised in model configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeitConfig {
    /// The ECG encoder and projection.
    pub encoder: EcgEncoderConfig,
    /// The decoder.
    pub decoder: LlamaConfig,
    /// LoRA on the decoder (a pretrained one); `None` trains the decoder fully (from scratch).
    pub lora: Option<LoraConfig>,
}

impl MeitConfig {
    /// A small model trained from scratch on a report vocabulary of `vocab_size`: a two-stage
    /// basic-block encoder of width 8 and the tiny decoder (head_dim 16), no LoRA.
    pub fn tiny(vocab_size: usize) -> MeitConfig {
        let decoder = LlamaConfig::tiny(vocab_size);
        MeitConfig {
            encoder: EcgEncoderConfig {
                leads: 12,
                block: BlockKind::Basic,
                stage_blocks: vec![1, 1],
                base_width: 8,
                stem_max_pool: true,
                head_dim: decoder.head_dim,
                output_scale: 1.0,
                lead_presence: false,
                pooling: Pooling::Mean,
                rhythm_features: false,
            },
            decoder,
            lora: None,
        }
    }

    /// The edge target: the edge encoder in front of SmolLM2-135M with the paper's LoRA.
    pub fn smollm2_edge() -> MeitConfig {
        let decoder = LlamaConfig::smollm2_135m();
        MeitConfig {
            encoder: EcgEncoderConfig::edge(decoder.head_dim),
            decoder,
            lora: Some(LoraConfig::paper()),
        }
    }

    /// Checks each part and that the encoder's output fits the decoder's heads.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.encoder.validate()?;
        self.decoder.validate()?;
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        if self.encoder.head_dim != self.decoder.head_dim {
            return Err(ModelError::Config(format!(
                "encoder head_dim {} != decoder head_dim {}",
                self.encoder.head_dim, self.decoder.head_dim
            )));
        }
        Ok(())
    }
}

/// One tokenised sample: ids and which of them the loss scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Prompt then target token ids.
    pub input_ids: Vec<u32>,
    /// `true` for target tokens (scored), `false` for prompt tokens.
    pub is_target: Vec<bool>,
    /// `(position, token)`: a token the model must not write at that position of
    /// `input_ids` (where a report it must not write departs from this one; see
    /// [`Example::avoid_departure`]). Scored by [`unlikelihood_loss_from`].
    pub avoid: Vec<(usize, u32)>,
}

impl Example {
    /// The tokenizer's begin id (`<s>`) if it has one, then prompt and target tokenised
    /// separately (so no BPE merge crosses the boundary); at most `max_len` tokens, cutting the
    /// end of the target. `<s>` gives the first report token a position to be predicted from
    /// even without a prompt (the ablation); a tokenizer without a begin id (SmolLM2) needs a
    /// prompt for that.
    pub fn encode<T: TextTokenizer + ?Sized>(
        tokenizer: &T,
        segments: &Segments,
        max_len: usize,
    ) -> Result<Example, TokenizerError> {
        let prompt = prompt_ids(tokenizer, &segments.prompt)?;
        let target = tokenizer.encode(&segments.target)?;
        let mut is_target = vec![false; prompt.len()];
        is_target.extend(std::iter::repeat_n(true, target.len()));
        let mut input_ids = prompt;
        input_ids.extend(target);
        input_ids.truncate(max_len);
        is_target.truncate(max_len);
        Ok(Example {
            input_ids,
            is_target,
            avoid: Vec::new(),
        })
    }

    /// Where `other` (the same prompt with a report this example must not become) first
    /// departs from this example: a target position of this example, or `None` (no departure
    /// within this example's tokens, e.g. after truncation, or one inside the prompt).
    pub fn departure(&self, other: &Example) -> Option<usize> {
        self.input_ids
            .iter()
            .zip(&other.input_ids)
            .position(|(ours, theirs)| ours != theirs)
            .filter(|&at| at > 0 && self.is_target[at])
    }

    /// Marks the token where `other` departs from this example ([`Example::departure`]) as one
    /// to avoid at that position. Nothing when the departure is at this example's last token
    /// (its end marker: `other` goes on with the separator to one more statement; see
    /// [`Example::avoiding_after_end`]). A departure already marked is not marked twice.
    pub fn avoid_departure(&mut self, other: &Example) {
        if let Some(at) = self.departure(other)
            && at + 1 < self.input_ids.len()
        {
            let mark = (at, other.input_ids[at]);
            if !self.avoid.contains(&mark) {
                self.avoid.push(mark);
            }
        }
    }

    /// When `other` departs at this example's last token (its end marker, where `other` goes
    /// on with the separator to one more statement): `other` as a row that trains nothing but
    /// the unlikelihood of that statement's first token, the one after the separator, in
    /// `other`'s own context. The separator itself is not pushed down: the reference's own loss
    /// already asks for the end there, and pushing the separator down taught the model to end
    /// reduced-lead reports early (their recall fell; models/README.md).
    pub fn avoiding_after_end(&self, other: &Example) -> Option<Example> {
        let at = self.departure(other)?;
        let first = at + 1;
        if first != self.input_ids.len() || first >= other.input_ids.len() {
            return None;
        }
        Some(Example {
            input_ids: other.input_ids.clone(),
            is_target: vec![false; other.input_ids.len()],
            avoid: vec![(first, other.input_ids[first])],
        })
    }
}

/// The ids generation starts from: the begin id (`<s>`, if the tokenizer has one) and the prompt.
pub fn prompt_ids<T: TextTokenizer + ?Sized>(
    tokenizer: &T,
    prompt: &str,
) -> Result<Vec<u32>, TokenizerError> {
    let mut ids: Vec<u32> = tokenizer.begin_id().into_iter().collect();
    ids.extend(tokenizer.encode(prompt)?);
    Ok(ids)
}

/// A training batch: ECGs, right-padded token ids and the loss weights.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Raw leads `[batch, leads, samples]`.
    pub ecg: Tensor,
    /// Token ids `[batch, T]` (u32), right-padded.
    pub input_ids: Tensor,
    /// 1.0 at target tokens, 0.0 at prompt and padding `[batch, T]` (f32).
    pub target_mask: Tensor,
    /// `(row, position, token)`: the examples' tokens to avoid ([`Example::avoid`]).
    pub avoid: Vec<(usize, usize, u32)>,
    /// Each row's R-R interval statistics `[batch, 4]`, for an encoder with `rhythm_features`
    /// ([`Batch::with_rhythm`]).
    pub rhythm: Option<Tensor>,
}

impl Batch {
    /// Pads `examples` on the right with `pad_id` to the longest and stacks them with `ecg`.
    pub fn collate(
        ecg: Tensor,
        examples: &[Example],
        pad_id: u32,
        device: &Device,
    ) -> Result<Batch, ModelError> {
        let longest = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        if longest == 0 || ecg.dim(0).ok() != Some(examples.len()) {
            return Err(ModelError::Input(format!(
                "{} examples (longest {longest} tokens) for ECG batch {:?}",
                examples.len(),
                ecg.dims()
            )));
        }
        let mut ids = Vec::with_capacity(examples.len() * longest);
        let mut mask = Vec::with_capacity(examples.len() * longest);
        for example in examples {
            let pad = longest - example.input_ids.len();
            ids.extend(
                example
                    .input_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, pad)),
            );
            mask.extend(
                example
                    .is_target
                    .iter()
                    .map(|&t| if t { 1f32 } else { 0.0 }),
            );
            mask.extend(std::iter::repeat_n(0f32, pad));
        }
        let avoid = examples
            .iter()
            .enumerate()
            .flat_map(|(row, e)| e.avoid.iter().map(move |&(at, token)| (row, at, token)))
            .collect();
        let shape = (examples.len(), longest);
        let build = || -> candle_core::Result<Batch> {
            Ok(Batch {
                ecg: ecg.to_device(device)?,
                input_ids: Tensor::from_vec(ids, shape, device)?,
                target_mask: Tensor::from_vec(mask, shape, device)?,
                avoid,
                rhythm: None,
            })
        };
        build().map_err(ModelError::tensor("collating a batch"))
    }

    /// The batch with each row's R-R interval statistics (`[batch, 4]`).
    pub fn with_rhythm(mut self, rhythm: Tensor) -> Result<Batch, ModelError> {
        let rows = self.ecg.dim(0).map_err(ModelError::tensor("ECG batch"))?;
        if rhythm.dims() != [rows, RHYTHM_FEATURES] {
            return Err(ModelError::Input(format!(
                "R-R interval statistics {:?} for a batch of {rows}",
                rhythm.dims()
            )));
        }
        self.rhythm = Some(
            rhythm
                .to_device(self.ecg.device())
                .map_err(ModelError::tensor("R-R statistics"))?,
        );
        Ok(self)
    }

    /// The ECG embedding of the batch's rows.
    pub fn embed(&self, encoder: &EcgEncoder, train: bool) -> Result<Tensor, ModelError> {
        encoder.forward_with(&self.ecg, self.rhythm.as_ref(), train)
    }
}

/// The masked causal language-model loss: logits `[batch, T, vocab]` at position i score
/// `input_ids[i + 1]`, weighted by `target_mask[i + 1]`; the weighted mean of
/// `-log softmax`. Fails when no token is a target.
pub fn masked_lm_loss(
    logits: &Tensor,
    input_ids: &Tensor,
    target_mask: &Tensor,
) -> Result<Tensor, ModelError> {
    masked_lm_loss_from(logits, input_ids, target_mask, 0)
}

/// [`masked_lm_loss`] from logits of positions `from..T` only (`[batch, T - from, vocab]`, as
/// [`Llama::forward_from`] returns them): equal to the full loss when no target token sits at
/// or before `from` ([`first_scored_position`]).
pub fn masked_lm_loss_from(
    logits: &Tensor,
    input_ids: &Tensor,
    target_mask: &Tensor,
    from: usize,
) -> Result<Tensor, ModelError> {
    let (_, n, _) = logits.dims3().map_err(ModelError::tensor("loss logits"))?;
    let t = n + from;
    if n < 2 {
        return Err(ModelError::Input(
            "the loss needs at least two tokens".into(),
        ));
    }
    if target_mask.dim(1).ok() != Some(t) || input_ids.dim(1).ok() != Some(t) {
        return Err(ModelError::Input(format!(
            "logits of positions {from}..{t} do not match tokens {:?}",
            input_ids.dims()
        )));
    }
    let window = |x: &Tensor| {
        x.narrow(1, from, n)
            .map_err(ModelError::tensor("loss window"))
    };
    let (input_ids, target_mask, t) = (&window(input_ids)?, &window(target_mask)?, n);
    let weights = target_mask
        .narrow(1, 1, t - 1)
        .map_err(ModelError::tensor("loss weights"))?;
    let count = weights
        .sum_all()
        .and_then(|c| c.to_scalar::<f32>())
        .map_err(ModelError::tensor("loss weights"))?;
    if count <= 0.0 {
        return Err(ModelError::Input("no target token in the batch".into()));
    }
    let run = || -> candle_core::Result<Tensor> {
        let log_probs = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1)?, D::Minus1)?;
        let targets = input_ids
            .narrow(1, 1, t - 1)?
            .contiguous()?
            .unsqueeze(D::Minus1)?;
        let picked = log_probs
            .contiguous()?
            .gather(&targets, D::Minus1)?
            .squeeze(D::Minus1)?;
        (picked * &weights)?.sum_all()?.neg()? / f64::from(count)
    };
    run().map_err(ModelError::tensor("masked loss"))
}

/// The unlikelihood term (Welleck et al. 2019, "Neural text generation with unlikelihood
/// training"): the mean over `avoid` `(row, position, token)` of `-log(1 - p(token))`, where p
/// is the model's probability of writing `token` at `position` given the tokens before it:
/// logits `[batch, T - from, vocab]` of positions `from..T` (row position `i` is predicted from
/// logits `i - 1`). `None` when there is nothing to avoid.
pub fn unlikelihood_loss_from(
    logits: &Tensor,
    avoid: &[(usize, usize, u32)],
    from: usize,
) -> Result<Option<Tensor>, ModelError> {
    if avoid.is_empty() {
        return Ok(None);
    }
    let (rows, n, vocab) = logits.dims3().map_err(ModelError::tensor("loss logits"))?;
    let mut picked_rows = Vec::with_capacity(avoid.len());
    let mut tokens = Vec::with_capacity(avoid.len());
    for &(row, at, token) in avoid {
        let predicted_from = at.checked_sub(1 + from).filter(|&i| i < n);
        match predicted_from {
            Some(i) if row < rows && (token as usize) < vocab => {
                picked_rows.push((row * n + i) as u32);
                tokens.push(token);
            }
            _ => {
                return Err(ModelError::Input(format!(
                    "token {token} to avoid at row {row} position {at} is outside logits of \
                     positions {from}..{} ({rows} rows, vocabulary {vocab})",
                    from + n
                )));
            }
        }
    }
    let count = tokens.len();
    let device = logits.device();
    let run = || -> candle_core::Result<Tensor> {
        let flat = logits.reshape((rows * n, vocab))?;
        let index = Tensor::from_vec(picked_rows, count, device)?;
        let log_probs = candle_nn::ops::log_softmax(&flat.index_select(&index, 0)?, D::Minus1)?;
        let tokens = Tensor::from_vec(tokens, (count, 1), device)?;
        let p = log_probs.gather(&tokens, D::Minus1)?.exp()?;
        // -log(1 - p), with 1 - p kept off zero so a confident mistake gives a large, finite loss.
        let rest = p.affine(-1.0, 1.0)?.clamp(1e-6f32, 1.0f32)?;
        rest.log()?.neg()?.mean_all()
    };
    run()
        .map(Some)
        .map_err(ModelError::tensor("unlikelihood loss"))
}

/// The first position whose logits the loss reads: the one before the earliest target token of
/// any row of `target_mask` `[batch, T]` (0 when a target is at position 0 or 1, or none).
pub fn first_scored_position(target_mask: &Tensor) -> Result<usize, ModelError> {
    let rows = target_mask
        .to_vec2::<f32>()
        .map_err(ModelError::tensor("target mask"))?;
    let first = rows
        .iter()
        .filter_map(|row| row.iter().position(|&w| w > 0.0))
        .min()
        .unwrap_or(0);
    Ok(first.saturating_sub(1))
}

/// A training loss and its parts (scalars).
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// What `backward` is called on: `lm` plus the weighted `unlikelihood`.
    pub total: Tensor,
    /// The masked language-model loss.
    pub lm: Tensor,
    /// The unlikelihood term, unweighted; `None` when the batch has nothing to avoid or the
    /// weight is 0.
    pub unlikelihood: Option<Tensor>,
}

/// The MEIT model.
#[derive(Debug, Clone)]
pub struct Meit {
    config: MeitConfig,
    encoder: EcgEncoder,
    decoder: Llama,
    params: Params,
}

impl Meit {
    /// Builds the model with weights under `encoder.*` and `decoder.*` of `params`.
    pub fn new(config: &MeitConfig, params: &Params) -> Result<Meit, ModelError> {
        config.validate()?;
        Ok(Meit {
            config: config.clone(),
            encoder: EcgEncoder::new(&config.encoder, &params.pp("encoder"))?,
            decoder: Llama::new(&config.decoder, config.lora.as_ref(), &params.pp("decoder"))?,
            params: params.clone(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &MeitConfig {
        &self.config
    }

    /// The encoder.
    pub fn encoder(&self) -> &EcgEncoder {
        &self.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &Llama {
        &self.decoder
    }

    /// Every weight of the model, to save with [`Params::save`].
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Logits `[batch, T, vocab]` of the batch's tokens given its ECGs.
    pub fn logits(&self, batch: &Batch, train: bool) -> Result<Tensor, ModelError> {
        let ecg = batch.embed(&self.encoder, train)?;
        self.decoder
            .forward_sequence(&batch.input_ids, Some(&ecg), train)
    }

    /// The masked language-model loss of the batch (a scalar to call `backward` on).
    pub fn loss(&self, batch: &Batch, train: bool) -> Result<Tensor, ModelError> {
        Ok(self.training_loss(batch, train, 0.0)?.total)
    }

    /// The language-model loss plus `unlikelihood_weight` times the unlikelihood term of the
    /// batch's tokens to avoid ([`unlikelihood_loss_from`]), from one forward pass.
    pub fn training_loss(
        &self,
        batch: &Batch,
        train: bool,
        unlikelihood_weight: f64,
    ) -> Result<LossTerms, ModelError> {
        // Logits only from the position before the batch's first target token on.
        let from = first_scored_position(&batch.target_mask)?;
        let ecg = batch.embed(&self.encoder, train)?;
        let logits =
            self.decoder
                .forward_sequence_from(&batch.input_ids, Some(&ecg), train, from)?;
        let lm = masked_lm_loss_from(&logits, &batch.input_ids, &batch.target_mask, from)?;
        let unlikelihood = match unlikelihood_weight > 0.0 {
            true => unlikelihood_loss_from(&logits, &batch.avoid, from)?,
            false => None,
        };
        let total = match &unlikelihood {
            Some(term) => (term * unlikelihood_weight)
                .and_then(|weighted| &lm + weighted)
                .map_err(ModelError::tensor("adding the unlikelihood term"))?,
            None => lm.clone(),
        };
        Ok(LossTerms {
            total,
            lm,
            unlikelihood,
        })
    }

    /// The variables the optimiser updates: all encoder weights (not BatchNorm running
    /// statistics) and, under LoRA, only the adapters of the decoder, else all of it.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.trainable_named_vars()
            .into_iter()
            .map(|(_, var)| var)
            .collect()
    }

    /// [`Meit::trainable_vars`] with their full names, sorted by name.
    pub fn trainable_named_vars(&self) -> Vec<(String, Var)> {
        let lora = self.config.lora.is_some();
        self.params.named_vars_where(|name| {
            if name.contains("running_") {
                return false;
            }
            if name.starts_with("encoder.") {
                return true;
            }
            name.starts_with("decoder.") && (!lora || name.contains(".lora_"))
        })
    }

    /// Greedy decoding for one record `ecg` `[1, leads, samples]` (and its R-R statistics
    /// `[1, 4]` for an encoder with `rhythm_features`) after `prompt` (ids from [`prompt_ids`]):
    /// the KV-cache path, one token at a time, until `end_id` (included) or `max_new_tokens` or
    /// the decoder's last position.
    pub fn generate_greedy(
        &self,
        ecg: &Tensor,
        rhythm: Option<&Tensor>,
        prompt: &[u32],
        max_new_tokens: usize,
        end_id: u32,
    ) -> Result<Vec<u32>, ModelError> {
        if prompt.is_empty() || ecg.dim(0).ok() != Some(1) {
            return Err(ModelError::Input(
                "greedy decoding takes one record and a non-empty prompt".into(),
            ));
        }
        let embedding = self.encoder.forward_with(ecg, rhythm, false)?;
        let mut cache = self.decoder.start_cache(1, Some(&embedding), false)?;
        let device = ecg.device();
        let to_tensor = |ids: &[u32]| Tensor::new(ids, device).and_then(|t| t.unsqueeze(0));
        let mut input = to_tensor(prompt).map_err(ModelError::tensor("prompt tensor"))?;
        let mut generated = Vec::new();
        while generated.len() < max_new_tokens && cache.len() < self.config.decoder.max_positions {
            let logits = self.decoder.forward(&input, &mut cache, false)?;
            let next = last_argmax(&logits).map_err(ModelError::tensor("greedy choice"))?;
            generated.push(next);
            if next == end_id {
                break;
            }
            input = to_tensor(&[next]).map_err(ModelError::tensor("token tensor"))?;
        }
        Ok(generated)
    }

    /// The same model with the LoRA adapters merged into the decoder (for export).
    pub fn merge_lora(&self) -> Result<Meit, ModelError> {
        Ok(Meit {
            decoder: self.decoder.merge_lora()?,
            ..self.clone()
        })
    }
}

/// The most likely next token after the last position of logits `[1, T, vocab]`.
pub(crate) fn last_argmax(logits: &Tensor) -> candle_core::Result<u32> {
    let t = logits.dim(1)?;
    logits
        .narrow(1, t - 1, 1)?
        .flatten_all()?
        .argmax(0)?
        .to_scalar::<u32>()
}

/// An ECG batch of `batch` records of `samples` samples drawn from `seed` (tests and smoke runs).
pub fn random_ecg(
    batch: usize,
    leads: usize,
    samples: usize,
    seed: u64,
    device: &Device,
) -> Result<Tensor, ModelError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..batch * leads * samples)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(values, (batch, leads, samples), device)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(ModelError::tensor("random ECG"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::instruction::{InstructionStyle, Prompts};
    use crate::model::lora::LoraTarget;
    use crate::tokenizer::ReportTokenizer;

    #[test]
    fn loss_is_the_mean_negative_log_probability_of_target_tokens()
    -> Result<(), Box<dyn std::error::Error>> {
        // Vocabulary 2, three tokens [0, 1, 0], only the last one a target. Logits at
        // position 1 are [0, ln 3], so p(token 0) = 1 / (1 + 3) and the loss is ln 4.
        let logits = Tensor::new(&[[[5f32, -2.], [0., 3f32.ln()], [7., 7.]]], &Device::Cpu)?;
        let ids = Tensor::new(&[[0u32, 1, 0]], &Device::Cpu)?;
        let mask = Tensor::new(&[[0f32, 0., 1.]], &Device::Cpu)?;
        let loss = masked_lm_loss(&logits, &ids, &mask)?.to_scalar::<f32>()?;
        assert!((loss - 4f32.ln()).abs() < 1e-6, "loss {loss}");
        Ok(())
    }

    #[test]
    fn masked_positions_do_not_change_the_loss() -> Result<(), Box<dyn std::error::Error>> {
        let logits = Tensor::new(&[[[5f32, -2.], [0., 3f32.ln()], [7., 7.]]], &Device::Cpu)?;
        let mask = Tensor::new(&[[0f32, 0., 1.]], &Device::Cpu)?;
        let ids = Tensor::new(&[[0u32, 1, 0]], &Device::Cpu)?;
        let base = masked_lm_loss(&logits, &ids, &mask)?.to_scalar::<f32>()?;
        // Another masked token id, other logits where the next token is masked, and the
        // last position's logits (nothing follows it).
        let other_ids = Tensor::new(&[[1u32, 0, 0]], &Device::Cpu)?;
        let other_logits = Tensor::new(&[[[-9f32, 4.], [0., 3f32.ln()], [1., -1.]]], &Device::Cpu)?;
        let changed = masked_lm_loss(&other_logits, &other_ids, &mask)?.to_scalar::<f32>()?;
        assert_eq!(base, changed);
        // Unmasking position 1 does change it.
        let wider = Tensor::new(&[[0f32, 1., 1.]], &Device::Cpu)?;
        assert_ne!(
            masked_lm_loss(&logits, &ids, &wider)?.to_scalar::<f32>()?,
            base
        );
        let nothing = Tensor::zeros((1, 3), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            masked_lm_loss(&logits, &ids, &nothing),
            Err(ModelError::Input(_))
        ));
        Ok(())
    }

    #[test]
    fn the_token_to_avoid_is_where_the_withheld_report_departs()
    -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let encode = |report: &str, max_len| {
            Example::encode(&tokenizer, &style.segments(report, 3), max_len)
        };
        let mut example = encode("sinus rhythm. normal ecg", 128)?;
        let withheld = encode("sinus rhythm. atrial fibrillation. normal ecg", 128)?;
        example.avoid_departure(&withheld);
        example.avoid_departure(&withheld);
        let at = example
            .input_ids
            .iter()
            .zip(&withheld.input_ids)
            .position(|(a, b)| a != b)
            .ok_or("the reports differ")?;
        assert_eq!(
            example.avoid,
            vec![(at, withheld.input_ids[at])],
            "marked once"
        );
        assert!(example.is_target[at]);
        // The token avoided begins the withheld statement, after the shared "sinus rhythm.".
        let before = tokenizer.decode(&withheld.input_ids[..at], false)?;
        let from_avoided = tokenizer.decode(&withheld.input_ids[at..], false)?;
        assert!(before.trim_end().ends_with("sinus rhythm."), "{before:?}");
        assert!(
            from_avoided.trim_start().starts_with("atrial fibrillation"),
            "{from_avoided:?}"
        );
        // Nothing when the withheld report departs only past a truncated end, at the end marker
        // (a statement appended after the last one) or in the prompt.
        let mut ends = encode("sinus rhythm. normal ecg", 128)?;
        let appended = encode("sinus rhythm. normal ecg. atrial fibrillation", 128)?;
        ends.avoid_departure(&appended);
        assert!(ends.avoid.is_empty(), "{:?}", ends.avoid);
        // There an extra row of the appended report trains only the unlikelihood of the
        // statement's first token, after the separator.
        assert!(example.avoiding_after_end(&withheld).is_none());
        let row = ends
            .avoiding_after_end(&appended)
            .ok_or("a row past the end")?;
        assert_eq!(row.input_ids, appended.input_ids);
        assert!(
            row.is_target.iter().all(|&t| !t),
            "no language-model target"
        );
        let first = ends.input_ids.len();
        assert_eq!(row.avoid, vec![(first, appended.input_ids[first])]);
        let before = tokenizer.decode(&appended.input_ids[..first], false)?;
        let from_avoided = tokenizer.decode(&appended.input_ids[first..], false)?;
        assert!(before.trim_end().ends_with("normal ecg."), "{before:?}");
        assert!(
            from_avoided.trim_start().starts_with("atrial fibrillation"),
            "{from_avoided:?}"
        );
        let mut cut = encode("sinus rhythm. normal ecg", at)?;
        cut.avoid_departure(&withheld);
        assert!(cut.avoid.is_empty());
        let mut first = encode("sinus rhythm", 128)?;
        let mut other_prompt = first.clone();
        other_prompt.input_ids[1] += 1;
        other_prompt.input_ids[first.input_ids.len() - 2] += 1;
        assert!(!first.is_target[1]);
        first.avoid_departure(&other_prompt);
        assert!(
            first.avoid.is_empty() && first.avoiding_after_end(&other_prompt).is_none(),
            "a departure in the prompt is not a token to avoid"
        );
        Ok(())
    }

    #[test]
    fn unlikelihood_is_minus_log_one_minus_the_probability_of_each_avoided_token()
    -> Result<(), Box<dyn std::error::Error>> {
        // Two rows, logits of positions 1..4 (from = 1): row 0 position 2 is predicted from
        // logits index 0, row 1 position 4 from index 2.
        let logits = Tensor::new(
            &[
                [[2f32.ln(), 0., 0.], [9., 9., 9.], [9., 9., 9.]],
                [[9f32, 9., 9.], [9., 9., 9.], [0., 0., 3f32.ln()]],
            ],
            &Device::Cpu,
        )?;
        // p = 2/4 and 3/5: -(ln(1/2) + ln(2/5)) / 2.
        let expected = -((0.5f32).ln() + (0.4f32).ln()) / 2.0;
        let term = unlikelihood_loss_from(&logits, &[(0, 2, 0), (1, 4, 2)], 1)?
            .ok_or("a term")?
            .to_scalar::<f32>()?;
        assert!((term - expected).abs() < 1e-5, "{term} vs {expected}");
        assert!(unlikelihood_loss_from(&logits, &[], 1)?.is_none());
        for outside in [(0, 1, 0), (0, 5, 0), (2, 2, 0), (0, 2, 3)] {
            assert!(
                matches!(
                    unlikelihood_loss_from(&logits, &[outside], 1),
                    Err(ModelError::Input(_))
                ),
                "{outside:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_training_loss_adds_the_weighted_unlikelihood_term_and_trains_it_down()
    -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let model = tiny_model(&tokenizer)?;
        let mut batch = batch(&tokenizer, tokenizer.pad_id())?;
        let plain = model.training_loss(&batch, false, 2.0)?;
        assert!(plain.unlikelihood.is_none(), "nothing to avoid, no term");
        // Avoid a token row 0 holds: the term pulls against the language model.
        let from = first_scored_position(&batch.target_mask)?;
        let at = from + 4;
        let token = batch.input_ids.get(0)?.get(at)?.to_scalar::<u32>()?;
        batch.avoid = vec![(0, at, token)];
        let terms = model.training_loss(&batch, false, 2.0)?;
        let (total, lm) = (
            terms.total.to_scalar::<f32>()?,
            terms.lm.to_scalar::<f32>()?,
        );
        let term = terms.unlikelihood.ok_or("a term")?.to_scalar::<f32>()?;
        assert_eq!(lm, plain.lm.to_scalar::<f32>()?);
        assert!(
            (total - (lm + 2.0 * term)).abs() < 1e-5,
            "{total} = {lm} + 2 x {term}"
        );
        assert_eq!(
            model
                .training_loss(&batch, false, 0.0)?
                .total
                .to_scalar::<f32>()?,
            lm,
            "weight 0 is the paper's loss"
        );
        // Gradient steps on the unlikelihood term alone lower it.
        let vars = model.trainable_vars();
        use candle_nn::Optimizer;
        let mut sgd = candle_nn::SGD::new(vars, 0.5)?;
        for _ in 0..5 {
            let term = model
                .training_loss(&batch, true, 1.0)?
                .unlikelihood
                .ok_or("a term")?;
            sgd.backward_step(&term)?;
        }
        let after = model
            .training_loss(&batch, false, 1.0)?
            .unlikelihood
            .ok_or("a term")?
            .to_scalar::<f32>()?;
        assert!(after < 0.5 * term, "{term} -> {after}");
        Ok(())
    }

    /// The tiny model, fresh weights of seed 2, for `tokenizer`'s vocabulary.
    fn tiny_model(tokenizer: &ReportTokenizer) -> Result<Meit, ModelError> {
        Meit::new(
            &MeitConfig::tiny(tokenizer.vocab_size()),
            &Params::new(2, &Device::Cpu),
        )
    }

    fn tokenizer() -> Result<ReportTokenizer, TokenizerError> {
        let reports = [
            "sinus rhythm. normal ecg",
            "sinus bradycardia. abnormal ecg",
            "atrial fibrillation. abnormal ecg",
        ];
        ReportTokenizer::train(reports.iter().cycle().take(30), 300, 2)
    }

    fn batch(
        tokenizer: &ReportTokenizer,
        pad_id: u32,
    ) -> Result<Batch, Box<dyn std::error::Error>> {
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let examples = [
            "sinus rhythm. normal ecg",
            "atrial fibrillation with rapid ventricular response. abnormal ecg",
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| Example::encode(tokenizer, &style.segments(r, i), 128))
        .collect::<Result<Vec<_>, _>>()?;
        let ecg = random_ecg(2, 12, 64, 1, &Device::Cpu)?;
        Ok(Batch::collate(ecg, &examples, pad_id, &Device::Cpu)?)
    }

    #[test]
    fn example_scores_the_report_and_end_marker_only() -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let example = Example::encode(&tokenizer, &style.segments("normal ecg", 0), 128)?;
        let prompt_len = prompt_ids(&tokenizer, &style.prompt(0))?.len();
        assert_eq!(example.input_ids[0], tokenizer.begin_id());
        assert!(example.is_target[..prompt_len].iter().all(|&t| !t));
        assert!(example.is_target[prompt_len..].iter().all(|&t| t));
        let target: Vec<u32> = example.input_ids[prompt_len..].to_vec();
        assert_eq!(tokenizer.decode(&target, false)?, "normal ecg</s>");
        let cut = Example::encode(&tokenizer, &style.segments("normal ecg", 0), 5)?;
        assert_eq!((cut.input_ids.len(), cut.is_target.len()), (5, 5));
        Ok(())
    }

    #[test]
    fn the_loss_from_report_positions_equals_the_loss_over_every_position()
    -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let model = tiny_model(&tokenizer)?;
        let batch = batch(&tokenizer, tokenizer.pad_id())?;
        let from = first_scored_position(&batch.target_mask)?;
        assert!(from > 2, "the prompt is skipped ({from})");
        let full = masked_lm_loss(
            &model.logits(&batch, false)?,
            &batch.input_ids,
            &batch.target_mask,
        )?
        .to_scalar::<f32>()?;
        let narrow = model.loss(&batch, false)?.to_scalar::<f32>()?;
        assert!((full - narrow).abs() < 1e-5, "{full} vs {narrow}");
        // Starting one position too late misses a target: a different loss.
        let late = model.decoder().forward_sequence_from(
            &batch.input_ids,
            Some(&model.encoder().forward(&batch.ecg, false)?),
            false,
            from + 1,
        )?;
        let missed = masked_lm_loss_from(&late, &batch.input_ids, &batch.target_mask, from + 1)?
            .to_scalar::<f32>()?;
        assert!((missed - full).abs() > 1e-4, "{missed} vs {full}");
        Ok(())
    }

    #[test]
    fn padding_content_does_not_change_the_loss() -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let config = MeitConfig::tiny(tokenizer.vocab_size());
        let model = Meit::new(&config, &Params::new(2, &Device::Cpu))?;
        let padded_with_pad = batch(&tokenizer, tokenizer.pad_id())?;
        let padded_with_other = batch(&tokenizer, 7)?;
        let shorter_row_pads = padded_with_pad.target_mask.sum(1)?.to_vec1::<f32>()?;
        assert!(
            shorter_row_pads[0] < shorter_row_pads[1],
            "the first row is padded"
        );
        let a = model.loss(&padded_with_pad, false)?.to_scalar::<f32>()?;
        let b = model.loss(&padded_with_other, false)?.to_scalar::<f32>()?;
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        Ok(())
    }

    #[test]
    fn gradients_reach_encoder_and_adapters_but_not_the_frozen_decoder()
    -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let mut config = MeitConfig::tiny(tokenizer.vocab_size());
        config.lora = Some(LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: vec![LoraTarget::Q, LoraTarget::V],
        });
        let params = Params::new(4, &Device::Cpu);
        let model = Meit::new(&config, &params)?;
        // Only q and v adapted: o, gate, up, down (and everything else) must stay frozen too.
        let grads = model.loss(&batch(&tokenizer, 0)?, true)?.backward()?;
        let trainable = model.trainable_vars();
        let names = |keep: &dyn Fn(&str) -> bool| params.vars_where(|n| keep(n));
        assert!(
            names(&|n| n.starts_with("encoder.stem.conv"))
                .iter()
                .all(|v| grads.get(v.as_tensor()).is_some())
        );
        assert!(
            names(&|n| n.contains("lora_a"))
                .iter()
                .all(|v| grads.get(v.as_tensor()).is_some())
        );
        let frozen = names(&|n| n.starts_with("decoder.") && !n.contains("lora_"));
        assert!(!frozen.is_empty());
        assert!(frozen.iter().all(|v| grads.get(v.as_tensor()).is_none()));
        assert!(trainable.iter().all(|v| {
            !frozen
                .iter()
                .any(|f| f.as_tensor().id() == v.as_tensor().id())
        }));
        Ok(())
    }

    #[test]
    fn greedy_generation_matches_the_full_sequence_argmax() -> Result<(), Box<dyn std::error::Error>>
    {
        let tokenizer = tokenizer()?;
        let model = Meit::new(
            &MeitConfig::tiny(tokenizer.vocab_size()),
            &Params::new(8, &Device::Cpu),
        )?;
        let ecg = random_ecg(1, 12, 64, 3, &Device::Cpu)?;
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Mimic,
        };
        let prompt = prompt_ids(&tokenizer, &style.prompt(0))?;
        // An end id no untrained model is likely to pick first, so all 6 tokens come out.
        let generated = model.generate_greedy(&ecg, None, &prompt, 6, u32::MAX)?;
        assert_eq!(generated.len(), 6);
        // Teacher-forcing prompt + generated through the full-sequence path must pick the same
        // token at every generated position.
        let mut all = prompt.clone();
        all.extend(&generated);
        let ids = Tensor::new(all.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let embedding = model.encoder().forward(&ecg, false)?;
        let logits = model
            .decoder()
            .forward_sequence(&ids, Some(&embedding), false)?;
        let choices = logits.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
        assert_eq!(
            &choices[prompt.len() - 1..all.len() - 1],
            generated.as_slice()
        );
        Ok(())
    }

    #[test]
    fn a_saved_model_loads_back_with_the_same_logits() -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = tokenizer()?;
        let config = MeitConfig::tiny(tokenizer.vocab_size());
        let params = Params::new(12, &Device::Cpu);
        let model = Meit::new(&config, &params)?;
        let batch = batch(&tokenizer, 0)?;
        // One training-mode pass moves the BatchNorm running statistics off their start values.
        model.loss(&batch, true)?;
        let before = model.logits(&batch, false)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("model.safetensors");
        params.save(&path)?;
        let loaded = Meit::new(&config, &Params::load(&path, 99, &Device::Cpu)?)?;
        let after = loaded.logits(&batch, false)?;
        let diff = (before - after)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn head_dim_mismatch_is_a_config_error() {
        let mut config = MeitConfig::tiny(300);
        config.encoder.head_dim = 8;
        assert!(matches!(config.validate(), Err(ModelError::Config(_))));
        assert!(MeitConfig::smollm2_edge().validate().is_ok());
    }
}
