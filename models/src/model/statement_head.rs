//! Encoder warm-up: a linear read-out from the ECG embedding to the report's sentences.
//!
//! Not part of the paper. The MEIT encoder learns only through the language-model loss, via one
//! `head_dim` vector; from random weights on a small CPU budget that signal is slow to shape the
//! encoder. The warm-up first trains the encoder (and projection) to make the embedding the
//! decoder will read *linearly separable by report sentence*: a multi-label logistic read-out
//! over the distinct sentences of the training reports ("Atrial fibrillation with rapid
//! ventricular response", "Left bundle branch block", ...). The read-out is then thrown away and
//! MEIT instruction tuning runs as in the paper, with the encoder still trainable.
//! Labels are sentences, not codes (split by `meit::synth::report::sentences`, the splitter
//! that reads reports back into codes), so the same warm-up works for any report corpus (PTB-XL,
//! MIMIC-IV-ECG) and keeps wording variants (rate qualifiers, flutter ratios) apart.

use std::collections::BTreeMap;

use candle_core::{D, Tensor};
use candle_nn::{Linear, Module};
use meit::synth::report::sentences;

use super::ModelError;
use super::ecg_encoder::linear_with_bias;
use super::params::Params;

/// The label space: every distinct sentence of a report corpus, in sorted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceVocabulary {
    index: BTreeMap<String, usize>,
}

impl SentenceVocabulary {
    /// The distinct sentences of `reports`.
    pub fn from_reports<S: AsRef<str>>(reports: impl IntoIterator<Item = S>) -> SentenceVocabulary {
        let mut sentences: Vec<String> = reports
            .into_iter()
            .flat_map(|r| {
                sentences(r.as_ref())
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        sentences.sort();
        sentences.dedup();
        SentenceVocabulary {
            index: sentences
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, i))
                .collect(),
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no sentence is known.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The 0/1 target row of `report` (sentences outside the vocabulary are ignored).
    pub fn targets(&self, report: &str) -> Vec<f32> {
        let mut row = vec![0f32; self.len()];
        for sentence in sentences(report) {
            if let Some(&i) = self.index.get(sentence) {
                row[i] = 1.0;
            }
        }
        row
    }
}

/// The linear read-out `head_dim -> sentences`.
#[derive(Debug, Clone)]
pub struct StatementHead {
    linear: Linear,
}

impl StatementHead {
    /// A fresh read-out under `p` (give it its own [`Params`] so it is never saved with the model).
    pub fn new(p: &Params, head_dim: usize, labels: usize) -> Result<StatementHead, ModelError> {
        let linear =
            linear_with_bias(p, head_dim, labels).map_err(ModelError::tensor("statement head"))?;
        Ok(StatementHead { linear })
    }

    /// Logits `[batch, labels]` of embeddings `[batch, head_dim]`.
    pub fn logits(&self, embedding: &Tensor) -> Result<Tensor, ModelError> {
        self.linear
            .forward(embedding)
            .map_err(ModelError::tensor("statement head"))
    }
}

/// Mean binary cross-entropy of `logits` against 0/1 `targets` (same shape), computed stably
/// as `max(x, 0) - x y + log(1 + exp(-|x|))`.
pub fn multi_label_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor, ModelError> {
    let run = || -> candle_core::Result<Tensor> {
        let positive = logits.relu()?;
        let soft = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
        (positive - (logits * targets)?)?.add(&soft)?.mean_all()
    };
    run().map_err(ModelError::tensor("multi-label loss"))
}

/// Fraction of labels whose thresholded prediction (logit > 0) equals the target, and the
/// fraction of rows predicted exactly.
pub fn label_accuracy(logits: &Tensor, targets: &Tensor) -> Result<(f32, f32), ModelError> {
    let run = || -> candle_core::Result<(f32, f32)> {
        let predicted = logits.gt(0.0)?.to_dtype(candle_core::DType::F32)?;
        let equal = predicted.eq(targets)?.to_dtype(candle_core::DType::F32)?;
        let per_label = equal.mean_all()?.to_scalar::<f32>()?;
        let labels = equal.dim(D::Minus1)? as f64;
        let rows = equal
            .sum(D::Minus1)?
            .ge(labels - 0.5)?
            .to_dtype(candle_core::DType::F32)?;
        Ok((per_label, rows.mean_all()?.to_scalar::<f32>()?))
    };
    run().map_err(ModelError::tensor("label accuracy"))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn sentences_become_sorted_labels_in_either_phrasing() {
        assert_eq!(
            sentences("sinus rhythm. av block i. pathological ecg."),
            ["sinus rhythm", "av block i", "pathological ecg"]
        );
        let v = SentenceVocabulary::from_reports([
            "Sinus rhythm. Normal ECG",
            "Atrial fibrillation. Left bundle branch block. Abnormal ECG",
            "Sinus rhythm. Abnormal ECG",
        ]);
        assert_eq!(v.len(), 5);
        // Sorted: Abnormal ECG, Atrial fibrillation, Left bundle..., Normal ECG, Sinus rhythm.
        assert_eq!(
            v.targets("Sinus rhythm. Abnormal ECG. Unheard of"),
            [1., 0., 0., 0., 1.]
        );
    }

    #[test]
    fn loss_matches_the_formula_and_accuracy_counts_rows() -> Result<(), Box<dyn std::error::Error>>
    {
        let logits = Tensor::new(&[[2f32, -1.], [0.5, 3.]], &Device::Cpu)?;
        let targets = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu)?;
        let loss = multi_label_loss(&logits, &targets)?.to_scalar::<f32>()?;
        let bce = |x: f32, y: f32| {
            -(y * (1.0 / (1.0 + (-x).exp())).ln() + (1.0 - y) * (1.0 / (1.0 + x.exp())).ln())
        };
        let want = (bce(2.0, 1.0) + bce(-1.0, 0.0) + bce(0.5, 0.0) + bce(3.0, 1.0)) / 4.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        // Row 0 right on both labels, row 1 wrong on its first (0.5 > 0 but target 0).
        assert_eq!(label_accuracy(&logits, &targets)?, (0.75, 0.5));
        Ok(())
    }
}
