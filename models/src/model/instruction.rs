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

use serde::{Deserialize, Serialize};

/// Opens the user turn.
pub const USER_TAG: &str = "<|user|>";
/// Opens the assistant turn.
pub const ASSISTANT_TAG: &str = "<|assistant|>";
/// Ends the report.
pub const END_OF_TEXT: &str = "</s>";

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

/// With or without the chat wrapper. Serialised in training configs (`instruction = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum InstructionStyle {
    /// `<|user|>\n{prompt}\n<|assistant|>\n{report}</s>`.
    Tulu {
        /// Which prompt text.
        prompts: Prompts,
    },
    /// The ablation: `{report}</s>`, loss on all of it.
    NoInstruction,
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
                let text = match prompts {
                    Prompts::Ptbxl => PTBXL_PROMPT,
                    Prompts::Mimic => MIMIC_PROMPT,
                    Prompts::Varied => VARIED_PROMPTS[index % VARIED_PROMPTS.len()],
                };
                format!("{USER_TAG}\n{text}\n{ASSISTANT_TAG}\n")
            }
        }
    }

    /// The training text of `report` (trimmed, as the reference strips it) for sample `index`.
    pub fn segments(&self, report: &str, index: usize) -> Segments {
        Segments {
            prompt: self.prompt(index),
            target: format!("{}{END_OF_TEXT}", report.trim()),
        }
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
        let w: Wrapper = toml::from_str("instruction = { style = \"no_instruction\" }")?;
        assert_eq!(w.instruction, InstructionStyle::NoInstruction);
        Ok(())
    }
}
