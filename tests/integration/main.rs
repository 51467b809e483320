//! servesim integration tests: one test binary, one module per concern.
//!
//! - [`micro`]: hand-computed 2–4 request scenarios with exact timestamps, through the CLI;
//! - [`invariants`]: property tests of engine invariants over random small traces;
//! - [`queueing`]: agreement with M/G/1 queueing theory: FCFS, SRPT, FB/LAS, SJF (run with `--release`);
//! - [`determinism`]: same scenario + seed ⇒ byte-identical outputs;
//! - [`memory`]: hand-computed swap timings of the KV memory hierarchy; [`memory_props`]: its
//!   property tests; [`kv_timeline`]: KV usage sampling;
//! - [`policies`]: every policy finishes every request, fast-forward equals stepping;
//!   [`ff_chunked`]: the same differential test for the chunked-prefill policies;
//!   [`mlfq_chunked`]: chunked-prefill MLFQ bursts that used to stall or livelock;
//!   [`policies_mlfq`] and [`policies_size`]: hand-computed scenarios of each policy mechanism;
//! - [`cluster`]: replicas and routers; [`parallelism`]: tensor and pipeline parallelism and
//!   replica groups; [`shards`]: sharded sweeps and `merge`;
//! - [`cli`]: user errors (exit 2, one line, no partial output) and the help/list commands;
//!   [`cli_scenario`]: the same for bad scenario files; [`cli_flags`]: sweep axes from flags,
//!   the exit status of failed sweep runs, did-you-mean, `list --json`, completions;
//! - [`exit_codes`]: the fuzz corpus and hostile scenarios through every entry point (exit codes
//!   0, 1, 2 or 130 only, no panic); [`exit_regressions`]: the regression tests of the crashes
//!   they found; [`exit_messages`]: messages in user terms and the inputs refused in the second round;
//! - [`fuzz`]: byte fuzzing of every reader of user files; [`overload`]: overload detection and
//!   streaming in bounded memory;
//! - [`interrupt`]: Ctrl-C and SIGTERM during `run` and `sweep` in a real child process (exit
//!   130/143, no half-written directory), and the debris of a killed sweep cleaned up;
//! - [`outputs`]: output paths never lose a user's files (`--force`, inputs, scenario names);
//!   [`clobber`]: debris-like names, existing files under single-file outputs, stale locks, pipes.
//! - [`itl`]: inter-token latency, per request and pooled, hand-computed and against exact gaps.
//! - [`bench_targets`]: `bench --targets` prints every performance target with its bound.
//! - [`capacity_speed`]: `capacity`'s early stop keeps every verdict; its outputs do not depend on `--jobs`.
//! - [`defaults_note`]: `run` names a batch limit the scenario sets away from its default.
//! - [`sweep_axes`]: hostile sweep axes, rate flags, run labels, failed capacity probes.
//! - [`plot_inputs`]: `plot` with over-long series names and unplottable sweep or KV files.
//! - [`profile_inputs`]: absurd calibration profiles, over-long synthetic lengths and repeated
//!   request ids in `compare`, refused with the file, line and field.

mod bench_targets;
mod capacity_speed;
mod chunked;
mod chunked_switch;
mod cli;
mod cli_flags;
mod cli_scenario;
mod clobber;
mod cluster;
mod defaults_note;
mod determinism;
mod exec_check;
mod exit_codes;
mod exit_messages;
mod exit_regressions;
mod ff_chunked;
mod fuzz;
mod golden;
mod interrupt;
mod invariants;
mod itl;
mod kv_timeline;
mod layers;
mod live;
mod live_backend;
mod memory;
mod memory_props;
mod micro;
mod mlfq_chunked;
mod outputs;
mod overload;
mod parallelism;
mod plot_inputs;
mod policies;
mod policies_mlfq;
mod policies_size;
mod profile_inputs;
mod queueing;
mod shape;
mod shards;
mod slo;
mod stability;
mod streaming;
mod support;
mod swap_modes;
mod sweep_axes;
mod traces;
