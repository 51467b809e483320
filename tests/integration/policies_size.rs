//! Hand-computed scenarios of the size-based and predicted-length policies, with exact
//! timestamps: srpt-oracle's preemption at the next iteration boundary and ties by arrival,
//! FastServe's three-job illustration, non-preemptive sjf-oracle, vllm-ltr's starvation boost,
//! ALISE without and with aging, and the predictors (`noisy` with σ = 0, the misprediction rule,
//! predictions bounded by the context).
//! Conventions, cost models and the scenario builder: [`crate::policies`].

use crate::policies::{
    CONST_10MS, Exp, LINEAR, MLFQ_NO_STARVATION, MS, Row, Scn, at, check, mean_jct_ms, mlfq_table,
};

// ---------------------------------------------------------------------------------------------
// 4. srpt-oracle: preemption at the next iteration boundary.
// ---------------------------------------------------------------------------------------------

/// `LINEAR` cost, batch size 1. L (id 0: 600 in, 10 out) arrives at 0; S (id 1: 100 in, 2 out)
/// arrives at 75 ms, in the middle of L's first decode.
/// ```text
/// 0–70 L prefill (g1); 70–80 L decode (g2); S arrives at 75 but waits for the boundary
/// at 80: remaining L = 8 decodes = 80 ms, S = prefill 20 + decode 10 = 30 ms → S goes first
/// 80–100 S prefill (g1), 100–110 S decode → S done at 110
/// enough KV (1000 blocks): L keeps its 38 blocks resident while paused (0 preemptions) and
///   resumes with a decode: 110–190, 8 decodes → L done at 190 = its own 70 + 9 × 10 plus S's 30
///   (a re-prefill would have cost 70.2 ms instead of a 10 ms decode)
/// tight KV (40 blocks, no host pool so that preemption is by recompute): L holds 38 blocks
///   (601 tokens), S needs 7 with 2 free → L is preempted by recompute (1 preemption); at 110 it
///   re-prefills 602 tokens (70.2 ms, g3) then decodes 7: 110 + 70.2 + 70 = 250.2
/// ```
#[test]
fn srpt_oracle_preempts_a_long_request_at_the_next_boundary() {
    let rows = [(0, 600, 10), (75 * MS, 100, 2)];
    let scn = Scn::new("srpt-oracle", LINEAR);
    let got = scn.run(&rows);
    check(
        "srpt-oracle, KV to spare",
        &got,
        &[at(70, 190).preempted(0), at(100, 110).preempted(0)],
    );
    assert_eq!(
        got[1].first_scheduled_ns,
        80 * MS,
        "S starts at the boundary after its arrival, not at its arrival"
    );
    let tight = scn.kv(40).host_kv_bytes(0).run(&rows);
    check(
        "srpt-oracle, tight KV",
        &tight,
        &[
            Exp {
                first_token_ns: Some(70 * MS),
                finish_ns: Some(250_200_000),
                preemptions: Some(1),
                ..Exp::default()
            },
            at(100, 110).preempted(0),
        ],
    );
}

/// Equal remaining sizes go by arrival, exactly. Constant 10 ms, batch size 1, oracle predictions.
/// A (id 0, 10 tokens) arrives at 0; B (id 1, 7 tokens) arrives at 30 ms, a boundary.
/// ```text
/// 0–10 A prefill (g1), 10–30 A g2, g3; at 30 A has 10 − 3 = 7 decodes left: 7 × 10 = 70 ms;
///   B needs its prefill + 6 decodes: 10 + 6 × 10 = 70 ms → a tie, A arrived first:
/// A 30–100 (done at 100); B 100–170 (first token 110)
/// ```
/// Summed in floating point the keys were A = 7 × 0.01 = 0.07 and B = 0.01 + 6 × 0.01 =
/// 0.06999999999999999, so B ran first (B 30–100, A 100–170). ALISE without aging has the same key.
#[test]
fn equal_remaining_sizes_go_by_arrival() {
    let rows = [(0, 8, 10), (30 * MS, 8, 7)];
    let exp = [at(10, 100).preempted(0), at(110, 170).preempted(0)];
    let base = Scn::new("srpt-oracle", CONST_10MS);
    check("srpt-oracle", &base.run(&rows), &exp);
    let alise = base
        .policy("alise")
        .predictor("oracle")
        .table("[policies.alise]\naging_weight = 0.0");
    check("alise w = 0", &alise.run(&rows), &exp);
}

// ---------------------------------------------------------------------------------------------
// 5. FastServe's three-job illustration.
// ---------------------------------------------------------------------------------------------

/// FastServe (§1.2 of the papers notes, Fig. 6/7): three jobs arrive together; J1 has a long input
/// and a short output. Paper's average latencies: FCFS 4.23, naive MLFQ 5.0, skip-join MLFQ 3.3,
/// SRPT 3.0. Here, `LINEAR` cost, batch size 1, quanta 10·2^p ms, all three at t = 0 (J1 first in
/// arrival order):
/// - J1 (id 0): 600 in, 2 out → prefill 70 + 1 decode = 80 ms of work;
/// - J2, J3 (ids 1, 2): 50 in, 3 out → prefill 15 + 2 decodes = 35 ms each.
/// ```text
/// fcfs:   J1 0–80, J2 80–115, J3 115–150                       JCT 80, 115, 150 → mean 115
/// mlfq:   all join L0; J1's prefill 0–70 runs first (wasted priority), → L1;
///         J2 prefill 70–85 → L1 front; J3 prefill 85–100 → L1 front; L1=[J3,J2,J1]:
///         J3 100–120 done, J2 120–140 done, J1 140–150 done    JCT 150, 140, 120 → mean 136.67
/// skip-join: J1 joins L3 (70 ≤ 80); J2, J3 join L1 (15 ≤ 20):
///         J2 0–15 (att 15), 15–25 (att 25 > 20 → L2); J3 25–40, 40–50 → L2 front; L2=[J3,J2]:
///         J3 50–60 done, J2 60–70 done, J1 70–150 done        JCT 150, 70, 60 → mean 93.33
/// srpt-oracle: J2 0–35, J3 35–70 (tie broken by arrival), J1 70–150
///                                                               JCT 150, 35, 70 → mean 85
/// ```
/// Mechanism: naive MLFQ is worse than FCFS because J1's long prefill runs first anyway (every
/// arrival starts at L0) *and* J1 is then pushed behind the short jobs; skip-join sends J1 straight
/// to the level of its prefill, so the short jobs go first (a nearly SRPT-like order; it loses to
/// SRPT only because J2 is demoted to L2 one decode before finishing and J3 overtakes it).
#[test]
fn fastserve_three_job_illustration() {
    let rows = [(0, 600, 2), (0, 50, 3), (0, 50, 3)];
    let base = Scn::new("fcfs", LINEAR)
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION));
    let expect: [(&str, [u64; 3], f64); 4] = [
        ("fcfs", [80, 115, 150], 115.0),
        ("mlfq", [150, 140, 120], 410.0 / 3.0),
        ("skip-join-mlfq", [150, 70, 60], 280.0 / 3.0),
        ("srpt-oracle", [150, 35, 70], 85.0),
    ];
    let mut mean = std::collections::BTreeMap::new();
    for (policy, finish_ms, mean_ms) in expect {
        let got = base.policy(policy).run(&rows);
        for (c, f) in got.iter().zip(finish_ms) {
            assert_eq!(c.finish_ns, f * MS, "{policy}: finish of J{}", c.id + 1);
        }
        let m = mean_jct_ms(&got);
        assert!((m - mean_ms).abs() < 1e-9, "{policy}: mean JCT {m} ms");
        mean.insert(policy, m);
    }
    assert!(mean["skip-join-mlfq"] < mean["mlfq"], "{mean:?}");
    assert!(mean["skip-join-mlfq"] < mean["fcfs"], "{mean:?}");
    assert!(mean["fcfs"] < mean["mlfq"], "{mean:?}");
    for (p, m) in &mean {
        assert!(mean["srpt-oracle"] <= *m, "srpt-oracle vs {p}: {mean:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. sjf-oracle: non-preemptive.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, batch size 1. L (id 0, 10 tokens) at 0 starts at once; W (id 1, 8 tokens)
/// arrives at 5 ms and S (id 2, 2 tokens) at 15 ms.
/// ```text
/// sjf-oracle:  L is never interrupted: 0–100 → done at 100 (first token 10);
///              S (20 ms job) jumps ahead of W (80 ms): 100–120; W 120–200
/// fcfs:        L 0–100, W 100–180, S 180–200
/// srpt-oracle: (preemptive, for contrast) at 10: W 80 < L 90 → W 10–20; at 20: S 20 → S 20–40;
///              W 40–110; L resumes 110–200
/// ```
#[test]
fn sjf_oracle_does_not_preempt_but_short_jobs_jump_the_queue() {
    let rows = [(0, 8, 10), (5 * MS, 8, 8), (15 * MS, 8, 2)];
    let base = Scn::new("sjf-oracle", CONST_10MS);
    check(
        "sjf-oracle",
        &base.run(&rows),
        &[
            at(10, 100).preempted(0),
            at(130, 200).preempted(0),
            at(110, 120).preempted(0),
        ],
    );
    check(
        "fcfs",
        &base.policy("fcfs").run(&rows),
        &[at(10, 100), at(110, 180), at(190, 200)],
    );
    check(
        "srpt-oracle",
        &base.policy("srpt-oracle").run(&rows),
        &[at(10, 200).preempted(0), at(20, 110), at(30, 40)],
    );
}

// ---------------------------------------------------------------------------------------------
// 7. ltr: starvation boost.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, batch size 1, oracle predictions. P (id 0, 10 tokens) and Q (id 1, 6 tokens)
/// arrive at 0; Q ranks first (6 < 10). A request not scheduled for `starvation_iterations`
/// consecutive decisions is boosted to the top for its next `boost_iterations` scheduled ones.
/// ```text
/// starvation 3, boost 2:
///   decisions at 0, 10, 20 run Q (g1..g3); P idle 1, 2, 3 → boosted at the decision at 20 (p1)
///   30–50 P (boosted, g1, g2); Q idle
///   50–80 Q (g4..g6, done at 80); P idle 1, 2, 3 → boosted again at 70 (p2)
///   80–160 P g3..g10 → done at 160
/// starvation 4, boost 2:
///   0–40 Q g1..g4; P idle 4 at the decision at 30 → boosted (p1)
///   40–60 P g1, g2; 60–80 Q g5, g6 (done at 80; P idle only 2); 80–160 P
/// no starvation (1000): Q 0–60, P 60–160
/// ```
#[test]
fn ltr_boosts_a_request_after_starvation_iterations() {
    let rows = [(0, 8, 10), (0, 8, 6)];
    let with = |starve: u32| {
        Scn::new("ltr", CONST_10MS)
            .predictor("oracle")
            .table(&format!(
                "[policies.ltr]\nstarvation = true\nstarvation_iterations = {starve}\nboost_iterations = 2"
            ))
            .run(&rows)
    };
    check(
        "ltr starvation 3",
        &with(3),
        &[at(40, 160).promoted(2), at(10, 80).promoted(0)],
    );
    check(
        "ltr starvation 4",
        &with(4),
        &[at(50, 160).promoted(1), at(10, 80).promoted(0)],
    );
    check(
        "ltr no starvation",
        &with(1000),
        &[at(70, 160).promoted(0), at(10, 60).promoted(0)],
    );
}

// ---------------------------------------------------------------------------------------------
// 8. alise: aging.
// ---------------------------------------------------------------------------------------------

/// A deterministic pseudo-random trace (splitmix64): `n` requests, arrivals 0–9 ms apart (some
/// simultaneous), inputs 1–400, outputs 1–80.
fn pseudo_random_rows(seed: u64, n: usize) -> Vec<Row> {
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % m
    };
    let mut t = 0;
    (0..n)
        .map(|_| {
            t += next(4) * 3 * MS;
            (t, 1 + next(400) as u32, 1 + next(80) as u32)
        })
        .collect()
}

/// With `aging_weight = 0` (its default), ALISE's key is the estimated remaining time, exactly
/// SRPT's: with its memory manager and KV quantization switched off (`offload = "reactive"`,
/// `kv_offload_bits = 16`) the two policies with the same predictor produce identical runs
/// (batching, KV preemptions and all).
#[test]
fn alise_without_aging_is_srpt_with_the_same_predictor() {
    let rows = pseudo_random_rows(11, 60);
    for predictor in ["oracle", "noisy", "history"] {
        let base = Scn::new("srpt", LINEAR)
            .batch(4)
            .kv(60)
            .predictor(predictor)
            .table("[policies.alise]\noffload = \"reactive\"\nkv_offload_bits = 16");
        let srpt = base.run(&rows);
        let alise = base.policy("alise").run(&rows);
        assert_eq!(srpt, alise, "predictor {predictor}");
        assert!(
            srpt.iter().any(|c| c.preemptions > 0),
            "the case exercises KV preemption"
        );
    }
}

/// Constant 10 ms, batch size 1, oracle predictions. W (id 0, 5 tokens: 50 ms of work) arrives at
/// 0 with a stream of one-token jobs S1..S8 (ids 1..8, 10 ms each) arriving every 10 ms from 0,
/// each exactly at a boundary. Key = remaining − w × waited.
/// ```text
/// srpt / alise w = 0: each S_k runs at once (10 < 50): S_k done at 10k; W runs 80–130 (first token 90)
/// alise w = 0.9 s/s: W's key at t: 0.05 − 0.9 t → 0.041, 0.032, 0.023, 0.014 at 10..40 (> 0.01,
///   S_k goes first); at 50 it is 0.005 < 0.01 → W runs 50–60 (g1). Then at 60 W's key is back at
///   0.04 while S6 (waited 10 ms: 0.01 − 0.009) goes first; S7, S8 likewise; W 90–130.
///   S1..S5 done at 10..50, S6 at 70, S7 at 80, S8 at 90; W first token 60, done at 130
/// ```
#[test]
fn alise_aging_lets_a_long_waiting_request_get_ahead() {
    let mut rows = vec![(0, 8, 5)];
    rows.extend((0..8).map(|k| (k * 10 * MS, 8, 1)));
    let base = Scn::new("srpt-oracle", CONST_10MS);
    let alise = |w: &str| {
        base.policy("alise")
            .predictor("oracle")
            .table(&format!("[policies.alise]\naging_weight = {w}"))
            .run(&rows)
    };
    let no_aging: Vec<Exp> = std::iter::once(at(90, 130))
        .chain((1..=8).map(|k| at(10 * k, 10 * k)))
        .collect();
    check("srpt-oracle", &base.run(&rows), &no_aging);
    check("alise w = 0", &alise("0.0"), &no_aging);
    let aged: Vec<Exp> = std::iter::once(at(60, 130))
        .chain((1..=5).map(|k| at(10 * k, 10 * k)))
        .chain((6..=8).map(|k| at(10 * k + 10, 10 * k + 10)))
        .collect();
    check("alise w = 0.9", &alise("0.9"), &aged);
}

// ---------------------------------------------------------------------------------------------
// 9. Predictors.
// ---------------------------------------------------------------------------------------------

/// `noisy` with σ = 0 and no bias predicts the true length, so every prediction-driven policy runs
/// exactly as with the oracle.
#[test]
fn noisy_with_zero_sigma_equals_the_oracle() {
    let rows = pseudo_random_rows(5, 50);
    for policy in ["srpt", "sjf", "ltr", "alise", "fcfs"] {
        let base = Scn::new(policy, LINEAR)
            .batch(3)
            .kv(80)
            .table("[policies.fcfs]\nreserve = \"oracle\"")
            .table("[predictors.noisy]\nsigma = 0.0\nbias = 0.0");
        let oracle = base.clone().predictor("oracle").run(&rows);
        let noisy = base.predictor("noisy").run(&rows);
        assert_eq!(oracle, noisy, "{policy}");
        for (c, r) in oracle.iter().zip(&rows) {
            assert_eq!(
                c.predicted_output_tokens, r.2,
                "{policy}: oracle prediction"
            );
        }
    }
}

/// `noisy` with σ = 0 and bias = ln 0.25 predicts a quarter of the true length (at least 1). A
/// request that has generated as many tokens as predicted and is not finished gets the prediction
/// `generated + max(16, prediction / 2)`; `requests.csv` reports the last one.
/// ```text
/// true 100: 25 → 25+16=41 → 41+max(16,20)=61 → 61+30=91 → 91+45=136 (finishes at 100) → 136
/// true  64: 16 → 32 → 48 → 48+24=72                                                     →  72
/// true  40: 10 → 26 → 26+max(16,13)=42                                                  →  42
/// true   8:  2 → 18                                                                     →  18
/// true   4:  1 → 17                                                                     →  17
/// true   2:  round(0.5) or 1 (clamped) = 1 → 17                                         →  17
/// true   1:  1, finishes with its first token: never extended                          →   1
/// true  16:  4 → 20 (finishes at 16)                                                    →  20
/// ```
#[test]
fn misprediction_rule_shows_in_requests_csv() {
    let truth = [100u32, 64, 40, 8, 4, 2, 1, 16];
    let expected = [136u32, 72, 42, 18, 17, 17, 1, 20];
    let rows: Vec<Row> = truth
        .iter()
        .enumerate()
        .map(|(i, &o)| (i as u64 * MS, 32, o))
        .collect();
    let out = Scn::new("srpt", CONST_10MS)
        .batch(4)
        .predictor("noisy")
        .table(&format!(
            "[predictors.noisy]\nsigma = 0.0\nbias = {:?}",
            0.25f64.ln()
        ))
        .try_run(&rows)
        .unwrap();
    let csv = servesim::output::requests_csv(&out);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (id, pred, outp) = (
        col("id"),
        col("predicted_output_tokens"),
        col("output_tokens"),
    );
    let mut seen = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let i: usize = f[id].parse().unwrap();
        assert_eq!(f[outp].parse::<u32>().unwrap(), truth[i]);
        assert_eq!(
            f[pred].parse::<u32>().unwrap(),
            expected[i],
            "request {i} (true output {})",
            truth[i]
        );
        seen += 1;
    }
    assert_eq!(seen, truth.len());
}

/// `requests.csv` of `out`: (id, input, output, predicted output) per request.
fn predictions(out: &servesim::run::RunOutput) -> Vec<(usize, u32, u32, u32)> {
    let csv = servesim::output::requests_csv(out);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let cols = [
        col("id"),
        col("input_tokens"),
        col("output_tokens"),
        col("predicted_output_tokens"),
    ];
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let v = |c: usize| f[cols[c]].parse::<u32>().unwrap();
            (v(0) as usize, v(1), v(2), v(3))
        })
        .collect()
}

/// A request can never produce more tokens than the context (2,048) leaves after its prompt,
/// and no prediction says more: `noisy` with σ = 0 and bias = 22 (e^22 × the truth, past
/// u32::MAX) predicts `2048 − input` for each request of a burst (it predicted u32::MAX). And an
/// extended
/// prediction is bounded too: bias = ln 0.75 predicts 1,470 of 1,960 true tokens, extended at
/// 1,470 to 1,470 + 735 = 2,205, bounded to 2,048 − 48 = 2,000.
#[test]
fn predictions_are_bounded_by_the_context() {
    let rows: Vec<Row> = (0..12u32).map(|i| (0, 48 + 100 * i, 5 + i)).collect();
    let out = Scn::new("srpt", CONST_10MS)
        .batch(4)
        .predictor("noisy")
        .table("[predictors.noisy]\nsigma = 0.0\nbias = 22.0")
        .try_run(&rows)
        .unwrap();
    for (i, input, output, predicted) in predictions(&out) {
        assert_eq!((input, output), (rows[i].1, rows[i].2));
        assert_eq!(predicted, 2048 - input, "request {i}");
    }
    let out = Scn::new("srpt", CONST_10MS)
        .predictor("noisy")
        .table(&format!(
            "[predictors.noisy]\nsigma = 0.0\nbias = {:?}",
            0.75f64.ln()
        ))
        .try_run(&[(0, 48, 1960)])
        .unwrap();
    assert_eq!(predictions(&out), [(0, 48, 1960, 2000)]);
}
