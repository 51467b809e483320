//! The engine's request-level view of each iteration ([`servesim::exec::ExecBatch`]), checked
//! by [`CheckingExecutor`]: every policy family (recompute, swap with proactive and reactive
//! swap-ins, chunked prefill, reservation, oracle SRPT) and pipeline parallelism, on small
//! synthetic traces under KV memory pressure. The checker keeps its own per-request KV state from
//! the events alone and fails the run at the first disagreement; a deliberately wrong event or
//! token count (a mutation wrapped around it) must fail it. The checked runs also produce the
//! simulator's exact outputs.

use std::sync::{Arc, Mutex};

use servesim::cost::BatchShape;
use servesim::engine::SteppingClock;
use servesim::error::Result;
use servesim::exec::check::{CheckStats, CheckingExecutor};
use servesim::exec::{ExecBatch, Executor, KvEventKind, Pipeline, SimExecutor};
use servesim::run::{RunOutput, drive};
use servesim::scenario::{Overrides, Resolved, load};
use servesim::vocab::time::Ns;

use crate::support::Workdir;

/// 48 requests arriving fast into a replica that holds 1,280 KV tokens: every policy has to
/// preempt. Prompts up to 400 tokens (over the chunking policies' budget of 128).
fn scenario(policy: &str, pp: u32, extra: &str) -> String {
    format!(
        r#"name = "exec-check"
model = "opt-13b"
gpu = "a100-80gb"
pp = {pp}
seed = 3

[trace]
arrival = "poisson"
rate_per_s = 40.0
num_requests = 48
input_lengths = {{ dist = "uniform", min = 8, max = 400 }}
output_lengths = {{ dist = "uniform", min = 1, max = 300 }}

[memory]
block_tokens = 16
kv_capacity_blocks = 80
host_kv_bytes = 600000000

[cost]
model = "constant"
iteration_s = 0.01

[scheduler]
policy = "{policy}"
max_batch_size = 8
max_batch_tokens = 512
{extra}
"#
    )
}

fn resolve(w: &Workdir, name: &str, text: &str) -> Resolved {
    let path = w.write(&format!("{name}.toml"), text);
    load(&path).unwrap().resolve(&Overrides::default()).unwrap()
}

/// The simulator's executor of `g`, wrapped by `wrap`.
fn sim_executor(
    g: &Resolved,
    x: Arc<servesim::profile::ExtrapolationCounter>,
) -> Box<dyn Executor> {
    Box::new(SimExecutor::new(g.cost_model_counted(Some(x)).unwrap()).with_pipeline(g.pipeline))
}

/// Run `r` with every replica's executor checked; the checkers' statistics, summed.
fn run_checked(
    r: &Resolved,
    wrap: &dyn Fn(CheckingExecutor) -> Box<dyn Executor>,
) -> (Result<RunOutput>, CheckStats) {
    let handles: Mutex<Vec<Arc<Mutex<CheckStats>>>> = Mutex::default();
    let block_tokens = r.scenario.memory.block_tokens;
    let out = drive(
        r,
        None,
        &mut |g, x| {
            let c = CheckingExecutor::new(sim_executor(g, x), block_tokens);
            handles.lock().unwrap().push(c.stats());
            Ok(wrap(c))
        },
        &mut SteppingClock,
        None,
    );
    let mut total = CheckStats::default();
    for h in handles.into_inner().unwrap() {
        let s = h.lock().unwrap().clone();
        total.iterations += s.iterations;
        total.prefill_items += s.prefill_items;
        total.later_chunks += s.later_chunks;
        total.decode_items += s.decode_items;
        total.finishes += s.finishes;
        total.recomputes += s.recomputes;
        total.swap_outs += s.swap_outs;
        total.swap_ins += s.swap_ins;
        total.held += s.held;
    }
    (out, total)
}

fn plain(c: CheckingExecutor) -> Box<dyn Executor> {
    Box::new(c)
}

/// What each run must have exercised.
#[derive(Clone, Copy)]
enum Expect {
    Recompute,
    Swap,
    Chunks,
    Nothing,
}

#[test]
fn every_policy_family_agrees_with_the_checker() {
    let w = Workdir::new();
    let cases: &[(&str, u32, &str, Expect)] = &[
        ("vllm", 1, "", Expect::Recompute),
        ("vllm", 2, "", Expect::Recompute),
        ("fcfs-swap", 1, "", Expect::Swap),
        ("fcfs-swap", 2, "", Expect::Swap),
        ("vllm-v1", 1, "", Expect::Chunks),
        (
            "sarathi",
            1,
            "[policies.sarathi]\nchunk_size = 128",
            Expect::Chunks,
        ),
        (
            "fcfs",
            1,
            "[policies.fcfs]\nreserve = \"oracle\"",
            Expect::Nothing,
        ),
        ("mlfq", 1, "", Expect::Swap),
        ("skip-join-mlfq", 1, "", Expect::Swap),
        ("skip-join-mlfq", 2, "", Expect::Swap),
        (
            "skip-join-mlfq",
            1,
            "[policies.skip-join-mlfq]\noffload = \"reactive\"",
            Expect::Swap,
        ),
        (
            "skip-join-mlfq",
            1,
            "[policies.skip-join-mlfq]\npreemption = \"recompute\"",
            Expect::Recompute,
        ),
        ("srpt-oracle", 1, "", Expect::Swap),
        (
            "srpt",
            1,
            "[policies.srpt]\npreemption = \"recompute\"",
            Expect::Recompute,
        ),
    ];
    for (i, &(policy, pp, extra, expect)) in cases.iter().enumerate() {
        let label = format!("{policy} pp={pp} {extra:?}");
        let r = resolve(&w, &format!("s{i}"), &scenario(policy, pp, extra));
        let (out, s) = run_checked(&r, &plain);
        let out = out.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(s.finishes, 48, "{label}: {s:?}");
        assert_eq!(s.held, 0, "{label}: {s:?}");
        assert_eq!(s.iterations, out.stats.iterations, "{label}");
        match expect {
            Expect::Recompute => assert!(s.recomputes > 0, "{label}: {s:?}"),
            Expect::Swap => assert!(s.swap_outs > 0 && s.swap_ins > 0, "{label}: {s:?}"),
            Expect::Chunks => assert!(s.later_chunks > 0, "{label}: {s:?}"),
            Expect::Nothing => {}
        }
        // Checked (stepped) and plain (fast-forwarded) runs give the same results.
        let plain_out = servesim::run::run(&r, None).unwrap();
        assert_eq!(
            serde_json::to_string(&out.summary).unwrap(),
            serde_json::to_string(&plain_out.summary).unwrap(),
            "{label}"
        );
    }
}

/// Wraps the checker and corrupts the batches it is given.
struct Mutant {
    inner: CheckingExecutor,
    corrupt: Corrupt,
    done: bool,
}

impl Executor for Mutant {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        self.inner.run_iteration(shape)
    }
    fn wants_requests(&self) -> bool {
        true
    }
    fn run_batch(&mut self, batch: &ExecBatch, shape: &BatchShape) -> Result<Ns> {
        let mut b = batch.clone();
        if !self.done {
            self.done = (self.corrupt)(&mut b);
        }
        self.inner.run_batch(&b, shape)
    }
    fn end_run(&mut self, batch: &ExecBatch) -> Result<()> {
        self.inner.end_run(batch)
    }
    fn pipeline(&self) -> Pipeline {
        self.inner.pipeline()
    }
}

/// Changes one batch; `true` once it changed something.
type Corrupt = fn(&mut ExecBatch) -> bool;

/// Drop the first event of `kind`.
fn drop_first(b: &mut ExecBatch, kind: KvEventKind) -> bool {
    match b.events.iter().position(|e| e.kind == kind) {
        Some(i) => {
            b.events.remove(i);
            true
        }
        None => false,
    }
}

#[test]
fn the_checker_catches_wrong_events() {
    let w = Workdir::new();
    let mutants: &[(&str, &str, Corrupt, &str)] = &[
        // A lost recompute: the re-prefill starts from 0 while the checker still holds KV.
        (
            "vllm",
            "",
            |b| drop_first(b, KvEventKind::Recompute),
            "cached tokens, but it holds",
        ),
        // A lost swap-out: the later swap-in finds the KV on the device.
        (
            "fcfs-swap",
            "",
            |b| drop_first(b, KvEventKind::SwapOut),
            "swap-in of request",
        ),
        // A lost swap-in: the request runs while its KV is on the host.
        (
            "skip-join-mlfq",
            "[policies.skip-join-mlfq]\noffload = \"reactive\"",
            |b| drop_first(b, KvEventKind::SwapIn),
            "while its KV is on the host",
        ),
        // A decode that claims one cached token too many.
        (
            "vllm",
            "",
            |b| match b.items.iter_mut().find(|i| !i.prefill) {
                Some(i) => {
                    i.cached_tokens += 1;
                    true
                }
                None => false,
            },
            "cached tokens, but it holds",
        ),
        // A chunk that claims the whole prompt was cached.
        (
            "sarathi",
            "[policies.sarathi]\nchunk_size = 128",
            |b| match b
                .items
                .iter_mut()
                .find(|i| i.prefill && i.cached_tokens > 0)
            {
                Some(i) => {
                    i.cached_tokens = 0;
                    true
                }
                None => false,
            },
            "cached tokens, but it holds",
        ),
    ];
    for (i, &(policy, extra, corrupt, msg)) in mutants.iter().enumerate() {
        let r = resolve(&w, &format!("m{i}"), &scenario(policy, 1, extra));
        let wrap = move |c: CheckingExecutor| -> Box<dyn Executor> {
            Box::new(Mutant {
                inner: c,
                corrupt,
                done: false,
            })
        };
        let (out, _) = run_checked(&r, &wrap);
        let err = out
            .err()
            .unwrap_or_else(|| panic!("mutant {i} ({policy}) passed"));
        let err = err.to_string();
        assert!(
            err.contains("KV check") && err.contains(msg),
            "mutant {i}: {err}"
        );
    }
}
