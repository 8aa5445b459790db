//! The ECG encoder: a 1-D ResNet over the raw leads, then the projection MLP that maps its
//! feature vector to one L2-normalised vector of the decoder's attention `head_dim`.
//!
//! Written beside the paper's `ecg_encoder.py` (class `ResNet`) and `ECG_model` in `ecg_llm.py`:
//! - stem: `Conv1d(leads -> width, k=7, s=2, p=3, no bias) -> BatchNorm -> ReLU`. The released
//!   code has **no** max-pool after the stem (torchvision's 2-D ResNet has one); it is an option
//!   here (`stem_max_pool`, off for the paper's variant);
//! - four stages of blocks with widths `width * [1, 2, 4, 8]`, stride 1 for the first stage and
//!   2 for the others, the stride on the first block of a stage. Basic block: two 3-tap convs;
//!   bottleneck: 1-tap -> 3-tap (carries the stride) -> 1-tap to 4x the width. A 1-tap conv +
//!   BatchNorm shortcut wherever the shape changes;
//! - `AdaptiveAvgPool1d(1)`: the mean over time -> feature vector (2048 for ResNet50-1D);
//! - not in the paper, opt-in (`pooling = "mean_std"`): the standard deviation over time of
//!   each channel appended to the mean (statistics pooling, Snyder et al. 2018's x-vectors). The
//!   last stage sees about 2 s (195 samples at 100 Hz), one or two beats: a channel can measure
//!   the local R-R interval, but its mean over the window cannot say how much that interval
//!   varies (sinus arrhythmia) or that one beat came early (premature complexes); its spread can;
//! - not in the paper, opt-in (`lead_presence`): one 0/1 flag per lead appended to that vector,
//!   1 where the lead's row has any non-zero sample. Preprocessing fills a lead the device does
//!   not record with zeros (`meit::dsp::leads`), and a convolution sees "absent" only as "flat";
//!   the flags tell the projection which leads exist, so a report can keep to what they show;
//! - not in the paper, opt-in (`rhythm_features`): the R-R interval statistics the shared
//!   preprocessing measures (`meit::dsp::rhythm`, 4 values) appended last, a second input beside
//!   the ECG. Statistics pooling did not teach the encoder the spread of the intervals (sinus
//!   arrhythmia stayed at 11 of 19 on the tiny model); the beat analysis measures it directly;
//! - projection: `Linear(f, f) -> BatchNorm -> ReLU -> Linear(f, head_dim) -> BatchNorm`, then
//!   L2 normalisation (`torch.nn.functional.normalize`, eps 1e-12).
//!
//! Weights start as PyTorch's defaults (uniform, bound `1/sqrt(fan_in)`; BatchNorm 1 and 0),
//! drawn from the model's seed. BatchNorm uses batch statistics in training and running
//! statistics (momentum 0.1) in evaluation; a training batch of one record is refused because
//! its variance is undefined.

use candle_core::{D, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Linear};
use serde::{Deserialize, Serialize};

use meit::dsp::rhythm::RHYTHM_FEATURES;

use super::ModelError;
use super::params::{Init, Params};

/// The residual block design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3-tap convolutions (ResNet18/34); output width = stage width.
    Basic,
    /// 1-tap, 3-tap, 1-tap (ResNet50+); output width = 4 x stage width.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per stage-width channel.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The encoder's shape. Serialised in model configs (`[encoder]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcgEncoderConfig {
    /// Input leads (channels), 12 for a standard ECG.
    pub leads: usize,
    /// Basic or bottleneck blocks.
    pub block: BlockKind,
    /// Blocks per stage; the stage widths double from `base_width`.
    pub stage_blocks: Vec<usize>,
    /// Channels of the stem and of the first stage.
    pub base_width: usize,
    /// A `MaxPool1d(3, 2, 1)` after the stem (absent in the paper's code).
    pub stem_max_pool: bool,
    /// Output size: the decoder's attention head dimension.
    pub head_dim: usize,
    /// Length of the embedding: the L2-normalised vector is multiplied by this. 1 is the paper
    /// (a unit vector). The tiled ECG token skips the decoder's input RMSNorm, so with a unit
    /// vector its keys and values are `sqrt(head_dim)` times smaller than those of text tokens;
    /// `sqrt(head_dim)` gives it the size of a normalised hidden state, which a decoder trained
    /// from scratch needs to find the slot early (a pretrained one can scale it in its weights).
    #[serde(default = "unit_length")]
    pub output_scale: f64,
    /// Append one presence flag per lead (any non-zero sample in its row) to the pooled features
    /// before the projection. Off in the paper and in models trained before it existed.
    #[serde(default)]
    pub lead_presence: bool,
    /// How the last stage's features are pooled over time. Mean in the paper and in models
    /// trained before the option existed.
    #[serde(default)]
    pub pooling: Pooling,
    /// Append the R-R interval statistics (`meit::dsp::rhythm::RhythmFeatures`, a second input)
    /// after the flags. Must match the run's `[preprocess] rhythm_features`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rhythm_features: bool,
}

/// How the encoder pools its last stage over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean of each channel (the paper's `AdaptiveAvgPool1d(1)`).
    #[default]
    Mean,
    /// The mean, then the standard deviation of each channel (`sqrt(var + 1e-5)`, the
    /// variance over time without Bessel's correction).
    MeanStd,
}

impl Pooling {
    /// Pooled values per channel.
    pub fn statistics(self) -> usize {
        match self {
            Pooling::Mean => 1,
            Pooling::MeanStd => 2,
        }
    }
}

/// Added to the variance under the square root of [`Pooling::MeanStd`] (its gradient stays
/// finite on a constant channel).
pub const STD_POOLING_EPSILON: f64 = 1e-5;

fn unit_length() -> f64 {
    1.0
}

impl EcgEncoderConfig {
    /// The paper's ResNet50-1D: bottleneck blocks [3, 4, 6, 3], width 64, 2048 features.
    pub fn resnet50_1d(head_dim: usize) -> EcgEncoderConfig {
        EcgEncoderConfig {
            leads: 12,
            block: BlockKind::Bottleneck,
            stage_blocks: vec![3, 4, 6, 3],
            base_width: 64,
            stem_max_pool: false,
            head_dim,
            output_scale: 1.0,
            lead_presence: false,
            pooling: Pooling::Mean,
            rhythm_features: false,
        }
    }

    /// A small encoder for edge devices: basic blocks [1, 1, 1, 1], width 16, 128 features,
    /// with the stem max-pool to halve the work of every later layer.
    pub fn edge(head_dim: usize) -> EcgEncoderConfig {
        EcgEncoderConfig {
            leads: 12,
            block: BlockKind::Basic,
            stage_blocks: vec![1, 1, 1, 1],
            base_width: 16,
            stem_max_pool: true,
            head_dim,
            output_scale: 1.0,
            lead_presence: false,
            pooling: Pooling::Mean,
            rhythm_features: false,
        }
    }

    /// Length of the feature vector the projection reads: the pooled statistics, plus one flag
    /// per lead with `lead_presence`, plus the R-R statistics with `rhythm_features`.
    pub fn feature_dim(&self) -> usize {
        self.pooled_dim() + self.flag_dim() + self.rhythm_dim()
    }

    /// Lead-presence flags in the feature vector (0 without `lead_presence`).
    pub fn flag_dim(&self) -> usize {
        if self.lead_presence { self.leads } else { 0 }
    }

    /// R-R statistics in the feature vector (0 without `rhythm_features`).
    pub fn rhythm_dim(&self) -> usize {
        if self.rhythm_features {
            RHYTHM_FEATURES
        } else {
            0
        }
    }

    /// Length of the pooled features: channels (last stage width x block expansion) x
    /// statistics per channel.
    pub fn pooled_dim(&self) -> usize {
        self.channels() * self.pooling.statistics()
    }

    /// Channels of the last stage: its width x block expansion (the projection's hidden width).
    pub fn channels(&self) -> usize {
        let stages = self.stage_blocks.len().max(1);
        self.base_width * (1 << (stages - 1)) * self.block.expansion()
    }

    /// Refuses shapes that cannot build an encoder.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str| Err(ModelError::Config(format!("encoder: {what}")));
        if self.leads == 0 || self.base_width == 0 || self.head_dim == 0 {
            return bad("leads, base_width and head_dim must be positive");
        }
        if self.stage_blocks.is_empty() || self.stage_blocks.contains(&0) {
            return bad("stage_blocks needs at least one stage and no empty stage");
        }
        if self.stage_blocks.len() > 8 {
            return bad("at most 8 stages");
        }
        if !(self.output_scale > 0.0 && self.output_scale.is_finite()) {
            return bad("output_scale must be positive");
        }
        Ok(())
    }
}

/// A 1-D convolution without bias, `[batch, c_in, t] -> [batch, c_out, t_out]`, PyTorch's
/// `Conv1d(bias=False)` with zero padding.
///
/// Written as im2col (one gather of the receptive fields) and a matrix product instead of
/// candle's `conv1d`, whose weight gradient is wrong on the CPU in candle 0.11.1 (measured against
/// finite differences: see `convolution_gradients_match_finite_differences`); with it the
/// encoder could not even fit 32 records. Every operation used here has a checked gradient.
#[derive(Debug, Clone)]
struct Convolution {
    /// `[c_out, c_in, kernel]`.
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Convolution {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (c_out, c_in, kernel) = self.weight.dims3()?;
        let (batch, channels, t) = x.dims3()?;
        if channels != c_in {
            candle_core::bail!("convolution expects {c_in} channels, got {channels}");
        }
        let padded_len = t + 2 * self.padding;
        if padded_len < kernel {
            candle_core::bail!("convolution input of {t} samples is shorter than its kernel");
        }
        let t_out = (padded_len - kernel) / self.stride + 1;
        // Zero padding, then more zeros on the right so the length is a multiple of the stride:
        // tap j of output o is sample o * stride + j = row o + j / stride, column j % stride of
        // the padded signal seen as rows of `stride` samples. Each tap is then a view, and
        // their concatenation the im2col matrix (cheap to differentiate: no gather).
        let rows = t_out + (kernel - 1) / self.stride + 1;
        let right = rows * self.stride - t - self.padding;
        let grid = x.pad_with_zeros(D::Minus1, self.padding, right)?.reshape((
            batch,
            c_in,
            rows,
            self.stride,
        ))?;
        let taps = (0..kernel)
            .map(|j| {
                grid.narrow(2, j / self.stride, t_out)?
                    .narrow(3, j % self.stride, 1)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let columns = Tensor::cat(&taps, 3)?
            .permute((0, 2, 1, 3))?
            .reshape((batch * t_out, c_in * kernel))?;
        let weight = self.weight.reshape((c_out, c_in * kernel))?;
        columns
            .matmul(&weight.t()?)?
            .reshape((batch, t_out, c_out))?
            .transpose(1, 2)?
            .contiguous()
    }
}

/// A convolution without bias followed by BatchNorm.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Convolution,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        p: &Params,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> candle_core::Result<ConvBn> {
        let bound = 1.0 / ((c_in * kernel) as f64).sqrt();
        let weight = p
            .pp("conv")
            .get((c_out, c_in, kernel), "weight", Init::Uniform(bound))?;
        Ok(ConvBn {
            conv: Convolution {
                weight,
                stride,
                padding: kernel / 2,
            },
            bn: batch_norm(&p.pp("bn"), c_out)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }
}

/// BatchNorm with weight 1, bias 0, running mean 0 and running variance 1 to start.
fn batch_norm(p: &Params, features: usize) -> candle_core::Result<BatchNorm> {
    BatchNorm::new(
        features,
        p.get(features, "running_mean", Init::Const(0.0))?,
        p.get(features, "running_var", Init::Const(1.0))?,
        p.get(features, "weight", Init::Const(1.0))?,
        p.get(features, "bias", Init::Const(0.0))?,
        1e-5,
    )
}

/// One residual block: a chain of ConvBn (ReLU between them) plus the shortcut, then ReLU.
#[derive(Debug, Clone)]
struct Block {
    chain: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
}

impl Block {
    fn new(
        p: &Params,
        kind: BlockKind,
        c_in: usize,
        width: usize,
        stride: usize,
    ) -> candle_core::Result<Block> {
        let c_out = width * kind.expansion();
        // (in, out, kernel, stride) of each convolution, as in the reference classes.
        let convs = match kind {
            BlockKind::Basic => vec![(c_in, width, 3, stride), (width, width, 3, 1)],
            BlockKind::Bottleneck => vec![
                (c_in, width, 1, 1),
                (width, width, 3, stride),
                (width, c_out, 1, 1),
            ],
        };
        let chain = convs
            .into_iter()
            .enumerate()
            .map(|(i, (a, b, k, s))| ConvBn::new(&p.pp(format!("conv{}", i + 1)), a, b, k, s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let shortcut = if stride != 1 || c_in != c_out {
            Some(ConvBn::new(&p.pp("shortcut"), c_in, c_out, 1, stride)?)
        } else {
            None
        };
        Ok(Block { chain, shortcut })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = x.clone();
        let last = self.chain.len().saturating_sub(1);
        for (i, conv) in self.chain.iter().enumerate() {
            out = conv.forward_t(&out, train)?;
            if i < last {
                out = out.relu()?;
            }
        }
        let identity = match &self.shortcut {
            Some(shortcut) => shortcut.forward_t(x, train)?,
            None => x.clone(),
        };
        (out + identity)?.relu()
    }
}

/// The projection MLP from the pooled features to the decoder's head dimension.
#[derive(Debug, Clone)]
struct Projection {
    hidden: Linear,
    hidden_bn: BatchNorm,
    out: Linear,
    out_bn: BatchNorm,
}

impl Projection {
    /// `inputs` = pooled statistics (+ lead flags); the hidden layer is as wide as the last
    /// stage's channels (the paper's `Linear(f, f)` with mean pooling and no flags).
    fn new(
        p: &Params,
        inputs: usize,
        features: usize,
        head_dim: usize,
    ) -> candle_core::Result<Projection> {
        Ok(Projection {
            hidden: linear_with_bias(&p.pp("hidden"), inputs, features)?,
            hidden_bn: batch_norm(&p.pp("hidden_bn"), features)?,
            out: linear_with_bias(&p.pp("out"), features, head_dim)?,
            out_bn: batch_norm(&p.pp("out_bn"), head_dim)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self
            .hidden_bn
            .forward_t(&self.hidden.forward(x)?, train)?
            .relu()?;
        self.out_bn.forward_t(&self.out.forward(&x)?, train)
    }
}

/// `nn.Linear(c_in, c_out)` with PyTorch's default initialisation.
pub(crate) fn linear_with_bias(
    p: &Params,
    c_in: usize,
    c_out: usize,
) -> candle_core::Result<Linear> {
    let bound = 1.0 / (c_in as f64).sqrt();
    Ok(Linear::new(
        p.get((c_out, c_in), "weight", Init::Uniform(bound))?,
        Some(p.get(c_out, "bias", Init::Uniform(bound))?),
    ))
}

/// The ECG encoder: raw leads `[batch, leads, samples]` -> unit vectors `[batch, head_dim]`.
#[derive(Debug, Clone)]
pub struct EcgEncoder {
    config: EcgEncoderConfig,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    projection: Projection,
}

impl EcgEncoder {
    /// Builds the encoder, drawing or fetching its weights under `p` (`stem.*`, `stages.*`,
    /// `projection.*`).
    pub fn new(config: &EcgEncoderConfig, p: &Params) -> Result<EcgEncoder, ModelError> {
        config.validate()?;
        Self::build(config, p).map_err(ModelError::tensor("building the ECG encoder"))
    }

    fn build(config: &EcgEncoderConfig, p: &Params) -> candle_core::Result<EcgEncoder> {
        let stem = ConvBn::new(&p.pp("stem"), config.leads, config.base_width, 7, 2)?;
        let mut c_in = config.base_width;
        let mut stages = Vec::with_capacity(config.stage_blocks.len());
        for (s, &blocks) in config.stage_blocks.iter().enumerate() {
            let width = config.base_width << s;
            let stage_p = p.pp(format!("stages.{s}"));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                stage.push(Block::new(
                    &stage_p.pp(b),
                    config.block,
                    c_in,
                    width,
                    stride,
                )?);
                c_in = width * config.block.expansion();
            }
            stages.push(stage);
        }
        debug_assert_eq!(c_in, config.channels());
        let projection = Projection::new(
            &p.pp("projection"),
            config.feature_dim(),
            c_in,
            config.head_dim,
        )?;
        Ok(EcgEncoder {
            config: config.clone(),
            stem,
            stages,
            projection,
        })
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &EcgEncoderConfig {
        &self.config
    }

    /// Pooled ResNet features, then the lead-presence flags and the R-R statistics `rhythm`
    /// `[batch, 4]` when configured: `[batch, feature_dim]` (the projection's input).
    pub fn features(
        &self,
        ecg: &Tensor,
        rhythm: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.check_input(ecg, rhythm, train)?;
        self.features_inner(ecg, rhythm, train)
            .map_err(ModelError::tensor("ECG encoder features"))
    }

    /// The ECG embedding of an encoder without `rhythm_features`: L2-normalised `[batch,
    /// head_dim]`, times `output_scale`.
    pub fn forward(&self, ecg: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.forward_with(ecg, None, train)
    }

    /// The ECG embedding with the R-R statistics `rhythm` `[batch, 4]`, which an encoder with
    /// `rhythm_features` requires and any other refuses.
    pub fn forward_with(
        &self,
        ecg: &Tensor,
        rhythm: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.check_input(ecg, rhythm, train)?;
        let run = || -> candle_core::Result<Tensor> {
            let features = self.features_inner(ecg, rhythm, train)?;
            let unit = l2_normalize(&self.projection.forward_t(&features, train)?)?;
            if self.config.output_scale == 1.0 {
                Ok(unit)
            } else {
                unit * self.config.output_scale
            }
        };
        run().map_err(ModelError::tensor("ECG encoder forward"))
    }

    fn features_inner(
        &self,
        ecg: &Tensor,
        rhythm: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.stem.forward_t(ecg, train)?.relu()?;
        if self.config.stem_max_pool {
            x = max_pool_3_2_1(&x)?;
        }
        for block in self.stages.iter().flatten() {
            x = block.forward_t(&x, train)?;
        }
        let mut features = pool_over_time(&x, self.config.pooling)?;
        if self.config.lead_presence {
            features = Tensor::cat(&[&features, &lead_presence(ecg)?], 1)?;
        }
        match rhythm {
            Some(rhythm) => Tensor::cat(&[&features, &rhythm.detach()], 1),
            None => Ok(features),
        }
    }

    fn check_input(
        &self,
        ecg: &Tensor,
        rhythm: Option<&Tensor>,
        train: bool,
    ) -> Result<(), ModelError> {
        let batch = ecg.dims().first().copied().unwrap_or(0);
        match (self.config.rhythm_features, rhythm.map(Tensor::dims)) {
            (false, None) => {}
            (true, Some(&[rows, RHYTHM_FEATURES])) if rows == batch => {}
            (true, None) => {
                return Err(ModelError::Input(
                    "this encoder reads the R-R interval statistics (`rhythm_features`); none \
                     were given"
                        .into(),
                ));
            }
            (true, Some(dims)) => {
                return Err(ModelError::Input(format!(
                    "R-R interval statistics must be [{batch}, {RHYTHM_FEATURES}], got {dims:?}"
                )));
            }
            (false, Some(_)) => {
                return Err(ModelError::Input(
                    "R-R interval statistics given to an encoder without `rhythm_features`".into(),
                ));
            }
        }
        match ecg.dims() {
            &[batch, leads, samples] if leads == self.config.leads && samples >= 8 => {
                if train && batch < 2 {
                    Err(ModelError::Input(
                        "training needs at least 2 records per batch (BatchNorm statistics)".into(),
                    ))
                } else if batch == 0 {
                    Err(ModelError::Input("empty batch".into()))
                } else {
                    Ok(())
                }
            }
            dims => Err(ModelError::Input(format!(
                "ECG tensor must be [batch, {} leads, >= 8 samples], got {dims:?}",
                self.config.leads
            ))),
        }
    }
}

/// `MaxPool1d(kernel 3, stride 2, padding 1)` on `[batch, channels, time]`. Repeating the edge
/// sample as padding gives the same maxima as PyTorch's -inf padding. Window k covers padded
/// samples 2k, 2k+1, 2k+2 = even[k], odd[k], even[k+1], so the pool is an element-wise maximum
/// of three views (candle's own max-pool has no gradient when stride != kernel).
fn max_pool_3_2_1(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, t) = x.dims3()?;
    // One more repeated sample on the right when needed so the length is even.
    let padded = x.pad_with_same(D::Minus1, 1, 1 + t % 2)?;
    let pairs = padded.dim(2)? / 2;
    let windows = pairs - 1;
    let split = padded.reshape((b, c, pairs, 2))?;
    let even = split.narrow(3, 0, 1)?.squeeze(3)?;
    let odd = split.narrow(3, 1, 1)?.squeeze(3)?;
    even.narrow(2, 0, windows)?
        .maximum(&odd.narrow(2, 0, windows)?)?
        .maximum(&even.narrow(2, 1, windows)?)
}

/// `[batch, channels, time]` -> `[batch, channels x statistics]`: the mean of each channel
/// over time, then (`MeanStd`) its standard deviation `sqrt(mean((x - mean)^2) + 1e-5)`.
pub fn pool_over_time(x: &Tensor, pooling: Pooling) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    match pooling {
        Pooling::Mean => mean.squeeze(D::Minus1),
        Pooling::MeanStd => {
            let variance = x.broadcast_sub(&mean)?.sqr()?.mean(D::Minus1)?;
            let std = (variance + STD_POOLING_EPSILON)?.sqrt()?;
            Tensor::cat(&[&mean.squeeze(D::Minus1)?, &std], 1)
        }
    }
}

/// 1 for each lead whose row has a non-zero sample, else 0: `[batch, leads, samples]` ->
/// `[batch, leads]` (the ONNX export computes the same: `Cast(Greater(ReduceMax(Abs(x)), 0))`).
/// Constant with respect to the weights: no gradient flows through it.
pub fn lead_presence(ecg: &Tensor) -> candle_core::Result<Tensor> {
    Ok(ecg
        .abs()?
        .max(D::Minus1)?
        .gt(0f64)?
        .to_dtype(ecg.dtype())?
        .detach())
}

/// Each row divided by its Euclidean norm (at least 1e-12), as `F.normalize(x, dim=-1)`.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::model::meit::random_ecg;

    fn tiny(block: BlockKind) -> EcgEncoderConfig {
        EcgEncoderConfig {
            leads: 12,
            block,
            stage_blocks: vec![1, 2],
            base_width: 4,
            stem_max_pool: true,
            head_dim: 6,
            output_scale: 1.0,
            lead_presence: false,
            pooling: Pooling::Mean,
            rhythm_features: false,
        }
    }

    /// `sum(conv(x, w) * probe)` is linear in `w` and in `x`, so central differences are exact
    /// up to rounding: the analytic gradients must match them.
    #[test]
    fn convolution_gradients_match_finite_differences() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        for (stride, kernel) in [(1, 3), (2, 3), (2, 7), (2, 1), (1, 1)] {
            let padding = kernel / 2;
            let x = candle_core::Var::from_tensor(&random_ecg(
                2,
                3,
                17,
                1 + stride as u64 * 10 + kernel as u64,
                &dev,
            )?)?;
            let w = candle_core::Var::from_tensor(&random_ecg(4, 3, kernel, 2, &dev)?)?;
            let t_out = (17 + 2 * padding - kernel) / stride + 1;
            let probe = random_ecg(2, 4, t_out, 3, &dev)?;
            let value = |x: &Tensor, w: &Tensor| -> candle_core::Result<f32> {
                let conv = Convolution {
                    weight: w.clone(),
                    stride,
                    padding,
                };
                (conv.forward(x)? * &probe)?.sum_all()?.to_scalar::<f32>()
            };
            let conv = Convolution {
                weight: w.as_tensor().clone(),
                stride,
                padding,
            };
            let grads = (conv.forward(x.as_tensor())? * &probe)?
                .sum_all()?
                .backward()?;
            for (var, other, is_weight) in [(&w, &x, true), (&x, &w, false)] {
                let analytic = grads
                    .get(var.as_tensor())
                    .ok_or("no gradient")?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                for (i, g) in analytic.iter().enumerate() {
                    let shifted = |delta: f32| -> candle_core::Result<f32> {
                        let mut v = base.clone();
                        v[i] += delta;
                        let t = Tensor::from_vec(v, var.as_tensor().shape(), &dev)?;
                        if is_weight {
                            value(other.as_tensor(), &t)
                        } else {
                            value(&t, other.as_tensor())
                        }
                    };
                    let numeric = (shifted(0.5)? - shifted(-0.5)?) / 1.0;
                    assert!(
                        (numeric - g).abs() < 1e-3 * (1.0 + numeric.abs()),
                        "stride {stride} kernel {kernel} {}[{i}]: {g} vs {numeric}",
                        if is_weight { "dW" } else { "dx" }
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // the indices are the definition being checked
    fn convolution_equals_a_direct_sum() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let x = random_ecg(2, 3, 11, 4, &dev)?;
        let w = random_ecg(4, 3, 5, 5, &dev)?;
        let conv = Convolution {
            weight: w.clone(),
            stride: 2,
            padding: 2,
        };
        let got = conv.forward(&x)?.to_vec3::<f32>()?;
        let (xv, wv) = (x.to_vec3::<f32>()?, w.to_vec3::<f32>()?);
        for b in 0..2 {
            for o in 0..4 {
                for t in 0..6 {
                    let mut sum = 0f32;
                    for c in 0..3 {
                        for j in 0..5 {
                            let pos = (2 * t + j) as isize - 2;
                            if (0..11).contains(&pos) {
                                sum += xv[b][c][pos as usize] * wv[o][c][j];
                            }
                        }
                    }
                    assert!((got[b][o][t] - sum).abs() < 1e-4, "{b} {o} {t}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn output_scale_sets_the_embedding_length() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = tiny(BlockKind::Basic);
        config.output_scale = 3.0;
        let encoder = EcgEncoder::new(&config, &Params::new(1, &Device::Cpu))?;
        let norms = encoder
            .forward(&ecg(3, 64)?, false)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .to_vec1::<f32>()?;
        assert!(norms.iter().all(|n| (n - 3.0).abs() < 1e-4), "{norms:?}");
        config.output_scale = 0.0;
        assert!(config.validate().is_err());
        Ok(())
    }

    fn ecg(batch: usize, samples: usize) -> candle_core::Result<Tensor> {
        let values: Vec<f32> = (0..batch * 12 * samples)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        Tensor::from_vec(values, (batch, 12, samples), &Device::Cpu)
    }

    #[test]
    fn output_is_batch_by_head_dim_with_unit_rows() -> Result<(), Box<dyn std::error::Error>> {
        for block in [BlockKind::Basic, BlockKind::Bottleneck] {
            let encoder = EcgEncoder::new(&tiny(block), &Params::new(1, &Device::Cpu))?;
            for train in [true, false] {
                let out = encoder.forward(&ecg(3, 100)?, train)?;
                assert_eq!(out.dims(), &[3, 6]);
                for row in out.to_vec2::<f32>()? {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    assert!(
                        (norm - 1.0).abs() < 1e-5,
                        "{block:?} train={train}: norm {norm}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Statistics pooling by hand: channel [1, 2, 3, 4] has mean 2.5 and variance 1.25; a
    /// constant channel has standard deviation sqrt(1e-5), and its gradient is finite.
    #[test]
    fn mean_std_pooling_appends_each_channels_standard_deviation()
    -> Result<(), Box<dyn std::error::Error>> {
        let x = candle_core::Var::from_vec(
            vec![1f32, 2., 3., 4., 7., 7., 7., 7.],
            (1, 2, 4),
            &Device::Cpu,
        )?;
        let mean = pool_over_time(&x, Pooling::Mean)?.to_vec2::<f32>()?;
        assert_eq!(mean, vec![vec![2.5, 7.0]]);
        let pooled = pool_over_time(&x, Pooling::MeanStd)?;
        let values = pooled.to_vec2::<f32>()?;
        let expected = [2.5, 7.0, (1.25f32 + 1e-5).sqrt(), 1e-5f32.sqrt()];
        for (v, e) in values[0].iter().zip(expected) {
            assert!((v - e).abs() < 1e-6, "{values:?} vs {expected:?}");
        }
        let grads = pooled.sum_all()?.backward()?;
        let g = grads
            .get(&x)
            .ok_or("no gradient")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        Ok(())
    }

    /// With `MeanStd` the encoder's features are the mean-pooled features of the same trunk,
    /// then one standard deviation per channel (positive), then the lead flags; the projection
    /// reads all of them.
    #[test]
    fn mean_std_features_extend_the_mean_features() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = tiny(BlockKind::Basic);
        config.pooling = Pooling::MeanStd;
        config.lead_presence = true;
        assert_eq!(config.feature_dim(), 2 * config.channels() + 12);
        let encoder = EcgEncoder::new(&config, &Params::new(1, &Device::Cpu))?;
        let mean_only = EcgEncoder::new(&tiny(BlockKind::Basic), &Params::new(1, &Device::Cpu))?;
        let input = ecg(2, 64)?;
        let features = encoder.features(&input, None, false)?;
        assert_eq!(features.dims(), &[2, config.feature_dim()]);
        let c = config.channels();
        assert_eq!(
            features.narrow(1, 0, c)?.to_vec2::<f32>()?,
            mean_only.features(&input, None, false)?.to_vec2::<f32>()?
        );
        let std = features.narrow(1, c, c)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(std.iter().all(|v| *v >= 1e-5f32.sqrt() - 1e-7), "{std:?}");
        assert!(std.iter().any(|v| *v > 1e-2), "no channel varies: {std:?}");
        let flags = features
            .narrow(1, 2 * c, 12)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(flags.iter().all(|v| *v == 1.0), "{flags:?}");
        assert_eq!(encoder.forward(&input, true)?.dims(), &[2, 6]);
        Ok(())
    }

    /// The flags are 1 exactly where a row has a non-zero sample (a tiny signal counts, a
    /// zeroed lead does not), they are the last `leads` features, and the projection reads them:
    /// zeroing a lead changes the embedding through the flag as well as through the signal.
    #[test]
    fn lead_presence_flags_mark_the_rows_with_signal() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = tiny(BlockKind::Basic);
        config.lead_presence = true;
        let encoder = EcgEncoder::new(&config, &Params::new(1, &Device::Cpu))?;
        let mut values = ecg(2, 64)?.to_vec3::<f32>()?;
        for v in values[0][3].iter_mut() {
            *v = 0.0;
        }
        for v in values[1][7].iter_mut() {
            *v = 0.0;
        }
        values[1][7][10] = -1e-6;
        for v in values[1][11].iter_mut() {
            *v = 0.0;
        }
        let flat: Vec<f32> = values.iter().flatten().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (2, 12, 64), &Device::Cpu)?;
        let features = encoder.features(&input, None, false)?;
        assert_eq!(features.dims(), &[2, config.pooled_dim() + 12]);
        let flags = features
            .narrow(1, config.pooled_dim(), 12)?
            .to_vec2::<f32>()?;
        let expected = |absent: &[usize]| -> Vec<f32> {
            (0..12)
                .map(|l| if absent.contains(&l) { 0.0 } else { 1.0 })
                .collect()
        };
        assert_eq!(flags, vec![expected(&[3]), expected(&[11])]);

        // Same signal, one flag flipped: only the flag differs at the projection's input, and the
        // embedding moves.
        let pooled_only = EcgEncoder::new(&tiny(BlockKind::Basic), &Params::new(1, &Device::Cpu))?;
        let pooled = pooled_only.features(&input, None, false)?;
        assert_eq!(
            features
                .narrow(1, 0, config.pooled_dim())?
                .to_vec2::<f32>()?,
            pooled.to_vec2::<f32>()?
        );
        let a = encoder.forward(&input, false)?.to_vec2::<f32>()?;
        let mut nudged = values.clone();
        nudged[0][3][5] = 1e-6;
        let flat: Vec<f32> = nudged.iter().flatten().flatten().copied().collect();
        let b = encoder
            .forward(&Tensor::from_vec(flat, (2, 12, 64), &Device::Cpu)?, false)?
            .to_vec2::<f32>()?;
        let moved: f32 = a[0].iter().zip(&b[0]).map(|(x, y)| (x - y).abs()).sum();
        assert!(moved > 1e-3, "a presence flag changed nothing: {moved}");
        Ok(())
    }

    /// The R-R statistics come last in the feature vector, after the flags, exactly as given;
    /// they move the embedding; and an encoder refuses them missing, misshapen or unasked for.
    #[test]
    fn rhythm_features_are_appended_after_the_flags_and_required_when_configured()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut config = tiny(BlockKind::Basic);
        config.lead_presence = true;
        config.rhythm_features = true;
        let encoder = EcgEncoder::new(&config, &Params::new(1, &Device::Cpu))?;
        let input = ecg(2, 64)?;
        let regular = [[1.0f32, 0.3, 0.4, 0.8], [1.0, 2.5, 0.9, 0.6]];
        let rhythm = Tensor::new(&regular, &Device::Cpu)?;
        let features = encoder.features(&input, Some(&rhythm), false)?;
        assert_eq!(config.feature_dim(), config.pooled_dim() + 12 + 4);
        assert_eq!(features.dims(), &[2, config.feature_dim()]);
        let tail = features
            .narrow(1, config.pooled_dim() + 12, 4)?
            .to_vec2::<f32>()?;
        assert_eq!(tail, regular.map(|r| r.to_vec()).to_vec());

        let a = encoder
            .forward_with(&input, Some(&rhythm), false)?
            .to_vec2::<f32>()?;
        let varied = Tensor::new(
            &[[1.0f32, 3.0, 0.4, 0.8], [1.0, 2.5, 0.9, 0.6]],
            &Device::Cpu,
        )?;
        let b = encoder
            .forward_with(&input, Some(&varied), false)?
            .to_vec2::<f32>()?;
        let moved: f32 = a[0].iter().zip(&b[0]).map(|(x, y)| (x - y).abs()).sum();
        assert!(
            moved > 1e-3,
            "the interval variation changed nothing: {moved}"
        );
        assert_eq!(
            a[1], b[1],
            "row 1's statistics did not change, nor may its embedding"
        );

        for bad in [
            None,
            Some(Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?),
            Some(Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?),
        ] {
            assert!(
                matches!(
                    encoder.forward_with(&input, bad.as_ref(), false),
                    Err(ModelError::Input(_))
                ),
                "{bad:?}"
            );
        }
        let plain = EcgEncoder::new(&tiny(BlockKind::Basic), &Params::new(1, &Device::Cpu))?;
        assert!(matches!(
            plain.forward_with(&input, Some(&rhythm), false),
            Err(ModelError::Input(_))
        ));
        Ok(())
    }

    #[test]
    fn feature_dim_matches_the_pooled_features() -> Result<(), Box<dyn std::error::Error>> {
        for block in [BlockKind::Basic, BlockKind::Bottleneck] {
            let config = tiny(block);
            let encoder = EcgEncoder::new(&config, &Params::new(1, &Device::Cpu))?;
            let features = encoder.features(&ecg(2, 64)?, None, false)?;
            assert_eq!(features.dims(), &[2, config.feature_dim()]);
        }
        assert_eq!(EcgEncoderConfig::resnet50_1d(64).feature_dim(), 2048);
        assert_eq!(EcgEncoderConfig::edge(64).feature_dim(), 128);
        Ok(())
    }

    #[test]
    fn wrong_leads_and_single_record_training_are_refused() -> Result<(), Box<dyn std::error::Error>>
    {
        let encoder = EcgEncoder::new(&tiny(BlockKind::Basic), &Params::new(1, &Device::Cpu))?;
        let eight_leads = Tensor::zeros((2, 8, 100), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            encoder.forward(&eight_leads, false),
            Err(ModelError::Input(_))
        ));
        assert!(matches!(
            encoder.forward(&ecg(1, 100)?, true),
            Err(ModelError::Input(_))
        ));
        assert!(encoder.forward(&ecg(1, 100)?, false).is_ok());
        Ok(())
    }

    #[test]
    fn max_pool_matches_hand_computed_windows() -> candle_core::Result<()> {
        // windows (padding repeats the edge): [1,1,3] [3,2,5] [5,4,4] -> 3, 5, 5
        let x = Tensor::new(&[[[1f32, 3., 2., 5., 4.]]], &Device::Cpu)?;
        assert_eq!(
            max_pool_3_2_1(&x)?.to_vec3::<f32>()?,
            vec![vec![vec![3., 5., 5.]]]
        );
        Ok(())
    }

    #[test]
    fn max_pool_passes_gradients_to_the_window_maxima() -> candle_core::Result<()> {
        let x = candle_core::Var::new(&[[[1f32, 3., 2., 5., 4., 0.]]], &Device::Cpu)?;
        let grads = max_pool_3_2_1(x.as_tensor())?.sum_all()?.backward()?;
        let grad = grads
            .get(x.as_tensor())
            .map(|g| g.flatten_all()?.to_vec1::<f32>());
        // windows [1,1,3] [3,2,5] [5,4,0]: maxima at samples 1, 3, 3.
        assert_eq!(grad.transpose()?, Some(vec![0., 1., 0., 2., 0., 0.]));
        Ok(())
    }

    #[test]
    fn stem_and_stage_strides_shrink_time_as_the_reference()
    -> Result<(), Box<dyn std::error::Error>> {
        // 100 samples: stem /2 -> 50, max-pool /2 -> 25, stage 2 /2 -> 13 (ceil, padding 1).
        let encoder = EcgEncoder::new(&tiny(BlockKind::Basic), &Params::new(1, &Device::Cpu))?;
        let x = encoder.stem.forward_t(&ecg(2, 100)?, false)?;
        assert_eq!(x.dim(2)?, 50);
        let x = max_pool_3_2_1(&x)?;
        assert_eq!(x.dim(2)?, 25);
        let x = encoder.stages[0][0].forward_t(&x, false)?;
        let x = encoder.stages[1][0].forward_t(&x, false)?;
        assert_eq!(x.dims(), &[2, 8, 13]);
        Ok(())
    }
}
