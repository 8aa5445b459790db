//! Turning report text into the tokens the metrics count.
//!
//! Three ways, chosen by [`Tokenization`]:
//!
//! - [`Tokenization::Ptb`]: what pycocoevalcap's `PTBTokenizer` does (Stanford CoreNLP 3.4.1
//!   `PTBTokenizer -preserveLines -lowerCase`, then dropping the tokens in its `PUNCTUATIONS`
//!   list). The CoreNLP lexer is large; [`ptb_tokens`] re-implements the rules that matter for
//!   report text (words with inner hyphens and slashes, decimal numbers, brackets, quotes,
//!   contractions, known abbreviations, ellipses) and is checked against the Java tokenizer by
//!   `models/scripts/check_metrics.py`; models/README.md lists the differences known.
//!   As in pycocoevalcap, `-LRB-`/`-RRB-` survive as `-lrb-`/`-rrb-`: the list names them in
//!   upper case but the tokenizer has already lower-cased them.
//! - [`Tokenization::Paper`]: the MEIT paper's preparation: every "." becomes " ." and the text
//!   is split on white space (periods stay tokens, nothing is lower-cased: the data pipeline
//!   lower-cases reports).
//! - [`Tokenization::Whitespace`]: split on white space only, for text tokenised elsewhere.

use std::fmt;
use std::str::FromStr;

/// How report text becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenization {
    /// pycocoevalcap's PTBTokenizer with punctuation removal (lower-cased).
    #[default]
    Ptb,
    /// The MEIT paper's `"." -> " ."` then white space.
    Paper,
    /// White space only (text already tokenised).
    Whitespace,
}

impl Tokenization {
    /// Every tokenization, for help texts.
    pub const ALL: [Tokenization; 3] = [
        Tokenization::Ptb,
        Tokenization::Paper,
        Tokenization::Whitespace,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Tokenization::Ptb => "ptb",
            Tokenization::Paper => "paper",
            Tokenization::Whitespace => "whitespace",
        }
    }

    /// Tokenises one report.
    pub fn tokens(self, text: &str) -> Vec<String> {
        match self {
            Tokenization::Ptb => ptb_tokens(text),
            Tokenization::Paper => text
                .replace('.', " .")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            Tokenization::Whitespace => text.split_whitespace().map(str::to_string).collect(),
        }
    }
}

impl fmt::Display for Tokenization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tokenization name that is not `ptb`, `paper` or `whitespace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tokenization `{0}` (expected ptb, paper or whitespace)")]
pub struct UnknownTokenization(pub String);

impl FromStr for Tokenization {
    type Err = UnknownTokenization;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tokenization::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownTokenization(s.to_string()))
    }
}

/// Tokens pycocoevalcap removes after PTB tokenisation (its `PUNCTUATIONS`; the bracket names
/// are upper case there and so never match the lower-cased output).
const PUNCTUATIONS: &[&str] = &[
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations CoreNLP keeps together with their period (titles and the like: never the end
/// of a sentence).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "gen", "st", "mt", "lt", "rt", "sq", "ft", "vs",
];

/// Abbreviations kept with their period that may also end a sentence: before a word starting
/// with a capital CoreNLP adds a sentence-final "." token.
const SENTENCE_FINAL_ABBREVIATIONS: &[&str] = &[
    "inc", "co", "corp", "ltd", "etc", "jr", "sr", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri",
    "sat", "sun",
];

/// pycocoevalcap's tokenisation of one report: PTB tokens, lower-cased, punctuation removed.
pub fn ptb_tokens(text: &str) -> Vec<String> {
    let chunks: Vec<&str> = text.split_whitespace().collect();
    let mut tokens = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let next = chunks.get(i + 1).and_then(|c| c.chars().next());
        ChunkLexer::new(chunk, next).lex(&mut tokens);
    }
    tokens
        .into_iter()
        .map(|t| t.to_lowercase())
        .filter(|t| !PUNCTUATIONS.contains(&t.as_str()))
        .collect()
}

/// Splits one white-space-free chunk of text into PTB tokens (original case).
struct ChunkLexer {
    chars: Vec<char>,
    /// First character of the next chunk on the line, if any.
    next_chunk: Option<char>,
}

impl ChunkLexer {
    fn new(chunk: &str, next_chunk: Option<char>) -> Self {
        ChunkLexer {
            chars: chunk.chars().collect(),
            next_chunk,
        }
    }

    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn is_alnum_at(&self, i: usize) -> bool {
        self.at(i).is_some_and(char::is_alphanumeric)
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars[from..to].iter().collect()
    }

    /// End of the run of `c` starting at `i`.
    fn run_end(&self, i: usize, c: char) -> usize {
        let mut end = i;
        while self.at(end) == Some(c) {
            end += 1;
        }
        end
    }

    fn lex(&self, out: &mut Vec<String>) {
        let mut i = 0;
        while let Some(c) = self.at(i) {
            let signed_number =
                i == 0 && (c == '+' || c == '-') && self.at(1).is_some_and(|d| d.is_ascii_digit());
            let leading_decimal = c == '.' && self.at(i + 1).is_some_and(|d| d.is_ascii_digit());
            i = if c.is_alphanumeric() || signed_number || leading_decimal {
                self.word(i, out)
            } else {
                self.punctuation(i, c, out)
            };
        }
    }

    /// A symbol at `i`; returns where the next token starts.
    fn punctuation(&self, i: usize, c: char, out: &mut Vec<String>) -> usize {
        let (token, end) = match c {
            '(' => ("-LRB-".to_string(), i + 1),
            ')' => ("-RRB-".to_string(), i + 1),
            '[' => ("-LSB-".to_string(), i + 1),
            ']' => ("-RSB-".to_string(), i + 1),
            '{' => ("-LCB-".to_string(), i + 1),
            '}' => ("-RCB-".to_string(), i + 1),
            '"' => {
                let opening = i == 0 || self.is_alnum_at(i + 1);
                (if opening { "``" } else { "''" }.to_string(), i + 1)
            }
            '\'' => {
                let opening = i == 0 && self.is_alnum_at(i + 1);
                (if opening { "`" } else { "'" }.to_string(), i + 1)
            }
            '.' => {
                let end = self.run_end(i, '.');
                match end - i {
                    1 | 2 => (".".to_string(), i + 1),
                    _ => (self.text(i, end), end),
                }
            }
            '-' => {
                let end = self.run_end(i, '-');
                match end - i {
                    1 => ("-".to_string(), end),
                    _ => ("--".to_string(), end),
                }
            }
            '*' => {
                let end = self.run_end(i, '*');
                (self.text(i, end), end)
            }
            other => (other.to_string(), i + 1),
        };
        out.push(token);
        end
    }

    /// Letters and digits from `start`, joined by inner hyphens and slashes ("st-t", "and/or",
    /// "v1-v3"); returns the end.
    fn joined_word_end(&self, start: usize) -> usize {
        let mut end = start;
        loop {
            while self.is_alnum_at(end) {
                end += 1;
            }
            let joiner = matches!(self.at(end), Some('-' | '/'));
            if joiner && self.is_alnum_at(end + 1) {
                end += 1;
            } else {
                return end;
            }
        }
    }

    /// A word or number starting at `i`; returns where the next token starts.
    fn word(&self, start: usize, out: &mut Vec<String>) -> usize {
        if let Some(number_end) = self.decimal_number(start) {
            // A hyphen joins what follows, up to the next period: "1.5-2.0" -> "1.5-2" ".0".
            let hyphenated = self.at(number_end) == Some('-') && self.is_alnum_at(number_end + 1);
            let end = if hyphenated {
                self.joined_word_end(number_end + 1)
            } else {
                number_end
            };
            out.push(self.text(start, end));
            return end;
        }
        let end = self.joined_word_end(start);
        if self.text(start, end).eq_ignore_ascii_case("cannot") {
            out.push(self.text(start, end - 3));
            out.push(self.text(end - 3, end));
            return end;
        }
        if let Some(next) = self.contraction(start, end, out) {
            return next;
        }
        if let Some(next) = self.abbreviation(start, end, out) {
            return next;
        }
        out.push(self.text(start, end));
        end
    }

    /// A signed or separated number ("0.24", "1,000", "2:1", "-1", ".5"): letters after it
    /// start a new token ("4.5mm" -> "4.5" "mm"). Plain integers are left to [`Self::word`]
    /// ("1st", "450ms", "12-lead" stay whole).
    fn decimal_number(&self, start: usize) -> Option<usize> {
        let digit = |i: usize| self.at(i).is_some_and(|c| c.is_ascii_digit());
        let signed = matches!(self.at(start), Some('+' | '-'));
        let mut end = start + usize::from(signed);
        while digit(end) {
            end += 1;
        }
        let mut separated = false;
        while matches!(self.at(end), Some('.' | ',' | ':')) && digit(end + 1) {
            separated = true;
            end += 1;
            while digit(end) {
                end += 1;
            }
        }
        (signed || separated).then_some(end)
    }

    /// English contractions split off a word: "don't" -> "do" "n't", "it's" -> "it" "'s";
    /// "o'clock" stays whole.
    fn contraction(&self, start: usize, end: usize, out: &mut Vec<String>) -> Option<usize> {
        if self.at(end) != Some('\'') {
            return None;
        }
        let mut tail_end = end + 1;
        while self.at(tail_end).is_some_and(char::is_alphabetic) {
            tail_end += 1;
        }
        let tail = self.text(end + 1, tail_end).to_lowercase();
        let word = self.text(start, end);
        if word.eq_ignore_ascii_case("o") && !tail.is_empty() {
            out.push(self.text(start, tail_end));
            return Some(tail_end);
        }
        let last = word.chars().last().map(|c| c.to_ascii_lowercase());
        if tail == "t" && last == Some('n') && end - start > 1 {
            out.push(self.text(start, end - 1));
            out.push(self.text(end - 1, tail_end));
            return Some(tail_end);
        }
        if matches!(tail.as_str(), "s" | "re" | "ll" | "ve" | "d" | "m") {
            out.push(word);
            out.push(self.text(end, tail_end));
            return Some(tail_end);
        }
        None
    }

    /// Abbreviations keeping their period: initials and acronyms ("e.g.", "u.s.a.", "j.") and
    /// the known words; returns `None` when the word is not one.
    fn abbreviation(&self, start: usize, end: usize, out: &mut Vec<String>) -> Option<usize> {
        if self.at(end) != Some('.') {
            return None;
        }
        let word = self.text(start, end).to_lowercase();
        let single_letter = end - start == 1 && self.at(start).is_some_and(char::is_alphabetic);
        if single_letter {
            // Letter-period groups: "e.g.", "u.s.a.".
            let mut stop = end + 1;
            while self.at(stop).is_some_and(char::is_alphabetic)
                && !self.is_alnum_at(stop + 1)
                && self.at(stop + 1) == Some('.')
            {
                stop += 2;
            }
            out.push(self.text(start, stop));
            return Some(stop);
        }
        let at_chunk_end = end + 1 == self.chars.len();
        let next_is_digit = self.at(end + 1).is_some_and(|c| c.is_ascii_digit())
            || (at_chunk_end && self.next_chunk.is_some_and(|c| c.is_ascii_digit()));
        let known = ABBREVIATIONS.contains(&word.as_str())
            || SENTENCE_FINAL_ABBREVIATIONS.contains(&word.as_str())
            || (word == "no" && next_is_digit);
        if !known {
            return None;
        }
        out.push(self.text(start, end + 1));
        let capital_follows = at_chunk_end && self.next_chunk.is_some_and(char::is_uppercase);
        if capital_follows && SENTENCE_FINAL_ABBREVIATIONS.contains(&word.as_str()) {
            out.push(".".to_string());
        }
        Some(end + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptb(text: &str) -> String {
        ptb_tokens(text).join(" ")
    }

    #[test]
    fn ptb_drops_punctuation_and_lower_cases() {
        assert_eq!(
            ptb("Sinus rhythm. Left axis deviation, possible anterior infarct - age undetermined."),
            "sinus rhythm left axis deviation possible anterior infarct age undetermined"
        );
    }

    #[test]
    fn ptb_keeps_brackets_as_lrb_rrb_like_pycocoevalcap() {
        assert_eq!(
            ptb("sinus rhythm with pac(s)."),
            "sinus rhythm with pac -lrb- s -rrb-"
        );
    }

    #[test]
    fn ptb_keeps_inner_hyphens_slashes_and_numbers() {
        assert_eq!(
            ptb("st-t changes; t-wave and/or ischemia. 1st degree a-v block 0.24s 2:1 1,000 450ms"),
            "st-t changes t-wave and/or ischemia 1st degree a-v block 0.24 s 2:1 1,000 450ms"
        );
    }

    #[test]
    fn ptb_splits_contractions_symbols_and_quotes() {
        assert_eq!(
            ptb("patient's isn't >1 \"quoted\" a+b 50% ..."),
            "patient 's is n't > 1 quoted a + b 50 %"
        );
        assert_eq!(ptb("cannot at 5 o'clock"), "can not at 5 o'clock");
        // Ranges: CoreNLP joins a hyphen after a decimal up to the next period.
        assert_eq!(
            ptb("1.5-2.0 mm, 1-2.5 mm, 0.1-0.2mv"),
            "1.5-2 .0 mm 1-2 .5 mm 0.1-0 .2 mv"
        );
    }

    #[test]
    fn ptb_keeps_abbreviation_periods() {
        assert_eq!(
            ptb("e.g. dr. smith, poss. infarct, qtc 480 ms. rate"),
            "e.g. dr. smith poss infarct qtc 480 ms. rate"
        );
        // "inc." before a capital ends the sentence: an extra "." that is then removed.
        assert_eq!(ptb("Acme Inc. Next"), "acme inc. next");
    }

    #[test]
    fn paper_splits_periods_off_and_keeps_them() {
        assert_eq!(
            Tokenization::Paper.tokens("sinus rhythm. abnormal ecg"),
            ["sinus", "rhythm", ".", "abnormal", "ecg"]
        );
        assert_eq!(Tokenization::Whitespace.tokens(" a  b.c "), ["a", "b.c"]);
    }

    #[test]
    fn tokenization_names_round_trip() {
        for t in Tokenization::ALL {
            assert_eq!(t.name().parse::<Tokenization>(), Ok(t));
        }
        assert!("bpe".parse::<Tokenization>().is_err());
    }

    #[test]
    fn ptb_never_panics_on_odd_input() {
        for text in [
            "", "'", "\"", "-", "+", ".", "a.", "no.", "'s", "n't", "-1.", "1:", "é.ü", "(((", "x'",
        ] {
            let _ = ptb_tokens(text);
        }
    }
}
