//! The swap-out and swap-in passes of proactive offloading, shared by the score-ordered
//! ([`super::common::score_offload`]) and rank-ordered ([`super::ranked_offload`]) versions,
//! which differ only in how they order their candidates.

use super::{Plan, PreemptMode, ReplicaView};
use crate::vocab::request::{KvLoc, Slot};

/// Swap out `candidates` in order (skipping those without blocks or without host room) until
/// `deficit` GPU blocks are freed or they run out; `host_free` is the host room. Whether any was
/// swapped out.
pub(crate) fn swap_out_while_short(
    view: &ReplicaView,
    plan: &mut Plan,
    taken: &mut [bool],
    candidates: impl Iterator<Item = Slot>,
    mut deficit: i64,
    mut host_free: i64,
) -> bool {
    let mut swapped_out = false;
    for s in candidates {
        if deficit <= 0 {
            break;
        }
        if view.req(s).blocks > 0 {
            swapped_out |= swap_out_one(view, plan, taken, s, (&mut deficit, &mut host_free));
        }
    }
    swapped_out
}

/// Swap out `s` if its blocks fit the host room `host_free`: plan the swap, mark it taken, and
/// charge its blocks to `deficit` (GPU blocks still to free) and its host blocks to `host_free`.
/// Whether it was.
pub(crate) fn swap_out_one(
    view: &ReplicaView,
    plan: &mut Plan,
    taken: &mut [bool],
    s: Slot,
    (deficit, host_free): (&mut i64, &mut i64),
) -> bool {
    let blocks = view.req(s).blocks;
    let need = view.host_blocks_for(blocks) as i64;
    if need > *host_free {
        return false;
    }
    plan.preempt.push((s, PreemptMode::Swap));
    taken[s as usize] = true;
    *host_free -= need;
    *deficit -= blocks as i64;
    true
}

/// The GPU room a swap-in pass keeps: `reserve` free blocks plus, for every candidate but the
/// left-out request `blocked` itself, that request's `blocked_need`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SwapInRoom {
    pub free_after: u32,
    pub reserve: u32,
    pub blocked: Option<Slot>,
    pub blocked_need: i64,
}

impl SwapInRoom {
    /// The free blocks a swap-in of `s` must leave: `reserve`, plus `blocked_need` unless `s` is
    /// `blocked` itself.
    fn keep(&self, s: Slot) -> i64 {
        self.reserve as i64
            + if Some(s) == self.blocked {
                0
            } else {
                self.blocked_need
            }
    }

    /// Whether any host-resident request could pass [`swap_in_while_room`]'s first test: one
    /// that is not `blocked` needs at least `reserve + blocked_need` free blocks, `blocked`
    /// itself (when it is on the host) its [`SwapInRoom::keep`] plus its own blocks. When
    /// neither fits, the pass would stop at its first candidate, so the candidates need not be
    /// ranked at all (the usual case while a queue waits for memory: the host list can hold
    /// hundreds of requests).
    pub(crate) fn may_fit_any(&self, view: &ReplicaView) -> bool {
        let free = self.free_after as i64;
        free >= self.reserve as i64 + self.blocked_need
            || self.blocked.is_some_and(|b| {
                view.req(b).kv_loc == KvLoc::Host
                    && free >= self.keep(b) + view.swap_in_blocks(b) as i64
            })
    }
}

/// Swap in `candidates` in order, at most `max_batch_size`, while the GPU keeps `room`; the first
/// one that does not fit stops the pass.
pub(crate) fn swap_in_while_room(
    view: &ReplicaView,
    plan: &mut Plan,
    candidates: impl Iterator<Item = Slot>,
    room: SwapInRoom,
) {
    let mut free = room.free_after as i64;
    for s in candidates.take(view.limits.max_batch_size as usize) {
        let need = view.swap_in_blocks(s) as i64;
        if free < room.keep(s) + need {
            break;
        }
        plan.swap_in.push(s);
        free -= need;
    }
}
