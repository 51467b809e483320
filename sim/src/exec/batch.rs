//! The request-level view of one iteration, for executors that really run the batch (live mode):
//! which requests run with how many cached and new tokens, and what happened to KV memory since
//! the executor's previous call. The engine builds it only for an executor that asks
//! ([`super::Executor::wants_requests`]); the simulator's executors see only the [`BatchShape`].
//!
//! [`BatchShape`]: crate::cost::BatchShape

/// One request's share of an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecItem {
    /// The request's id (its trace row).
    pub id: u64,
    /// Tokens whose KV the request holds on the device before this iteration.
    pub cached_tokens: u32,
    /// Tokens this iteration processes for it: a prefill (chunk) over the tokens after the
    /// cached prefix, or 1 for a decode.
    pub new_tokens: u32,
    /// Whether the new tokens are prompt tokens (a prefill or a chunk of one; a re-prefill after
    /// a recompute preemption counts the tokens generated before it as prompt).
    pub prefill: bool,
    /// Device KV blocks the engine holds for the request during the iteration.
    pub blocks: u32,
}

/// What happened to one request's KV between two executor calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvEventKind {
    /// It finished: its KV is dropped everywhere and it never runs again.
    Finish,
    /// It was preempted by recompute: its KV is dropped everywhere and its next run is a prefill
    /// from token 0.
    Recompute,
    /// A copy device → host started; its device blocks are free once it completes.
    SwapOut,
    /// A copy host → device started (proactive, or reactive: the request then runs in this very
    /// iteration, which waits for the copy).
    SwapIn,
}

impl KvEventKind {
    /// Whether the request's KV is dropped (a finish or a recompute preemption).
    pub fn releases(self) -> bool {
        matches!(self, KvEventKind::Finish | KvEventKind::Recompute)
    }
}

/// One KV event, with the blocks it moves or frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEvent {
    pub id: u64,
    pub kind: KvEventKind,
    /// Device blocks: freed (finish, recompute), copied out (swap-out) or allocated and copied back in
    /// (swap-in).
    pub blocks: u32,
    /// Host blocks held (swap-out, swap-in) or freed (finish, recompute); fewer than `blocks` when
    /// offloaded KV is quantized.
    pub host_blocks: u32,
}

/// One iteration as an executor that really runs it sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecBatch {
    /// The requests of the batch, in the plan's order.
    pub items: Vec<ExecItem>,
    /// The KV events since the previous call, in the order they happened (apply them before
    /// computing `items`).
    pub events: Vec<KvEvent>,
}

impl ExecBatch {
    /// Forget the last call's contents, keeping the allocations.
    pub fn clear(&mut self) {
        self.items.clear();
        self.events.clear();
    }
    /// Record a KV event.
    #[inline]
    pub fn push_event(&mut self, id: u64, kind: KvEventKind, blocks: u32, host_blocks: u32) {
        self.events.push(KvEvent {
            id,
            kind,
            blocks,
            host_blocks,
        });
    }
    /// The events of one kind, in order.
    pub fn events_of(&self, kind: KvEventKind) -> impl Iterator<Item = &KvEvent> {
        self.events.iter().filter(move |e| e.kind == kind)
    }
    /// Tokens the iteration processes over all its requests.
    pub fn new_tokens(&self) -> u64 {
        self.items.iter().map(|i| i.new_tokens as u64).sum()
    }
}
