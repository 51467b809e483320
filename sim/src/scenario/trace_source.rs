//! `[trace]` resolved into a [`TraceSource`]: a trace file, or a synthetic trace with its
//! arrival process and lengths; the key combinations that contradict one another are refused.

use std::path::Path;

use super::{Loaded, SyntheticLengths, TraceSource, TraceSpec};
use crate::error::Result;
use crate::trace::ArrivalProcess;

impl Loaded {
    /// `[trace]` (after the CLI overrides; `trace_from_cli`: its `file` came from `--trace`).
    pub(super) fn resolve_trace(&self, t: &TraceSpec, trace_from_cli: bool) -> Result<TraceSource> {
        let parametric = t.input_lengths.is_some() || t.output_lengths.is_some();
        let synthetic_keys = t.lengths_file.is_some() || parametric || t.replay_file.is_some();
        let trace = match &t.file {
            Some(_) if synthetic_keys => {
                return Err(self.err_at(
                    &["trace", "file"],
                    "[trace]: give either `file` or a synthetic trace (`lengths_file`, `input_lengths`/`output_lengths`, `replay_file`), not both",
                ));
            }
            None if !synthetic_keys => {
                return Err(self.err_at(
                    &["trace"],
                    "[trace]: give `file` (a trace CSV) or a synthetic trace (`arrival`, `rate_per_s`, `num_requests`, and `lengths_file` or `input_lengths` + `output_lengths`)",
                ));
            }
            Some(f) => self.file_trace(t, f, trace_from_cli)?,
            None => self.synthetic_trace(t)?,
        };
        if let Some(r) = t.rate_per_s
            && !(r.is_finite() && r > 0.0)
        {
            return Err(self.err_at(
                &["trace", "rate_per_s"],
                format!(
                    "[trace] rate_per_s must be a finite number > 0, got {}",
                    crate::error::num(r)
                ),
            ));
        }
        use crate::trace::synthetic::{MAX_CV, MIN_CV};
        if let Some(cv) = t.cv
            && t.arrival == Some(ArrivalProcess::Gamma)
            && !(cv.is_finite() && (MIN_CV..=MAX_CV).contains(&cv))
        {
            return Err(self.err_at(
                &["trace", "cv"],
                format!(
                    "[trace] cv must be from {MIN_CV:e} to {MAX_CV:e} for gamma arrivals, got {}",
                    crate::error::num(cv)
                ),
            ));
        }
        Ok(trace)
    }

    /// `[trace] file`: the file, its optional rate and row limit.
    fn file_trace(&self, t: &TraceSpec, f: &Path, trace_from_cli: bool) -> Result<TraceSource> {
        if t.arrival.is_some() || t.cv.is_some() || t.drop_over_context {
            return Err(self.err_at(
                &["trace", "file"],
                "[trace]: `arrival`, `cv` and `drop_over_context` apply to synthetic traces only, not to `file`",
            ));
        }
        Ok(TraceSource::File {
            path: if trace_from_cli {
                f.to_path_buf()
            } else {
                self.rel(f)
            },
            rate_per_s: t.rate_per_s,
            limit: t.num_requests,
        })
    }

    /// A synthetic trace: lengths, arrival process, `cv`, rate and request count.
    fn synthetic_trace(&self, t: &TraceSpec) -> Result<TraceSource> {
        let lengths = self.synthetic_lengths(t)?;
        let arrival = self.synthetic_arrival(t)?;
        // `cv` shapes gamma arrivals; elsewhere it may only state the process's own cv
        // (Poisson 1, constant 0), so a sweep over `arrival` can keep one `cv`.
        let own_cv = match arrival {
            ArrivalProcess::Poisson => Some(1.0),
            ArrivalProcess::Constant => Some(0.0),
            _ => None,
        };
        if let Some(cv) = t.cv
            && arrival != ArrivalProcess::Gamma
            && own_cv != Some(cv)
        {
            return Err(self.err_at(
                &["trace", "cv"],
                format!(
                    "[trace] cv = {} has no effect on `{}` arrivals{}; it shapes `arrival = \"gamma\"` only",
                    crate::error::num(cv),
                    ArrivalProcess::NAMES[arrival as usize],
                    own_cv.map_or(String::new(), |c| format!(" (whose cv is {c})"))
                ),
            ));
        }
        if arrival != ArrivalProcess::Replay && t.rate_per_s.is_none() {
            return Err(self.err_at(&["trace"], "[trace]: synthetic traces need `rate_per_s`"));
        }
        Ok(TraceSource::Synthetic {
            arrival,
            rate_per_s: t.rate_per_s,
            cv: t.cv.unwrap_or(1.0),
            replay_file: t.replay_file.as_ref().map(|p| self.rel(p)),
            lengths,
            num_requests: t.num_requests.ok_or_else(|| {
                self.err_at(&["trace"], "[trace]: synthetic traces need `num_requests`")
            })?,
            drop_over_context: t.drop_over_context,
        })
    }

    /// Lengths from `lengths_file`, or from `input_lengths` + `output_lengths` (validated).
    fn synthetic_lengths(&self, t: &TraceSpec) -> Result<SyntheticLengths> {
        let lengths = match (&t.lengths_file, &t.input_lengths, &t.output_lengths) {
            (Some(l), None, None) => SyntheticLengths::File(self.rel(l)),
            (None, Some(i), Some(o)) => {
                for (k, d) in [("input_lengths", i), ("output_lengths", o)] {
                    d.validate()
                        .map_err(|e| self.err_at(&["trace", k], format!("[trace] {k}: {e}")))?;
                }
                SyntheticLengths::Parametric {
                    input: i.clone(),
                    output: o.clone(),
                }
            }
            (Some(_), _, _) => {
                return Err(self.err_at(
                    &["trace", "lengths_file"],
                    "[trace]: give either `lengths_file` or `input_lengths` + `output_lengths`, not both",
                ));
            }
            (None, None, None) => {
                return Err(self.err_at(
                    &["trace"],
                    "[trace]: synthetic traces need lengths: `lengths_file` or `input_lengths` + `output_lengths`",
                ));
            }
            (None, _, _) => {
                return Err(self.err_at(
                    &["trace"],
                    "[trace]: `input_lengths` and `output_lengths` go together; give both",
                ));
            }
        };
        Ok(lengths)
    }

    /// The arrival process: `arrival` (default Poisson), or `replay` when `replay_file` is given.
    fn synthetic_arrival(&self, t: &TraceSpec) -> Result<ArrivalProcess> {
        let arrival = match (t.arrival, &t.replay_file) {
            (None, Some(_)) | (Some(ArrivalProcess::Replay), Some(_)) => ArrivalProcess::Replay,
            (Some(ArrivalProcess::Replay), None) => {
                return Err(self.err_at(
                    &["trace", "arrival"],
                    "[trace]: `arrival = \"replay\"` needs `replay_file` (the trace whose arrival times are replayed)",
                ));
            }
            (Some(a), Some(_)) => {
                return Err(self.err_at(
                    &["trace", "replay_file"],
                    format!(
                        "[trace]: `replay_file` goes with `arrival = \"replay\"`, not `{}`",
                        ArrivalProcess::NAMES[a as usize]
                    ),
                ));
            }
            (a, None) => a.unwrap_or(ArrivalProcess::Poisson),
        };
        Ok(arrival)
    }
}
