//! servesim integration tests: one test binary, one module per concern.
//!
//! - [`micro`]: hand-computed 2–4 request scenarios with exact timestamps, through the CLI;
//! - [`invariants`]: property tests of engine invariants over random small traces;
//! - [`queueing`]: agreement with M/G/1 queueing theory (run with `--release`);
//! - [`determinism`]: same scenario + seed ⇒ byte-identical outputs;
//! - [`memory`]: hand-computed swap timings and property tests of the KV memory hierarchy;
//! - [`cli`]: user errors (exit 2, one line, no partial output) and the help/list commands.

mod cli;
mod cluster;
mod determinism;
mod fuzz;
mod golden;
mod invariants;
mod live;
mod memory;
mod micro;
mod policies;
mod queueing;
mod support;
mod traces;
