//! Typed library errors. The binary adds no context of its own beyond what these carry: every variant
//! names the file, line and field (or the request, policy or limit) the user has to look at.

use std::path::PathBuf;

/// Every way a servesim run can fail. None of these is a panic; all of them are user-facing.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },

    #[error("{path}:{line}: field `{field}`: {msg}")]
    Input {
        path: PathBuf,
        line: u64,
        field: String,
        msg: String,
    },

    #[error("{path}: {msg}")]
    Scenario { path: PathBuf, msg: String },

    #[error("request {id}: {msg}")]
    Request { id: u64, msg: String },

    #[error("policy `{policy}` produced an invalid plan at t={time_s:.9}s: {msg}")]
    Plan {
        policy: String,
        time_s: f64,
        msg: String,
    },

    #[error("{0}")]
    Limit(String),

    #[error("cost model `{model}`: {msg}")]
    Cost { model: String, msg: String },

    #[error("{0}")]
    Config(String),
}

impl SimError {
    pub fn config(msg: impl Into<String>) -> Self {
        SimError::Config(msg.into())
    }
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// `"did you mean `X`? "` for the known name closest to `name` (edit distance, case-blind) when
/// it is close enough to be a typo (at most a third of the longer name, and at least 1 edit);
/// otherwise the empty string. Meant to sit between "unknown … `name`; " and the valid list.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let name = name.to_lowercase();
    let best = known
        .into_iter()
        .map(|k| (edit_distance(&name, &k.to_lowercase()), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= (name.chars().count().max(k.chars().count()) / 3).max(1) => {
            format!("did you mean `{k}`? ")
        }
        _ => String::new(),
    }
}

/// Levenshtein distance in characters (insertions, deletions and substitutions cost 1), with
/// an adjacent transposition also costing 1 (`vlml` → `vllm`). Names longer than 200
/// characters are not compared (distance `usize::MAX`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 200 || b.len() > 200 {
        return usize::MAX;
    }
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// A user-supplied or derived number for an error message: up to 6 significant digits, in
/// scientific notation when very large or small (never a 300-digit expansion), `inf`/`NaN` as is.
pub fn num(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let a = x.abs();
    if (1e-4..1e9).contains(&a) {
        // 6 significant digits, trailing zeros trimmed.
        let decimals = (5 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.5e}");
        // Trim the mantissa's trailing zeros: 1.50000e20 → 1.5e20.
        match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        }
    }
}

/// Whether printing `c` could drive a terminal or rearrange a line: control characters and the
/// invisible formatting characters (bidirectional overrides and isolates, zero-width characters,
/// the byte-order mark).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Push `c` to `out`, escaped if [`is_unsafe_char`]: `\n`, `\r`, `\t`, `\xHH` below U+0100,
/// `\uHHHH` above (as C, Python and JSON write them).
pub fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    if !is_unsafe_char(c) {
        out.push(c);
        return;
    }
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{:04x}", c as u32),
    };
}

/// Input text echoed in an error message: unsafe characters (newlines, escapes, NUL,
/// bidirectional overrides, …) shown escaped so a message stays one line and cannot drive or
/// reorder the terminal; long text cut at 80 characters.
pub fn echo(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// A serde/toml message in the user's terms: Rust type names (`expected struct VllmParams`,
/// `expected enum CostSpec`, `u32`, `f64`) replaced by what they mean in a scenario file.
pub fn plain_serde(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    // An internally tagged enum is a table with a tag key (`{ dist = "fixed", … }`).
    const NAMED: [(&str, &str); 3] = [
        ("expected struct ", "expected a table"),
        ("expected internally tagged enum ", "expected a table"),
        ("expected enum ", "expected one of the documented values"),
    ];
    while let Some(i) = NAMED.iter().filter_map(|(p, _)| rest.find(p)).min() {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let (pattern, what) = NAMED
            .iter()
            .find(|(p, _)| after.starts_with(p))
            .expect("a pattern starts at the position found");
        let skip = pattern.len();
        out.push_str(what);
        let tail = &after[skip..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    // serde_json/toml print an out-of-range integer literal as "integer `N` as i128".
    out = out.replace(" as i128", "").replace(" as u128", "");
    // toml's own text for an integer past u64.
    out = out.replace("u64 value was too large", "the number is too large");
    // Longer names first: `expected u64` must not be caught by a shorter prefix.
    for (ty, words) in [
        ("usize", "a whole number from 0 to 18446744073709551615"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u16", "a whole number from 0 to 65535"),
        ("u8", "a whole number from 0 to 255"),
        (
            "i64",
            "a whole number from -9223372036854775808 to 9223372036854775807",
        ),
        ("i32", "a whole number from -2147483648 to 2147483647"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        out = replace_word(
            &out,
            &format!("expected {ty}"),
            &format!("expected {words}"),
        );
    }
    out
}

/// `s` with every `from` that is not followed by an identifier character replaced by `to`.
fn replace_word(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_printed_with_a_sensible_precision() {
        assert_eq!(num(0.3), "0.3");
        assert_eq!(num(5.0), "5");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(1.0 / 3.0), "0.333333");
        assert_eq!(num(123456789.0), "123456789");
        assert_eq!(num(1e300), "1e300");
        assert_eq!(num(1.5e-300), "1.5e-300");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(f64::INFINITY), "inf");
        assert!(num(f64::MAX).len() < 16, "{}", num(f64::MAX));
    }

    #[test]
    fn serde_messages_lose_rust_type_names() {
        assert_eq!(
            plain_serde("invalid type: integer `3`, expected struct VllmParams"),
            "invalid type: integer `3`, expected a table"
        );
        // Round 12, 04: `input_lengths = 5`.
        assert_eq!(
            plain_serde("invalid type: integer `5`, expected internally tagged enum LengthDist"),
            "invalid type: integer `5`, expected a table"
        );
        assert_eq!(
            plain_serde("invalid type: string \"x\", expected u32"),
            "invalid type: string \"x\", expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            plain_serde("invalid value: integer `-1`, expected usize"),
            "invalid value: integer `-1`, expected a whole number from 0 to 18446744073709551615"
        );
        assert_eq!(
            plain_serde("invalid type: integer `99999999999999999999` as i128, expected f64"),
            "invalid type: integer `99999999999999999999`, expected a number"
        );
        assert_eq!(
            plain_serde("expected u8"),
            "expected a whole number from 0 to 255"
        );
        assert_eq!(
            plain_serde("expected enum CostSpec"),
            "expected one of the documented values"
        );
    }

    #[test]
    fn batch_shapes_read_as_words_in_errors() {
        let mut b = crate::cost::BatchShape::default();
        b.add_prefill(300);
        assert_eq!(
            b.to_string(),
            "1 prefill requests (300 tokens), 0 decode requests (0 context tokens)"
        );
    }

    #[test]
    fn type_errors_name_their_key() {
        let text = "name = \"x\"\ntp = nan\n";
        let e = toml::from_str::<std::collections::BTreeMap<String, u32>>(text).unwrap_err();
        let m = toml_error_message(text, &e);
        assert!(
            m.starts_with("line 1, column 8: `name`: invalid type"),
            "{m}"
        );
        assert_eq!(value_key("a.b = 1", 6), Some("a.b"));
        assert_eq!(value_key("x = { y = 1 }", 10), Some("y"));
        assert_eq!(value_key("x = [1, nan]", 8), Some("x"));
        assert_eq!(value_key("[table]", 3), None);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(echo("a\nb\x1b[31m\0"), "a\\nb\\x1b[31m\\x00");
        assert_eq!(echo("a\u{202e}b\u{feff}"), "a\\u202eb\\ufeff");
        assert_eq!(echo(&"x".repeat(100)).chars().count(), 81);
    }
}

/// Longest error line printed (longer ones are cut in the middle: an echoed 100 KB value).
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// The key of the `key = value` line (or inline-table entry) whose value starts at byte `at` of
/// `text` (the span of a type error), if the error is in a value of that form.
fn value_key(text: &str, at: usize) -> Option<&str> {
    let at = at.min(text.len());
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..at)?;
    // In an inline table, the innermost key before the value.
    let inner = line.rfind(['{', ',']).map_or(line, |i| &line[i + 1..]);
    let (key, _) = inner.split_once('=').or_else(|| line.split_once('='))?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#') && !key.contains(['{', '['])).then_some(key)
}

/// Turn a TOML error into "line N, column C: message" ("line N, column C: `key`: message" for a
/// value of the wrong type or range).
pub fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let mut msg = plain_serde(e.message().trim());
            if msg == "duplicate key" {
                // Name it: the span covers the repeated key.
                let key = text.get(span.clone()).unwrap_or("").trim();
                if !key.is_empty() {
                    msg = format!("duplicate key `{}`", echo(key));
                }
            }
            match value_key(text, span.start) {
                Some(key) if msg.starts_with("invalid ") => {
                    format!("line {line}, column {col}: `{}`: {msg}", echo(key))
                }
                _ => format!("line {line}, column {col}: {msg}"),
            }
        }
        None => plain_serde(e.message().trim()),
    }
}

/// The final form of an error line, whatever produced it: control characters escaped (one line,
/// nothing that drives the terminal), runs of more than 20 digits (a 300-digit float expansion
/// in a TOML or serde message) shortened to scientific notation, and at most
/// [`MAX_MESSAGE_CHARS`] characters.
pub fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_MESSAGE_CHARS + 8));
    let chars: Vec<char> = msg.trim_end_matches('\n').chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            // A number: digits, and a fraction if a digit follows its point.
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let token: String = chars[start..i].iter().collect();
            match token.parse::<f64>() {
                // The whole expansion of a huge or tiny float: 6 significant digits.
                Ok(v) if token.len() > 20 => out.push_str(&num(v)),
                _ => out.push_str(&token),
            }
            continue;
        }
        push_escaped(&mut out, c);
        i += 1;
    }
    let n = out.chars().count();
    if n > MAX_MESSAGE_CHARS {
        let head: String = out.chars().take(MAX_MESSAGE_CHARS * 3 / 4).collect();
        let tail: String = out.chars().skip(n - MAX_MESSAGE_CHARS / 4).collect();
        out = format!(
            "{head} … ({} characters left out) … {tail}",
            n - MAX_MESSAGE_CHARS
        );
    }
    out
}

#[cfg(test)]
mod one_line_tests {
    #[test]
    fn did_you_mean_names_close_names_only() {
        let known = ["fcfs", "vllm", "skip-join-mlfq", "srpt-oracle"];
        assert_eq!(super::did_you_mean("vlm", known), "did you mean `vllm`? ");
        assert_eq!(super::did_you_mean("VLML", known), "did you mean `vllm`? ");
        assert_eq!(super::did_you_mean("skip-join", known), "");
        assert_eq!(
            super::did_you_mean("srpt-orcale", known),
            "did you mean `srpt-oracle`? "
        );
        assert_eq!(super::did_you_mean("lottery", known), "");
        assert_eq!(super::did_you_mean("x", []), "");
    }

    use super::one_line;

    #[test]
    fn control_bytes_huge_numbers_and_long_echoes_are_tamed() {
        assert_eq!(
            one_line("t.csv:3: got 10\u{1b}[31mRED\u{7}\n"),
            "t.csv:3: got 10\\x1b[31mRED\\x07"
        );
        let big = format!(
            "invalid type: floating point {}.0, expected u32",
            "1".to_string() + &"0".repeat(308)
        );
        assert_eq!(
            one_line(&big),
            "invalid type: floating point 1e308, expected u32"
        );
        // Tiny floats expand to long fractions: "0.0.00000e99" once came out of 1e-100.
        assert_eq!(
            one_line(&format!("got {}, want more", 1e-100)),
            "got 1e-100, want more"
        );
        assert_eq!(one_line(&format!("got {}", 1e-20)), "got 1e-20");
        assert_eq!(one_line(&format!("got {}", 1.25e22)), "got 1.25e22");
        assert_eq!(
            one_line("line 12, column 3: 12345678901234567890"),
            "line 12, column 3: 12345678901234567890"
        );
        let long = one_line(&format!("model `{}` is unknown", "x".repeat(100_000)));
        assert!(
            long.chars().count() < 1100 && long.ends_with("is unknown"),
            "{long}"
        );
    }
}
