//! `servesim compare SIM_DIR LIVE_DIR`: how far a simulated run is from a live one. Reads both
//! directories' `requests.csv` (JCT, TTFT, TPOT: mean, p50, p99) and `summary.json` (mean
//! iteration time = Σ busy time / Σ iterations over replicas).

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

/// The `jct_s`, `ttft_s` and `tpot_s` columns of a run directory's `requests.csv`.
fn request_columns(dir: &Path) -> Result<[Vec<f64>; 3]> {
    let path = dir.join("requests.csv");
    let mut rd = csv::Reader::from_path(&path).map_err(|e| io(&path, e))?;
    let headers = rd.headers().map_err(|e| io(&path, e))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| io(&path, format!("no `{name}` column")))
    };
    let idx = [col("jct_s")?, col("ttft_s")?, col("tpot_s")?];
    let mut out: [Vec<f64>; 3] = Default::default();
    for rec in rd.records() {
        let rec = rec.map_err(|e| io(&path, e))?;
        for (k, &i) in idx.iter().enumerate() {
            let cell = rec.get(i).unwrap_or("");
            if cell.is_empty() {
                continue;
            }
            out[k].push(
                cell.parse()
                    .map_err(|_| io(&path, format!("bad number `{cell}`")))?,
            );
        }
    }
    Ok(out)
}

/// Mean iteration time (s) from a run directory's `summary.json`.
fn mean_iteration_s(dir: &Path) -> Result<Option<f64>> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
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
    Ok(rows)
}

/// `compare.csv` text.
pub fn compare_csv(rows: &[CompareRow]) -> String {
    let mut s = String::from(COMPARE_HEADER);
    s.push('\n');
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.9},{:.9},{:.9},{:.6}",
            r.metric,
            r.stat,
            r.sim,
            r.live,
            r.abs_error(),
            r.rel_error()
        );
    }
    s
}

/// The printed table.
pub fn compare_table(rows: &[CompareRow]) -> String {
    let mut s = format!(
        "{:<12} {:<5} {:>12} {:>12} {:>9}\n",
        "metric", "stat", "sim", "live", "error"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<12} {:<5} {:>12.6} {:>12.6} {:>8.2}%",
            r.metric,
            r.stat,
            r.sim,
            r.live,
            r.rel_error() * 100.0
        );
    }
    s
}
