//! Typed library errors. The binary adds no context of its own beyond what these carry: every variant
//! names the file, line and field (or the request, policy or limit) the user has to look at.

use std::path::PathBuf;

/// Every way a servesim run can fail. None of these is a panic; all of them are user-facing.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },

    #[error("{path}:{line}: field `{field}`: {msg}")]
    Input {
        path: PathBuf,
        line: u64,
        field: String,
        msg: String,
    },

    #[error("{path}: {msg}")]
    Scenario { path: PathBuf, msg: String },

    #[error("request {id}: {msg}")]
    Request { id: u64, msg: String },

    #[error("policy `{policy}` produced an invalid plan at t={time_s:.9}s: {msg}")]
    Plan {
        policy: String,
        time_s: f64,
        msg: String,
    },

    #[error("{0}")]
    Limit(String),

    #[error("cost model `{model}`: {msg}")]
    Cost { model: String, msg: String },

    #[error("{0}")]
    Config(String),
}

impl SimError {
    pub fn config(msg: impl Into<String>) -> Self {
        SimError::Config(msg.into())
    }
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;
