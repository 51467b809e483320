//! Stanford Alpaca (`alpaca_data.json`): a JSON array of
//! `{"instruction": …, "input": …, "output": …}` (52,002 rows in the real file).
//!
//! Prompt = `instruction`, followed by a newline and `input` when `input` is not empty;
//! completion = `output`. (How the vLLM paper joined instruction and input for its Alpaca
//! lengths is not documented; a missing `input` counts as empty.) The same shuffle, filters and
//! `--num` as ShareGPT apply.

use std::path::Path;

use serde::Deserialize;

use super::{TextImport, TextReport, import_text_pairs};
use crate::error::Result;

#[derive(Deserialize)]
struct Row {
    instruction: String,
    #[serde(default)]
    input: String,
    output: String,
}

/// The prompt text of one Alpaca row.
pub fn prompt(instruction: &str, input: &str) -> String {
    if input.is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n{input}")
    }
}

/// Import an Alpaca JSON file into `input_tokens,output_tokens` at `out`.
pub fn import(path: &Path, out: &Path, opts: &TextImport) -> Result<TextReport> {
    import_reporting(path, out, opts, &|_| {})
}

/// [`import`], telling `on_bytes` how many bytes of the file it has read so far.
pub fn import_reporting(
    path: &Path,
    out: &Path,
    opts: &TextImport,
    on_bytes: &dyn Fn(u64),
) -> Result<TextReport> {
    let to_pair = |r: Row| Some((prompt(&r.instruction, &r.input), r.output));
    import_text_pairs(
        path,
        out,
        opts,
        ("row", "rows"),
        "none",
        (to_pair, on_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::{LengthFilter, TokenCounter};

    #[test]
    fn alpaca_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.csv");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alpaca_small.json");
        let opts = TextImport {
            tokenizer: TokenCounter::builtin("opt").unwrap(),
            filter: LengthFilter::NONE,
            shuffle_seed: None,
            num: None,
            allow_truncated: false,
            replace: true,
        };
        let r = import(&src, &out, &opts).unwrap();
        assert_eq!((r.rows, r.written), (3, 3));
        let g = TokenCounter::builtin("gpt2").unwrap();
        let c = |s: &str| g.count(s).unwrap() + 1;
        let want = format!(
            "input_tokens,output_tokens\n{},{}\n{},{}\n{},{}\n",
            c("Give three tips for staying healthy."),
            c("1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well."),
            c("Translate the sentence into French.\nHello world!"),
            c("Bonjour le monde !"),
            c("Say yes."),
            c("Yes."),
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
        assert_eq!(prompt("a", ""), "a");
        assert_eq!(prompt("a", "b"), "a\nb");
    }
}
