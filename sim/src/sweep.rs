//! Policy sweeps: the cartesian product of a scenario's `[sweep]` axes, run in parallel (between
//! runs only), with results in run order whatever the thread count.
//!
//! ```toml
//! [sweep]
//! policy = ["fcfs", "vllm"]           # shorthand for scheduler.policy
//! rate = [0.5, 1.0, 2.0]              # shorthand for trace.rate_per_s
//! seed = [0, 1, 2]
//! "scheduler.max_batch_size" = [16, 32] # any scalar key by dotted path
//! ```
//!
//! Axis order: `policy`, `rate`, `seed`, then the other keys alphabetically; the last axis varies
//! fastest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::toml_error_message;
use crate::error::{Result, SimError};
use crate::metrics::Summary;
use crate::scenario::{Overrides, Resolved};

/// Shorthand axis names → dotted paths.
fn axis_path(name: &str) -> &str {
    match name {
        "policy" => "scheduler.policy",
        "rate" => "trace.rate_per_s",
        other => other,
    }
}

/// A parse error of a sweep point's generated text, placed at the `[sweep]` axis of the user's
/// file whose value it is about ("line 4, column 8" of text the user never saw becomes
/// "line 33 ([sweep] seed)"); other errors unchanged.
fn to_file_lines(
    e: SimError,
    generated: &str,
    file_text: &str,
    axes: &[(String, Vec<toml::Value>)],
) -> SimError {
    let SimError::Scenario { path, msg } = e else {
        return e;
    };
    let place = msg.strip_prefix("line ").and_then(|rest| {
        let (line, rest) = rest.split_once(", column ")?;
        let (_, tail) = rest.split_once(": ")?;
        let text_line = generated
            .lines()
            .nth(line.parse::<usize>().ok()?.checked_sub(1)?)?;
        let key = text_line.split('=').next()?.trim().trim_matches('"');
        // A table header the axis created (`"tp.x"` made `[tp]` of a number key): the axis
        // whose path runs through it.
        let header = key
            .strip_prefix('[')
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').replace('"', ""));
        let (name, _) = axes.iter().find(|(name, _)| match &header {
            Some(h) => axis_path(name).starts_with(&format!("{h}.")),
            None => axis_path(name).rsplit('.').next() == Some(key),
        })?;
        let at = crate::scenario::line_of_key(file_text, &["sweep", name.as_str()])?;
        // The key the TOML message names is the axis's own: named once, as the axis.
        let tail = tail
            .strip_prefix(&format!("`{}`: ", crate::error::echo(key)))
            .unwrap_or(tail);
        Some(format!("line {at} ([sweep] {name}): {tail}"))
    });
    SimError::Scenario {
        path,
        msg: place.unwrap_or(msg),
    }
}

/// One point of a sweep.
pub struct SweepRun {
    pub index: usize,
    /// `(axis name, value as text)` in axis order.
    pub axes: Vec<(String, String)>,
    pub resolved: Resolved,
}

impl SweepRun {
    /// Directory name under `runs/`: the index, then each axis value with characters other than
    /// ASCII letters, digits and `.` replaced by `_`; a name longer than [`MAX_DIR_NAME_BYTES`]
    /// is cut and ends in `~` and a hash of the whole name (unique, deterministic).
    pub fn dir_name(&self) -> String {
        let mut s = format!("{:04}", self.index);
        for (_, v) in &self.axes {
            s.push('-');
            s.extend(v.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            }));
        }
        if s.len() > MAX_DIR_NAME_BYTES {
            let hash = fnv1a(s.as_bytes());
            s.truncate(MAX_DIR_NAME_BYTES - 17);
            let _ = write!(s, "~{hash:016x}");
        }
        s
    }
}

/// Longest run directory name (file systems allow 255 bytes).
pub const MAX_DIR_NAME_BYTES: usize = 120;

/// FNV-1a, 64 bits: a short deterministic digest for cut names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An axis value as text (in `sweep.csv`, run names and messages). Floats print as TOML writes
/// them (`0.5`, `2.0`) when that takes at most [`MAX_PLAIN_FLOAT_CHARS`] characters, otherwise in
/// the shortest exponent form that reads back exactly (`1e-30`, `1.5e300`).
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => {
            let plain = v.to_string();
            if plain.len() <= MAX_PLAIN_FLOAT_CHARS {
                plain
            } else {
                format!("{f:e}")
            }
        }
        other => other.to_string(),
    }
}

/// Longest float written out in full in an axis label (`1e21` is `1000000000000000000000.0`).
const MAX_PLAIN_FLOAT_CHARS: usize = 24;

/// What makes two axis values the same run: what `sweep.csv` and its readers (`plot`, `check`,
/// `merge`) take for the same point, i.e. the value's text read as a number when it is one (`1`,
/// `1.0` and `1e0` are one value; so are the strings `"1"` and `"1.0"`, which sweep.csv cannot tell
/// apart), else the text itself.
fn value_key(v: &toml::Value) -> String {
    numeric_form(&value_text(v))
}

/// The first value equal to an earlier one: (its 0-based position, the earlier one's). Hashed:
/// linear in the number of values.
fn first_repeat(vals: &[toml::Value]) -> Option<(usize, usize)> {
    let mut seen = std::collections::HashMap::with_capacity(vals.len());
    for (i, v) in vals.iter().enumerate() {
        if let Some(&first) = seen.get(&value_key(v)) {
            return Some((i, first));
        }
        seen.insert(value_key(v), i);
    }
    None
}

/// Most dotted parts in a sweep axis key (the deepest scenario key, `policies.NAME.KEY`, has 3; a
/// deeper one would only build a nesting that the scenario then rejects, or overflow the stack).
const MAX_AXIS_DEPTH: usize = 16;

fn set_path(root: &mut toml::Table, path: &str, v: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let depth = parts.len();
    if depth > MAX_AXIS_DEPTH {
        let shown: String = path.chars().take(60).collect();
        return Err(format!(
            "sweep axis `{}…` has {depth} dotted parts; a scenario key has at most {MAX_AXIS_DEPTH}",
            shown.escape_debug()
        ));
    }
    if parts[0] == "sweep" {
        return Err(format!(
            "sweep axis `{path}` sets a key of [sweep] itself, which no run reads"
        ));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "sweep axis `{}` has an empty part; write dotted keys such as `scheduler.max_batch_size`",
            crate::error::echo(path)
        ));
    }
    let (last, inner) = parts.split_last().expect("split gives one part at least");
    let mut t = root;
    let mut i = 0;
    while i < inner.len() {
        let p = inner[i];
        let next = inner.get(i + 1).copied().unwrap_or(last);
        if !t.contains_key(p) && index_part(next).is_some() {
            return Err(format!(
                "sweep axis `{path}`: the scenario has no `{p}` whose entry {next} it could set"
            ));
        }
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // An array of tables (`[[replica_groups]]`) is entered by a 0-based index part.
        let entry = match entry {
            toml::Value::Array(items) => {
                i += 1;
                let at = index_part(next).filter(|&n| n < items.len());
                let Some(n) = at else {
                    return Err(format!(
                        "sweep axis `{path}`: `{p}` has {} entries; follow it by an index from 0 to {} (digits only, no leading zero: two spellings of one entry would be two axes setting one key)",
                        items.len(),
                        items.len().saturating_sub(1)
                    ));
                };
                if i == inner.len() {
                    return Err(format!(
                        "sweep axis `{path}` replaces a whole entry of `{p}`; name one of its keys"
                    ));
                }
                &mut items[n]
            }
            other => other,
        };
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("sweep axis `{path}`: `{p}` is not a table"))?;
        i += 1;
    }
    t.insert(last.to_string(), v);
    Ok(())
}

/// An index part of a sweep key (`replica_groups.1.count`) in its one spelling: digits without
/// a leading zero (`01` and `+1` named entry 1 too, so two axes could set one key unseen).
fn index_part(s: &str) -> Option<usize> {
    let canonical = s == "0" || (!s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| s.parse().ok()).flatten()
}

/// A sweep axis given on the command line (`--policies`, `--rates`, `--seeds`): it replaces the
/// scenario's `[sweep]` axis of the same name, or adds it.
pub struct FlagAxis {
    /// The flag, for error messages (`--rates`).
    pub flag: &'static str,
    /// The axis it sets (`policy`, `rate`, `seed`).
    pub axis: &'static str,
    pub values: Vec<toml::Value>,
}

/// Expand a scenario file into its runs, validating each (bad input fails the whole sweep up
/// front). A scenario without `[sweep]` is a sweep of one run. `flags` replace or add axes.
pub fn expand(path: &Path, base: &Overrides, flags: &[FlagAxis]) -> Result<Vec<SweepRun>> {
    let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| {
        SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read scenario: {e}"),
        }
    })?;
    let err = |msg: String| SimError::Scenario {
        path: path.to_path_buf(),
        msg,
    };
    // An error about a `[sweep]` axis names the axis's line.
    let axis_err = |msg: String| err(with_axis_line(&text, msg));
    let mut root: toml::Table =
        toml::from_str(&text).map_err(|e| err(toml_error_message(&text, &e)))?;
    let file_text: std::sync::Arc<str> = text.as_str().into();
    let mut sweep = match root.remove("sweep") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(err("`sweep` must be a table of axes".into())),
    };
    // Cheap checks first: the run count bounds all the per-value work that follows.
    apply_flag_axes(&mut sweep, flags).map_err(SimError::config)?;
    let axes = sweep_axes(&sweep).map_err(&axis_err)?;
    let total = run_count(&axes).map_err(&err)?;
    // The file as written: its unknown keys and wrong types are reported with its own lines
    // (the runs below parse generated text).
    crate::scenario::parse(path, &text)?;
    check_axes(&axes).map_err(&axis_err)?;
    check_flag_repeats(flags).map_err(SimError::config)?;
    check_values(&axes).map_err(&axis_err)?;
    let mut runs = Vec::with_capacity(total);
    for index in 0..total {
        let mut t = root.clone();
        let mut rem = index;
        let mut point = vec![(String::new(), String::new()); axes.len()];
        for (k, (name, vals)) in axes.iter().enumerate().rev() {
            let v = &vals[rem % vals.len()];
            rem /= vals.len();
            set_path(&mut t, axis_path(name), v.clone()).map_err(&err)?;
            point[k] = (name.clone(), value_text(v));
        }
        let at_point = |e: SimError| match e {
            // A scenario without axes is one run: no point to name.
            SimError::Scenario { path, msg } if point.is_empty() => {
                SimError::Scenario { path, msg }
            }
            SimError::Scenario { path, msg } => SimError::Scenario {
                path,
                msg: format!("sweep point {index} ({}): {msg}", describe(&point)),
            },
            other => other,
        };
        let generated = toml::to_string(&t).map_err(|e| err(e.to_string()))?;
        let mut loaded = crate::scenario::parse(path, &generated)
            .map_err(|e| at_point(to_file_lines(e, &generated, &text, &axes)))?;
        // Semantic errors name lines of the user's file, not of the generated text.
        loaded.text = file_text.clone();
        let resolved = loaded
            .resolve(base)
            .map_err(|e| at_point(at_axis_line(e, &text, &axes)))?;
        runs.push(SweepRun {
            index,
            axes: point,
            resolved,
        });
    }
    Ok(runs)
}

/// A semantic error of a sweep point, placed at the `[sweep]` axis whose key it names: the
/// axis set the value (`[memory] kv_capacity_blocks must be ≥ 1` from
/// `"memory.kv_capacity_blocks" = [0]` named no line, or the line of the file's own
/// `kv_capacity_blocks`, which the axis replaced: round 12, 04); other errors unchanged.
fn at_axis_line(e: SimError, text: &str, axes: &[(String, Vec<toml::Value>)]) -> SimError {
    let SimError::Scenario { path, msg } = e else {
        return e;
    };
    let bare = msg
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
        .map_or(msg.as_str(), |(_, rest)| rest);
    let named = axes.iter().find(|(name, _)| {
        let key = axis_path(name).rsplit('.').next().unwrap_or(name);
        names_word(bare, key)
    });
    let msg = match named.and_then(|(name, _)| {
        crate::scenario::line_of_key(text, &["sweep", name.as_str()]).map(|at| (name, at))
    }) {
        Some((name, at)) => format!("line {at} ([sweep] {name}): {bare}"),
        None => msg.clone(),
    };
    SimError::Scenario { path, msg }
}

/// Whether `msg` holds `word` with no identifier character on either side.
fn names_word(msg: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    msg.match_indices(word)
        .any(|(i, _)| !msg[..i].ends_with(ident) && !msg[i + word.len()..].starts_with(ident))
}

/// `msg` about the `[sweep]` axis it names first (`[sweep] `NAME`…` or `[sweep] axes `NAME`…`)
/// with that axis's line in `text` in front, when the file has it (an axis from a flag has none).
fn with_axis_line(text: &str, msg: String) -> String {
    let name = msg
        .strip_prefix("[sweep] ")
        .and_then(|rest| rest.split('`').nth(1))
        .map(str::to_string);
    match name.and_then(|n| crate::scenario::line_of_exact_key(text, &["sweep", &n])) {
        Some(line) => format!("line {line}: {msg}"),
        None => msg,
    }
}

/// The `[sweep]` axes, checked (non-empty arrays of scalars), in run order: `policy`,
/// `rate`, `seed`, then the others by name.
fn sweep_axes(sweep: &toml::Table) -> std::result::Result<Vec<(String, Vec<toml::Value>)>, String> {
    let mut names: Vec<String> = sweep.keys().cloned().collect();
    let rank = |n: &str| match n {
        "policy" => 0,
        "rate" => 1,
        "seed" => 2,
        _ => 3,
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for n in names {
        let vals = match &sweep[&n] {
            toml::Value::Array(a) if !a.is_empty() => a.clone(),
            _ => return Err(format!("[sweep] `{n}` must be a non-empty array")),
        };
        if vals.iter().any(|v| v.is_table() || v.is_array()) {
            return Err(format!("[sweep] `{n}`: values must be scalars"));
        }
        axes.push((n, vals));
    }
    Ok(axes)
}

/// Put the command-line axes into the scenario's `[sweep]` table: each replaces the axis of its
/// name; a scenario axis that sets the same field under another name (`trace.rate_per_s` for
/// `--rates`), or a table holding it, is an error naming the flag.
fn apply_flag_axes(sweep: &mut toml::Table, flags: &[FlagAxis]) -> std::result::Result<(), String> {
    for f in flags {
        let path = axis_path(f.axis);
        if let Some(other) = sweep
            .keys()
            .find(|k| k.as_str() != f.axis && overlap(axis_path(k), path))
        {
            return Err(format!(
                "{} sets `{path}`, which the scenario's [sweep] axis `{other}` also sets; remove that axis or the flag",
                f.flag
            ));
        }
        sweep.insert(f.axis.to_string(), toml::Value::Array(f.values.clone()));
    }
    Ok(())
}

/// Whether two dotted paths set the same field, or one is a table holding the other.
fn overlap(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.'))
    };
    a == b || inside(a, b) || inside(b, a)
}

/// Two axes that set the same field (`rate` and `trace.rate_per_s`), or one a table that holds
/// the other (`memory` and `memory.block_tokens`), would silently override each other. Hashed:
/// linear in the total length of the axes' paths.
fn check_axes(axes: &[(String, Vec<toml::Value>)]) -> std::result::Result<(), String> {
    let mut by_path: std::collections::HashMap<&str, &str> =
        std::collections::HashMap::with_capacity(axes.len());
    for (a, _) in axes {
        if let Some(b) = by_path.insert(axis_path(a), a) {
            return Err(format!(
                "[sweep] axes `{b}` and `{a}` both set `{}`; keep one",
                axis_path(a)
            ));
        }
    }
    for (a, _) in axes {
        let pa = axis_path(a);
        for (i, _) in pa.match_indices('.') {
            if let Some(b) = by_path.get(&pa[..i]) {
                return Err(format!(
                    "[sweep] axes `{b}` and `{a}` overlap (`{}` and `{pa}`: one holds the other); keep one",
                    &pa[..i]
                ));
            }
        }
    }
    Ok(())
}

/// A value a flag lists twice (`--rates 1,1.0`), named by the flag.
fn check_flag_repeats(flags: &[FlagAxis]) -> std::result::Result<(), String> {
    for f in flags {
        if let Some((i, _)) = first_repeat(&f.values) {
            return Err(format!(
                "{} lists {} twice (position {}); each run would be repeated",
                f.flag,
                crate::error::echo(&value_text(&f.values[i])),
                i + 1
            ));
        }
    }
    Ok(())
}

/// Each axis lists each value once, numbers by value (`1` and `1.0` would repeat a run), and a
/// rate axis stays within [`MIN_RATE_PER_S`]..=[`MAX_RATE_PER_S`].
fn check_values(axes: &[(String, Vec<toml::Value>)]) -> std::result::Result<(), String> {
    for (n, vals) in axes {
        if let Some((i, first)) = first_repeat(vals) {
            let (v, w) = (value_text(&vals[i]), value_text(&vals[first]));
            let same = if v == w {
                format!(", first at position {}", first + 1)
            } else if vals[i].is_str() && vals[first].is_str() {
                format!(
                    ", the same number as {} (position {}): sweep.csv and the commands reading it could not tell the two apart",
                    crate::error::echo(&w),
                    first + 1
                )
            } else {
                format!(
                    ", the same number as {} (position {})",
                    crate::error::echo(&w),
                    first + 1
                )
            };
            return Err(format!(
                "[sweep] `{n}`: value {} (position {}) is listed twice{same}; each run would be repeated",
                crate::error::echo(&v),
                i + 1
            ));
        }
        if axis_path(n) != "trace.rate_per_s" {
            continue;
        }
        let bad = vals.iter().enumerate().find_map(|(i, v)| {
            let r = v.as_float().or_else(|| v.as_integer().map(|i| i as f64))?;
            (!(MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&r)).then_some((i, r))
        });
        if let Some((i, r)) = bad {
            return Err(format!(
                "[sweep] `{n}`: rate {} (position {}) is outside {} to {} requests/s",
                crate::error::num(r),
                i + 1,
                crate::error::num(MIN_RATE_PER_S),
                crate::error::num(MAX_RATE_PER_S)
            ));
        }
    }
    Ok(())
}

/// The lowest arrival rate a sweep, `fidelity` or `capacity` flag takes (one request per 11.6
/// days: below it arrivals outrun the simulated clock's limits).
pub const MIN_RATE_PER_S: f64 = 1e-6;
/// The highest (a billion requests/s is beyond any cluster).
pub const MAX_RATE_PER_S: f64 = 1e9;

/// The number of runs (the product of the axes' lengths), at most [`MAX_RUNS`].
fn run_count(axes: &[(String, Vec<toml::Value>)]) -> std::result::Result<usize, String> {
    let total = axes
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()));
    match total {
        Some(n) if n <= MAX_RUNS => Ok(n),
        _ => {
            let product = axes
                .iter()
                .map(|(k, v)| format!("{k} ({})", v.len()))
                .collect::<Vec<_>>()
                .join(" × ");
            let n = total.map_or_else(|| format!("more than {}", usize::MAX), |n| n.to_string());
            Err(format!(
                "[sweep]: {product} = {n} runs, above the limit of {MAX_RUNS} runs per sweep; use fewer values, or split the sweep into several scenarios"
            ))
        }
    }
}

/// Most runs one sweep may expand to (every run is resolved up front).
pub const MAX_RUNS: usize = 100_000;

/// `axis=value, …` for messages: values echoed safely, at most 8 axes named.
pub fn describe(point: &[(String, String)]) -> String {
    let mut parts: Vec<String> = point
        .iter()
        .take(8)
        .map(|(k, v)| crate::error::echo(&format!("{k}={v}")))
        .collect();
    if point.len() > 8 {
        parts.push(format!("… {} axes in all", point.len()));
    }
    parts.join(", ")
}

/// Columns of `sweep.csv` after the axes (a `goodput` column goes before `error` when the
/// scenario has `[slo]`; see [`metric_columns`]). `offered_rate_per_s` … `stable` are the run's
/// [`crate::metrics::stability::Stability`] (`stable` is `true` / `false`; the four cells are
/// empty when the run cannot be judged).
pub const METRIC_COLUMNS: &[&str] = &[
    "requests",
    "makespan_s",
    "throughput_requests_per_s",
    "jct_mean_s",
    "jct_p50_s",
    "jct_p99_s",
    "ttft_mean_s",
    "ttft_p99_s",
    "tpot_mean_s",
    "tpot_p99_s",
    "itl_mean_s",
    "itl_p99_s",
    "per_token_mean_s",
    "per_token_p95_s",
    "per_token_p99_s",
    "preemptions",
    "offered_rate_per_s",
    "achieved_rate_per_s",
    "queue_growth_per_s",
    "stable",
    "error",
];

/// Whether this run's row carries a `goodput` cell (its scenario has `[slo]`).
fn has_goodput(r: &SweepRun) -> bool {
    r.resolved.scenario.slo.is_some()
}

/// The metric columns of a sweep whose first run is `first`: [`METRIC_COLUMNS`], plus `goodput`
/// before `error` when the scenario has `[slo]` (without it the header is unchanged).
pub fn metric_columns(first: Option<&SweepRun>) -> Vec<&'static str> {
    let mut c = METRIC_COLUMNS.to_vec();
    if first.is_some_and(has_goodput) {
        c.insert(c.len() - 1, "goodput");
    }
    c
}

fn metric_cells(s: &Summary, with_goodput: bool) -> Vec<String> {
    let d = |x: &Option<crate::metrics::Dist>, f: fn(&crate::metrics::Dist) -> f64| {
        x.as_ref()
            .map(|d| format!("{:.9}", f(d)))
            .unwrap_or_default()
    };
    let mut cells = vec![
        s.requests.to_string(),
        format!("{:.9}", s.makespan_s),
        format!("{:.9}", s.throughput_requests_per_s),
        d(&s.jct_s, |d| d.mean),
        d(&s.jct_s, |d| d.p50),
        d(&s.jct_s, |d| d.p99),
        d(&s.ttft_s, |d| d.mean),
        d(&s.ttft_s, |d| d.p99),
        d(&s.tpot_s, |d| d.mean),
        d(&s.tpot_s, |d| d.p99),
        d(&s.itl_s, |d| d.mean),
        d(&s.itl_s, |d| d.p99),
        d(&s.per_token_latency_s, |d| d.mean),
        d(&s.per_token_latency_s, |d| d.p95),
        d(&s.per_token_latency_s, |d| d.p99),
        s.preemptions.to_string(),
    ];
    // Stability (see [`crate::metrics::stability`]): empty cells when the run cannot be judged.
    match &s.stability {
        Some(st) => cells.extend([
            format!("{:.9}", st.offered_rate_per_s),
            format!("{:.9}", st.achieved_rate_per_s),
            format!("{:.9}", st.queue_growth_per_s),
            st.stable.to_string(),
        ]),
        None => cells.extend(std::iter::repeat_n(String::new(), 4)),
    }
    if with_goodput {
        cells.push(
            s.goodput
                .as_ref()
                .map(|g| format!("{:.9}", g.fraction))
                .unwrap_or_default(),
        );
    }
    cells.push(String::new());
    cells
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `sweep.csv` text from the runs and their outcomes (summary, or the error that ended the run).
/// Every file the runs read (scenario files, traces, lengths, profiles, catalogues), sorted,
/// each once.
pub fn input_files(runs: &[SweepRun]) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> =
        runs.iter().flat_map(|r| r.resolved.input_paths()).collect();
    files.sort();
    files.dedup();
    files
}

pub fn sweep_csv(runs: &[SweepRun], outcomes: &[std::result::Result<Summary, String>]) -> String {
    let mut s = csv_header(runs);
    s.push('\n');
    for (r, o) in runs.iter().zip(outcomes) {
        s.push_str(&csv_row(r, o));
        s.push('\n');
    }
    s
}

/// The header line of `sweep.csv` (no newline): `run`, the axes of the first run, the metrics.
pub fn csv_header(runs: &[SweepRun]) -> String {
    let mut s = String::from("run");
    if let Some(r) = runs.first() {
        for (k, _) in &r.axes {
            s.push(',');
            s.push_str(&csv_cell(k));
        }
    }
    for c in metric_columns(runs.first()) {
        s.push(',');
        s.push_str(c);
    }
    s
}

/// One run's line of `sweep.csv` (no newline; a quoted error cell may contain newlines).
pub fn csv_row(r: &SweepRun, o: &std::result::Result<Summary, String>) -> String {
    let mut s = String::new();
    let _ = write!(s, "{}", r.index);
    for (_, v) in &r.axes {
        s.push(',');
        s.push_str(&csv_cell(v));
    }
    let cells = match o {
        Ok(sum) => metric_cells(sum, has_goodput(r)),
        Err(e) => {
            let mut c = vec![String::new(); metric_columns(Some(r)).len()];
            *c.last_mut().expect("non-empty") = e.clone();
            c
        }
    };
    for c in cells {
        s.push(',');
        s.push_str(&csv_cell(&c));
    }
    s
}

/// Axis values of a run, by axis name.
pub fn axis_map(r: &SweepRun) -> BTreeMap<&str, &str> {
    r.axes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The axes (by name) whose values changed no result: at each point of the other axes, every
/// run gave the same `sweep.csv` metric cells (or failed with the same error), and at least one
/// point had two runs. Most likely a key no run reads (a parameter of a policy, router or predictor the
/// runs do not use; a `gpu`, `tp` or `pp` that every replica group sets), or one that does not
/// bind in these runs (a cap never reached, a seed that nothing draws from).
pub fn inert_axes(
    runs: &[SweepRun],
    outcomes: &[std::result::Result<Summary, String>],
) -> Vec<String> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.axes.len())
        .filter(|&k| axis_changes_nothing(runs, outcomes, k))
        .map(|k| first.axes[k].0.clone())
        .collect()
}

/// Whether axis `k` is inert (see [`inert_axes`]). Two runs at one point of the other axes
/// differ in axis `k` (sweep points are distinct).
fn axis_changes_nothing(
    runs: &[SweepRun],
    outcomes: &[std::result::Result<Summary, String>],
    k: usize,
) -> bool {
    let mut seen: BTreeMap<Vec<&str>, String> = BTreeMap::new();
    let mut compared = false;
    for (r, o) in runs.iter().zip(outcomes) {
        // A failed run counts with its error: an axis value that made a run fail changed it.
        let cells = match o {
            Ok(sum) => metric_cells(sum, has_goodput(r)).join(","),
            Err(e) => format!("error: {e}"),
        };
        let others: Vec<&str> = (r.axes.iter().enumerate())
            .filter(|&(i, _)| i != k)
            .map(|(_, (_, v))| v.as_str())
            .collect();
        match seen.get(&others) {
            Some(prev) if *prev != cells => return false,
            Some(_) => compared = true,
            None => {
                seen.insert(others, cells);
            }
        }
    }
    compared
}

/// A cell (of `sweep.csv`, or an axis value's text) as a number when it is a finite one (`1`, `1.0`, `1e0` → `1`), else as written.
pub(crate) fn numeric_form(v: &str) -> String {
    // Integers exactly (seeds reach 2⁶³ − 1: through f64, 2⁵³ and 2⁵³ + 1 were one point).
    if let Ok(i) = v.parse::<i128>() {
        return i.to_string();
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e38 => (x as i128).to_string(),
        Ok(x) if x.is_finite() => format!("{:e}", x),
        _ => v.to_string(),
    }
}
