//! servesim integration tests: one test binary, one module per concern.
//!
//! - [`micro`]: hand-computed 2–4 request scenarios with exact timestamps, through the CLI;
//! - [`invariants`]: property tests of engine invariants over random small traces;
//! - [`queueing`]: agreement with M/G/1 queueing theory: FCFS, SRPT, FB/LAS, SJF (run with `--release`);
//! - [`determinism`]: same scenario + seed ⇒ byte-identical outputs;
//! - [`memory`]: hand-computed swap timings and property tests of the KV memory hierarchy;
//! - [`cli`]: user errors (exit 2, one line, no partial output) and the help/list commands;
//! - [`exit_codes`]: the fuzz corpus and hostile scenarios through every entry point (exit codes
//!   0, 1, 2 or 130 only, no panic), and the regression tests of the crashes they found;
//! - [`interrupt`]: Ctrl-C and SIGTERM during `run` and `sweep` in a real child process (exit
//!   130/143, no half-written directory), and the debris of a killed sweep cleaned up;
//! - [`outputs`]: output paths never lose a user's files (`--force`, inputs, scenario names).
//! - [`itl`]: inter-token latency, per request and pooled, hand-computed and against exact gaps.

mod cli;
mod cluster;
mod determinism;
mod exit_codes;
mod fuzz;
mod golden;
mod interrupt;
mod invariants;
mod itl;
mod layers;
mod live;
mod memory;
mod micro;
mod outputs;
mod policies;
mod queueing;
mod slo;
mod stability;
mod support;
mod swap_modes;
mod traces;
