//! The tests' reference walks of [`LevelsWindow`]: the old ones, reading each entry they pass.

use super::super::super::ReplicaView;
use super::{Level, Levels, LevelsWindow};

impl LevelsWindow<'_> {
    /// [`Window::pass_kvless`] as it was: the entries passed over one by one, each read (the
    /// tests' reference).
    pub(super) fn pass_kvless_by_walk(
        &mut self,
        view: &ReplicaView,
        ran: &[bool],
        ran_order: &Levels,
    ) {
        while self.front < self.back {
            let (p, i) = self.front_at;
            let Some(q) = self.q.get(p) else {
                return;
            };
            let ran_here = ran_order.q.get(p).map_or(0, Level::len);
            if i < q.len() && ran_here > self.ran_seen {
                // Someone that ran is left in level `p`: pass over its entries one by one.
                let s = q.as_slice()[i];
                let has_run = ran.get(s as usize) == Some(&true);
                if has_run && view.req(s).blocks > 0 {
                    return;
                }
                self.ran_seen += has_run as usize;
                self.front += 1;
                self.front_at = (p, i + 1);
                self.passed += 1;
                self.read += 1;
                continue;
            }
            // Nobody that ran (nobody that may hold KV) is left in the rest of level `p`.
            self.front = (self.front + q.len().saturating_sub(i)).min(self.back);
            self.front_at = (p + 1, 0);
            self.ran_seen = 0;
        }
    }
}
