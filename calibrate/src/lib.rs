//! servesim-calibrate: measurement plans, GPU measurement (feature `cuda`), fitting, Vidur import
//! and reports for servesim's calibration profiles (the schema is `servesim::profile`).
//!
//! The user-facing entry is `servesim calibrate <plan|run|fit|import-vidur|report> …`, which runs
//! this crate's `servesim-calibrate` binary ([`cli`]).

pub mod cli;
pub mod compare;
pub mod cpu;
pub mod cpu_forward;
pub mod cpu_run;
pub mod fitting;
pub mod flags;
pub mod gpu;
pub mod import;
pub mod plan;
pub mod report;
pub mod vidur_fit;
