//! `servesim compare SIM_DIR LIVE_DIR`: how far a simulated run is from a live one. Reads both
//! directories' `requests.csv` (JCT, TTFT, TPOT: mean, p50, p99) and `summary.json` (mean
//! iteration time = Σ busy time / Σ iterations over replicas), and the live run's
//! `iterations.csv`: the cost model's prediction of each executed batch against its measured time
//! (`batch_s`; [`iteration_model_rows`]), which separates the model's error from the trajectory's.
//!
//! Before comparing it checks that the two directories are what they claim ([`check_dirs`]): the
//! first a simulated run, the second a live one (`config.json` has a `live` table and the
//! directory an `iterations.csv`, parsed strictly); both `config.json` files describe the same
//! scenario on the fields that decide the workload and the system ([`SAME_SCENARIO_FIELDS`], trace
//! paths made canonical) and the same resolved configuration ([`SAME_RESOLVED_KEYS`]);
//! and neither is a partial run unless the caller allows it.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, SimError};
use crate::metrics::Dist;

/// One line of the error table.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub metric: String,
    pub stat: String,
    pub sim: f64,
    pub live: f64,
}

impl CompareRow {
    /// live − sim.
    pub fn abs_error(&self) -> f64 {
        self.live - self.sim
    }
    /// (live − sim) / sim; NaN when sim is 0.
    pub fn rel_error(&self) -> f64 {
        if self.sim != 0.0 {
            (self.live - self.sim) / self.sim
        } else {
            f64::NAN
        }
    }
}

pub const COMPARE_HEADER: &str = "metric,stat,sim,live,abs_error,rel_error";

fn io(path: &Path, msg: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// The `config.json` fields (under `scenario`) that must be equal for a comparison to mean
/// anything: the model and hardware, the parallelism and replica count, the scheduling policy
/// and router, the seed, and the whole trace table (file, arrival process, rate, number of
/// requests). The cost model, memory settings and limits may differ: the cost model is what a
/// comparison judges.
pub const SAME_SCENARIO_FIELDS: [&str; 10] = [
    "model",
    "gpu",
    "tp",
    "pp",
    "replicas",
    "replica_groups",
    "scheduler.policy",
    "router",
    "seed",
    "trace",
];

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        let msg = crate::error::plain_serde(&e.to_string());
        io(path, format!("not valid JSON: {msg}"))
    })
}

/// Whether a run directory holds a partial run (a `PARTIAL` file or `"partial": true` in
/// `summary.json`).
fn is_partial(dir: &Path, summary: &serde_json::Value) -> bool {
    dir.join("PARTIAL").exists() || summary["partial"].as_bool() == Some(true)
}

/// Checks of [`check_dirs`]: what was found partial (allowed by the caller), for the output.
#[derive(Debug, Default)]
pub struct DirCheck {
    /// The directories holding partial runs (only when allowed).
    pub partial: Vec<std::path::PathBuf>,
}

/// Check that `sim` is a simulated run directory and `live` a live one of the same scenario, and
/// that `live/iterations.csv` parses; refuse partial runs unless `allow_partial`.
pub fn check_dirs(sim: &Path, live: &Path, allow_partial: bool) -> Result<DirCheck> {
    let sim_cfg = read_json(&sim.join("config.json"))?;
    let live_cfg = read_json(&live.join("config.json"))?;
    let is_live = |dir: &Path, cfg: &serde_json::Value| {
        cfg.get("live").is_some() || dir.join("iterations.csv").exists()
    };
    let (sim_is_live, live_is_live) = (is_live(sim, &sim_cfg), is_live(live, &live_cfg));
    let run_err = |msg: String| SimError::config(format!("compare: {msg}"));
    match (sim_is_live, live_is_live) {
        (false, true) => {}
        (true, false) => {
            return Err(run_err(format!(
                "the arguments are swapped: {} is a live run and {} a simulated one; run `servesim compare {} {}` (SIM_DIR first)",
                sim.display(),
                live.display(),
                live.display(),
                sim.display()
            )));
        }
        (true, true) => {
            return Err(run_err(format!(
                "{} is a live run (config.json has a `live` table): the first argument must be a directory written by `servesim run`",
                sim.display()
            )));
        }
        (false, false) => {
            return Err(run_err(format!(
                "{} is not a live run (no `live` table in config.json, no iterations.csv): the second argument must be a directory written by `servesim live`",
                live.display()
            )));
        }
    }
    for field in SAME_SCENARIO_FIELDS {
        let get = |cfg: &serde_json::Value| {
            let v = field.split('.').fold(&cfg["scenario"], |v, k| &v[k]);
            if field == "trace" {
                canonical_trace(v, cfg)
            } else {
                v.clone()
            }
        };
        let (a, b) = (get(&sim_cfg), get(&live_cfg));
        if a != b {
            let show = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "absent".to_string(),
                v => crate::error::echo(&v.to_string()),
            };
            return Err(run_err(format!(
                "{} and {} are runs of different scenarios: `{field}` is {} in {} but {} in {} (compared: {})",
                sim.display(),
                live.display(),
                show(&a),
                sim.join("config.json").display(),
                show(&b),
                live.join("config.json").display(),
                SAME_SCENARIO_FIELDS.join(", ")
            )));
        }
    }
    check_resolved(sim, &sim_cfg, live, &live_cfg)?;
    let rows = check_iterations_csv(&live.join("iterations.csv"))?;
    check_row_count(live, "iterations.csv", "iterations", rows)?;
    let mut check = DirCheck::default();
    for dir in [sim, live] {
        let summary = read_json(&dir.join("summary.json"))?;
        if is_partial(dir, &summary) {
            if !allow_partial {
                return Err(run_err(format!(
                    "{} is a partial run (stopped before every request finished: PARTIAL or summary.json \"partial\": true); its figures cover only the requests that finished. Rerun it, or pass --allow-partial to compare anyway",
                    dir.display()
                )));
            }
            check.partial.push(dir.to_path_buf());
        }
    }
    Ok(check)
}

/// The keys of `config.json`'s `resolved` table that must be equal too: what the scheduler may
/// hold and do (batch limits, KV pool sizes, the output predictor, the policy's and router's
/// resolved parameters). Two runs that differ there differ in their schedules, not in their cost
/// models. (The cost model's parameters, `analytic_params`, may differ: they are what is judged.)
pub const SAME_RESOLVED_KEYS: [&str; 7] = [
    "limits",
    "kv_capacity_blocks",
    "host_kv_blocks",
    "predictor",
    "policy_params",
    "router",
    "router_params",
];

/// `config.json`'s `scenario.trace` with each path in it (`file`, `lengths_file`, …) made
/// canonical: relative to the scenario file's directory (as servesim read it), symlinks
/// resolved; a path that does not resolve is left as written. The same trace file spelt two ways
/// is the same trace.
fn canonical_trace(trace: &serde_json::Value, cfg: &serde_json::Value) -> serde_json::Value {
    let mut t = trace.clone();
    let base = cfg["scenario_file"]
        .as_str()
        .and_then(|f| Path::new(f).parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if let Some(map) = t.as_object_mut() {
        for (k, v) in map.iter_mut() {
            let Some(p) = v.as_str().filter(|_| k.ends_with("file")) else {
                continue;
            };
            if let Ok(c) = std::fs::canonicalize(base.join(p)) {
                *v = serde_json::Value::String(c.to_string_lossy().into_owned());
            }
        }
    }
    t
}

/// The path (`a.b.c`, `[i]` for array items) of the first place where `a` and `b` differ, with
/// the two values there.
fn first_difference<'v>(
    path: String,
    a: &'v serde_json::Value,
    b: &'v serde_json::Value,
) -> Option<(String, &'v serde_json::Value, &'v serde_json::Value)> {
    use serde_json::Value;
    match (a, b) {
        _ if a == b => None,
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (p, q) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                first_difference(format!("{path}.{k}"), p, q)
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(format!("{path}[{i}]"), p, q)),
        _ => Some((path, a, b)),
    }
}

/// Refuse two runs whose `config.json` `resolved` tables differ on [`SAME_RESOLVED_KEYS`],
/// naming the first key that differs and its two values.
fn check_resolved(
    sim: &Path,
    sim_cfg: &serde_json::Value,
    live: &Path,
    live_cfg: &serde_json::Value,
) -> Result<()> {
    for key in SAME_RESOLVED_KEYS {
        let (a, b) = (&sim_cfg["resolved"][key], &live_cfg["resolved"][key]);
        let Some((at, a, b)) = first_difference(format!("resolved.{key}"), a, b) else {
            continue;
        };
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "absent".to_string(),
            v => crate::error::echo(&v.to_string()),
        };
        return Err(SimError::config(format!(
            "compare: {} and {} are runs of different configurations: `{at}` is {} in {} but {} in {} (compared: resolved {}); their schedules differ, so their timings say nothing of the cost model",
            sim.display(),
            live.display(),
            show(a),
            sim.join("config.json").display(),
            show(b),
            live.join("config.json").display(),
            SAME_RESOLVED_KEYS.join(", ")
        )));
    }
    Ok(())
}

/// One row of a live run's `iterations.csv`, as [`compare`] uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationRow {
    pub duration_s: f64,
    pub prefill_tokens: u64,
    pub predicted_s: Option<f64>,
}

/// [`read_iterations_csv`]'s row count.
pub fn check_iterations_csv(path: &Path) -> Result<u64> {
    Ok(read_iterations_csv(path)?.len() as u64)
}

/// Parse a live run's `iterations.csv` strictly: the header [`super::ITERATIONS_HEADER`], then
/// rows of exactly its columns (integers, finite non-negative times with end ≥ start, and a
/// checksum and a predicted time that may be empty).
/// Errors name the file, line and column.
pub fn read_iterations_csv(path: &Path) -> Result<Vec<IterationRow>> {
    let text =
        crate::input::read_text(path, crate::input::MAX_DATA_BYTES).map_err(|e| io(path, e))?;
    let header: Vec<&str> = super::ITERATIONS_HEADER.split(',').collect();
    let mut lines = text.strip_suffix('\n').unwrap_or(&text).split('\n');
    let first = lines.next().unwrap_or("");
    if first != super::ITERATIONS_HEADER {
        return Err(SimError::Input {
            path: path.to_path_buf(),
            line: 1,
            field: "header".into(),
            msg: format!(
                "expected `{}`, got `{}`",
                super::ITERATIONS_HEADER,
                crate::error::echo(first)
            ),
        });
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        rows.push(parse_iteration_row(path, &header, i as u64 + 2, line)?);
    }
    Ok(rows)
}

/// One data line of `iterations.csv` (line number `line_no`), checked as [`read_iterations_csv`]
/// says.
fn parse_iteration_row(
    path: &Path,
    header: &[&str],
    line_no: u64,
    line: &str,
) -> Result<IterationRow> {
    if line.is_empty() {
        return Err(SimError::Input {
            path: path.to_path_buf(),
            line: line_no,
            field: "row".into(),
            msg: "empty line".into(),
        });
    }
    let cells: Vec<&str> = line.split(',').collect();
    if cells.len() != header.len() {
        return Err(SimError::Input {
            path: path.to_path_buf(),
            line: line_no,
            field: "row".into(),
            msg: format!("{} fields, expected {}", cells.len(), header.len()),
        });
    }
    let bad = |k: usize, what: &str| SimError::Input {
        path: path.to_path_buf(),
        line: line_no,
        field: header[k].to_string(),
        msg: format!("`{}` is not {what}", crate::error::echo(cells[k])),
    };
    let mut times = [0.0f64; 3];
    let mut ints = std::collections::HashMap::new();
    let mut row = IterationRow {
        duration_s: 0.0,
        prefill_tokens: 0,
        predicted_s: None,
    };
    for (k, cell) in cells.iter().enumerate() {
        let seconds = || {
            cell.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(k, "a finite number of seconds ≥ 0"))
        };
        if (2..=4).contains(&k) {
            times[k - 2] = seconds()?;
        } else if header[k] == "predicted_s" {
            // Empty: no model predicted this iteration.
            row.predicted_s = if cell.is_empty() {
                None
            } else {
                Some(seconds()?)
            };
        } else if header[k] == "checksum" && cell.is_empty() {
            // No checksum: the mock executor computes nothing.
        } else {
            let n = cell
                .parse::<u64>()
                .map_err(|_| bad(k, "a non-negative integer"))?;
            if header[k] == "prefill_tokens" {
                row.prefill_tokens = n;
            }
            ints.insert(header[k], (k, n));
        }
    }
    if times[1] < times[0] {
        return Err(bad(3, "≥ start_s"));
    }
    row_consistent(&ints, &times, line_no).map_err(|(k, what)| bad(k, &what))?;
    row.duration_s = times[2];
    Ok(row)
}

/// Whether one `iterations.csv` row agrees with itself and its place (line `line_no`): its
/// `iteration` is its 0-based row index (a repeated, dropped or moved row shows), `duration_s`
/// is `end_s − start_s` (each written to the nanosecond, so within 2 ns and rounding) and `requests` is
/// `prefill_requests + decode_requests`. `Err`: the column and what its cell is not.
fn row_consistent(
    ints: &std::collections::HashMap<&str, (usize, u64)>,
    times: &[f64; 3],
    line_no: u64,
) -> std::result::Result<(), (usize, String)> {
    let get = |name: &str| ints.get(name).copied().unwrap_or((0, 0));
    let (k, iteration) = get("iteration");
    if iteration != line_no - 2 {
        return Err((
            k,
            format!("{} (the row index of line {line_no})", line_no - 2),
        ));
    }
    let rounding_s = 2e-9 + 4.0 * f64::EPSILON * times[1];
    if (times[2] - (times[1] - times[0])).abs() > rounding_s {
        return Err((4, "end_s − start_s".into()));
    }
    let (k, requests) = get("requests");
    let sum = get("prefill_requests").1 + get("decode_requests").1;
    if requests != sum {
        return Err((k, format!("prefill_requests + decode_requests ({sum})")));
    }
    Ok(())
}

/// The cost model against the measurement on the very batches that ran: for the live run's
/// iterations that carry a prediction, the mean predicted and measured times — over all of
/// them, those without prefill tokens (decode-only) and those with (`sim` = predicted, `live` =
/// measured).
pub fn iteration_model_rows(rows: &[IterationRow]) -> Vec<CompareRow> {
    let mut out = Vec::new();
    type Pick = fn(&IterationRow) -> bool;
    let groups: [(&str, Pick); 3] = [
        ("mean", |_| true),
        ("decode_mean", |r| r.prefill_tokens == 0),
        ("prefill_mean", |r| r.prefill_tokens > 0),
    ];
    for (stat, pick) in groups {
        let (mut p, mut m, mut n) = (0.0, 0.0, 0u64);
        for r in rows.iter().filter(|r| pick(r)) {
            if let Some(x) = r.predicted_s {
                p += x;
                m += r.duration_s;
                n += 1;
            }
        }
        if n > 0 {
            out.push(CompareRow {
                metric: "batch_s".into(),
                stat: stat.into(),
                sim: p / n as f64,
                live: m / n as f64,
            });
        }
    }
    out
}

/// A request's `id` must be a whole number that no earlier line of the file had (`seen`: id →
/// line): one request per row, or the comparison would count a request twice.
fn check_request_id(
    path: &Path,
    line: u64,
    cell: &str,
    seen: &mut std::collections::HashMap<u64, u64>,
) -> Result<()> {
    let bad = |msg: String| SimError::Input {
        path: path.to_path_buf(),
        line,
        field: "id".into(),
        msg,
    };
    let id = cell.trim().parse::<u64>().map_err(|_| {
        bad(format!(
            "`{}` is not a request id (a whole number ≥ 0)",
            crate::error::echo(cell)
        ))
    })?;
    if let Some(first) = seen.insert(id, line) {
        return Err(bad(format!(
            "duplicate request id {id} (also on line {first}): a requests.csv has one row per request"
        )));
    }
    Ok(())
}

/// The `jct_s`, `ttft_s` and `tpot_s` columns of a run directory's `requests.csv`.
fn request_columns(dir: &Path) -> Result<[Vec<f64>; 3]> {
    let path = dir.join("requests.csv");
    // As text: a NUL byte (`/dev/zero`, a sparse file) fails at once, not after gigabytes.
    let text =
        crate::input::read_text(&path, crate::input::MAX_DATA_BYTES).map_err(|e| io(&path, e))?;
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let headers = rd.headers().map_err(|e| io(&path, e))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| io(&path, format!("no `{name}` column")))
    };
    let idx = [col("jct_s")?, col("ttft_s")?, col("tpot_s")?];
    let id_col = col("id")?;
    // Required, as every run writes them: without them the checks below were skipped, and a
    // requests.csv with both dropped and its latencies scaled compared silently (round 12, 10).
    let (arrival, finish, first_token) =
        (col("arrival_s")?, col("finish_s")?, col("first_token_s")?);
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut out: [Vec<f64>; 3] = Default::default();
    for rec in rd.records() {
        let rec = rec.map_err(|e| crate::trace::csv_reader::csv_err(&path, 0, "(row)", e))?;
        let line = rec.position().map_or(0, |p| p.line());
        check_request_id(&path, line, rec.get(id_col).unwrap_or(""), &mut seen)?;
        let a = rec.get(arrival);
        let names = ["arrival_s", "finish_s", "jct_s"];
        check_jct(&path, line, [a, rec.get(finish), rec.get(idx[0])], names)?;
        let names = ["arrival_s", "first_token_s", "ttft_s"];
        check_jct(
            &path,
            line,
            [a, rec.get(first_token), rec.get(idx[1])],
            names,
        )?;
        for (k, &i) in idx.iter().enumerate() {
            let cell = rec.get(i).unwrap_or("");
            if cell.is_empty() {
                continue;
            }
            out[k].push(
                cell.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| SimError::Input {
                        path: path.clone(),
                        line,
                        field: ["jct_s", "ttft_s", "tpot_s"][k].into(),
                        msg: format!(
                            "`{}` is not a latency in seconds (a finite number ≥ 0)",
                            crate::error::echo(cell)
                        ),
                    })?,
            );
        }
    }
    if out[0].is_empty() {
        return Err(io(
            &path,
            "holds no requests (header only): nothing to compare",
        ));
    }
    check_request_count(dir, seen.len() as u64)?;
    Ok(out)
}

/// A row's `jct_s` must be its `finish_s − arrival_s`, and its `ttft_s` its `first_token_s −
/// arrival_s` (within the rounding of 9 decimals): a hand-edited or corrupted cell would move
/// the comparison silently. `cells` are the start, end and span cells that `names` name (arrival,
/// finish, jct). A row with a `jct_s` (a finished request) needs both times, finite, not
/// negative, and the finish not before the arrival; a `jct_s` that is not a number is reported
/// by the caller.
fn check_jct(path: &Path, line: u64, cells: [Option<&str>; 3], names: [&str; 3]) -> Result<()> {
    let jct = cells[2].unwrap_or("").trim();
    if jct.is_empty() {
        return Ok(());
    }
    let bad = |field: &str, msg: String| SimError::Input {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        msg,
    };
    let time = |k: usize, field: &str| -> Result<f64> {
        let c = cells[k].unwrap_or("");
        (c.trim().parse::<f64>().ok())
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| {
                bad(
                    field,
                    match c.trim() {
                        "" => format!(
                            "empty in a row with a {} (such a request has both times)",
                            names[2]
                        ),
                        c => format!(
                            "`{}` is not a time in seconds (a finite number ≥ 0)",
                            crate::error::echo(c)
                        ),
                    },
                )
            })
    };
    let (a, f) = (time(0, names[0])?, time(1, names[1])?);
    if f < a {
        return Err(bad(
            names[1],
            format!(
                "{} is before {} {}: a request's times do not go back",
                crate::error::num(f),
                names[0],
                crate::error::num(a)
            ),
        ));
    }
    let Ok(j) = jct.parse::<f64>() else {
        return Ok(());
    };
    let want = f - a;
    if !j.is_finite() || (j - want).abs() <= 2e-9 + 1e-12 * f.abs().max(a.abs()) {
        return Ok(());
    }
    Err(bad(
        names[2],
        format!(
            "`{}` is not {} − {} ({} − {} = {}): a requests.csv written by servesim has them agree",
            crate::error::echo(jct),
            names[1],
            names[0],
            crate::error::num(f),
            crate::error::num(a),
            crate::error::num(want)
        ),
    ))
}

/// The rows of `dir/requests.csv` must be the requests `dir/summary.json` counts (`requests`):
/// a file cut short (or padded) would be compared as if it were the run.
fn check_request_count(dir: &Path, rows: u64) -> Result<()> {
    check_row_count(dir, "requests.csv", "requests", rows)
}

/// The rows of `dir/FILE` must be what `dir/summary.json`'s `key` counts.
fn check_row_count(dir: &Path, file: &str, key: &str, rows: u64) -> Result<()> {
    let path = dir.join("summary.json");
    let summary = read_json(&path)?;
    // A count that is missing or not a whole number cannot vouch for the file (`40.0` skipped the
    // check: round 9, 07).
    let Some(n) = summary[key].as_u64() else {
        return Err(io(
            &path,
            format!(
                "`{key}` must be the run's number of {key} (a whole number), got {}; rerun the run, or compare a complete copy",
                crate::error::echo(&summary[key].to_string())
            ),
        ));
    };
    if n == rows {
        return Ok(());
    }
    Err(io(
        &dir.join(file),
        format!(
            "holds {rows} {key} but {} counts {n}: the file was cut short or edited; rerun the run, or compare a complete copy",
            path.display()
        ),
    ))
}

/// Mean iteration time (s) from a run directory's `summary.json`.
fn mean_iteration_s(dir: &Path) -> Result<Option<f64>> {
    let path = dir.join("summary.json");
    let text =
        crate::input::read_text(&path, crate::input::MAX_CONFIG_BYTES).map_err(|e| io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
    let makespan = v["makespan_s"].as_f64().unwrap_or(0.0);
    let (mut busy, mut iters) = (0.0, 0u64);
    for r in v["replicas"].as_array().into_iter().flatten() {
        busy += r["busy_fraction"].as_f64().unwrap_or(0.0) * makespan;
        iters += r["iterations"].as_u64().unwrap_or(0);
    }
    Ok((iters > 0).then(|| busy / iters as f64))
}

/// The error table of `live` against `sim`.
pub fn compare(sim: &Path, live: &Path) -> Result<Vec<CompareRow>> {
    let s = request_columns(sim)?;
    let l = request_columns(live)?;
    let mut rows = Vec::new();
    for (k, metric) in ["jct_s", "ttft_s", "tpot_s"].iter().enumerate() {
        let (Some(ds), Some(dl)) = (Dist::of(s[k].clone()), Dist::of(l[k].clone())) else {
            continue;
        };
        for (stat, a, b) in [
            ("mean", ds.mean, dl.mean),
            ("p50", ds.p50, dl.p50),
            ("p99", ds.p99, dl.p99),
        ] {
            rows.push(CompareRow {
                metric: metric.to_string(),
                stat: stat.into(),
                sim: a,
                live: b,
            });
        }
    }
    if let (Some(a), Some(b)) = (mean_iteration_s(sim)?, mean_iteration_s(live)?) {
        rows.push(CompareRow {
            metric: "iteration_s".into(),
            stat: "mean".into(),
            sim: a,
            live: b,
        });
    }
    rows.extend(iteration_model_rows(&read_iterations_csv(
        &live.join("iterations.csv"),
    )?));
    Ok(rows)
}

impl CompareRow {
    /// The row's `compare.csv` cells (the columns of [`COMPARE_HEADER`]), without a newline.
    pub fn csv_cells(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.metric,
            self.stat,
            fixed(self.sim, 9),
            fixed(self.live, 9),
            fixed(self.abs_error(), 9),
            fixed(self.rel_error(), 6)
        )
    }
}

/// `x` with `decimals` decimals, or in scientific notation (as many significant digits) when it
/// is 1e12 or more in magnitude: a 1e300 JCT printed 300 digits.
fn fixed(x: f64, decimals: usize) -> String {
    if x.is_finite() && x.abs() >= 1e12 {
        format!("{x:.decimals$e}")
    } else {
        format!("{x:.decimals$}")
    }
}

/// `compare.csv` text.
pub fn compare_csv(rows: &[CompareRow]) -> String {
    let mut s = String::from(COMPARE_HEADER);
    s.push('\n');
    for r in rows {
        let _ = writeln!(s, "{}", r.csv_cells());
    }
    s
}

/// The printed table.
pub fn compare_table(rows: &[CompareRow]) -> String {
    let mut s = format!(
        "{:<12} {:<12} {:>12} {:>12} {:>9}\n",
        "metric", "stat", "sim", "live", "error"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<12} {:<12} {:>12} {:>12} {:>8}%",
            r.metric,
            r.stat,
            fixed(r.sim, 6),
            fixed(r.live, 6),
            fixed(r.rel_error() * 100.0, 2)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers print with their usual decimals, and in scientific notation from 1e12 on (a
    /// 1e300 JCT printed as a 300-digit number).
    #[test]
    fn huge_numbers_print_in_scientific_notation() {
        let row = |live: f64| CompareRow {
            metric: "jct_s".into(),
            stat: "mean".into(),
            sim: 11.5,
            live,
        };
        let t = compare_table(&[row(12.0), row(1e300)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[1],
            "jct_s        mean            11.500000    12.000000     4.35%"
        );
        assert!(
            lines[2].len() < 80 && lines[2].contains("1.000000e300"),
            "{}",
            lines[2]
        );
        let csv = compare_csv(&[row(1e300)]);
        assert!(csv.len() < 200 && csv.contains("1.000000000e300"), "{csv}");
        assert_eq!(
            row(12.0).csv_cells(),
            "jct_s,mean,11.500000000,12.000000000,0.500000000,0.043478"
        );
    }
}
