//! servesim: a deterministic discrete-event simulator of LLM inference serving clusters.
//!
//! Layout: [`engine`] (event loop, replicas, KV accounting — no I/O), [`policy`] (one file per
//! scheduling policy), [`cost`] (iteration-time models), [`exec`] (the executor seam),
//! [`trace`] (readers and synthetic arrivals), [`scenario`] (TOML schema), [`metrics`],
//! [`output`] (atomic writers), [`route`] (cluster routers), [`run`] (one run), [`cli`].

pub mod capacity;
pub mod catalogue;
pub mod check;
pub mod cli;
pub mod cost;
pub mod engine;
pub mod error;
pub mod exec;
pub mod input;
pub mod interrupt;
pub mod live;
pub mod metrics;
pub mod output;
pub mod plot;
pub mod policy;
pub mod predict;
pub mod profile;
pub mod rng;
pub mod route;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod staging;
pub mod swap;
pub mod sweep;
pub mod trace;
pub mod vocab;

pub use error::{Result, SimError};
