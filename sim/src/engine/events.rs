//! The event queue's vocabulary (event classes, their order) and the clocks that pace it.

use std::cmp::Reverse;

use super::{KvSample, Observer, Sim, TraceRow};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;
use crate::vocab::time::{Ns, ns_to_s};

/// Paces the event loop. The simulator uses [`VirtualClock`]: each event is handled at its own
/// time, as fast as possible. A live driver (outside the engine, which never reads a wall clock)
/// waits for the wall clock to reach each event, and may report that real time has run past it.
pub trait Clock {
    /// Called before handling the event stamped `t` (non-decreasing over a run). Returns the time
    /// at which to handle it (≥ `t`: later when real time has already passed `t`), or `None` to
    /// stop the run here (the run then returns what it has so far).
    fn advance(&mut self, t: Ns) -> Option<Ns>;
    /// Whether the engine may fast-forward: handle runs of identical decode iterations without
    /// an event each (outputs are identical; only a virtual clock can allow it, since the events
    /// it skips are never shown to [`Clock::advance`]).
    fn fast_forward(&self) -> bool {
        false
    }
}

/// The simulator's clock: every event happens exactly at its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirtualClock;

impl Clock for VirtualClock {
    #[inline]
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        Some(t)
    }
    fn fast_forward(&self) -> bool {
        true
    }
}

/// [`VirtualClock`] without fast-forward: every iteration is its own event (the reference path
/// of the differential tests, and `servesim run --no-fast-forward`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SteppingClock;

impl Clock for SteppingClock {
    #[inline]
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        Some(t)
    }
}

/// An event: its time; its class and push order packed as `class << 56 | seq`; its replica; the
/// request of a transfer event. Events are ordered by (time, class, seq): `seq` is unique, so
/// this is the order of the whole tuple, compared as two integers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Event(pub(super) Ns, u64, pub(super) u32, pub(super) Slot);

impl Event {
    pub(super) fn new(t: Ns, class: u8, seq: u64, replica: u32, slot: Slot) -> Self {
        debug_assert!(seq < 1 << 56, "event sequence number overflow");
        Event(t, (class as u64) << 56 | seq, replica, slot)
    }
    pub(super) fn class(&self) -> u8 {
        (self.1 >> 56) as u8
    }
}

impl Ord for Event {
    #[inline]
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

impl PartialOrd for Event {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Event {}

pub(super) const CLASS_ARRIVAL: u8 = 0;
pub(super) const CLASS_TRANSFER: u8 = 1;
pub(super) const CLASS_END: u8 = 2;
/// The first pipeline stage is free for the next micro-batch (pipeline parallelism only).
pub(super) const CLASS_STAGE_FREE: u8 = 3;
pub(super) const CLASS_KICK: u8 = 4;

/// Most KV samples (rows × replicas) one run may produce.
const MAX_KV_SAMPLES: u64 = 50_000_000;
impl Sim {
    /// Report the KV samples due before `t` (`inclusive`: at `t` too). Nothing happens between
    /// events, so the current state is the state at every such instant.
    pub(super) fn sample_through(
        &mut self,
        t: Ns,
        inclusive: bool,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let step = self.cfg.kv_sample_interval_ns;
        if step == 0 {
            return Ok(());
        }
        while self.next_sample_ns < t || (inclusive && self.next_sample_ns == t) {
            if !observer.wants_kv_samples() {
                // None for the rest of the run: fast-forward windows need not stop at samples.
                self.next_sample_ns = Ns::MAX;
                return Ok(());
            }
            let n = self.next_sample_ns / step + 1;
            if n.saturating_mul(self.replicas.len() as u64) > MAX_KV_SAMPLES {
                return Err(SimError::Limit(format!(
                    "kv_timeline would exceed {MAX_KV_SAMPLES} samples (rows × replicas) with [output] kv_timeline_interval_s = {} s; raise it (or set it to 0 for no kv_timeline)",
                    crate::error::num(step as f64 / 1e9)
                )));
            }
            for (i, rep) in self.replicas.iter().enumerate() {
                let counts = rep.reqs.state_counts();
                debug_assert_eq!(counts, rep.reqs.recount_states());
                observer.on_kv_sample(&KvSample {
                    time_ns: self.next_sample_ns,
                    replica: i as u32,
                    gpu_blocks_used: rep.kv.used_blocks(),
                    host_blocks_used: rep.host.used_blocks(),
                    running: counts.running,
                    waiting: counts.waiting,
                    swapped: counts.swapped,
                });
            }
            match self.next_sample_ns.checked_add(step) {
                Some(n) => self.next_sample_ns = n,
                None => break,
            }
        }
        Ok(())
    }

    pub(super) fn push(&mut self, t: Ns, class: u8, replica: u32) {
        self.push_slot(t, class, replica, 0);
    }

    pub(super) fn push_slot(&mut self, t: Ns, class: u8, replica: u32, slot: Slot) {
        self.heap
            .push(Reverse(Event::new(t, class, self.seq, replica, slot)));
        self.seq += 1;
    }

    pub(super) fn pull_arrival(
        &mut self,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
    ) -> Result<()> {
        if let Some(row) = trace.next().transpose()? {
            if row.arrival_ns < self.last_arrival_ns {
                return Err(SimError::Request {
                    id: row.id,
                    msg: format!(
                        "arrivals are not sorted: {:.9}s comes after {:.9}s",
                        ns_to_s(row.arrival_ns),
                        ns_to_s(self.last_arrival_ns)
                    ),
                });
            }
            if self.stats.requests == 0 && self.pending.is_none() {
                self.stats.first_arrival_ns = row.arrival_ns;
            }
            self.last_arrival_ns = row.arrival_ns;
            self.pending = Some(row);
            self.push(row.arrival_ns, CLASS_ARRIVAL, u32::MAX);
        }
        Ok(())
    }
}
