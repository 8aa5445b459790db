//! MEIT on the pretrained SmolLM2-135M-Instruct, truncated to 2 decoder layers: built from
//! `configs/smollm2-lora.toml`, ChatML samples of real report text through the checkpoint's own
//! tokenizer, a forward pass and two training steps. Needs the GGUF
//! (`scripts/fetch-smollm2.sh` or `$MEIT_SMOLLM2_GGUF`); without it the check says SKIPPED.

use candle_core::Device;
use meit_models::model::gguf::smollm2_gguf_or_skip;
use meit_models::model::meit::{Batch, Example, prompt_ids, random_ecg};
use meit_models::model::params::Params;
use meit_models::model::pretrained::{BaseConfig, Pretrained, load_pretrained};
use meit_models::model::train::{RunConfig, TrainConfig, Trainer};
use meit_models::tokenizer::TextTokenizer;

const REPORTS: [&str; 2] = [
    "sinus rhythm. left axis deviation. borderline ecg",
    "atrial fibrillation with rapid ventricular response. st-t changes may be due to ischemia. abnormal ecg",
];

/// Every weight whose name satisfies `keep`, flattened, by name.
fn snapshot(params: &Params, keep: impl Fn(&str) -> bool) -> candle_core::Result<Vec<Vec<f32>>> {
    params
        .vars_where(keep)
        .iter()
        .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
        .collect()
}

#[test]
fn truncated_smollm2_with_lora_trains_its_adapters_only() -> Result<(), Box<dyn std::error::Error>>
{
    let Some(gguf) = smollm2_gguf_or_skip("truncated_smollm2_with_lora_trains_its_adapters_only")
    else {
        return Ok(());
    };
    let run = RunConfig::from_toml(include_str!("../configs/smollm2-lora.toml"))?;
    let base = BaseConfig {
        gguf,
        max_layers: Some(2),
    };
    let params = Params::new(run.train.seed, &Device::Cpu);
    let Pretrained { model, tokenizer } = load_pretrained(&run.model, &base, &params)?;
    assert_eq!(model.config().decoder.num_layers, 2);
    let end_id = run.instruction.check_tokenizer(&tokenizer)?;
    assert_eq!(end_id, tokenizer.end_id(), "<|im_end|> ends the report");

    let examples = REPORTS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Example::encode(
                &tokenizer,
                &run.instruction.segments(r, i),
                run.train.max_tokens,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = prompt_ids(&tokenizer, &run.instruction.prompt(0))?;
    let first = &examples[0];
    assert_eq!(&first.input_ids[..prompt.len()], prompt.as_slice());
    assert_eq!(
        first.input_ids.last(),
        Some(&end_id),
        "the target ends with <|im_end|>"
    );
    let target: Vec<u32> = first
        .input_ids
        .iter()
        .zip(&first.is_target)
        .filter(|(_, t)| **t)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        tokenizer.decode(&target, false)?,
        format!("{}<|im_end|>", REPORTS[0])
    );
    let batch = Batch::collate(
        random_ecg(2, 12, 500, 3, &Device::Cpu)?,
        &examples,
        tokenizer.pad_id(),
        &Device::Cpu,
    )?;

    let logits = model.logits(&batch, false)?;
    let longest = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    assert_eq!(logits.dims(), &[2, longest, tokenizer.vocab_size()]);
    let all_finite = logits
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    assert!(all_finite, "logits are finite");

    let is_adapter = |n: &str| n.contains(".lora_");
    let is_frozen = |n: &str| n.starts_with("decoder.") && !n.contains(".lora_");
    let adapters_before = snapshot(&params, is_adapter)?;
    let frozen_before = snapshot(&params, is_frozen)?;
    let encoder_before = snapshot(&params, |n| {
        n.starts_with("encoder.") && !n.contains("running_")
    })?;
    let train = TrainConfig {
        learning_rate: 1e-3,
        warmup_fraction: 0.0,
        batch_size: 2,
        ..run.train.clone()
    };
    let mut trainer = Trainer::new(model, &train, 2)?;
    for _ in 0..2 {
        let report = trainer.step(&batch)?;
        assert!(
            report.loss.is_finite() && report.grad_norm.is_finite(),
            "{report:?}"
        );
    }
    let adapters_after = snapshot(&params, is_adapter)?;
    let changed = adapters_before
        .iter()
        .zip(&adapters_after)
        .filter(|(a, b)| a != b)
        .count();
    // lora_a gets no gradient while lora_b is still zero (first step), then does: by the second
    // step every adapter matrix has moved.
    assert_eq!(changed, adapters_before.len(), "every adapter matrix moved");
    assert_eq!(
        adapters_before.len(),
        2 * 7 * 2,
        "A and B on 7 projections in 2 layers"
    );
    assert_eq!(
        snapshot(&params, is_frozen)?,
        frozen_before,
        "the base is frozen"
    );
    assert_ne!(
        snapshot(&params, |n| n.starts_with("encoder.")
            && !n.contains("running_"))?,
        encoder_before,
        "the encoder trains"
    );
    Ok(())
}
