//! Hand-computed MLFQ scenarios with exact timestamps: quantum demotion step by step (and the
//! strictly-greater rule at a non-binary quantum), skip-join-mlfq against naive MLFQ with the
//! per-level counts of `summary.json`, and starvation promotion at its threshold to the
//! nanosecond. Conventions, cost models and the scenario builder: [`crate::policies`].

use crate::policies::{
    CONST_10MS, Exp, LINEAR, MLFQ_NO_STARVATION, MS, Scn, at, check, mlfq_table,
};

// ---------------------------------------------------------------------------------------------
// 1. mlfq: quantum demotion step by step.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms iterations, quanta 10·2^p ms, batch size 1. A request at level p is demoted when
/// its attained service at that level *exceeds* the quantum, so it runs 2^p + 1 iterations at
/// level p (2 at L0, 3 at L1, 5 at L2, 9 at L3) before moving down one level; a request that just
/// ran goes back to the *front* of its level.
///
/// X (id 0, 12 tokens) and Y (id 1, 4 tokens) arrive at 0; Z (id 2, 3 tokens) at 35 ms.
/// ```text
///   0– 10 X g1, att 10 = q0: not > 10, stays L0 (front)      L0=[X,Y]
///  10– 20 X g2, att 20 > 10 → L1 (X d1)                        L0=[Y]   L1=[X]
///  20– 30 Y g1, att 10
///  30– 40 Y g2, att 20 → L1 front (Y d1)                       L1=[Y,X]
///      35 Z arrives                                            L0=[Z]
///  40– 50 Z g1; 50–60 Z g2 → L1 front (Z d1)                   L1=[Z,Y,X]
///  60– 70 Z g3 = last token: Z finishes at 70 at L1
///  70– 90 Y g3, g4: Y finishes at 90 at L1 (att 20, never > 20)
///  90–120 X g3..g5, att 30 > 20 at g5 → L2 (X d2)
/// 120–170 X g6..g10, att 50 > 40 at g10 → L3 (X d3)
/// 170–190 X g11, g12: X finishes at 190 at L3
/// ```
#[test]
fn mlfq_demotes_one_level_when_attained_service_exceeds_the_quantum() {
    let scn = Scn::new("mlfq", CONST_10MS).table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    let got = scn.run(&[(0, 8, 12), (0, 8, 4), (35 * MS, 8, 3)]);
    check(
        "mlfq demotion",
        &got,
        &[
            at(10, 190).mlfq(3, 3, 0).preempted(0),
            at(30, 90).mlfq(1, 1, 0).preempted(0),
            at(50, 70).mlfq(1, 1, 0).preempted(0),
        ],
    );
}

/// The "strictly greater" check at a quantum that is not a binary fraction: base 9 ms, ratio 3,
/// constant 9 ms iterations. Level 1's quantum is 27 ms = exactly 3 iterations, which must *not*
/// demote (27 is not > 27); the 4th iteration at L1 (36 > 27) does. (In floating point
/// 0.009 × 3 = 0.026999999999999996 < 0.027, so comparing seconds would demote one iteration
/// early.)
/// ```text
/// A (6 tokens, at 0):   g1 att 9 (L0), g2 att 18 > 9 → L1 (d1), g3..g5 att 9, 18, 27 (stays),
///                       g6 last token at 54 → level 1, 1 demotion
/// B (7 tokens, at 100): same, then g6 att 36 > 27 → L2 (d2), g7 last token at 163 → level 2
/// ```
#[test]
fn mlfq_demotion_is_strictly_greater_at_a_non_binary_quantum() {
    let scn = Scn::new("mlfq", "model = \"constant\"\niteration_s = 0.009\n").table(&mlfq_table(
        "mlfq",
        "base_quantum_s = 0.009\nratio = 3.0\nstarvation_threshold_s = 1000.0",
    ));
    let got = scn.run(&[(0, 8, 6), (100 * MS, 8, 7)]);
    check(
        "mlfq base 9 ms ratio 3",
        &got,
        &[at(9, 54).mlfq(1, 1, 0), at(109, 163).mlfq(2, 2, 0)],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. skip-join-mlfq vs naive mlfq.
// ---------------------------------------------------------------------------------------------

/// `LINEAR` cost: a 600-token prompt's prefill takes 70 ms, i.e. it exceeds quanta 10, 20 and 40
/// ms; the first quantum that covers it is level 3's (80 ms). Decodes take 10 ms. The two requests
/// are far apart, so each runs alone.
/// ```text
/// A (600 in, 3 out, at 0): prefill 0–70, decodes 70–80, 80–90 → finishes at 90
///   skip-join: joins L3; att 70, 80, 90 — finishes before any demotion → level 3, 0 demotions
///   mlfq:      joins L0; att 70 > 10 → L1 (d1); att 10, then finishes → level 1, 1 demotion
/// B (600 in, 10 out, at 1000): prefill 1000–1070, 9 decodes → finishes at 1160
///   skip-join: L3: att 70, 80 (not > 80), 90 > 80 at g3 → L4 (d1); g4..g10 att ≤ 70 → level 4
///   mlfq:      L0: 70 > 10 → L1 (d1); L1: 10, 20, 30 > 20 at g4 → L2 (d2);
///              L2: 10..50 > 40 at g9 → L3 (d3); g10 → level 3, 3 demotions
/// ```
#[test]
fn skip_join_mlfq_joins_the_level_that_covers_the_prefill() {
    let rows = [(0, 600, 3), (1000 * MS, 600, 10)];
    let base = Scn::new("skip-join-mlfq", LINEAR)
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    check(
        "skip-join-mlfq",
        &base.run(&rows),
        &[at(70, 90).mlfq(3, 0, 0), at(1070, 1160).mlfq(4, 1, 0)],
    );
    check(
        "mlfq",
        &base.policy("mlfq").run(&rows),
        &[at(70, 90).mlfq(1, 1, 0), at(1070, 1160).mlfq(3, 3, 0)],
    );
}

/// The per-level counts in `summary.json` for the two runs above: skip-join puts both arrivals at
/// L3 and demotes B once, into L4; naive MLFQ puts both at L0 and demotes A into L1 and B into
/// L1, L2 and L3. Nobody is promoted. Other policies' summaries have no such field.
#[test]
fn mlfq_summary_counts_arrivals_and_demotions_per_level() {
    let rows = [(0, 600, 3), (1000 * MS, 600, 10)];
    let base = Scn::new("skip-join-mlfq", LINEAR)
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    let levels = |scn: &Scn| {
        let out = scn.try_run(&rows).unwrap();
        let v = serde_json::to_value(&out.summary).unwrap();
        let l = &v["replicas"][0]["mlfq_levels"];
        let col = |k: &str| -> Vec<u64> {
            l.as_array()
                .map(|a| a.iter().map(|x| x[k].as_u64().unwrap()).collect())
                .unwrap_or_default()
        };
        (col("arrivals"), col("demotions_in"), col("promotions_out"))
    };
    assert_eq!(
        levels(&base),
        (vec![0, 0, 0, 2, 0], vec![0, 0, 0, 0, 1], vec![0; 5])
    );
    assert_eq!(
        levels(&base.policy("mlfq")),
        (vec![2, 0, 0, 0], vec![0, 2, 1, 1], vec![0; 4])
    );
    let fcfs = base.policy("fcfs").try_run(&rows).unwrap();
    let v = serde_json::to_value(&fcfs.summary).unwrap();
    assert!(v["replicas"][0].get("mlfq_levels").is_none());
}

// ---------------------------------------------------------------------------------------------
// 3. Starvation promotion.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, quanta 10·2^p ms, batch size 1, starvation checked at every boundary
/// (`starvation_period_iterations = 1`) before the batch is formed (`starvation_check =
/// "before-batch"`; the `code` preset checks after, which moves each promotion one boundary later), idle time counted from arrival / last run
/// (`starvation_clock_from_zero = false`), attained service reset on promotion. X (id 0, 3 tokens)
/// and Y (id 1, 6 tokens) arrive at 0.
/// ```text
///  0–20 X g1, g2 → L1 (X d1), X idle from 20        L0=[Y] L1=[X]
/// 20–40 Y g1, g2 → L1 front (Y d1)                  L1=[Y,X]
/// 40–50 Y g3 (att 10)
/// threshold 30 ms:          at 50 X has been idle 30 ≥ 30 → promoted to L0 (X p1)
///   50–60 X g3 → X done at 60 (level 0); 60–70 Y g4, 70–80 Y g5 att 30 > 20 → L2 (d2),
///   80–90 Y g6 → Y done at 90 (level 2)
/// threshold 30 ms + 1 ns:   at 50 X idle 30 ms < threshold: no promotion; 50–60 Y g4 (att 20);
///   at 60 X idle 40 ≥ threshold → promoted (X p1); 60–70 X g3 → done at 70;
///   70–80 Y g5 → L2 (d2), 80–90 Y g6 → done at 90
/// no starvation (1000 s):   50–60 Y g4, 60–70 Y g5 → L2 (d2); L1=[X] runs: 70–80 X g3 → done at
///   80 at level 1; 80–90 Y g6 → done at 90
/// ```
#[test]
fn mlfq_starvation_promotion_fires_at_the_threshold_and_not_before() {
    let rows = [(0, 8, 3), (0, 8, 6)];
    let with_threshold = |t: &str| {
        Scn::new("mlfq", CONST_10MS)
            .table(&mlfq_table(
                "mlfq",
                &format!(
                    "base_quantum_s = 0.01\nratio = 2.0\nstarvation_threshold_s = {t}\n\
                     starvation_period_iterations = 1\nstarvation_clock_from_zero = false\n\
                     reset_attained_on_promotion = true\nstarvation_check = \"before-batch\""
                ),
            ))
            .run(&rows)
    };
    check(
        "threshold = idle time",
        &with_threshold("0.03"),
        &[at(10, 60).mlfq(0, 1, 1), at(30, 90).mlfq(2, 2, 0)],
    );
    check(
        "threshold 1 ns above the idle time",
        &with_threshold("0.030000001"),
        &[at(10, 70).mlfq(0, 1, 1), at(30, 90).mlfq(2, 2, 0)],
    );
    check(
        "no starvation",
        &with_threshold("1000.0"),
        &[at(10, 80).mlfq(1, 1, 0), at(30, 90).mlfq(2, 2, 0)],
    );
}

/// "Not before" to the nanosecond, with a threshold that is not a whole number of nanoseconds in
/// binary floating point (1.001 × 1e9 = 1000999999.9999999): skip-join-mlfq, constant iterations
/// of 1.001 s (D = 1,001,000,000 ns), base quantum 0.5 s, so every arrival joins L2 (quantum 2 s
/// covers 1.001 s); starvation checked before the batch is formed. A (id 0, 2 tokens) arrives at 0, B (id 1, 2 tokens) at 1 ns.
/// ```text
/// 0–D   A g1 (att 1.001 s ≤ 2 s, stays L2 front)
/// at D  B has been idle D − 1 ns = 1.000999999 s < 1.001 s → no promotion; A runs D–2D, done at 2D
/// at 2D B idle 2D − 1 ns ≥ 1.001 s → promoted L2 → L0 (B p1); 2D–3D B g1, att 1.001 > 0.5 → L1 (d1);
///       3D–4D B g2 → done at 4D at level 1
/// ```
#[test]
fn starvation_threshold_is_not_rounded_down_to_fire_a_nanosecond_early() {
    const D: u64 = 1_001_000_000;
    let got = Scn::new(
        "skip-join-mlfq",
        "model = \"constant\"\niteration_s = 1.001\n",
    )
    .table(&mlfq_table(
        "skip-join-mlfq",
        "base_quantum_s = 0.5\nratio = 2.0\nstarvation_threshold_s = 1.001\n\
             starvation_period_iterations = 1\nstarvation_clock_from_zero = false\n\
             reset_attained_on_promotion = true\nstarvation_check = \"before-batch\"",
    ))
    .run(&[(0, 8, 2), (1, 8, 2)]);
    let exp = |first: u64, finish: u64| Exp {
        first_token_ns: Some(first),
        finish_ns: Some(finish),
        ..Exp::default()
    };
    check(
        "1 ns below the threshold",
        &got,
        &[exp(D, 2 * D).mlfq(2, 0, 0), exp(3 * D, 4 * D).mlfq(1, 1, 1)],
    );
}
