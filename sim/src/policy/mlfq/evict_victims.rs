//! `batch_memory = "evict"`: the formation's victim search, its passing over candidates holding
//! no KV, and the proactive reserve's swap-outs walk `resident` (module `resident`) instead of
//! `ran_order`.
//!
//! Under a burst on a small GPU pool with a host pool, every queued request soon ran once and is
//! then swapped out: `ran_order` is mostly host-resident requests. A victim search read all of
//! them from the back at every boundary (usually to find nobody: the few GPU-resident requests
//! are in the pipeline), the reserve's swap-outs did the same, and once the host pool filled up
//! (new requests deferred, victims recomputed and spared by the guard) every host-resident
//! candidate was taken one by one. `resident` holds, in `ran_order`'s order, every request of it
//! that may hold GPU blocks (every one that holds some: a request on the host holds none), so the
//! walks over it meet the same victims in the same order, and the passing stops at the same
//! candidates holding KV ([`super::super::common::Window::pass_kvless`]).
//!
//! `resident` is only kept up while it is valid; a move it cannot follow marks it stale (see
//! module `resident`). A stale one is rebuilt (a walk of `ran_order`) only after a boundary whose
//! walks read at least half as many requests as `ran_order` holds, so a rebuild costs at most
//! twice the walks it replaces; until then they walk `ran_order` as before. The entries the walks
//! read that are off the GPU are dropped after the formation.

use super::super::swap_passes::swap_out_one;
use super::super::{Plan, ReplicaView};
use super::levels::LevelsWindow;
use super::resident::off_gpu;
use super::{LEVEL_CAP, Mlfq};
use crate::vocab::request::{KvLoc, Slot};

/// Per level: the lowest index of `resident` a victim search read (`u32::MAX`: none), and the
/// end of those the passing read ([`LevelsWindow::read_low`], [`LevelsWindow::read_high`]).
pub(super) type Read = ([u32; LEVEL_CAP as usize + 1], [u32; LEVEL_CAP as usize + 1]);

impl Mlfq {
    /// Whether the `evict` walks use `resident`: while it is valid.
    fn resident_walks(&self) -> bool {
        #[cfg(test)]
        if self.victims_by_ran_order {
            return false;
        }
        self.res_valid
    }

    /// The window of an `evict` formation over `order` (`ran_order` when new requests are
    /// deferred: they are neither candidates nor victims), its victims searched and (with a
    /// `guard`) candidates holding no KV passed over by `resident` while it is valid, else by
    /// `ran_order` (over `order` with a guard; else victims searched by a walk, none passed).
    pub(super) fn evict_window(&self, guard: bool, defer_new: bool) -> LevelsWindow<'_> {
        let base = self.scan_order(defer_new);
        if self.no_pass_kvless() {
            return base.window();
        }
        #[allow(unused_mut)]
        let mut w = if self.resident_walks() {
            base.window_with_ran(&self.res, &self.resident)
        } else if guard && !defer_new {
            self.order.window_with_ran(&self.ran, &self.ran_order)
        } else {
            base.window()
        };
        #[cfg(test)]
        {
            w.walk_kvless = self.walk_kvless;
            w.walk_victims = self.walk_victims;
            w.walk_spared = self.walk_spared;
        }
        w
    }

    /// After an `evict` formation whose walks read `read` requests of `resident` (by level)
    /// and `n` requests in all: drop from `resident` the entries they read that are off the
    /// GPU, or, while `resident` is stale, rebuild it if `n` is at least half of `ran_order`.
    pub(super) fn after_evict_walks(&mut self, view: &ReplicaView, read: &Read, n: usize) {
        #[cfg(test)]
        if self.victims_by_ran_order {
            return;
        }
        if !self.res_valid {
            if n >= 16 && 2 * n >= self.ran_order.len() {
                self.rebuild_resident(view);
            }
            return;
        }
        let (low, high) = read;
        for p in self.resident.numbers() {
            let len = self.resident.level(p).len();
            let (lo, hi) = (low[p] as usize, high[p] as usize);
            if lo >= len && hi == 0 {
                continue;
            }
            let res = &mut self.res;
            let mut keep = |s: Slot| {
                let on = !off_gpu(view.req(s));
                res[s as usize] = on;
                on
            };
            let q = self.resident.level_mut(p);
            if hi >= lo {
                q.retain_first(len, &mut keep);
            } else {
                q.retain_last(len - lo.min(len), &mut keep);
                q.retain_first(hi, &mut keep);
            }
            self.resident.sync(p);
        }
    }

    /// [`Mlfq::swap_out_below`] (the proactive reserve's swap-outs, `offload = "proactive"`)
    /// walking `resident` while it is valid: the same victims, without reading the requests of
    /// `ran_order` that are off the GPU. While it is stale, the walk of `ran_order`, after which
    /// `resident` is rebuilt if that walk read at least half of `ran_order`.
    pub(super) fn swap_out_for_reserve(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        ran_floor: usize,
        deficit: i64,
    ) -> bool {
        if self.resident_walks() {
            return self.swap_out_below_resident(view, plan, ran_floor, deficit);
        }
        let before = self.scanned;
        let swapped_out = self.swap_out_below(view, plan, ran_floor, deficit);
        let none = (
            [u32::MAX; LEVEL_CAP as usize + 1],
            [0; LEVEL_CAP as usize + 1],
        );
        self.after_evict_walks(view, &none, (self.scanned - before) as usize);
        swapped_out
    }

    /// [`Mlfq::swap_out_below`] over `resident` (valid): its entries below `ran_order[ran_floor]`
    /// walked from the back, those off the GPU dropped.
    fn swap_out_below_resident(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        ran_floor: usize,
        mut deficit: i64,
    ) -> bool {
        // `resident` is `ran_order` filtered by `res`: how many of it are above the floor.
        let (mut above, mut left) = (0, ran_floor);
        for (_, q) in self.ran_order.levels() {
            if left == 0 {
                break;
            }
            let q = &q.as_slice()[..left.min(q.len())];
            above += q.iter().filter(|&&s| self.res[s as usize]).count();
            left -= q.len();
        }
        let mut below = self.resident.len() - above;
        let mut host_free = i64::from(view.host_free_blocks());
        let mut swapped_out = false;
        for item in &plan.run {
            self.taken[item.slot as usize] = true;
        }
        let mut walked = [(0usize, false); LEVEL_CAP as usize + 1];
        'levels: for p in self.resident.numbers().rev() {
            for &s in self.resident.level(p).as_slice().iter().rev() {
                if deficit <= 0 || below == 0 {
                    break 'levels;
                }
                below -= 1;
                walked[p].0 += 1;
                let r = view.req(s);
                if off_gpu(r) {
                    self.res[s as usize] = false;
                    walked[p].1 = true;
                    continue;
                }
                if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || r.in_flight() {
                    continue;
                }
                swapped_out |= swap_out_one(
                    view,
                    plan,
                    &mut self.taken,
                    s,
                    (&mut deficit, &mut host_free),
                );
            }
        }
        self.scanned += walked.iter().map(|w| w.0 as u64).sum::<u64>();
        self.drop_walked(&walked, true);
        for item in &plan.run {
            self.taken[item.slot as usize] = false;
        }
        swapped_out
    }
}
