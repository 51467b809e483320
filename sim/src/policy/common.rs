//! Pieces shared by several policies.

use std::collections::VecDeque;

use super::{Plan, PreemptMode, ReplicaView};
use crate::engine::request::Slot;

/// vLLM's decode-memory rule: walk `running` from highest priority (front) to lowest; while the
/// request at hand cannot get the blocks it needs, preempt (by recompute) the lowest-priority
/// running request — possibly itself — and put it at the front of `waiting`. Returns the blocks
/// left free after serving the survivors. `running` keeps only the survivors.
///
/// (vLLM v0 `scheduler.py _schedule`: `victim = self.running.pop()`, `waiting.appendleft`.)
pub fn make_room_for_decodes(
    view: &ReplicaView,
    running: &mut Vec<Slot>,
    waiting: &mut VecDeque<Slot>,
    plan: &mut Plan,
) -> u32 {
    let mut free = view.free_blocks();
    let mut i = 0;
    while i < running.len() {
        let s = running[i];
        let need = view.extra_blocks_for_next(s);
        if need <= free {
            free -= need;
            i += 1;
            continue;
        }
        let victim = running
            .pop()
            .expect("loop runs only while running is non-empty");
        free += view.req(victim).blocks;
        plan.preempt.push((victim, PreemptMode::Recompute));
        waiting.push_front(victim);
        // If the victim was the request at hand, the loop ends (i == running.len()).
    }
    free
}

/// Insert `s` into `list` (kept sorted by trace id, i.e. arrival order).
pub fn insert_by_arrival(view: &ReplicaView, list: &mut Vec<Slot>, s: Slot) {
    let id = view.req(s).id;
    let pos = list.partition_point(|&x| view.req(x).id < id);
    list.insert(pos, s);
}

/// Remove `s` from `list` if present.
pub fn remove_slot(list: &mut Vec<Slot>, s: Slot) -> bool {
    if let Some(p) = list.iter().position(|&x| x == s) {
        list.remove(p);
        true
    } else {
        false
    }
}
