//! Token counting with real tokenizers, in pure Rust (no C, no network at run time).
//!
//! - `opt` (default): GPT-2's byte-level BPE (`r50k_base`, via `tiktoken-rs`) + 1 for the BOS
//!   token (`</s>`) that Hugging Face's OPT tokenizer prepends. OPT shares GPT-2's merges, so the
//!   segmentation is identical and only the ids differ; this convention reproduces the vLLM
//!   paper's ShareGPT lengths.
//! - `gpt2`: `r50k_base` without a BOS; `cl100k`, `o200k`: the OpenAI encodings (no BOS).
//! - a Hugging Face `tokenizer.json` (crate `tokenizers`, pure-Rust `fancy-regex` build), counted
//!   with its special tokens (`encode(text, add_special_tokens = true)`), e.g. LLaMA's `<s>`.
//!
//! Text is encoded as ordinary text: a literal `<|endoftext|>` in a dataset is not treated as a
//! special token by the tiktoken encodings.

use std::path::Path;

use crate::error::{Result, SimError};

pub enum TokenCounter {
    Bpe {
        bpe: Box<tiktoken_rs::CoreBPE>,
        /// Tokens added to every text (OPT's BOS).
        extra: u32,
        name: &'static str,
    },
    HuggingFace {
        tok: Box<tokenizers::Tokenizer>,
        name: String,
    },
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TokenCounter {
    pub const BUILTIN: [&'static str; 4] = ["opt", "gpt2", "cl100k", "o200k"];

    /// One of [`TokenCounter::BUILTIN`].
    pub fn builtin(name: &str) -> Result<Self> {
        let load = |r: anyhow::Result<tiktoken_rs::CoreBPE>| {
            r.map(Box::new)
                .map_err(|e| SimError::config(format!("cannot load tokenizer `{name}`: {e}")))
        };
        Ok(match name {
            "opt" => TokenCounter::Bpe {
                bpe: load(tiktoken_rs::r50k_base())?,
                extra: 1,
                name: "opt (GPT-2 r50k_base BPE + 1 BOS)",
            },
            "gpt2" => TokenCounter::Bpe {
                bpe: load(tiktoken_rs::r50k_base())?,
                extra: 0,
                name: "gpt2 (r50k_base, no BOS)",
            },
            "cl100k" => TokenCounter::Bpe {
                bpe: load(tiktoken_rs::cl100k_base())?,
                extra: 0,
                name: "cl100k (cl100k_base, no BOS)",
            },
            "o200k" => TokenCounter::Bpe {
                bpe: load(tiktoken_rs::o200k_base())?,
                extra: 0,
                name: "o200k (o200k_base, no BOS)",
            },
            other => {
                return Err(SimError::config(format!(
                    "unknown tokenizer `{other}`; valid: {} (or --tokenizer-file tokenizer.json)",
                    Self::BUILTIN.join(", ")
                )));
            }
        })
    }

    /// A Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        // Bounded: tokenizer.json files are a few MB (Llama 3: 9 MB).
        let bytes = crate::input::read_bytes(path, 256 << 20).map_err(|e| SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read the tokenizer: {e}"),
        })?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot load the tokenizer: {e}"),
        })?;
        Ok(TokenCounter::HuggingFace {
            tok: Box::new(tok),
            name: format!("{} (with special tokens)", path.display()),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            TokenCounter::Bpe { name, .. } => name,
            TokenCounter::HuggingFace { name, .. } => name,
        }
    }

    /// Token ids of `text` (for the tiktoken encodings without the BOS, whose id depends on the
    /// model's vocabulary).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TokenCounter::Bpe { bpe, .. } => Ok(bpe.encode_ordinary(text)),
            TokenCounter::HuggingFace { tok, .. } => tok
                .encode_fast(text, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| SimError::config(format!("tokenizer failed: {e}"))),
        }
    }

    /// Number of tokens the model sees for `text` (BOS included where the model adds one).
    pub fn count(&self, text: &str) -> Result<u32> {
        let n = match self {
            TokenCounter::Bpe { bpe, extra, .. } => {
                bpe.encode_ordinary(text).len() + *extra as usize
            }
            TokenCounter::HuggingFace { .. } => self.ids(text)?.len(),
        };
        u32::try_from(n).map_err(|_| SimError::config("a text has more than 2^32 tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_known_ids_and_opt_bos() {
        let gpt2 = TokenCounter::builtin("gpt2").unwrap();
        let opt = TokenCounter::builtin("opt").unwrap();
        assert_eq!(gpt2.ids("Hello world!").unwrap(), vec![15496, 995, 0]);
        assert_eq!(
            gpt2.ids("Hello, my dog is cute").unwrap(),
            vec![15496, 11, 616, 3290, 318, 13779]
        );
        for t in [
            "Hello world!",
            "",
            "Hello, my dog is cute",
            "naïve café ☕ 1234567",
        ] {
            assert_eq!(opt.count(t).unwrap(), gpt2.count(t).unwrap() + 1, "{t:?}");
        }
        assert_eq!(opt.count("").unwrap(), 1);
        assert!(TokenCounter::builtin("llama").is_err());
    }
}

#[cfg(test)]
mod hf_tests {
    use super::*;

    /// A hand-written Hugging Face tokenizer.json (word-level vocabulary, lower-casing, a `<s>`
    /// BOS template) loads through the pure-Rust `tokenizers` build and counts with its BOS.
    #[test]
    fn tokenizer_file_counts_with_bos() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_tokenizer.json");
        let t = TokenCounter::from_file(&p).unwrap();
        assert_eq!(t.ids("Hello world!").unwrap(), vec![0, 2, 3, 4]);
        assert_eq!(t.count("Hello, strange world").unwrap(), 5);
        assert_eq!(t.count("").unwrap(), 1);
        let e = TokenCounter::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
        assert!(e.to_string().contains("cannot read the tokenizer"), "{e}");
    }
}
