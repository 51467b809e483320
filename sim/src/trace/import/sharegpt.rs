//! ShareGPT (`ShareGPT_V3_unfiltered_cleaned_split.json`): a JSON array of
//! `{"id": …, "conversations": [{"from": …, "value": …}, …]}`.
//!
//! vLLM's benchmark convention (`benchmarks/benchmark_serving.py`): keep conversations with at
//! least 2 turns; the prompt is the first turn's `value`, the completion the second's. Roles
//! (`from`) are not checked and later turns are ignored. Then shuffle, count tokens, filter
//! (prompt < 4 or output < 4 tokens, prompt > 1024, prompt + output > 2048) and stop at `--num`.
//!
//! The shuffle is servesim's seeded ChaCha8 shuffle (`rand`'s Fisher–Yates), not Python's
//! `random.shuffle`, so with the same seed the order — and which requests `--num N` keeps —
//! differs from vLLM's; without `--num` the same set is kept.
//!
//! Only the first two turns' texts are kept in memory; the other turns are skipped unparsed
//! (their JSON syntax is still checked).

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};

use super::{TextImport, TextReport, import_text_pairs};
use crate::error::Result;

#[derive(Deserialize)]
struct Conversation {
    conversations: FirstTwo,
}

#[derive(Deserialize)]
struct Turn {
    value: String,
}

/// The first two turns' texts.
struct FirstTwo(Option<String>, Option<String>);

impl<'de> Deserialize<'de> for FirstTwo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstTwo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of turns ({\"from\": …, \"value\": \"…\"})")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<FirstTwo, A::Error> {
                let first = seq.next_element::<Turn>()?.map(|t| t.value);
                let second = match first {
                    Some(_) => seq.next_element::<Turn>()?.map(|t| t.value),
                    None => None,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstTwo(first, second))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Import a ShareGPT JSON file into `input_tokens,output_tokens` at `out`.
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
    let to_pair = |c: Conversation| match c.conversations {
        FirstTwo(Some(p), Some(c)) => Some((p, c)),
        _ => None,
    };
    import_text_pairs(
        path,
        out,
        opts,
        ("conversation", "conversations"),
        "conversations with fewer than 2 turns",
        (to_pair, on_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::test_fixture as fixture;
    use crate::trace::import::{LengthFilter, TokenCounter};
    use crate::trace::read_lengths;

    fn opts(filter: LengthFilter, seed: Option<u64>, num: Option<usize>) -> TextImport {
        TextImport {
            tokenizer: TokenCounter::builtin("opt").unwrap(),
            filter,
            shuffle_seed: seed,
            num,
            allow_truncated: false,
            replace: true,
        }
    }

    #[test]
    fn vllm_convention_on_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.csv");
        let gpt2 = TokenCounter::builtin("gpt2").unwrap();
        let opt = |s: &str| gpt2.count(s).unwrap() + 1;
        let third = "Escapes \"quoted\" \\ back\\slash, tab\t, unicode café ☕, brackets ]}[{";
        let expected = vec![
            (4, 7),
            (
                opt("A continuation part that starts with gpt: roles are not checked."),
                opt(third),
            ),
            (2, opt("Hello there, how can I help you today?")),
            (
                opt("Write a haiku about the sea."),
                opt(
                    "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.",
                ),
            ),
        ];
        let r = import(
            &fixture("sharegpt_small.json"),
            &out,
            &opts(LengthFilter::NONE, None, None),
        )
        .unwrap();
        assert_eq!((r.rows, r.skipped, r.candidates, r.written), (6, 2, 4, 4));
        let got: Vec<(u32, u32)> = read_lengths(&out)
            .unwrap()
            .iter()
            .map(|p| (p.input_tokens, p.output_tokens))
            .collect();
        assert_eq!(got, expected);

        // vLLM filters: "Hi" (2 tokens with the BOS) is too short.
        let r = import(
            &fixture("sharegpt_small.json"),
            &out,
            &opts(LengthFilter::VLLM, None, None),
        )
        .unwrap();
        assert_eq!((r.written, r.dropped_too_short), (3, 1));
        // --num 2 after a seeded shuffle: deterministic, and a subset of the filtered rows.
        let r = import(
            &fixture("sharegpt_small.json"),
            &out,
            &opts(LengthFilter::VLLM, Some(3), Some(2)),
        )
        .unwrap();
        assert_eq!(r.written, 2);
        let a = std::fs::read_to_string(&out).unwrap();
        import(
            &fixture("sharegpt_small.json"),
            &out,
            &opts(LengthFilter::VLLM, Some(3), Some(2)),
        )
        .unwrap();
        assert_eq!(a, std::fs::read_to_string(&out).unwrap());
        for line in a.lines().skip(1) {
            let (i, o) = line.split_once(',').unwrap();
            let p = (i.parse::<u32>().unwrap(), o.parse::<u32>().unwrap());
            assert!(expected.contains(&p) && p != (2, expected[2].1), "{line}");
        }
    }

    #[test]
    fn truncated_file_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read(fixture("sharegpt_small.json")).unwrap();
        // Cut inside the fifth element (id e_0).
        let cut = text.windows(5).position(|w| w == b"\"e_0\"").unwrap() + 20;
        let src = dir.path().join("t.json");
        std::fs::write(&src, &text[..cut]).unwrap();
        let out = dir.path().join("o.csv");
        let e = import(&src, &out, &opts(LengthFilter::NONE, None, None)).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "truncated at byte {cut} after 4 complete conversations"
            )),
            "{e}"
        );
        assert!(!out.exists());
        let mut o = opts(LengthFilter::NONE, None, None);
        o.allow_truncated = true;
        let r = import(&src, &out, &o).unwrap();
        assert_eq!(
            (r.rows, r.written, r.truncated_at),
            (4, 2, Some(cut as u64))
        );
        assert!(
            r.lines("conversations")
                .contains("kept the 4 complete conversations")
        );
    }

    #[test]
    fn llama_style_tokenizer_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s.json");
        std::fs::write(
            &src,
            r#"[{"conversations": [{"from": "human", "value": "hello world !"}, {"from": "gpt", "value": "Hello, hello"}]}]"#,
        )
        .unwrap();
        let out = dir.path().join("o.csv");
        let mut o = opts(LengthFilter::NONE, None, None);
        o.tokenizer = TokenCounter::from_file(&fixture("tiny_tokenizer.json")).unwrap();
        import(&src, &out, &o).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "input_tokens,output_tokens\n4,4\n"
        );
    }
}
