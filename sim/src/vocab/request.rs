//! Per-request state inside one replica, and the slab that holds only in-flight requests
//! (memory stays O(in flight), not O(trace)).

use super::sketch::TokenGaps;
use super::time::Ns;

/// Where a request's KV cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KvLoc {
    /// No KV anywhere (not started, or preempted by recompute): the next iteration is a prefill.
    None,
    /// Resident on the GPU.
    Gpu,
    /// Being copied GPU → host; GPU blocks are freed when the copy completes.
    SwappingOut,
    /// On the host only.
    Host,
    /// Being copied host → GPU; the request can run when the copy completes.
    SwappingIn,
}

/// Handle of an in-flight request inside its replica's slab. Reused after the request finishes.
pub type Slot = u32;

/// One request as the engine tracks it. Policies read it through [`crate::policy::ReplicaView`].
#[derive(Debug, Clone)]
pub struct Request {
    /// Row index in the trace (0-based), the request's identity in every output.
    pub id: u64,
    pub arrival_ns: Ns,
    pub input_tokens: u32,
    /// True output length. The engine needs it to know when the request ends; policies must not
    /// read it (they get `predicted_output_tokens`).
    pub(crate) output_tokens: u32,
    /// Output length as the scenario's predictor estimated it at arrival.
    pub predicted_output_tokens: u32,
    /// Tokens emitted so far.
    pub generated_tokens: u32,
    /// Tokens whose KV is resident on the GPU (0 = needs a (re-)prefill).
    pub kv_tokens: u32,
    /// GPU KV blocks held (allocated on demand, or reserved ahead by the policy).
    pub blocks: u32,
    /// Where the KV of `kv_tokens` tokens is.
    pub kv_loc: KvLoc,
    /// Host KV blocks held (fewer than the GPU blocks when offloaded KV is quantized).
    pub host_blocks: u32,
    /// GPU blocks the host-resident KV occupies once swapped back in (the `blocks` it held when
    /// it was swapped out).
    pub offloaded_gpu_blocks: u32,
    /// When the KV of the last copy started for this request is in place (its end time).
    pub kv_ready_ns: Ns,
    pub swap_out_bytes: u64,
    pub swap_in_bytes: u64,
    /// Time iterations that included this request waited for its swap-in beyond their compute.
    pub swap_stall_ns: Ns,
    /// Tokens re-prefilled after recompute preemptions.
    pub recomputed_tokens: u64,
    /// Times this request was preempted.
    pub preemptions: u32,
    /// Service attained: sum of the durations of the iterations it took part in.
    pub attained_ns: Ns,
    /// Start of the first iteration this request took part in.
    pub first_scheduled_ns: Option<Ns>,
    /// End of the iteration that emitted its first token.
    pub first_token_ns: Option<Ns>,
    /// End of the last iteration that gave it a token (arrival before that). An iteration that
    /// ran only part of its prefill (a chunk) leaves it unchanged, so the next token's gap (ITL)
    /// is measured from the request's previous token.
    pub last_run_end_ns: Ns,
    /// Gaps between its consecutive output tokens (ITL): the longest and the exact nearest-rank
    /// p99. Only user-visible tokens count: a recompute preemption re-prefills the generated
    /// tokens without emitting them again, so the next gap spans the stall (from the last token
    /// emitted to the one the re-prefill emits).
    pub itl: TokenGaps,
    pub(crate) in_batch: bool,
    /// The KV holds only part of the prefill target: a chunked prefill is under way (its
    /// `kv_tokens` are the chunks done so far; it emits nothing until the last chunk).
    pub mid_prefill: bool,
    /// Tokens this request processes in the batch being formed or in flight: its prefill chunk
    /// (the whole remaining prefill unless the policy chunks it) or 1 for a decode. Set by the
    /// engine when it takes the request into a batch.
    pub(crate) step_tokens: u32,
}

impl Request {
    /// A request as it arrives: nothing generated, no KV anywhere, never run.
    pub fn new(
        id: u64,
        arrival_ns: Ns,
        input_tokens: u32,
        output_tokens: u32,
        predicted_output_tokens: u32,
    ) -> Self {
        Request {
            id,
            arrival_ns,
            input_tokens,
            output_tokens,
            predicted_output_tokens,
            generated_tokens: 0,
            kv_tokens: 0,
            blocks: 0,
            kv_loc: KvLoc::None,
            host_blocks: 0,
            offloaded_gpu_blocks: 0,
            kv_ready_ns: 0,
            swap_out_bytes: 0,
            swap_in_bytes: 0,
            swap_stall_ns: 0,
            recomputed_tokens: 0,
            preemptions: 0,
            attained_ns: 0,
            first_scheduled_ns: None,
            first_token_ns: None,
            last_run_end_ns: arrival_ns,
            itl: TokenGaps::new(output_tokens.saturating_sub(1)),
            in_batch: false,
            mid_prefill: false,
            step_tokens: 0,
        }
    }
    /// Prompt tokens the next iteration processes if it is a (re-)prefill: the prompt plus every
    /// token generated before a recompute preemption.
    #[inline]
    pub fn prefill_tokens(&self) -> u32 {
        self.input_tokens + self.generated_tokens
    }
    /// Whether the request's next iteration is a whole prefill from scratch (no KV anywhere).
    /// A chunked prefill under way is [`Request::in_prefill`] but not this.
    #[inline]
    pub fn needs_prefill(&self) -> bool {
        self.kv_tokens == 0
    }
    /// Whether the request's next iteration processes prompt tokens: a prefill from scratch or
    /// the next chunk of a chunked prefill.
    #[inline]
    pub fn in_prefill(&self) -> bool {
        self.kv_tokens == 0 || self.mid_prefill
    }
    /// Prefill tokens not yet in the KV cache (0 once the prefill is complete).
    #[inline]
    pub fn prefill_left(&self) -> u32 {
        if self.in_prefill() {
            self.prefill_tokens() - self.kv_tokens
        } else {
            0
        }
    }
    /// Whether it can be put in a batch now: KV on the GPU, or none at all (prefill), or on the
    /// host (the engine then swaps it in reactively and the iteration waits for the copy).
    #[inline]
    pub fn runnable(&self) -> bool {
        !self.in_batch && matches!(self.kv_loc, KvLoc::None | KvLoc::Gpu | KvLoc::Host)
    }
    /// Whether it is in a micro-batch still in the pipeline (only with pipeline parallelism:
    /// otherwise no batch is in flight when a policy decides). It can be neither run nor
    /// preempted until that batch leaves the last stage.
    #[inline]
    pub fn in_flight(&self) -> bool {
        self.in_batch
    }
    /// Whether a copy is in flight.
    #[inline]
    pub fn in_transfer(&self) -> bool {
        matches!(self.kv_loc, KvLoc::SwappingOut | KvLoc::SwappingIn)
    }
    /// Tokens whose KV must be resident at the end of its next iteration (if a prefill, the
    /// whole remaining one).
    #[inline]
    pub fn kv_tokens_after_next(&self) -> u32 {
        if self.in_prefill() {
            self.prefill_tokens()
        } else {
            self.kv_tokens + 1
        }
    }
    /// Tokens whose KV is resident at the end of the iteration it is in (or about to join):
    /// the chunk it runs there is `step_tokens`.
    #[inline]
    pub fn kv_tokens_after_step(&self) -> u32 {
        if self.in_prefill() {
            self.kv_tokens + self.step_tokens
        } else {
            self.kv_tokens + 1
        }
    }
    /// Tokens the next iteration processes for this request (the remaining prefill, or 1 for a
    /// decode).
    #[inline]
    pub fn next_input_tokens(&self) -> u32 {
        if self.in_prefill() {
            self.prefill_left()
        } else {
            1
        }
    }
    /// How many of its largest gaps its exact p99 needs (from the output − 1 gaps it will have).
    #[inline]
    pub fn itl_top_k(&self) -> usize {
        self.itl.k()
    }
    /// Record the gap before a token emitted at `now` (its previous token came at the end of the
    /// last iteration it took part in: every iteration emits one token per member). Returns the
    /// gap, or `None` for the first token (TTFT is not a gap).
    #[inline]
    pub fn emit_token_gap(&mut self, now: Ns) -> Option<Ns> {
        if !self.started() {
            return None;
        }
        let gap = now - self.last_run_end_ns;
        self.itl.push(gap);
        Some(gap)
    }
    /// Whether it is new work: no token yet and no KV anywhere. A chunked prefill under way is
    /// not new (its chunks hold KV, possibly on the host).
    #[inline]
    pub fn is_new(&self) -> bool {
        !self.started() && self.kv_tokens == 0
    }
    /// Whether this request has produced its first token.
    #[inline]
    pub fn started(&self) -> bool {
        self.generated_tokens > 0
    }
    /// Its column in a KV sample: running (in the batch), swapped (KV on or moving to or from
    /// the host) or waiting.
    #[inline]
    pub fn sample_state(&self) -> SampleState {
        // Indexed by `KvLoc` (declaration order): None, Gpu, SwappingOut, Host, SwappingIn.
        const BY_LOC: [SampleState; 5] = [
            SampleState::Waiting,
            SampleState::Waiting,
            SampleState::Swapped,
            SampleState::Swapped,
            SampleState::Swapped,
        ];
        if self.in_batch {
            SampleState::Running
        } else {
            BY_LOC[self.kv_loc as usize]
        }
    }
}

/// A request's column in a KV sample (see [`Request::sample_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SampleState {
    Running = 0,
    Swapped = 1,
    Waiting = 2,
}

/// How many of a slab's requests are in each [`SampleState`] (what a KV sample reports).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateCounts {
    pub running: u32,
    pub swapped: u32,
    pub waiting: u32,
}

impl From<[u32; 3]> for StateCounts {
    /// Counts indexed by [`SampleState`].
    fn from([running, swapped, waiting]: [u32; 3]) -> Self {
        StateCounts {
            running,
            swapped,
            waiting,
        }
    }
}

/// Write access to one request of a slab; when it ends, the slab's counts per [`SampleState`]
/// follow the request's new state (kept as they change, so that a KV sample costs O(1) rather
/// than a pass over a queue that may hold millions).
pub struct RequestMut<'a> {
    req: &'a mut Request,
    counts: &'a mut [u32; 3],
    before: SampleState,
}

impl std::ops::Deref for RequestMut<'_> {
    type Target = Request;
    #[inline]
    fn deref(&self) -> &Request {
        self.req
    }
}

impl std::ops::DerefMut for RequestMut<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Request {
        self.req
    }
}

impl Drop for RequestMut<'_> {
    #[inline]
    fn drop(&mut self) {
        let after = self.req.sample_state();
        if after != self.before {
            self.counts[self.before as usize] -= 1;
            self.counts[after as usize] += 1;
        }
    }
}

/// A slab of requests with slot reuse; iteration order is never used on a decision path.
#[derive(Debug, Default)]
pub struct Slab {
    items: Vec<Option<Request>>,
    free: Vec<Slot>,
    len: usize,
    /// Requests per [`SampleState`].
    counts: [u32; 3],
    /// Every slot added, removed or handed out for writing, when kept ([`Slab::changed_since`]).
    changes: ChangeLog,
}

/// A slab's change log: the slots added, removed or handed out for writing since it last
/// restarted, in order, repeats kept (what a router that keeps a per-request aggregate re-reads
/// instead of every request). Off unless [`Slab::keep_change_log`]; off, it costs each write a
/// test of a flag.
#[derive(Debug, Default)]
struct ChangeLog {
    kept: bool,
    /// `buf[..len]`: the log. `buf` holds [`ChangeLog::cap`] entries (grown with the slab by
    /// [`Slab::insert`] when kept), so logging never allocates: a write path that may call the
    /// allocator is one whose loads the compiler cannot keep across it (a growing `Vec::push`
    /// here cost the vllm engine 3.5% more instructions; this costs it under 1%).
    buf: Vec<Slot>,
    len: usize,
    /// Times the log restarted. It restarts when it is full, so it stays O(slots) in memory, and
    /// a reader whose mark predates the restart re-reads every request: O(slots), paid for by
    /// the at least 2 × slots writes logged since.
    epoch: u64,
}

impl ChangeLog {
    /// Entries the log holds before it restarts, in a slab of `slab_slots` slots: twice the
    /// slots, plus slack for small slabs.
    fn cap(slab_slots: usize) -> usize {
        2 * slab_slots + 64
    }
    /// Keep the log, with room for a slab of `slab_slots` slots (what is logged stays).
    fn keep(&mut self, slab_slots: usize) {
        self.kept = true;
        if self.buf.len() < Self::cap(slab_slots) {
            self.buf.resize(Self::cap(slab_slots), 0);
        }
    }
    /// Log slot `s`, if the log is kept.
    #[inline]
    fn note(&mut self, s: Slot) {
        if !self.kept {
            return;
        }
        if self.len >= self.buf.len() {
            self.len = 0;
            self.epoch += 1;
        }
        self.buf[self.len] = s;
        self.len += 1;
    }
    fn logged(&self) -> &[Slot] {
        &self.buf[..self.len]
    }
}

/// A position in a slab's change log ([`Slab::change_mark`]): what a reader holds to learn which
/// slots changed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    epoch: u64,
    at: usize,
}

impl Slab {
    pub fn insert(&mut self, r: Request) -> Slot {
        self.len += 1;
        self.counts[r.sample_state() as usize] += 1;
        let s = if let Some(s) = self.free.pop() {
            self.items[s as usize] = Some(r);
            s
        } else {
            self.items.push(Some(r));
            if self.changes.kept {
                self.changes.keep(self.items.len());
            }
            (self.items.len() - 1) as Slot
        };
        self.note(s);
        s
    }
    pub fn remove(&mut self, s: Slot) -> Request {
        self.note(s);
        let r = self.items[s as usize]
            .take()
            .expect("engine bug: removing an empty slot");
        self.counts[r.sample_state() as usize] -= 1;
        self.free.push(s);
        self.len -= 1;
        r
    }
    pub fn get(&self, s: Slot) -> &Request {
        self.items[s as usize]
            .as_ref()
            .expect("engine bug: reading an empty slot")
    }
    /// The request in slot `s`, if any.
    pub fn try_get(&self, s: Slot) -> Option<&Request> {
        self.items.get(s as usize).and_then(|r| r.as_ref())
    }
    /// Write access for a caller that leaves the request in state `to` (counted so now): the
    /// engine's hot paths (a request joins the batch, its iteration ends) pay no guard.
    #[inline]
    pub fn get_mut_moving(&mut self, s: Slot, to: SampleState) -> &mut Request {
        let req = self.items[s as usize]
            .as_mut()
            .expect("engine bug: writing an empty slot");
        self.counts[req.sample_state() as usize] -= 1;
        self.counts[to as usize] += 1;
        self.changes.note(s);
        req
    }
    pub fn get_mut(&mut self, s: Slot) -> RequestMut<'_> {
        let req = self.items[s as usize]
            .as_mut()
            .expect("engine bug: writing an empty slot");
        let before = req.sample_state();
        self.changes.note(s);
        RequestMut {
            req,
            counts: &mut self.counts,
            before,
        }
    }
    pub fn contains(&self, s: Slot) -> bool {
        self.items.get(s as usize).is_some_and(|r| r.is_some())
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// How many requests are running, swapped and waiting (what a KV sample reports).
    pub fn state_counts(&self) -> StateCounts {
        StateCounts::from(self.counts)
    }
    /// The same counts by a pass over every request (what the kept counts must equal).
    pub fn recount_states(&self) -> StateCounts {
        let mut c = [0u32; 3];
        for r in self.iter() {
            c[r.sample_state() as usize] += 1;
        }
        StateCounts::from(c)
    }
    /// Keep a change log from now on ([`Slab::changed_since`] answers `None` for marks taken
    /// before).
    pub fn keep_change_log(&mut self) {
        self.changes.keep(self.items.len());
        self.changes.len = 0;
        self.changes.epoch += 1;
    }
    /// Log slot `s` as changed.
    #[inline]
    fn note(&mut self, s: Slot) {
        self.changes.note(s);
    }
    /// The change log's current end: [`Slab::changed_since`] it lists what changes after now.
    pub fn change_mark(&self) -> ChangeMark {
        ChangeMark {
            epoch: self.changes.epoch,
            at: self.changes.len,
        }
    }
    /// The slots added, removed or written since `mark` was taken, in order, with repeats
    /// (every other slot holds the request it held then, unchanged); `None` if the log is not
    /// kept or restarted since (any request may have changed: read them all).
    pub fn changed_since(&self, mark: ChangeMark) -> Option<&[Slot]> {
        if self.changes.kept && mark.epoch == self.changes.epoch {
            self.changes.logged().get(mark.at..)
        } else {
            None
        }
    }
    /// One more than the largest slot ever handed out (size of per-slot side tables).
    pub fn capacity_hint(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Every request, in slot order (for order-independent aggregates such as a router's load).
    pub fn iter(&self) -> impl Iterator<Item = &Request> {
        self.items.iter().flatten()
    }
    /// Every request with its slot, in slot order.
    pub fn iter_slots(&self) -> impl Iterator<Item = (Slot, &Request)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(s, r)| Some((s as Slot, r.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// The kept counts equal a recount after every insert, remove and write, whatever the
    /// writes do to a request's batch flag and KV location.
    #[test]
    fn kept_state_counts_match_a_recount() {
        let locs = [
            KvLoc::None,
            KvLoc::Gpu,
            KvLoc::SwappingOut,
            KvLoc::Host,
            KvLoc::SwappingIn,
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut slab = Slab::default();
        let mut live: Vec<Slot> = Vec::new();
        let mut seen = [false; 3];
        for i in 0..20_000u64 {
            match rng.random_range(0..10) {
                0..=2 => live.push(slab.insert(Request::new(i, 0, 10, 10, 10))),
                3 if !live.is_empty() => {
                    let k = rng.random_range(0..live.len());
                    slab.remove(live.swap_remove(k));
                }
                _ if !live.is_empty() => {
                    let s = live[rng.random_range(0..live.len())];
                    let mut q = slab.get_mut(s);
                    q.in_batch = rng.random_bool(0.3);
                    q.kv_loc = locs[rng.random_range(0..locs.len())];
                    seen[q.sample_state() as usize] = true;
                    drop(q);
                    if rng.random_bool(0.5) {
                        let mut q = slab.get_mut(s);
                        q.in_batch = !q.in_batch;
                    } else {
                        // A write that declares the state it leaves.
                        let mut probe = slab.get(s).clone();
                        probe.in_batch = rng.random_bool(0.5);
                        probe.kv_loc = locs[rng.random_range(0..locs.len())];
                        let q = slab.get_mut_moving(s, probe.sample_state());
                        (q.in_batch, q.kv_loc) = (probe.in_batch, probe.kv_loc);
                    }
                }
                _ => {}
            }
            assert_eq!(slab.state_counts(), slab.recount_states(), "after step {i}");
        }
        assert_eq!(seen, [true; 3]);
        let c = slab.state_counts();
        assert_eq!((c.running + c.swapped + c.waiting) as usize, slab.len());
    }

    /// What a slab's contents are, slot by slot (a request's identity and progress).
    fn contents(slab: &Slab) -> Vec<Option<(u64, u32)>> {
        (0..slab.capacity_hint() as Slot)
            .map(|s| slab.try_get(s).map(|r| (r.id, r.generated_tokens)))
            .collect()
    }

    /// Every slot whose request was added, removed or written since a mark is in the change log
    /// after the mark, unless the log restarted (then the reader is told so); the log never
    /// holds more than its cap.
    #[test]
    fn change_log_lists_every_changed_slot_or_says_it_cannot() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut slab = Slab::default();
        let unlogged = slab.change_mark();
        slab.insert(Request::new(0, 0, 10, 10, 10));
        assert!(slab.changed_since(unlogged).is_none());
        slab.keep_change_log();
        assert!(slab.changed_since(unlogged).is_none());
        let mut live: Vec<Slot> = vec![0];
        let (mut mark, mut then) = (slab.change_mark(), contents(&slab));
        let (mut told, mut restarts) = (0, 0);
        for i in 0..20_000u64 {
            match rng.random_range(0..10) {
                0..=2 => live.push(slab.insert(Request::new(i, 0, 10, 10, 10))),
                3 if !live.is_empty() => {
                    let k = rng.random_range(0..live.len());
                    slab.remove(live.swap_remove(k));
                }
                _ if !live.is_empty() => {
                    let s = live[rng.random_range(0..live.len())];
                    if rng.random_bool(0.5) {
                        slab.get_mut(s).generated_tokens += 1;
                    } else {
                        slab.get_mut_moving(s, SampleState::Waiting)
                            .generated_tokens += 1;
                    }
                }
                _ => {}
            }
            assert!(slab.changes.buf.len() <= ChangeLog::cap(slab.capacity_hint()));
            let now = contents(&slab);
            match slab.changed_since(mark) {
                Some(logged) => {
                    told += 1;
                    for (s, &is) in now.iter().enumerate() {
                        if then.get(s).copied().flatten() != is {
                            assert!(logged.contains(&(s as Slot)), "step {i} slot {s}");
                        }
                    }
                }
                None => restarts += 1,
            }
            if rng.random_range(0..50) == 0 || slab.changed_since(mark).is_none() {
                (mark, then) = (slab.change_mark(), now);
            }
        }
        assert!(told > 10_000 && restarts >= 5, "{told} {restarts}");
    }
}
