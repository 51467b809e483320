//! Which KV blocks each sequence holds, in which pool: the bookkeeping every backend shares
//! (admitting an iteration's steps, releasing, and the block lists of a swap). The backends only
//! move the data.

use std::collections::HashMap;

use crate::attention::SeqRows;
use crate::kv::FreeList;
use crate::{BLOCK_TOKENS, BackendError, SeqStep};

#[derive(Debug, Clone)]
struct SeqKv {
    tokens: usize,
    blocks: Vec<u32>,
    on_host: bool,
}

/// The block tables of every sequence and the free lists of the device and host pools.
#[derive(Debug)]
pub struct Ledger {
    max_context_tokens: usize,
    device_free: FreeList,
    host_free: FreeList,
    seqs: HashMap<u64, SeqKv>,
}

impl Ledger {
    /// Free lists shuffled with `seed ^ 1` (device) and `seed ^ 2` (host).
    pub fn new(
        max_context_tokens: usize,
        device_blocks: usize,
        host_blocks: usize,
        seed: u64,
    ) -> Ledger {
        Ledger {
            max_context_tokens,
            device_free: FreeList::new(device_blocks, seed ^ 1),
            host_free: FreeList::new(host_blocks, seed ^ 2),
            seqs: HashMap::new(),
        }
    }
    /// Free device blocks (and the capacity).
    pub fn device_blocks(&self) -> (usize, usize) {
        (self.device_free.available(), self.device_free.capacity())
    }
    /// Free host blocks (and the capacity).
    pub fn host_blocks(&self) -> (usize, usize) {
        (self.host_free.available(), self.host_free.capacity())
    }
    /// Tokens of KV held for `seq` (None: unknown).
    pub fn seq_tokens(&self, seq: u64) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.tokens)
    }

    /// Check the steps against what is held and allocate their new blocks (all or none).
    pub fn admit(&mut self, steps: &[SeqStep]) -> Result<Vec<SeqRows>, BackendError> {
        let mut rows = Vec::with_capacity(steps.len());
        let mut row0 = 0;
        let mut taken: Vec<Vec<u32>> = Vec::new();
        let undo = |this: &mut Ledger, taken: &[Vec<u32>]| {
            for b in taken {
                this.device_free.give_back(b);
            }
        };
        for (i, st) in steps.iter().enumerate() {
            if let Err(e) = self.check_step(st, &steps[..i]) {
                undo(self, &taken);
                return Err(e);
            }
            let have = self.seqs.get(&st.seq).map_or(&[][..], |s| &s.blocks[..]);
            let need = (st.cached_tokens + st.new_tokens).div_ceil(BLOCK_TOKENS);
            let more = need.saturating_sub(have.len());
            let Some(new_blocks) = self.device_free.take(more) else {
                let e = BackendError::OutOfDeviceBlocks {
                    seq: st.seq,
                    needed: more,
                    free: self.device_free.available(),
                    capacity: self.device_free.capacity(),
                };
                undo(self, &taken);
                return Err(e);
            };
            let mut table = have.to_vec();
            table.extend_from_slice(&new_blocks);
            taken.push(new_blocks);
            rows.push(SeqRows {
                seq: st.seq,
                row0,
                cached: st.cached_tokens,
                new: st.new_tokens,
                table,
            });
            row0 += st.new_tokens;
        }
        for s in &rows {
            let e = self.seqs.entry(s.seq).or_insert(SeqKv {
                tokens: 0,
                blocks: Vec::new(),
                on_host: false,
            });
            e.tokens = s.cached + s.new;
            e.blocks.clone_from(&s.table);
        }
        Ok(rows)
    }

    fn check_step(&self, st: &SeqStep, earlier: &[SeqStep]) -> Result<(), BackendError> {
        let bad = |msg: String| Err(BackendError::BadStep { seq: st.seq, msg });
        if st.new_tokens == 0 {
            return bad("new_tokens must be ≥ 1".into());
        }
        if earlier.iter().any(|e| e.seq == st.seq) {
            return bad("appears twice in one iteration".into());
        }
        let end = st.cached_tokens + st.new_tokens;
        if end > self.max_context_tokens {
            return bad(format!(
                "{end} tokens exceed the model's context of {}",
                self.max_context_tokens
            ));
        }
        let have = self.seqs.get(&st.seq);
        if have.is_some_and(|s| s.on_host) {
            return bad("its KV is on the host; swap it in first".into());
        }
        let held = have.map_or(0, |s| s.tokens);
        if held != st.cached_tokens {
            return bad(format!(
                "cached_tokens = {} but the backend holds {held} tokens of its KV",
                st.cached_tokens
            ));
        }
        Ok(())
    }

    /// Keep only the first `tokens` tokens of a device-resident `seq`, freeing the blocks past
    /// them (calibration re-runs a step at the same context this way).
    pub fn rewind(&mut self, seq: u64, tokens: usize) -> Result<(), BackendError> {
        let s = self
            .seqs
            .get_mut(&seq)
            .ok_or(BackendError::UnknownSeq(seq))?;
        if s.on_host || tokens > s.tokens {
            return Err(BackendError::BadStep {
                seq,
                msg: format!(
                    "cannot rewind to {tokens} tokens (it holds {}{})",
                    s.tokens,
                    if s.on_host { ", on the host" } else { "" }
                ),
            });
        }
        let keep = tokens.div_ceil(BLOCK_TOKENS);
        let freed = s.blocks.split_off(keep);
        s.tokens = tokens;
        self.device_free.give_back(&freed);
        Ok(())
    }

    /// The sequence is done: free its blocks in whichever pool holds them. Unknown: ignored.
    pub fn release(&mut self, seq: u64) {
        if let Some(s) = self.seqs.remove(&seq) {
            if s.on_host {
                self.host_free.give_back(&s.blocks);
            } else {
                self.device_free.give_back(&s.blocks);
            }
        }
    }

    /// Move a sequence's blocks between pools (`to_host`: device → host): take blocks in the
    /// destination, let `copy(from, to)` move the data, then free the source blocks. When `copy`
    /// fails nothing changes (the destination blocks go back).
    pub fn swap(
        &mut self,
        seq: u64,
        to_host: bool,
        copy: impl FnOnce(&[u32], &[u32]) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let s = self.seqs.get(&seq).ok_or(BackendError::UnknownSeq(seq))?;
        if s.on_host == to_host {
            let where_ = if to_host { "host" } else { "device" };
            return Err(BackendError::BadStep {
                seq,
                msg: format!("its KV is already on the {where_}"),
            });
        }
        let n = s.blocks.len();
        let (src_free, dst_free) = if to_host {
            (&mut self.device_free, &mut self.host_free)
        } else {
            (&mut self.host_free, &mut self.device_free)
        };
        let Some(to) = dst_free.take(n) else {
            let (free, capacity) = (dst_free.available(), dst_free.capacity());
            return Err(if to_host {
                BackendError::OutOfHostBlocks {
                    seq,
                    needed: n,
                    free,
                    capacity,
                }
            } else {
                BackendError::OutOfDeviceBlocks {
                    seq,
                    needed: n,
                    free,
                    capacity,
                }
            });
        };
        if let Err(e) = copy(&s.blocks, &to) {
            dst_free.give_back(&to);
            return Err(e);
        }
        src_free.give_back(&s.blocks);
        let s = self.seqs.get_mut(&seq).expect("looked up above");
        s.blocks = to;
        s.on_host = to_host;
        Ok(())
    }
}
