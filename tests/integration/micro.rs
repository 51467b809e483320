//! Hand-computed micro-scenarios: 2–4 requests, constant cost (every iteration takes
//! c = 0.1 s = 100 ms), one KV block per token (`block_tokens = 1`) and small KV capacities, run
//! through the CLI. Every expected `first_token_s` / `finish_s` below is derived by hand in the
//! comments; they are compared exactly (to the nanosecond).
//!
//! Rules used in the derivations (see the engine docs): a request with output n needs one prefill
//! iteration (which emits token 1) and n − 1 decode iterations; iteration boundaries are the only
//! decision points; an arrival at exactly a boundary's instant joins that boundary; an idle
//! replica starts an iteration at the arrival instant.
//!
//! Notation: `[A, B] t0–t1` is an iteration running A and B from t0 to t1 (ms); `A+` a prefill,
//! `A·` a decode; `kv` are resident tokens = blocks (block_tokens = 1).

use crate::support::{Row, Workdir, cli, read_requests, read_summary};

/// The policy configurations under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pol {
    /// `fcfs`, `reserve = "max"`: reserves `max_context_tokens` blocks at admission.
    FcfsMax,
    /// `fcfs`, `reserve = "oracle"`: reserves prompt + output − 1 blocks at admission.
    FcfsOracle,
    /// `vllm` with the watermark given in [`Setup`] (0 unless a test says otherwise).
    Vllm,
}

const ALL: [Pol; 3] = [Pol::FcfsMax, Pol::FcfsOracle, Pol::Vllm];

#[derive(Debug, Clone, Copy)]
struct Setup {
    max_batch_size: u32,
    kv_capacity_blocks: u32,
    block_tokens: u32,
    /// Also the `fcfs` `reserve = "max"` reservation (in tokens).
    max_context_tokens: u32,
    replicas: u32,
    watermark_frac: f64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            max_batch_size: 256,
            kv_capacity_blocks: 64,
            block_tokens: 1,
            max_context_tokens: 16,
            replicas: 1,
            watermark_frac: 0.0,
        }
    }
}

fn scenario_toml(pol: Pol, s: &Setup) -> String {
    let (policy, table) = match pol {
        Pol::FcfsMax => ("fcfs", "[policies.fcfs]\nreserve = \"max\"\n".to_string()),
        Pol::FcfsOracle => (
            "fcfs",
            "[policies.fcfs]\nreserve = \"oracle\"\n".to_string(),
        ),
        Pol::Vllm => (
            "vllm",
            format!("[policies.vllm]\nwatermark_frac = {:?}\n", s.watermark_frac),
        ),
    };
    format!(
        r#"name = "micro"
model = "opt-13b"
gpu = "a100-40gb"
replicas = {replicas}

[trace]
file = "trace.csv"

[memory]
block_tokens = {bt}
kv_capacity_blocks = {cap}

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "{policy}"
max_batch_size = {bs}
max_context_tokens = {ctx}

{table}"#,
        replicas = s.replicas,
        bt = s.block_tokens,
        cap = s.kv_capacity_blocks,
        bs = s.max_batch_size,
        ctx = s.max_context_tokens,
    )
}

/// Run `rows` (`arrival_s,input_tokens,output_tokens` lines) under `pol`; return requests.csv
/// and the number of iterations from summary.json.
fn run(pol: Pol, setup: &Setup, rows: &str) -> (Vec<Row>, u64) {
    let w = Workdir::new();
    w.write(
        "trace.csv",
        format!("arrival_s,input_tokens,output_tokens\n{rows}"),
    );
    let scenario = w.write("scenario.toml", scenario_toml(pol, setup));
    let out = w.path("out");
    let r = cli([
        "run".into(),
        scenario.into_os_string(),
        "--out".into(),
        out.clone().into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(
        r.code,
        0,
        "{pol:?}: run failed: {}\nscenario:\n{}",
        r.stderr,
        scenario_toml(pol, setup)
    );
    let iterations = read_summary(&out)["iterations"]
        .as_u64()
        .expect("summary.json has iterations");
    (read_requests(&out), iterations)
}

const MS: u64 = 1_000_000;

/// Compare `(first_token_ms, finish_ms, preemptions)` per request id, exactly.
fn check(pol: Pol, rows: &[Row], expected: &[(u64, u64, u32)]) {
    let got: Vec<(u64, u64, u32)> = rows
        .iter()
        .map(|r| (r.first_token_ns, r.finish_ns, r.preemptions))
        .collect();
    let want: Vec<(u64, u64, u32)> = expected
        .iter()
        .map(|&(f, e, p)| (f * MS, e * MS, p))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        (0..expected.len() as u64).collect::<Vec<_>>(),
        "{pol:?}: request ids"
    );
    assert_eq!(
        got, want,
        "{pol:?}: (first_token_ns, finish_ns, preemptions) per request"
    );
}

#[test]
fn simultaneous_arrivals_are_batched() {
    // A (out 2), B (out 3), C (out 1), all at t = 0; memory is plentiful for every policy
    // (fcfs max: 3 × 16 blocks ≤ 64).
    //   [A+ B+ C+] 0–100     → first tokens of A, B, C at 100; C done (1 token)
    //   [A· B·]    100–200   → A done at 200
    //   [B·]       200–300   → B done at 300
    // vllm's first iteration is prefill-only and admits all three, so it is identical.
    let rows = "0,4,2\n0,4,3\n0,4,1\n";
    for pol in ALL {
        let (r, iterations) = run(pol, &Setup::default(), rows);
        check(pol, &r, &[(100, 200, 0), (100, 300, 0), (100, 100, 0)]);
        assert_eq!(iterations, 3, "{pol:?}");
        assert!(r.iter().all(|x| x.queue_ns == 0), "{pol:?}: nobody queued");
    }
}

#[test]
fn arrivals_wait_for_the_boundary_and_boundary_arrivals_join_it() {
    // A at 0 (out 3); B at 50 ms, mid-iteration (out 2); C at exactly 200 ms, a boundary
    // (out 1); D at 1234 ms, when the replica is idle (out 2).
    //
    // fcfs (both reserves; memory plentiful):
    //   [A+]        0–100    A first 100
    //   [A· B+]     100–200  B waited 50 ms for this boundary; B first 200
    //   [A· B· C+]  200–300  C arrived at 200 and joins; A, B, C done at 300
    //   idle; D arrives at 1234 and starts at once:
    //   [D+] 1234–1334, [D·] 1334–1434
    let rows = "0,2,3\n0.05,2,2\n0.2,2,1\n1.234,2,2\n";
    for pol in [Pol::FcfsMax, Pol::FcfsOracle] {
        let (r, _) = run(pol, &Setup::default(), rows);
        check(
            pol,
            &r,
            &[(100, 300, 0), (200, 300, 0), (300, 300, 0), (1334, 1434, 0)],
        );
        let queue: Vec<u64> = r.iter().map(|x| x.queue_ns / MS).collect();
        assert_eq!(queue, [0, 50, 0, 0], "{pol:?}: queue_s (ms)");
    }
    // vllm (admitting anyone makes a prefill-only iteration):
    //   [A+]     0–100    A first 100
    //   [B+]     100–200  B admitted at the boundary; A paused; B first 200
    //   [C+]     200–300  C arrived at 200 and is admitted at that boundary; C done 300
    //   [A· B·]  300–400  B done 400
    //   [A·]     400–500  A done 500
    //   D as above.
    let (r, _) = run(Pol::Vllm, &Setup::default(), rows);
    check(
        Pol::Vllm,
        &r,
        &[(100, 500, 0), (200, 400, 0), (300, 300, 0), (1334, 1434, 0)],
    );
    let queue: Vec<u64> = r.iter().map(|x| x.queue_ns / MS).collect();
    assert_eq!(queue, [0, 50, 0, 0], "vllm: queue_s (ms)");
}

#[test]
fn max_batch_size_one_serialises() {
    // max_batch_size = 1; A (out 2), B (out 3), C (out 1) at t = 0, served one at a time in
    // arrival order:
    //   A: [A+] 0–100, [A·] 100–200                 → first 100, done 200
    //   B: [B+] 200–300, [B·] 300–400, [B·] 400–500 → first 300, done 500
    //   C: [C+] 500–600                             → first 600, done 600
    let setup = Setup {
        max_batch_size: 1,
        ..Setup::default()
    };
    for pol in ALL {
        let (r, iterations) = run(pol, &setup, "0,4,2\n0,4,3\n0,4,1\n");
        check(pol, &r, &[(100, 200, 0), (300, 500, 0), (600, 600, 0)]);
        assert_eq!(iterations, 6, "{pol:?}");
    }
}

#[test]
fn vllm_prefill_only_iterations_pause_decodes() {
    // A at 0 (out 4); B at 150 ms (out 2) and C at 160 ms (out 1), both during A's second
    // iteration.
    //
    // fcfs mixes prefills and decodes in one iteration:
    //   [A+] 0–100, [A·] 100–200, [A· B+ C+] 200–300 (C done 300, B first 300),
    //   [A· B·] 300–400 (A and B done 400)                                   → 4 iterations
    // vllm runs the admissions as a prefill-only iteration, pausing A's decodes:
    //   [A+] 0–100, [A·] 100–200, [B+ C+] 200–300 (C done 300, B first 300; A paused),
    //   [A· B·] 300–400 (B done 400), [A·] 400–500 (A done 500)               → 5 iterations
    let rows = "0,2,4\n0.15,2,2\n0.16,2,1\n";
    for pol in [Pol::FcfsMax, Pol::FcfsOracle] {
        let (r, iterations) = run(pol, &Setup::default(), rows);
        check(pol, &r, &[(100, 400, 0), (300, 400, 0), (300, 300, 0)]);
        assert_eq!(iterations, 4, "{pol:?}");
    }
    let (r, iterations) = run(Pol::Vllm, &Setup::default(), rows);
    check(
        Pol::Vllm,
        &r,
        &[(100, 500, 0), (300, 400, 0), (300, 300, 0)],
    );
    assert_eq!(iterations, 5);
}

#[test]
fn two_requests_in_six_blocks_vllm_preempts_fcfs_serialises() {
    // A and B at 0, each prompt 2, output 4 (KV peaks at 2 + 4 − 1 = 5 tokens); 6 KV blocks.
    //
    // vllm (on-demand blocks, watermark 0):
    //   [A+ B+] 0–100     kv A=2 B=2 (4 used); first tokens 100
    //   [A· B·] 100–200   kv 3, 3 (6 used, 0 free)
    //   at 200: A needs a 4th block, none free → preempt the latest arrival, B (frees 3);
    //   [A·]    200–300   A kv 4; B waits (re-prefill of 2 + 2 generated = 4 blocks > 2 free)
    //   [A·]    300–400   A done (4 tokens), frees 5
    //   [B+]    400–500   B re-prefills 4 tokens and emits its 3rd token; B kv 4
    //   [B·]    500–600   B done at 600; B's first token stays at 100
    let setup = Setup {
        kv_capacity_blocks: 6,
        max_context_tokens: 6,
        ..Setup::default()
    };
    let rows = "0,2,4\n0,2,4\n";
    let (r, iterations) = run(Pol::Vllm, &setup, rows);
    check(Pol::Vllm, &r, &[(100, 400, 0), (100, 600, 1)]);
    assert_eq!(iterations, 6);
    // fcfs reserves at admission: oracle 2 + 4 − 1 = 5 blocks, max 6 blocks (max_context 6).
    // Either way B does not fit until A finishes, and nobody is ever preempted:
    //   A: 0–400 (first 100); B: [B+] 400–500 … done 800.
    for pol in [Pol::FcfsMax, Pol::FcfsOracle] {
        let (r, iterations) = run(pol, &setup, rows);
        check(pol, &r, &[(100, 400, 0), (500, 800, 0)]);
        assert_eq!(iterations, 8, "{pol:?}");
    }
}

#[test]
fn vllm_preempts_the_latest_arrival_by_recompute() {
    // A, B, C at 0, each prompt 2, output 4; 9 KV blocks; vllm, watermark 0.
    //   [A+ B+ C+] 0–100    kv 2, 2, 2 (6 used); first tokens 100
    //   [A· B· C·] 100–200  kv 3, 3, 3 (9 used, 0 free)
    //   at 200: A needs a block → preempt the latest running, C (frees 3); A and B take one
    //   [A· B·]    200–300  kv 4, 4 (8 used, 1 free); C waits: its re-prefill needs 2 + 2 = 4
    //   at 300: A takes the last free block; B needs one → B is now the latest running and
    //           preempts itself (frees 4); waiting = [B, C]
    //   [A·]       300–400  A done (4 tokens), frees 5 → 9 free
    //   [B+ C+]    400–500  re-prefills: B 2 + 3 = 5 blocks, C 2 + 2 = 4 blocks (0 free);
    //                       B emits its 4th token → B done 500; C kv 4
    //   [C·]       500–600  C done 600
    let setup = Setup {
        kv_capacity_blocks: 9,
        ..Setup::default()
    };
    let (r, iterations) = run(Pol::Vllm, &setup, "0,2,4\n0,2,4\n0,2,4\n");
    check(
        Pol::Vllm,
        &r,
        &[(100, 400, 0), (100, 500, 1), (100, 600, 1)],
    );
    assert_eq!(iterations, 6);
}

#[test]
fn fcfs_head_of_line_blocking_on_reservations() {
    // A and B (prompt 4, output 5: oracle reservation 4 + 5 − 1 = 8 blocks) and C (prompt 1,
    // output 1: 1 block), all at 0; 10 KV blocks.
    //
    // fcfs, reserve = oracle: A admitted (2 blocks left); B needs 8 → admission stops there,
    // and C, which would fit in the 2 free blocks, is not back-filled:
    //   A: [A+] 0–100 … done 500
    //   at 500: B (8) and C (1) admitted → [B+ C+] 500–600: C done 600, B first 600
    //   B: … done 1000
    let setup = Setup {
        kv_capacity_blocks: 10,
        ..Setup::default()
    };
    let rows = "0,4,5\n0,4,5\n0,1,1\n";
    let (r, _) = run(Pol::FcfsOracle, &setup, rows);
    check(
        Pol::FcfsOracle,
        &r,
        &[(100, 500, 0), (600, 1000, 0), (600, 600, 0)],
    );
    // vllm (no reservations, watermark 0) admits all three at once, so C is not blocked; the
    // price is a preemption:
    //   [A+ B+ C+] 0–100    kv 4, 4, 1; C done 100 (frees 1) → 8 used
    //   [A· B·]    100–200  kv 5, 5 (10 used)
    //   at 200: A needs a block → preempt B (frees 5)
    //   [A·] 200–300, 300–400, 400–500: A done 500 (B's re-prefill of 4 + 2 = 6 does not fit
    //   beside A's 6–7 blocks)
    //   [B+] 500–600 (B's 3rd token), [B·] 600–700, [B·] 700–800: B done 800
    let (r, _) = run(Pol::Vllm, &setup, rows);
    check(
        Pol::Vllm,
        &r,
        &[(100, 500, 0), (100, 800, 1), (100, 100, 0)],
    );
}

#[test]
fn fcfs_max_reservation_admits_one_request_at_a_time() {
    // reserve = max with max_context_tokens = 9 reserves 9 of 10 blocks per request, so requests
    // run strictly one after another although each uses at most 8 blocks:
    //   A (out 5): 0–500; B (out 5): 500–1000; C (out 1): 1000–1100.
    let setup = Setup {
        kv_capacity_blocks: 10,
        max_context_tokens: 9,
        ..Setup::default()
    };
    let (r, _) = run(Pol::FcfsMax, &setup, "0,4,5\n0,4,5\n0,1,1\n");
    check(
        Pol::FcfsMax,
        &r,
        &[(100, 500, 0), (600, 1000, 0), (1100, 1100, 0)],
    );
}

#[test]
fn replicas_are_assigned_round_robin() {
    // Two replicas, max_batch_size 1, four one-token requests at 0: ids 0 and 2 go to replica 0,
    // 1 and 3 to replica 1; each replica serves its two back to back: done at 100 and 200.
    let setup = Setup {
        replicas: 2,
        max_batch_size: 1,
        ..Setup::default()
    };
    for pol in ALL {
        let (r, _) = run(pol, &setup, "0,3,1\n0,3,1\n0,3,1\n0,3,1\n");
        check(
            pol,
            &r,
            &[(100, 100, 0), (100, 100, 0), (200, 200, 0), (200, 200, 0)],
        );
        let replicas: Vec<u32> = r.iter().map(|x| x.replica).collect();
        assert_eq!(replicas, [0, 1, 0, 1], "{pol:?}");
    }
}

#[test]
fn vllm_readmits_a_late_preempted_request_when_the_watermark_cannot_be_kept() {
    // Regression: a request preempted late needs more blocks to re-prefill than it needed at
    // arrival; if capacity − watermark cannot hold that, it used to wait forever and the run
    // failed with "nothing to run while 1 requests are unfinished".
    //
    // block_tokens = 4, 10 blocks, watermark_frac 0.15 → ceil(1.5) = 2 blocks kept free at
    // admission. A: prompt 1, output 10; B: prompt 25, output 10 (peaks at 34 tokens = 9 blocks,
    // which fits in 10). Both at 0.
    //   admission at 0: A 1 block (9 ≥ 1 + 2), B 7 blocks (9 ≥ 7 + 2) → 2 free
    //   [A+ B+] 0–100; decodes k = 1…7 run [A· B·] from 100 to 800; at the k = 4 boundary A
    //   takes its 2nd block and B its 8th → 0 free. After 7 decodes: A kv 8, B kv 32.
    //   at 800: A needs a 3rd block → preempt B (gen 8; frees 8)
    //   [A·] 800–900, [A·] 900–1000: A done 1000 (10 tokens)
    //   at 1000 nothing is running; B's re-prefill of 25 + 8 = 33 tokens needs 9 blocks, and
    //   9 + 2 > 10. With nothing resident the watermark protects nobody, so B must be admitted:
    //   [B+] 1000–1100 (B's 9th token), [B·] 1100–1200: B done 1200.
    let setup = Setup {
        kv_capacity_blocks: 10,
        block_tokens: 4,
        max_context_tokens: 2048,
        watermark_frac: 0.15,
        ..Setup::default()
    };
    let (r, _) = run(Pol::Vllm, &setup, "0,1,10\n0,25,10\n");
    check(Pol::Vllm, &r, &[(100, 1000, 0), (100, 1200, 1)]);
}
