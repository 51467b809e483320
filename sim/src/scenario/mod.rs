//! Scenario files (TOML): schema, validation, CLI overrides and resolution into the parts a run
//! needs. Every table denies unknown keys. Relative paths are relative to the scenario file's
//! directory (paths given on the command line are relative to the working directory).

mod groups;
mod hardware;
mod load;
mod resolve;
mod resolved;
mod schema;
mod tables;
mod time_scales;
mod trace_source;

pub use hardware::{analytic_params_for, kv_blocks_from_memory};
pub use load::{Loaded, MAX_NAME_CHARS, check_name, line_of_exact_key, line_of_key, load, parse};
pub use resolved::{Resolved, SyntheticLengths, TraceSource};
pub use schema::{
    CostSpec, DEFAULT_KV_TIMELINE_INTERVAL_S, LimitsSpec, MAX_BLOCK_TOKENS, MAX_REPLICAS, MAX_SEED,
    MemorySpec, OutputSpec, Overrides, PipelineSpec, ReplicaGroup, Scenario, SchedulerSpec,
    SloSpec, TraceSpec,
};
