//! Unit tests of the run driver.
use super::*;

/// The progress total of a trace file is its number of rows, capped by the row limit: a
/// limit above the file's rows used to be taken for the total, so the bar stopped short.
#[test]
fn the_request_total_of_a_trace_file_is_its_rows_capped_by_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.csv");
    std::fs::write(
        &trace,
        "arrival_s,input_tokens,output_tokens\n0,4,2\n1,4,2\n2,4,2\n",
    )
    .unwrap();
    let text = "name = \"t\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n[trace]\nfile = \"t.csv\"\n[cost]\nmodel = \"analytic\"\n[scheduler]\npolicy = \"vllm\"\n";
    let path = dir.path().join("s.toml");
    let total = |limit: Option<u64>| {
        let o = crate::scenario::Overrides {
            num_requests: limit,
            ..Default::default()
        };
        let r = crate::scenario::parse(&path, text)
            .unwrap()
            .resolve(&o)
            .unwrap();
        count_requests(&r)
    };
    assert_eq!(total(None), Some(3));
    assert_eq!(total(Some(2)), Some(2));
    assert_eq!(total(Some(1000)), Some(3));
}

/// A `Progress` of every N reports at the N-th completion and each N after it, with the count
/// and that completion's finish time; of 0 or 1, at every completion.
#[test]
fn progress_reports_once_every_n_completions() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let heard = Rc::new(RefCell::new(Vec::new()));
    let h = heard.clone();
    let mut p = Progress::every(4, move |done, t| h.borrow_mut().push((done, t)));
    for i in 1..=10 {
        p.on_completion(i * 100);
    }
    assert_eq!(*heard.borrow(), vec![(4, 400), (8, 800)]);
    for every in [0, 1] {
        let h = Rc::new(RefCell::new(0u64));
        let h2 = h.clone();
        let mut p = Progress::every(every, move |done, _| *h2.borrow_mut() = done);
        for i in 1..=3 {
            p.on_completion(i);
            assert_eq!(*h.borrow(), i);
        }
    }
}

/// Past its cap the KV timeline keeps no more rows (memory stays bounded) and remembers
/// the first instant it left out; under the cap it keeps every row.
#[test]
fn kv_timeline_stops_at_its_row_cap() {
    let mut tap = Tap {
        collector: Collector::default(),
        progress: None,
        on_iteration: None,
        on_completion: None,
        kv_timeline: Vec::new(),
        kv_max_rows: 4,
        kv_cut_at_ns: None,
    };
    let sample = |t: Ns| KvSample {
        time_ns: t,
        replica: 0,
        gpu_blocks_used: t as u32,
        host_blocks_used: 0,
        running: 0,
        waiting: 0,
        swapped: 0,
    };
    for t in 0..4 {
        tap.on_kv_sample(&sample(t));
    }
    assert_eq!(tap.kv_timeline.len(), 4);
    assert_eq!(tap.kv_cut_at_ns, None);
    assert!(tap.wants_kv_samples());
    for t in 4..10 {
        tap.on_kv_sample(&sample(t));
    }
    assert_eq!(tap.kv_timeline.len(), 4);
    assert_eq!(tap.kv_timeline[3].time_ns, 3);
    assert_eq!(tap.kv_cut_at_ns, Some(4));
    // The engine stops sampling then (a run over many replicas pays nothing past the cap).
    assert!(!tap.wants_kv_samples());
    // With several replicas the cap keeps whole instants: 3 replicas, a cap of 4 rows keeps
    // instant 0 only (instant 1 had one of its three rows in when the cap was reached).
    tap.kv_timeline.clear();
    tap.kv_cut_at_ns = None;
    for t in 0..3 {
        for replica in 0..3 {
            tap.on_kv_sample(&KvSample {
                replica,
                ..sample(t)
            });
        }
    }
    let kept: Vec<(Ns, u32)> = tap
        .kv_timeline
        .iter()
        .map(|r| (r.time_ns, r.replica))
        .collect();
    assert_eq!(kept, vec![(0, 0), (0, 1), (0, 2)]);
    assert_eq!(tap.kv_cut_at_ns, Some(1));
}

/// Arrivals are refused up front only when their span certainly passes `max_sim_s`: the mean
/// span n/λ less 10 standard deviations (√n·cv/λ).
#[test]
fn only_arrivals_that_certainly_outlast_max_sim_s_are_refused() {
    let s = 1_000_000_000;
    let ok = |a, rate, cv, n, max_s: u64| check_arrival_span(a, rate, cv, n, max_s * s).is_ok();
    // Constant gaps: exact (1,000 requests at 10 req/s span 100 s).
    assert!(ok(ArrivalProcess::Constant, 10.0, 0.0, 1000, 100));
    assert!(!ok(ArrivalProcess::Constant, 10.0, 0.0, 1000, 99));
    // Poisson: 10⁶ requests at 1 req/s: 10⁶ s ± 1,000: refused below 990,000 s.
    assert!(ok(ArrivalProcess::Poisson, 1.0, 0.0, 1_000_000, 990_000));
    assert!(!ok(ArrivalProcess::Poisson, 1.0, 0.0, 1_000_000, 989_999));
    // Gamma with cv 10: ± 10,000 s: refused below 900,000 s.
    assert!(ok(ArrivalProcess::Gamma, 1.0, 10.0, 1_000_000, 900_000));
    assert!(!ok(ArrivalProcess::Gamma, 1.0, 10.0, 1_000_000, 899_999));
    // A few requests: the deviation covers everything.
    assert!(ok(ArrivalProcess::Poisson, 1.0, 0.0, 100, 1));
    // Replayed arrivals are not judged.
    assert!(ok(ArrivalProcess::Replay, 1e-6, 0.0, u64::MAX, 1));
}
