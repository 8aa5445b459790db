//! The instruction format: how a report becomes training text, and which part carries the loss.
//!
//! With instruction tuning (the paper's default) a sample is the Tulu / Open-Instruct chat
//! format of the reference code (`encode_with_messages_format`):
//! `<|user|>\n{prompt}\n<|assistant|>\n{report}</s>`; everything up to and including
//! `<|assistant|>\n` is the *prompt* (no loss), `{report}</s>` is the *target* (loss).
//! The reference appends a newline after `</s>` inside the assistant turn; generation stops at
//! `</s>`, so it is left out here.
//!
//! Prompts: the reference code uses one per dataset ([`PTBXL_PROMPT`], [`MIMIC_PROMPT`]); the
//! paper speaks of diverse chat-style instructions, so [`Prompts::Varied`] cycles through
//! [`VARIED_PROMPTS`] by sample index (deterministic, no generator needed).
//!
//! The "without IT" ablation ([`InstructionStyle::NoInstruction`]) is the bare report. The
//! reference drops `</s>` there too; it is kept here so a generated report can end.
//!
//! On a pretrained chat model the wrapper must be the model's own: SmolLM2-Instruct speaks ChatML
//! ([`InstructionStyle::ChatMl`]), exactly as the `tokenizer.chat_template` of its GGUF renders
//! one user turn with `add_generation_prompt`, including the default system turn the template
//! inserts when there is none:
//! `<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n`
//! then `{report}<|im_end|>` as the target. The template's newline after the assistant's
//! `<|im_end|>` is not trained (generation stops at `<|im_end|>`), as with Tulu's `</s>`.
//! With `system_turn = false` ([`InstructionStyle::ChatMl`]'s `system_turn`) the system turn is
//! left out and the sample is one user turn, `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n`:
//! 17 prompt tokens with the PTB-XL prompt instead of 38 (49 with the MIMIC prompt), so a
//! pretrained backbone trains on fewer positions per record (`docs/bench/backbone-throughput.md`).
//! The bundle's prompt ids come from [`InstructionStyle::prompt`], so the daemon runs the prompt
//! the model was trained with.
//! A style's markers must each be one token of the tokenizer ([`InstructionStyle::check_tokenizer`]):
//! the report tokenizer has no ChatML tokens, SmolLM2's vocabulary has no Tulu tags.

use serde::{Deserialize, Serialize};

use crate::tokenizer::{TextTokenizer, TokenizerError};

/// Opens the user turn.
pub const USER_TAG: &str = "<|user|>";
/// Opens the assistant turn.
pub const ASSISTANT_TAG: &str = "<|assistant|>";
/// Ends the report.
pub const END_OF_TEXT: &str = "</s>";

/// Opens a ChatML turn (followed by the role and a newline).
pub const IM_START: &str = "<|im_start|>";
/// Ends a ChatML turn; SmolLM2-Instruct's end of text.
pub const IM_END: &str = "<|im_end|>";
/// The system message SmolLM2-Instruct's chat template inserts when the conversation has none.
pub const SMOLLM2_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The reference code's PTB-XL prompt.
pub const PTBXL_PROMPT: &str = "generate a description of the ECG embeddings:";
/// The reference code's MIMIC-IV-ECG prompt.
pub const MIMIC_PROMPT: &str = "Given the ECG signal embeddings, please help me generate an accurate description for this ECG signal embeddings:";
/// Chat-style phrasings for [`Prompts::Varied`] (the first two are the reference prompts).
pub const VARIED_PROMPTS: [&str; 6] = [
    PTBXL_PROMPT,
    MIMIC_PROMPT,
    "Write the report for this 12-lead ECG.",
    "Describe the rhythm and any abnormalities in this ECG.",
    "What does this electrocardiogram show?",
    "Interpret the ECG and give a short clinical statement.",
];

/// Which prompt a sample gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompts {
    /// The reference code's PTB-XL prompt on every sample.
    Ptbxl,
    /// The reference code's MIMIC-IV-ECG prompt on every sample.
    Mimic,
    /// [`VARIED_PROMPTS`] in turn, by sample index.
    Varied,
}

impl Prompts {
    /// The prompt text of sample `index`.
    pub fn text(self, index: usize) -> &'static str {
        match self {
            Prompts::Ptbxl => PTBXL_PROMPT,
            Prompts::Mimic => MIMIC_PROMPT,
            Prompts::Varied => VARIED_PROMPTS[index % VARIED_PROMPTS.len()],
        }
    }
}

/// With or without the chat wrapper. Serialised in training configs (`instruction = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum InstructionStyle {
    /// `<|user|>\n{prompt}\n<|assistant|>\n{report}</s>`.
    Tulu {
        /// Which prompt text.
        prompts: Prompts,
    },
    /// ChatML as SmolLM2-Instruct's chat template renders it, default system turn included:
    /// `<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{report}<|im_end|>`.
    /// With `system_turn = false` the system turn is left out:
    /// `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{report}<|im_end|>`.
    ChatMl {
        /// Which prompt text.
        prompts: Prompts,
        /// Whether the default system turn comes first (the default, as the template renders).
        #[serde(default = "system_turn_default")]
        system_turn: bool,
    },
    /// The ablation: `{report}</s>`, loss on all of it.
    NoInstruction,
}

/// `system_turn` when a config does not say: the chat template's own rendering.
fn system_turn_default() -> bool {
    true
}

/// One sample as text: the prompt (no loss) followed by the target (loss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Text before the report; the model reads it but is not scored on it.
    pub prompt: String,
    /// The report and the end-of-text marker; the loss is computed on these tokens.
    pub target: String,
}

impl InstructionStyle {
    /// The prompt part for sample `index`: what generation starts from.
    pub fn prompt(&self, index: usize) -> String {
        match self {
            InstructionStyle::NoInstruction => String::new(),
            InstructionStyle::Tulu { prompts } => {
                let text = prompts.text(index);
                format!("{USER_TAG}\n{text}\n{ASSISTANT_TAG}\n")
            }
            InstructionStyle::ChatMl {
                prompts,
                system_turn,
            } => {
                let text = prompts.text(index);
                let system = if *system_turn {
                    format!("{IM_START}system\n{SMOLLM2_SYSTEM}{IM_END}\n")
                } else {
                    String::new()
                };
                format!("{system}{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n")
            }
        }
    }

    /// The training text of `report` (trimmed, as the reference strips it) for sample `index`.
    pub fn segments(&self, report: &str, index: usize) -> Segments {
        Segments {
            prompt: self.prompt(index),
            target: format!("{}{}", report.trim(), self.end_marker()),
        }
    }

    /// The marker that ends the report: generation stops at its id.
    pub fn end_marker(&self) -> &'static str {
        match self {
            InstructionStyle::Tulu { .. } | InstructionStyle::NoInstruction => END_OF_TEXT,
            InstructionStyle::ChatMl { .. } => IM_END,
        }
    }

    /// The style's name as written in configs.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionStyle::Tulu { .. } => "tulu",
            InstructionStyle::ChatMl { .. } => "chat_ml",
            InstructionStyle::NoInstruction => "no_instruction",
        }
    }

    /// Every marker the style writes, each of which must be one token.
    fn markers(&self) -> &'static [&'static str] {
        match self {
            InstructionStyle::Tulu { .. } => &[USER_TAG, ASSISTANT_TAG, END_OF_TEXT],
            InstructionStyle::ChatMl { .. } => &[IM_START, IM_END],
            InstructionStyle::NoInstruction => &[END_OF_TEXT],
        }
    }

    /// Checks that `tokenizer` keeps each of the style's markers as one token and returns the
    /// id of [`end_marker`](Self::end_marker), where generation stops.
    pub fn check_tokenizer<T: TextTokenizer + ?Sized>(
        &self,
        tokenizer: &T,
    ) -> Result<u32, TokenizerError> {
        let mut end_id = None;
        for marker in self.markers() {
            let ids = tokenizer.encode(marker)?;
            let &[id] = ids.as_slice() else {
                return Err(TokenizerError::NotOneToken {
                    marker: (*marker).to_string(),
                    pieces: ids.len(),
                    style: self.name(),
                });
            };
            if *marker == self.end_marker() {
                end_id = Some(id);
            }
        }
        end_id.ok_or_else(|| TokenizerError::Encode("the end marker is not a marker".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tulu_format_wraps_prompt_and_report_like_the_reference() {
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let s = style.segments(" sinus rhythm. normal ecg ", 0);
        assert_eq!(
            format!("{}{}", s.prompt, s.target),
            "<|user|>\ngenerate a description of the ECG embeddings:\n<|assistant|>\nsinus rhythm. normal ecg</s>"
        );
        assert!(
            s.prompt.ends_with("<|assistant|>\n"),
            "the assistant tag is not scored"
        );
    }

    #[test]
    fn varied_prompts_cycle_by_index_and_fixed_ones_do_not() {
        let varied = InstructionStyle::Tulu {
            prompts: Prompts::Varied,
        };
        let distinct: std::collections::HashSet<String> = (0..VARIED_PROMPTS.len())
            .map(|i| varied.prompt(i))
            .collect();
        assert_eq!(distinct.len(), VARIED_PROMPTS.len());
        assert_eq!(varied.prompt(1), varied.prompt(1 + VARIED_PROMPTS.len()));
        let mimic = InstructionStyle::Tulu {
            prompts: Prompts::Mimic,
        };
        assert_eq!(mimic.prompt(0), mimic.prompt(3));
    }

    #[test]
    fn ablation_has_no_prompt_and_keeps_the_end_marker() {
        let s = InstructionStyle::NoInstruction.segments("abnormal ecg", 4);
        assert_eq!(s.prompt, "");
        assert_eq!(s.target, "abnormal ecg</s>");
    }

    #[test]
    fn chat_ml_renders_smollm2_chat_template_with_its_default_system_turn() {
        let style = InstructionStyle::ChatMl {
            prompts: Prompts::Ptbxl,
            system_turn: true,
        };
        let s = style.segments(" sinus rhythm. normal ecg ", 0);
        // The GGUF's template for [{role: user, content: prompt}] with add_generation_prompt,
        // then the assistant's answer up to its <|im_end|>.
        assert_eq!(
            s.prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\ngenerate a description of the ECG embeddings:<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(s.target, "sinus rhythm. normal ecg<|im_end|>");
        assert_eq!(style.end_marker(), "<|im_end|>");
        let varied = InstructionStyle::ChatMl {
            prompts: Prompts::Varied,
            system_turn: true,
        };
        assert!(
            varied
                .prompt(2)
                .contains(&format!("user\n{}<|im_end|>", VARIED_PROMPTS[2]))
        );
    }

    #[test]
    fn styles_accept_only_tokenizers_that_keep_their_markers_whole()
    -> Result<(), Box<dyn std::error::Error>> {
        let reports = [
            "sinus rhythm. normal ecg",
            "atrial fibrillation. abnormal ecg",
        ];
        let tokenizer =
            crate::tokenizer::ReportTokenizer::train(reports.iter().cycle().take(20), 300, 2)?;
        let tulu = InstructionStyle::Tulu {
            prompts: Prompts::Mimic,
        };
        assert_eq!(tulu.check_tokenizer(&tokenizer)?, tokenizer.end_id());
        assert_eq!(
            InstructionStyle::NoInstruction.check_tokenizer(&tokenizer)?,
            tokenizer.end_id()
        );
        let chat_ml = InstructionStyle::ChatMl {
            prompts: Prompts::Mimic,
            system_turn: true,
        };
        match chat_ml.check_tokenizer(&tokenizer) {
            Err(TokenizerError::NotOneToken {
                marker,
                pieces,
                style,
            }) => {
                assert_eq!((marker.as_str(), style), (IM_START, "chat_ml"));
                assert!(pieces > 1);
            }
            other => panic!("chat_ml with the report tokenizer: {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn chat_ml_without_system_turn_is_one_user_turn_of_17_prompt_tokens()
    -> Result<(), Box<dyn std::error::Error>> {
        let short = InstructionStyle::ChatMl {
            prompts: Prompts::Ptbxl,
            system_turn: false,
        };
        let s = short.segments("sinus rhythm", 0);
        assert_eq!(
            s.prompt,
            "<|im_start|>user\ngenerate a description of the ECG embeddings:<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(s.target, "sinus rhythm<|im_end|>");
        let check = "chat_ml_without_system_turn_is_one_user_turn_of_17_prompt_tokens";
        let Some(gguf) = crate::model::gguf::smollm2_gguf_or_skip(check) else {
            return Ok(());
        };
        let params = crate::model::params::Params::new(0, &candle_core::Device::Cpu);
        let tokenizer =
            crate::model::gguf::load_llama_layers(&gguf, &params, Some(1))?.tokenizer()?;
        assert_eq!(short.check_tokenizer(&tokenizer)?, tokenizer.end_id());
        let count = |style: InstructionStyle| -> Result<usize, TokenizerError> {
            Ok(tokenizer.encode(&style.prompt(0))?.len())
        };
        let with_system = InstructionStyle::ChatMl {
            prompts: Prompts::Ptbxl,
            system_turn: true,
        };
        let mimic = InstructionStyle::ChatMl {
            prompts: Prompts::Mimic,
            system_turn: true,
        };
        // SmolLM2's tokenizer: the short PTB-XL turn 17 prompt tokens, with the system turn 38
        // (the system turn is 21), and smollm2-lora.toml's MIMIC prompt with it 49.
        assert_eq!(
            (count(short)?, count(with_system)?, count(mimic)?),
            (17, 38, 49)
        );
        Ok(())
    }

    #[test]
    fn style_reads_from_toml() -> Result<(), toml::de::Error> {
        #[derive(Deserialize)]
        struct Wrapper {
            instruction: InstructionStyle,
        }
        let w: Wrapper =
            toml::from_str("instruction = { style = \"tulu\", prompts = \"varied\" }")?;
        assert_eq!(
            w.instruction,
            InstructionStyle::Tulu {
                prompts: Prompts::Varied
            }
        );
        let w: Wrapper =
            toml::from_str("instruction = { style = \"chat_ml\", prompts = \"mimic\" }")?;
        assert_eq!(
            w.instruction,
            InstructionStyle::ChatMl {
                prompts: Prompts::Mimic,
                system_turn: true,
            }
        );
        let w: Wrapper = toml::from_str(
            "instruction = { style = \"chat_ml\", prompts = \"ptbxl\", system_turn = false }",
        )?;
        assert_eq!(
            w.instruction,
            InstructionStyle::ChatMl {
                prompts: Prompts::Ptbxl,
                system_turn: false,
            }
        );
        let w: Wrapper = toml::from_str("instruction = { style = \"no_instruction\" }")?;
        assert_eq!(w.instruction, InstructionStyle::NoInstruction);
        Ok(())
    }
}
