//! An executor that checks the engine's request-level view of every iteration ([`ExecBatch`])
//! against its own bookkeeping, built only from that view: per request, the tokens whose KV it
//! holds and where (device or host). Each call must agree with what the previous calls said:
//! a request runs with exactly the cached tokens it holds, never while swapped out, never after
//! it finished, and from token 0 after a recompute preemption; swaps move what is held; the
//! items add up to the engine's [`BatchShape`]. Durations come from the wrapped executor. Used
//! by tests to show that a real backend driven by these calls would compute what the simulator
//! accounts for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{ExecBatch, ExecItem, Executor, KvEvent, KvEventKind, Pipeline};
use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::vocab::time::Ns;

/// Where a request's KV is, as the calls so far describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Device,
    Host,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    tokens: u32,
    place: Place,
    blocks: u32,
    host_blocks: u32,
}

/// What a [`CheckingExecutor`] saw (shared, to read after the run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub iterations: u64,
    pub prefill_items: u64,
    /// Prefill items that continue a partial prefill (a chunk after the first).
    pub later_chunks: u64,
    pub decode_items: u64,
    pub finishes: u64,
    pub recomputes: u64,
    pub swap_outs: u64,
    pub swap_ins: u64,
    /// Requests whose KV is still held somewhere (0 once every request finished).
    pub held: u64,
}

/// Checks every iteration's [`ExecBatch`]; the run fails at the first disagreement.
pub struct CheckingExecutor {
    inner: Box<dyn Executor>,
    block_tokens: u32,
    held: BTreeMap<u64, Held>,
    finished: BTreeSet<u64>,
    stats: Arc<Mutex<CheckStats>>,
}

impl CheckingExecutor {
    /// Wrap `inner` (which gives the durations and the pipeline); KV blocks hold `block_tokens`.
    pub fn new(inner: Box<dyn Executor>, block_tokens: u32) -> Self {
        CheckingExecutor {
            inner,
            block_tokens,
            held: BTreeMap::new(),
            finished: BTreeSet::new(),
            stats: Arc::default(),
        }
    }
    /// A handle on the statistics, readable after the executor moved into the engine.
    pub fn stats(&self) -> Arc<Mutex<CheckStats>> {
        self.stats.clone()
    }

    /// Check `batch` against the state, and apply it.
    pub fn check(&mut self, batch: &ExecBatch, shape: &BatchShape) -> Result<()> {
        let n = self.stats.lock().map(|s| s.iterations).unwrap_or(0);
        let fail = |msg: String| SimError::config(format!("KV check, iteration {n}: {msg}"));
        for e in &batch.events {
            self.apply_event(e).map_err(&fail)?;
        }
        let mut seen = BTreeSet::new();
        let mut sum = BatchShape::default();
        for item in &batch.items {
            if !seen.insert(item.id) {
                return Err(fail(format!("request {} runs twice", item.id)));
            }
            self.apply_item(item).map_err(&fail)?;
            if item.prefill {
                sum.add_prefill_chunk(item.new_tokens, item.cached_tokens);
            } else {
                sum.add_decode(item.cached_tokens + 1);
            }
        }
        if sum != *shape {
            return Err(fail(format!(
                "the items add up to {sum}, but the engine's batch is {shape}"
            )));
        }
        let mut s = self
            .stats
            .lock()
            .map_err(|_| fail("stats poisoned".into()))?;
        s.iterations += 1;
        s.held = self.held.len() as u64;
        Ok(())
    }

    fn apply_event(&mut self, e: &KvEvent) -> std::result::Result<(), String> {
        let id = e.id;
        let Some(h) = self.held.get_mut(&id) else {
            return Err(format!("{:?} of request {id}, which holds no KV", e.kind));
        };
        let mut s = self
            .stats
            .lock()
            .map_err(|_| "stats poisoned".to_string())?;
        match e.kind {
            KvEventKind::Finish | KvEventKind::Recompute => {
                let blocks = if h.place == Place::Device {
                    h.blocks
                } else {
                    0
                };
                if e.blocks != blocks {
                    return Err(format!(
                        "{:?} of request {id} frees {} device blocks, but it holds {blocks}",
                        e.kind, e.blocks
                    ));
                }
                self.held.remove(&id);
                if e.kind == KvEventKind::Finish {
                    self.finished.insert(id);
                    s.finishes += 1;
                } else {
                    s.recomputes += 1;
                }
            }
            KvEventKind::SwapOut => {
                if h.place != Place::Device || e.blocks != h.blocks {
                    return Err(format!(
                        "swap-out of request {id} ({} blocks), which holds {} blocks on the {:?}",
                        e.blocks, h.blocks, h.place
                    ));
                }
                h.place = Place::Host;
                h.host_blocks = e.host_blocks;
                s.swap_outs += 1;
            }
            KvEventKind::SwapIn => {
                if h.place != Place::Host || e.blocks != h.blocks || e.host_blocks != h.host_blocks
                {
                    return Err(format!(
                        "swap-in of request {id} ({} blocks, {} host blocks), which holds {} blocks ({} host) on the {:?}",
                        e.blocks, e.host_blocks, h.blocks, h.host_blocks, h.place
                    ));
                }
                h.place = Place::Device;
                s.swap_ins += 1;
            }
        }
        Ok(())
    }

    fn apply_item(&mut self, item: &ExecItem) -> std::result::Result<(), String> {
        let id = item.id;
        if self.finished.contains(&id) {
            return Err(format!("request {id} runs after it finished"));
        }
        if item.new_tokens == 0 || (!item.prefill && item.new_tokens != 1) {
            return Err(format!(
                "request {id} runs {} new tokens as a {}",
                item.new_tokens,
                if item.prefill { "prefill" } else { "decode" }
            ));
        }
        let (tokens, blocks) = match self.held.get(&id) {
            None => (0, 0),
            Some(h) if h.place == Place::Host => {
                return Err(format!("request {id} runs while its KV is on the host"));
            }
            Some(h) => (h.tokens, h.blocks),
        };
        if item.cached_tokens != tokens {
            return Err(format!(
                "request {id} runs with {} cached tokens, but it holds {tokens}",
                item.cached_tokens
            ));
        }
        if !item.prefill && tokens == 0 {
            return Err(format!("request {id} decodes with no KV"));
        }
        let after = tokens as u64 + item.new_tokens as u64;
        if item.blocks < blocks || (item.blocks as u64) * (self.block_tokens as u64) < after {
            return Err(format!(
                "request {id} has {} blocks for {after} tokens (held {blocks} before)",
                item.blocks
            ));
        }
        self.held.insert(
            id,
            Held {
                tokens: after as u32,
                place: Place::Device,
                blocks: item.blocks,
                host_blocks: 0,
            },
        );
        let mut s = self
            .stats
            .lock()
            .map_err(|_| "stats poisoned".to_string())?;
        if !item.prefill {
            s.decode_items += 1;
        } else {
            s.prefill_items += 1;
            s.later_chunks += (tokens > 0) as u64;
        }
        Ok(())
    }
}

impl Executor for CheckingExecutor {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        self.inner.run_iteration(shape)
    }
    fn wants_requests(&self) -> bool {
        true
    }
    fn run_batch(&mut self, batch: &ExecBatch, shape: &BatchShape) -> Result<Ns> {
        self.check(batch, shape)?;
        self.inner.run_iteration(shape)
    }
    fn end_run(&mut self, batch: &ExecBatch) -> Result<()> {
        if !batch.items.is_empty() {
            return Err(SimError::config("KV check: the end of the run has a batch"));
        }
        for e in &batch.events {
            self.apply_event(e)
                .map_err(|msg| SimError::config(format!("KV check, end of run: {msg}")))?;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.held = self.held.len() as u64;
        }
        Ok(())
    }
    fn pipeline(&self) -> Pipeline {
        self.inner.pipeline()
    }
}
