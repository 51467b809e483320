//! When an iteration whose batch holds reactive swap-ins ends: `[swap] reactive`.
//!
//! A *reactive* swap-in is the copy of a batch member whose KV is on the host when the batch is
//! formed; the iteration cannot finish before it. Real engines wait for it in different ways:
//!
//! - `layerwise` — vLLM v0.1.x–v0.2.5 (FastServe's vLLM v0.1.7 baseline): copies run on a cache
//!   stream, layer by layer (`swap_blocks` of layer i's K and V, then event i), and layer i's
//!   attention waits for event i. With the batch's reactive copies spanning `[a, b)` (first copy
//!   start, last copy end: vLLM copies every swapped request layer by layer together), the
//!   iteration's `L` layers (a pipeline stage: its `⌈L/pp⌉` layers) split copy and compute evenly:
//!   layer i's copy ends at `a + (i+1)·s` with `s = (b − a)/L`, and its compute (`c = C/L` each)
//!   starts when that copy and layer i−1's compute are done. The recurrence
//!   `e_i = max(e_{i−1}, a + (i+1)·s) + c`, `e_{−1} = start`, unrolls to
//!   `end = max(start + L·c, maxᵢ (a + (i+1)·s + (L−i)·c))`; the inner term is linear in i, so
//!   its maximum is at i = 0 or i = L−1: `end = max(start + C, a + s + C, b + c)`. (Times in ns,
//!   `s` and `c` rounded up.) Swap-outs of the step overlap compute: vLLM 0.1.x issued swap-ins
//!   only in steps without swap-outs, so the per-layer events never waited on a swap-out
//!   (fidelity-facts.md §3.1, note below the table).
//! - `serial` — vLLM ≥ 0.4 (PR #3461 "Remove cache stream and cache events"; vllm-ltr is on
//!   0.4.1): `Worker.cache_swap` issues the step's swap-ins *and swap-outs* on the compute stream
//!   before `execute_model`, so the forward pass starts after every copy of this step:
//!   `end = max(start, last swap-in end, last swap-out end) + C`. servesim keeps one copy engine
//!   per direction, so a step's swap-out and swap-in still run concurrently (vLLM's one stream
//!   would serialize them): a lower bound on vLLM's step.
//! - `serial-swap-in` — FastServe (`fastserve/worker.py` `ParaWorker.step`): the compute stream
//!   waits, per batch request, on that request's latest swap event before the forward pass (whole
//!   request, no layer overlap); swap-outs run on their own `swap_out_stream` and do not delay the
//!   step: `end = max(start, last swap-in end) + C`. (The official code records that event
//!   *before* enqueuing the copy, so as coded the wait does not cover the copy — a race; this
//!   mode models the intended ordering, fidelity-facts.md §4.)
//! - `overlap` — the copy overlaps the whole iteration: `end = max(start + C, last swap-in end)`
//!   (servesim's bound before `reactive` existed; optimistic for every engine above).
//!
//! For any compute and copy window, `overlap ≤ layerwise ≤ serial-swap-in ≤ serial`.
//! Proactive swap-ins (`plan.swap_in`, issued ahead on the copy engine) never delay an
//! iteration: a request can run only once its KV has landed.

use serde::{Deserialize, Serialize};

use crate::vocab::time::Ns;

/// `[swap] reactive`: how an iteration waits for its batch's reactive swap-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reactive {
    Layerwise,
    Serial,
    SerialSwapIn,
    Overlap,
}

impl Reactive {
    pub const ALL: [Reactive; 4] = [
        Reactive::Overlap,
        Reactive::Layerwise,
        Reactive::SerialSwapIn,
        Reactive::Serial,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reactive::Layerwise => "layerwise",
            Reactive::Serial => "serial",
            Reactive::SerialSwapIn => "serial-swap-in",
            Reactive::Overlap => "overlap",
        }
    }
}

/// The reactive-wait mode of a replica and the layers its GPUs run (per pipeline stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SwapTiming {
    pub reactive: Reactive,
    /// Layers one pipeline stage holds: `⌈layers / pp⌉` (all of them without pipelining).
    pub layers: u32,
}

impl SwapTiming {
    /// Today's optimistic bound (no layer count needed).
    pub const OVERLAP: SwapTiming = SwapTiming {
        reactive: Reactive::Overlap,
        layers: 1,
    };
}

/// The copies one iteration's start issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCopies {
    /// `[first start, last end)` of the batch's reactive swap-ins (none: `None`).
    pub swap_in: Option<(Ns, Ns)>,
    /// Last end of the swap-outs this step issued (none: `None`).
    pub swap_out_end: Option<Ns>,
}

impl StepCopies {
    /// Add a reactive swap-in that runs `[start, end)`.
    pub fn add_swap_in(&mut self, start: Ns, end: Ns) {
        self.swap_in = Some(match self.swap_in {
            Some((a, b)) => (a.min(start), b.max(end)),
            None => (start, end),
        });
    }

    /// Add a swap-out ending at `end`.
    pub fn add_swap_out(&mut self, end: Ns) {
        self.swap_out_end = Some(self.swap_out_end.map_or(end, |e| e.max(end)));
    }
}

/// End of `compute` ns of work that may start at `start` over `layers` layers, waiting for
/// `copies` as `mode` says (see the module docs); `None` on u64 overflow.
pub fn compute_end(
    mode: Reactive,
    layers: u32,
    start: Ns,
    compute: Ns,
    copies: &StepCopies,
) -> Option<Ns> {
    let plain = start.checked_add(compute)?;
    let after = |gate: Ns| start.max(gate).checked_add(compute);
    match (mode, copies.swap_in) {
        (Reactive::Serial, swap_in) => {
            let gate = swap_in
                .map_or(start, |(_, b)| b)
                .max(copies.swap_out_end.unwrap_or(start));
            after(gate)
        }
        (_, None) => Some(plain),
        (Reactive::Overlap, Some((_, b))) => Some(plain.max(b)),
        (Reactive::SerialSwapIn, Some((_, b))) => after(b),
        (Reactive::Layerwise, Some((a, b))) => {
            let l = layers.max(1) as u64;
            let s = (b - a).div_ceil(l);
            let c = compute.div_ceil(l);
            let first = a.checked_add(s)?.checked_add(compute)?;
            let last = b.checked_add(c)?;
            Some(plain.max(first).max(last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer recurrence itself, in exact arithmetic (times scaled by L so that the per-layer
    /// copy `(b − a)/L` and compute `C/L` are integers): layer i's compute starts when its copy
    /// and layer i−1's compute are done. The closed form rounds its end up to the next ns.
    fn recurrence(layers: u32, start: Ns, compute: Ns, a: Ns, b: Ns) -> Ns {
        let l = layers as u128;
        let (s, c) = ((b - a) as u128, compute as u128);
        let mut e = start as u128 * l;
        for i in 0..l {
            e = e.max(a as u128 * l + (i + 1) * s) + c;
        }
        e.div_ceil(l) as Ns
    }

    #[test]
    fn layerwise_by_hand() {
        let copies = |a, b| StepCopies {
            swap_in: Some((a, b)),
            swap_out_end: None,
        };
        // 4 layers, compute 40 from t = 0 (c = 10), copy [0, 80) (s = 20): compute waits for
        // every layer's copy: layer 3's copy ends at 80, its compute at 90 = b + c.
        assert_eq!(
            compute_end(Reactive::Layerwise, 4, 0, 40, &copies(0, 80)),
            Some(90)
        );
        assert_eq!(recurrence(4, 0, 40, 0, 80), 90);
        // Copy [0, 8) (s = 2): layer 0 waits 2, then compute runs back to back: 2 + 40 = a + s + C.
        assert_eq!(
            compute_end(Reactive::Layerwise, 4, 0, 40, &copies(0, 8)),
            Some(42)
        );
        assert_eq!(recurrence(4, 0, 40, 0, 8), 42);
        // The other modes on the copy [0, 80): overlap max(40, 80) = 80; serial 80 + 40 = 120.
        for (mode, want) in [
            (Reactive::Overlap, 80),
            (Reactive::SerialSwapIn, 120),
            (Reactive::Serial, 120),
        ] {
            assert_eq!(compute_end(mode, 4, 0, 40, &copies(0, 80)), Some(want));
        }
    }

    #[test]
    fn only_serial_waits_for_swap_outs() {
        let c = StepCopies {
            swap_in: None,
            swap_out_end: Some(50),
        };
        // Compute 40 from t = 10: serial starts at 50 and ends at 90; the others end at 50.
        for mode in Reactive::ALL {
            let want = if mode == Reactive::Serial { 90 } else { 50 };
            assert_eq!(compute_end(mode, 4, 10, 40, &c), Some(want), "{mode:?}");
        }
    }

    #[test]
    fn closed_form_matches_the_recurrence_and_the_modes_are_ordered() {
        // A seeded sweep (splitmix64) over layers, starts, computes and copy windows.
        let mut x: u64 = 0x5eed;
        let mut next = |m: u64| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % m
        };
        for _ in 0..20_000 {
            let layers = 1 + next(96) as u32;
            let start = next(1_000_000);
            let compute = next(50_000_000);
            let a = start + next(10_000_000);
            let b = a + next(80_000_000);
            let out = if next(2) == 0 {
                None
            } else {
                Some(start + next(60_000_000))
            };
            let c = StepCopies {
                swap_in: Some((a, b)),
                swap_out_end: out,
            };
            let ends: Vec<Ns> = Reactive::ALL
                .iter()
                .map(|&m| compute_end(m, layers, start, compute, &c).unwrap())
                .collect();
            assert!(ends.windows(2).all(|w| w[0] <= w[1]), "{ends:?}");
            assert_eq!(ends[1], recurrence(layers, start, compute, a, b));
        }
    }
}
