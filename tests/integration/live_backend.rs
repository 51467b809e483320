//! Live mode on a compute backend (`--device cpu|cuda`): the adapter that turns the engine's
//! request-level view of each iteration into backend calls, run here against a test backend that
//! keeps its own paged KV state and fails on any call that disagrees with it; the
//! `iterations.csv` columns a backend fills (`requests`, `checksum`); and the CLI without a
//! backend built in (exit 2, one line, nothing written).

use std::collections::BTreeMap;
use std::sync::Arc;

use servesim::live::{
    BackendError, ComputeBackend, ExecutorKind, LiveOptions, SeqStep, StepOutput, run_live_with,
    write_live,
};
use servesim::scenario::{Overrides, load};

use crate::support::{Workdir, cli, read_summary};

/// 32 requests arriving within 16 ms into a replica that holds 1,280 KV tokens; the cost model
/// matches the test backend's 0.2 ms per iteration, so the policies' quanta are realistic.
fn scenario(policy: &str) -> String {
    format!(
        r#"name = "live-backend"
model = "opt-13b"
gpu = "a100-80gb"
seed = 5

[trace]
arrival = "poisson"
rate_per_s = 2000.0
num_requests = 32
input_lengths = {{ dist = "uniform", min = 8, max = 300 }}
output_lengths = {{ dist = "uniform", min = 1, max = 200 }}

[memory]
block_tokens = 16
kv_capacity_blocks = 80

[cost]
model = "constant"
iteration_s = 0.0002

[scheduler]
policy = "{policy}"
max_batch_size = 8
"#
    )
}

/// A backend that computes nothing (it sleeps 0.2 ms per forward pass) but keeps each
/// sequence's tokens and place, and refuses any call that disagrees with them; its checksum
/// hashes the batch.
#[derive(Default)]
struct Ledger {
    /// seq → (tokens, on the host).
    seqs: BTreeMap<u64, (usize, bool)>,
    calls: [u64; 4],
}

impl ComputeBackend for Ledger {
    fn name(&self) -> &str {
        "ledger"
    }
    fn forward(&mut self, steps: &[SeqStep]) -> Result<StepOutput, BackendError> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for s in steps {
            let (held, host) = self.seqs.get(&s.seq).copied().unwrap_or((0, false));
            if host || held != s.cached_tokens || s.new_tokens == 0 {
                return Err(
                    format!("seq {}: step {s:?}, held {held} (host: {host})", s.seq).into(),
                );
            }
            self.seqs.insert(s.seq, (held + s.new_tokens, false));
            for x in [s.seq, s.cached_tokens as u64, s.new_tokens as u64] {
                h = (h ^ x).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.calls[0] += 1;
        std::thread::sleep(std::time::Duration::from_micros(200));
        Ok(StepOutput {
            checksum: h,
            argmax: vec![0; steps.len()],
        })
    }
    fn release(&mut self, seq: u64) {
        assert!(
            self.seqs.remove(&seq).is_some(),
            "release of unknown seq {seq}"
        );
        self.calls[1] += 1;
    }
    fn swap_out(&mut self, seq: u64) -> Result<(), BackendError> {
        match self.seqs.get_mut(&seq) {
            Some((_, host @ false)) => *host = true,
            other => return Err(format!("swap-out of seq {seq}: {other:?}").into()),
        }
        self.calls[2] += 1;
        Ok(())
    }
    fn swap_in(&mut self, seq: u64) -> Result<(), BackendError> {
        match self.seqs.get_mut(&seq) {
            Some((_, host @ true)) => *host = false,
            other => return Err(format!("swap-in of seq {seq}: {other:?}").into()),
        }
        self.calls[3] += 1;
        Ok(())
    }
}

/// The ledger's counters, shared out of the engine.
struct Shared(Arc<std::sync::Mutex<Ledger>>);

impl ComputeBackend for Shared {
    fn name(&self) -> &str {
        "ledger"
    }
    fn forward(&mut self, steps: &[SeqStep]) -> Result<StepOutput, BackendError> {
        self.0.lock().unwrap().forward(steps)
    }
    fn release(&mut self, seq: u64) {
        self.0.lock().unwrap().release(seq)
    }
    fn swap_out(&mut self, seq: u64) -> Result<(), BackendError> {
        self.0.lock().unwrap().swap_out(seq)
    }
    fn swap_in(&mut self, seq: u64) -> Result<(), BackendError> {
        self.0.lock().unwrap().swap_in(seq)
    }
}

#[test]
fn a_backend_runs_every_batch_and_its_kv_events() {
    let w = Workdir::new();
    for (policy, swaps) in [("vllm", false), ("skip-join-mlfq", true)] {
        let path = w.write(&format!("{policy}.toml"), scenario(policy));
        let r = load(&path).unwrap().resolve(&Overrides::default()).unwrap();
        let opts = LiveOptions {
            executor: ExecutorKind::Cpu,
            time_scale: 1.0,
            threads: Some(2),
            stop: Default::default(),
        };
        let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
        let shared = ledger.clone();
        let out = run_live_with(&r, &opts, &mut |_| Ok(Box::new(Shared(shared.clone()))))
            .unwrap_or_else(|e| panic!("{policy}: {e}"));
        assert!(!out.partial);
        assert_eq!(out.run.summary.requests, 32, "{policy}");
        let l = ledger.lock().unwrap();
        assert!(l.seqs.is_empty(), "{policy}: KV left behind: {:?}", l.seqs);
        let [forwards, releases, swap_outs, swap_ins] = l.calls;
        assert_eq!(forwards, out.iterations.len() as u64, "{policy}");
        // Every finish releases; so do vllm's recompute preemptions.
        assert!(
            releases >= 32 && (swaps || releases > 32),
            "{policy}: {releases}"
        );
        assert_eq!(
            swap_outs > 0 && swap_ins > 0,
            swaps,
            "{policy}: {:?}",
            l.calls
        );
        assert!(out.iterations.iter().all(|i| i.checksum.is_some()));
        // iterations.csv: the batch size and the checksum of every row.
        let dir = write_live(
            servesim::output::StagedDir::new(&w.path(policy), &Default::default()).unwrap(),
            &out,
            &servesim::run::config_json(&r),
            &opts,
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("iterations.csv")).unwrap();
        let mut distinct = std::collections::BTreeSet::new();
        for line in text.lines().skip(1) {
            let c: Vec<&str> = line.split(',').collect();
            let n = |k: usize| c[k].parse::<u64>().unwrap();
            assert_eq!(n(9), n(5) + n(7), "{line}");
            distinct.insert(n(10));
        }
        assert!(distinct.len() > 10, "checksums change with the batch");
        servesim::live::compare::check_iterations_csv(&dir.join("iterations.csv")).unwrap();
        let s = read_summary(&dir);
        assert_eq!(s["live"]["executor"], "cpu");
        assert_eq!(s["live"]["threads"], 2);
    }
}

#[test]
fn a_backend_error_names_the_backend_and_the_call() {
    struct Broken;
    impl ComputeBackend for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn forward(&mut self, _: &[SeqStep]) -> Result<StepOutput, BackendError> {
            Err("out of device memory".into())
        }
        fn release(&mut self, _: u64) {}
        fn swap_out(&mut self, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn swap_in(&mut self, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
    }
    let w = Workdir::new();
    let path = w.write("s.toml", scenario("vllm"));
    let r = load(&path).unwrap().resolve(&Overrides::default()).unwrap();
    let opts = LiveOptions {
        executor: ExecutorKind::Cpu,
        time_scale: 1.0,
        threads: None,
        stop: Default::default(),
    };
    let err = run_live_with(&r, &opts, &mut |_| Ok(Box::new(Broken)))
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("live backend `broken`: forward: out of device memory"),
        "{err}"
    );
    // A compute backend runs in real time only.
    let scaled = LiveOptions {
        time_scale: 0.5,
        ..opts
    };
    let err = run_live_with(&r, &scaled, &mut |_| Ok(Box::new(Broken)))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("--time-scale applies to --device mock only"),
        "{err}"
    );
}

#[test]
fn devices_that_cannot_run_the_scenario_exit_2_and_write_nothing() {
    let w = Workdir::new();
    let path = w.write("s.toml", scenario("vllm"));
    let out = w.path("live");
    let o = out.to_str().unwrap();
    let p = path.to_str().unwrap();
    for (args, msg) in [
        (
            vec!["live", p, "--device", "cpu", "--out", o],
            "the CPU backend runs Llama-style blocks",
        ),
        (
            vec!["live", p, "--device", "cpu", "--threads", "2", "--out", o],
            "the CPU backend runs Llama-style blocks",
        ),
        (
            vec!["live", p, "--device", "cuda", "--out", o],
            "no CUDA driver found",
        ),
        (
            vec!["live", p, "--mock", "--device", "cpu", "--out", o],
            "--mock",
        ),
        (vec!["live", p, "--device", "tpu", "--out", o], "tpu"),
        (
            vec!["live", p, "--mock", "--threads", "0", "--out", o],
            "--threads",
        ),
    ] {
        let r = cli(args.clone());
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{args:?}: {}", r.stderr);
        assert!(!out.exists(), "{args:?} wrote {o}");
    }
    let r = cli(["live", p, "--device", "cpu", "--out", o]);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // `--device mock` is `--mock`.
    let r = cli([
        "live",
        p,
        "--device",
        "mock",
        "--time-scale",
        "0.01",
        "--quiet",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = read_summary(&out);
    assert_eq!(s["live"]["executor"], "mock");
    assert_eq!(s["requests"], 32);
}

/// `live --device cpu` really computes: the 2-layer CPU test model (random weights) runs a small
/// trace under `vllm` with a KV pool small enough to preempt; every iteration carries a logits
/// checksum and they are not all equal (the batches differ), and the outputs are `run`'s.
#[test]
fn live_on_the_cpu_backend_computes_every_iteration() {
    let w = Workdir::new();
    let text = scenario("vllm")
        .replace(
            "model = \"opt-13b\"\ngpu = \"a100-80gb\"",
            "model = \"cpu-tiny-2x256\"\ngpu = \"cpu\"",
        )
        .replace("num_requests = 32", "num_requests = 24")
        .replace("max = 300", "max = 120")
        .replace("max = 200", "max = 40")
        .replace(
            "kv_capacity_blocks = 80",
            "kv_capacity_blocks = 24\nhost_kv_bytes = 4000000",
        );
    let path = w.write("s.toml", &text);
    let out = w.path("live");
    let r = cli([
        "live",
        path.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = read_summary(&out);
    assert_eq!(s["live"]["executor"], "cpu");
    assert_eq!(s["requests"], 24);
    let csv = std::fs::read_to_string(out.join("iterations.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let c = header.iter().position(|h| *h == "checksum").unwrap();
    let sums: Vec<String> = lines
        .map(|l| l.split(',').nth(c).unwrap().to_string())
        .collect();
    assert!(sums.len() > 24, "{} iterations", sums.len());
    assert!(
        sums.iter().all(|x| !x.is_empty()),
        "an iteration without a checksum"
    );
    let distinct: std::collections::HashSet<&String> = sums.iter().collect();
    assert!(
        distinct.len() > sums.len() / 2,
        "checksums barely change: {distinct:?}"
    );
}
