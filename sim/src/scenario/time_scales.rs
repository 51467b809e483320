//! The durations a scenario implies, checked before the run: one iteration of the largest and the
//! smallest batch, a stage-to-stage send and a KV copy must each be a finite, non-negative time of
//! at most [`MAX_STEP_S`]. A value in the wrong unit (a latency of `1e300` s, an efficiency of
//! `1e-300`) is then an error naming its table and line, instead of a failure mid-run.

use super::{Loaded, Resolved};
use crate::cost::BatchShape;
use crate::error::{Result, num};
use crate::swap::Direction;

/// The longest single step (iteration, send or copy) a scenario may imply: about 11.6 days.
pub const MAX_STEP_S: f64 = 1e6;

/// Whether `s` is a usable step time.
fn sane(s: f64) -> bool {
    s.is_finite() && (0.0..=MAX_STEP_S).contains(&s)
}

impl Loaded {
    /// Check the step times `r` implies (see the module docs).
    pub(super) fn check_time_scales(&self, r: &Resolved) -> Result<()> {
        let l = r.limits;
        let mut smallest = BatchShape::default();
        smallest.add_decode(1);
        let mut largest = BatchShape::default();
        largest.add_prefill(l.max_batch_tokens.min(l.max_context_tokens));
        for _ in 1..l.max_batch_size.min(4096) {
            largest.add_decode(l.max_context_tokens);
        }
        let cost = r.cost_model()?;
        for shape in [&smallest, &largest] {
            // A failing query is the cost model's own error, reported when a run forms that batch.
            if let Ok(s) = cost.iteration_s(shape)
                && !sane(s)
            {
                return Err(self.err_at(&["cost"], format!(
                    "[cost] model `{}` gives an iteration of {} s for a batch of {shape}; one iteration may take at most {} s (is a value in the wrong unit?)",
                    cost.name(), num(s), num(MAX_STEP_S)
                )));
            }
        }
        let p = r.pipeline;
        let send_s = p.send_s(l.max_batch_tokens as u64 + l.max_batch_size as u64);
        if !sane(send_s) {
            let key = if sane(p.send_latency_s) {
                "send_bytes_per_s"
            } else {
                "send_latency_s"
            };
            return Err(self.err_at(&["pipeline", key], format!(
                "[pipeline] a stage-to-stage send of one batch takes {} s; it may take at most {} s (is a value in the wrong unit?)",
                num(send_s), num(MAX_STEP_S)
            )));
        }
        self.check_copy_times(r)
    }

    /// A copy of the most KV blocks one request can hold, each way.
    fn check_copy_times(&self, r: &Resolved) -> Result<()> {
        let block_tokens = r.scenario.memory.block_tokens.max(1);
        let blocks = r
            .limits
            .max_context_tokens
            .div_ceil(block_tokens)
            .clamp(1, r.kv_capacity_blocks.max(1));
        let fp16_bytes = blocks as u64 * r.kv_block_bytes;
        let bytes = r.offload.wire_bytes(fp16_bytes);
        let swap = r.swap_model(None);
        for dir in [Direction::DeviceToHost, Direction::HostToDevice] {
            let s = swap.transfer_s(dir, bytes, blocks) + r.offload.quant_s(fp16_bytes);
            if !sane(s) {
                let model = if r.swap_profile.is_some() {
                    "swap profile"
                } else {
                    "swap model"
                };
                return Err(self.err_at(&["swap"], format!(
                    "[swap] the {model} gives a copy of {blocks} KV blocks ({bytes} bytes, one request at the context limit) a time of {} s; a copy may take at most {} s (is a value in the wrong unit?)",
                    num(s), num(MAX_STEP_S)
                )));
            }
        }
        Ok(())
    }
}
