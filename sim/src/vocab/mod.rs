//! The shared vocabulary below the engine and the policies: simulated time, request state, KV
//! block pools and trace rows. Everything here is plain data and arithmetic; it uses nothing but
//! the standard library, so every layer above may depend on it (`docs/architecture.md` §1).

pub mod kv;
pub mod request;
pub mod sketch;
pub mod time;

pub use kv::KvPool;
use time::Ns;

/// One trace row, ready for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRow {
    pub id: u64,
    pub arrival_ns: Ns,
    pub input_tokens: u32,
    pub output_tokens: u32,
}
