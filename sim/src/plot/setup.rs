//! The setup line under a figure's title (model, GPUs × count, trace, requests, seeds, what the
//! error bars are), read from the scenario recorded in each run's `config.json`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// What the figures of one sweep share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepSetup {
    /// The setup line (parts joined by ` · `).
    pub line: String,
    /// `[slo] tpot_s` of the scenario, when every run has the same one.
    pub tpot_s: Option<f64>,
    /// Number of seeds per point (the error bars span them).
    pub seeds: usize,
    /// One line per run `config.json` that is there but unreadable, not JSON, or without a
    /// `scenario` object (its run is left out of the setup line).
    pub notes: Vec<String>,
}

/// The base name of the path at `v` (a JSON string), if any.
fn base_name(v: &Value) -> Option<String> {
    let p = Path::new(v.as_str()?);
    Some(p.file_name()?.to_string_lossy().into_owned())
}

/// "8 × a100-40gb (TP 4, PP 2)" for a scenario object (config.json's `scenario`), or the groups of
/// a heterogeneous cluster joined by ` + `.
pub fn gpus(s: &Value) -> String {
    let int = |v: &Value, k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
    let gpu = s.get("gpu").and_then(Value::as_str).unwrap_or("?");
    let one = |gpu: &str, count: u64, tp: u64, pp: u64| {
        let mut par = Vec::new();
        if tp > 1 {
            par.push(format!("TP {tp}"));
        }
        if pp > 1 {
            par.push(format!("PP {pp}"));
        }
        if count > 1 {
            par.push(format!("{count} replicas"));
        }
        let n = count * tp * pp;
        if par.is_empty() {
            format!("{n} × {gpu}")
        } else {
            format!("{n} × {gpu} ({})", par.join(", "))
        }
    };
    let (tp, pp) = (int(s, "tp", 1), int(s, "pp", 1));
    match s.get("replica_groups").and_then(Value::as_array) {
        Some(groups) if !groups.is_empty() => groups
            .iter()
            .map(|g| {
                let name = g.get("gpu").and_then(Value::as_str).unwrap_or(gpu);
                one(name, int(g, "count", 1), int(g, "tp", tp), int(g, "pp", pp))
            })
            .collect::<Vec<_>>()
            .join(" + "),
        _ => one(gpu, int(s, "replicas", 1), tp, pp),
    }
}

/// "trace sharegpt.csv" or "poisson arrivals, lengths of sharegpt_vllm_opt.csv" for a
/// scenario object.
pub fn trace(s: &Value) -> String {
    let t = s.get("trace").cloned().unwrap_or(Value::Null);
    if let Some(f) = t.get("file").and_then(base_name) {
        return format!("trace {f}");
    }
    let arrival =
        t.get("arrival")
            .and_then(Value::as_str)
            .unwrap_or(if t.get("replay_file").is_some() {
                "replay"
            } else {
                "synthetic"
            });
    let lengths = t
        .get("lengths_file")
        .and_then(base_name)
        .map_or("parametric lengths".to_string(), |f| {
            format!("lengths of {f}")
        });
    format!("{arrival} arrivals, {lengths}")
}

/// The setup parts of one scenario object: model, GPUs, trace.
pub fn scenario_parts(s: &Value) -> [String; 3] {
    let model = s
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    [model, gpus(s), trace(s)]
}

/// The distinct values of each part over `scenarios`, joined by ` / ` (at most 3, else
/// `varies`).
fn join_parts(scenarios: &[Value]) -> Vec<String> {
    let mut sets: [Vec<String>; 3] = Default::default();
    for s in scenarios {
        for (set, v) in sets.iter_mut().zip(scenario_parts(s)) {
            if !set.contains(&v) {
                set.push(v);
            }
        }
    }
    sets.into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.len() > 3 {
                "varies".to_string()
            } else {
                s.join(" / ")
            }
        })
        .collect()
}

/// "5000 requests" (or "1000–5000 requests") from the distinct request counts.
fn requests(counts: &BTreeSet<u64>) -> Option<String> {
    match (counts.first(), counts.last()) {
        (Some(a), Some(b)) if a == b => Some(format!("{a} requests")),
        (Some(a), Some(b)) => Some(format!("{a}–{b} requests")),
        _ => None,
    }
}

/// "seeds 0,1,2 · error bars: min–max over 3 seeds" (or "seed 0 · one seed: no error bars").
fn seeds_part(seeds: &BTreeSet<u64>) -> String {
    let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
    match seeds.len() {
        0 => String::new(),
        1 => format!("seed {} · one seed: no error bars", list[0]),
        n => format!(
            "seeds {} · error bars: min–max over {n} seeds",
            list.join(",")
        ),
    }
}

/// The setup of the sweep in `sweep_dir`, from the `config.json` of its runs (`runs/*/`) and the
/// `seeds` of its rows. Missing files leave their parts out; an invalid one also gets a note
/// (never an error: the figures are drawn without it).
pub fn sweep_setup(sweep_dir: &Path, seeds: &BTreeSet<u64>) -> SweepSetup {
    let mut scenarios = Vec::new();
    let mut notes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(sweep_dir.join("runs")) {
        let mut dirs: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            let path = d.join("config.json");
            if !path.exists() {
                continue;
            }
            match run_scenario(&path) {
                Ok(s) => scenarios.push(s),
                Err(e) => notes.push(format!(
                    "{}: {e}; the figures' setup line leaves this run out",
                    path.display()
                )),
            }
        }
    }
    let counts: BTreeSet<u64> = scenarios
        .iter()
        .filter_map(|s| s.pointer("/trace/num_requests").and_then(Value::as_u64))
        .collect();
    let tpots: BTreeSet<u64> = scenarios
        .iter()
        .filter_map(|s| s.pointer("/slo/tpot_s").and_then(Value::as_f64))
        .map(f64::to_bits)
        .collect();
    let with_slo = scenarios.iter().filter(|s| s.get("slo").is_some()).count();
    let tpot_s = match tpots.first() {
        Some(&b) if tpots.len() == 1 && with_slo == scenarios.len() => Some(f64::from_bits(b)),
        _ => None,
    };
    let mut parts = join_parts(&scenarios);
    parts.extend(requests(&counts));
    let s = seeds_part(seeds);
    if !s.is_empty() {
        parts.push(s);
    }
    SweepSetup {
        line: parts.join(" · "),
        tpot_s,
        seeds: seeds.len(),
        notes,
    }
}

/// The `scenario` object of a run's `config.json` at `path`, or why not ("line L, column C: …"
/// for JSON that does not parse).
fn run_scenario(path: &Path) -> std::result::Result<Value, String> {
    let text = crate::input::read_text(path, 1 << 22).map_err(|e| format!("unreadable: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        let what = e.to_string();
        let what = what.split(" at line ").next().unwrap_or(&what).to_string();
        format!(
            "line {}, column {}: not valid JSON ({what})",
            e.line(),
            e.column()
        )
    })?;
    match v.get("scenario") {
        Some(s) if s.is_object() => Ok(s.clone()),
        _ => {
            Err("line 1, column 1: no `scenario` object (not a servesim run's config.json)".into())
        }
    }
}

/// The setup line of a single scenario object and its `seeds` (for `servesim capacity`).
pub fn scenario_setup(scenario: &Value, seeds: &[u64]) -> String {
    let mut parts: Vec<String> = scenario_parts(scenario).into();
    if let Some(n) = scenario
        .pointer("/trace/num_requests")
        .and_then(Value::as_u64)
    {
        parts.push(format!("{n} requests"));
    }
    let seeds: BTreeSet<u64> = seeds.iter().copied().collect();
    let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
    match seeds.len() {
        0 => {}
        1 => parts.push(format!("seed {}", list[0])),
        n => parts.push(format!(
            "seeds {} (the statistic is their mean; n = {n})",
            list.join(",")
        )),
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_parts() {
        let s: Value = serde_json::json!({
            "model": "opt-66b", "gpu": "a100-80gb", "tp": 4, "pp": 1, "replicas": 1,
            "trace": {"arrival": "poisson", "lengths_file": "../traces/sharegpt.csv", "num_requests": 500},
        });
        assert_eq!(
            scenario_parts(&s),
            [
                "opt-66b",
                "4 × a100-80gb (TP 4)",
                "poisson arrivals, lengths of sharegpt.csv"
            ]
        );
        assert_eq!(
            scenario_setup(&s, &[0, 1, 2]),
            "opt-66b · 4 × a100-80gb (TP 4) · poisson arrivals, lengths of sharegpt.csv · 500 requests · seeds 0,1,2 (the statistic is their mean; n = 3)"
        );
        let g: Value = serde_json::json!({
            "model": "m", "gpu": "h100-80gb", "tp": 2,
            "replica_groups": [{"count": 2}, {"count": 1, "gpu": "a100-80gb", "tp": 4}],
            "trace": {"file": "x/y.csv"},
        });
        assert_eq!(
            gpus(&g),
            "4 × h100-80gb (TP 2, 2 replicas) + 4 × a100-80gb (TP 4)"
        );
        assert_eq!(trace(&g), "trace y.csv");
        // Nothing known: no panic.
        assert_eq!(scenario_parts(&Value::Null)[0], "?");
    }
}
