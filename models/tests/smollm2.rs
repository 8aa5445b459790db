//! MEIT on the pretrained SmolLM2-135M-Instruct, truncated to 2 decoder layers: built from
//! `configs/smollm2-lora.toml`, ChatML samples of real report text through the checkpoint's own
//! tokenizer, a forward pass and two training steps; the same decoder written as a Hugging Face
//! directory loads as the same model. Needs the GGUF
//! (`scripts/fetch-smollm2.sh` or `$MEIT_SMOLLM2_GGUF`); without it the check writes a line
//! starting `SKIPPED: ` past the harness's capture and returns, and `.ci/run` counts it as
//! skipped, not passed.

use candle_core::Device;
use meit_models::model::gguf::{load_llama_layers, smollm2_gguf_or_skip};
use meit_models::model::meit::{Batch, Example, prompt_ids, random_ecg};
use meit_models::model::params::{Params, is_base_weight};
use meit_models::model::pretrained::{BaseConfig, Pretrained, load_pretrained};
use meit_models::tokenizer::TextTokenizer;
use meit_models::train::config::RunConfig;
use meit_models::train::step::{TrainConfig, Trainer};

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
        max_layers: Some(2),
        ..BaseConfig::gguf(gguf)
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
    let is_frozen = is_base_weight;
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

    // The trained model stores only what training changed (encoder, projection, adapters);
    // loaded back on the base's own file it is the same model.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("model.safetensors");
    params.save_where(&file, |n| !is_base_weight(n))?;
    let stored = candle_core::safetensors::load(&file, &Device::Cpu)?;
    assert!(
        stored.keys().all(|n| !is_base_weight(n)),
        "no base weight stored"
    );
    assert!(
        stored.keys().any(|n| n.contains(".lora_"))
            && stored.contains_key("encoder.stem.conv.weight")
    );
    let reloaded = Params::load(&file, run.train.seed, &Device::Cpu)?;
    let Pretrained { model: again, .. } = load_pretrained(&run.model, &base, &reloaded)?;
    let before = trainer
        .model()
        .logits(&batch, false)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let after = again
        .logits(&batch, false)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(before, after, "the reloaded model computes the same logits");
    Ok(())
}

/// Writes the first `layers` decoder layers of the GGUF as a Hugging Face directory, the way
/// `transformers` saves a Llama model: `model.*` names in HF row order, config.json,
/// tokenizer.json and tokenizer_config.json.
fn write_hf_dir(
    gguf: &std::path::Path,
    dir: &std::path::Path,
    layers: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let params = Params::new(0, &Device::Cpu);
    let decoder = load_llama_layers(gguf, &params, Some(layers))?;
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in params.named_vars_where(|_| true) {
        tensors.insert(format!("model.{name}"), var.as_tensor().clone());
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let c = &decoder.config;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_positions,
        "tie_word_embeddings": c.tie_embeddings,
        "rope_scaling": null,
        "bos_token_id": decoder.bos_id,
        "eos_token_id": decoder.eos_id,
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let tokenizer = decoder.tokenizer()?;
    tokenizer
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| e.to_string())?;
    let end = tokenizer.decode(&[decoder.eos_id], false)?;
    let tokenizer_config = serde_json::json!({ "eos_token": end, "pad_token": end });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )?;
    Ok(())
}

#[test]
fn smollm2_as_a_hugging_face_directory_is_the_same_model_as_its_gguf()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(gguf) =
        smollm2_gguf_or_skip("smollm2_as_a_hugging_face_directory_is_the_same_model_as_its_gguf")
    else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    write_hf_dir(&gguf, dir.path(), 2)?;
    let run = RunConfig::from_toml(include_str!("../configs/smollm2-lora.toml"))?;
    let from_gguf = BaseConfig {
        max_layers: Some(2),
        ..BaseConfig::gguf(&gguf)
    };
    let from_dir = BaseConfig {
        gguf: None,
        hf_dir: Some(dir.path().to_path_buf()),
        max_layers: Some(2),
    };
    let mut logits = Vec::new();
    let mut tokenizers = Vec::new();
    for base in [from_gguf, from_dir] {
        let params = Params::new(run.train.seed, &Device::Cpu);
        let Pretrained { model, tokenizer } = load_pretrained(&run.model, &base, &params)?;
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
        let batch = Batch::collate(
            random_ecg(2, 12, 500, 3, &Device::Cpu)?,
            &examples,
            tokenizer.pad_id(),
            &Device::Cpu,
        )?;
        logits.push(model.logits(&batch, false)?);
        tokenizers.push(tokenizer);
    }
    let [gguf_tok, dir_tok] = [&tokenizers[0], &tokenizers[1]];
    for text in REPORTS {
        assert_eq!(gguf_tok.encode(text)?, dir_tok.encode(text)?, "{text}");
    }
    assert_eq!(
        (gguf_tok.begin_id(), gguf_tok.end_id(), gguf_tok.pad_id()),
        (dir_tok.begin_id(), dir_tok.end_id(), dir_tok.pad_id())
    );
    let diff = (&logits[0] - &logits[1])?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "the same weights give the same logits");
    Ok(())
}
