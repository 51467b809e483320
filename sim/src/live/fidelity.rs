//! `servesim fidelity`: the simulator's error against real execution, as one table. For each
//! policy and arrival rate of a scenario it runs the simulation (the scenario's cost model: a
//! calibrated profile of the machine), then the same trace live on a compute backend, then
//! [`super::compare`]; this module holds the cells and the table, the command
//! (`cli/fidelity.rs`) runs them.

use std::fmt::Write as _;

use super::compare::CompareRow;

/// One policy at one rate: its comparison rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub policy: String,
    pub rate_per_s: f64,
    /// Requests completed in the live run.
    pub requests: u64,
    pub rows: Vec<CompareRow>,
}

impl Cell {
    /// `<policy>-r<rate>`: the cell's directory under `runs/`. The rate is written in full
    /// (`1.5`, `2`) up to 24 characters, beyond that in the shortest exponent form that reads
    /// back exactly (`1e-30`), so the name stays short, unique and deterministic.
    pub fn dir_name(policy: &str, rate_per_s: f64) -> String {
        let plain = format!("{rate_per_s}");
        if plain.len() <= 24 {
            format!("{policy}-r{plain}")
        } else {
            format!("{policy}-r{rate_per_s:e}")
        }
    }

    fn row(&self, metric: &str, stat: &str) -> Option<&CompareRow> {
        self.rows
            .iter()
            .find(|r| r.metric == metric && r.stat == stat)
    }
}

/// `policy,rate_per_s`, then the columns of [`super::compare::COMPARE_HEADER`].
pub const FIDELITY_HEADER: &str = "policy,rate_per_s,metric,stat,sim,live,abs_error,rel_error";

/// `fidelity.csv`: every comparison row of every cell.
pub fn fidelity_csv(cells: &[Cell]) -> String {
    let mut s = String::from(FIDELITY_HEADER);
    s.push('\n');
    for c in cells {
        for r in &c.rows {
            let _ = writeln!(s, "{},{},{}", c.policy, c.rate_per_s, r.csv_cells());
        }
    }
    s
}

/// The columns of the Markdown table: (heading, metric, stat).
const COLUMNS: [(&str, &str, &str); 10] = [
    ("JCT mean", "jct_s", "mean"),
    ("JCT p99", "jct_s", "p99"),
    ("TTFT mean", "ttft_s", "mean"),
    ("TTFT p99", "ttft_s", "p99"),
    ("TPOT mean", "tpot_s", "mean"),
    ("TPOT p99", "tpot_s", "p99"),
    ("iteration mean", "iteration_s", "mean"),
    ("batch model", "batch_s", "mean"),
    ("decode batches", "batch_s", "decode_mean"),
    ("prefill batches", "batch_s", "prefill_mean"),
];

fn percent(r: Option<&CompareRow>) -> String {
    match r.map(CompareRow::rel_error) {
        Some(e) if e.is_finite() => format!("{:+.1} %", e * 100.0),
        _ => "–".into(),
    }
}

/// `fidelity.md`: `title`, then one row per cell with the relative error `(live − sim) / sim` of
/// each column, and the simulated and live mean JCT for scale.
pub fn fidelity_markdown(title: &str, cells: &[Cell]) -> String {
    let mut s = format!("{title}\n\n");
    s.push_str("| policy | rate (req/s) | requests | JCT mean sim → live (s) |");
    for (h, _, _) in COLUMNS {
        let _ = write!(s, " {h} |");
    }
    s.push_str("\n|---|---:|---:|---:|");
    s.push_str(&"---:|".repeat(COLUMNS.len()));
    s.push('\n');
    for c in cells {
        let jct = c
            .row("jct_s", "mean")
            .map(|r| format!("{:.3} → {:.3}", r.sim, r.live))
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            s,
            "| {} | {} | {} | {jct} |",
            c.policy, c.rate_per_s, c.requests
        );
        for (_, metric, stat) in COLUMNS {
            let _ = write!(s, " {} |", percent(c.row(metric, stat)));
        }
        s.push('\n');
    }
    s.push_str(
        "\nErrors are (live − sim) / sim. JCT, TTFT and TPOT are over the requests of each run; \
         `iteration mean` is busy time per iteration of each run (the two runs' batches differ); \
         `batch model` replays the live run's own batches through the cost and swap models \
         (predicted against measured, mean over its iterations; decode-only and prefill-holding \
         batches apart), which isolates the model's error from the trajectory's.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, stat: &str, sim: f64, live: f64) -> CompareRow {
        CompareRow {
            metric: metric.into(),
            stat: stat.into(),
            sim,
            live,
        }
    }

    #[test]
    fn the_table_shows_signed_relative_errors_and_dashes_for_missing_rows() {
        let cells = vec![Cell {
            policy: "vllm".into(),
            rate_per_s: 1.5,
            requests: 300,
            rows: vec![
                row("jct_s", "mean", 2.0, 2.1),
                row("jct_s", "p99", 10.0, 9.0),
                row("batch_s", "decode_mean", 0.010, 0.0105),
            ],
        }];
        let md = fidelity_markdown("# t", &cells);
        let line = md.lines().find(|l| l.starts_with("| vllm")).unwrap();
        assert!(line.contains("| 1.5 | 300 | 2.000 → 2.100 | +5.0 % | -10.0 % | – |"));
        assert!(line.contains("| +5.0 % | – |"), "{line}");
        let csv = fidelity_csv(&cells);
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.lines()
                .nth(2)
                .unwrap()
                .starts_with("vllm,1.5,jct_s,p99,10.0")
        );
        assert_eq!(Cell::dir_name("vllm", 1.5), "vllm-r1.5");
        assert_eq!(Cell::dir_name("vllm", 2.0), "vllm-r2");
        assert_eq!(Cell::dir_name("vllm", 1e300), "vllm-r1e300");
        assert_eq!(Cell::dir_name("vllm", 1.25e-300), "vllm-r1.25e-300");
    }
}
