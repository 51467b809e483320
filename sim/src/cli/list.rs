//! `servesim list`: the policies, routers, predictors, models and GPUs this build knows (as text
//! or `--json`), and `list policy NAME`: one policy's parameters with their defaults.

use std::io::Write;

use crate::error::SimError;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: Option<ListWhat>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ListWhat {
    /// One policy: the system it follows, its parameters ([policies.NAME]) with their defaults,
    /// and its default predictor.
    Policy {
        /// A policy name (`servesim list` shows them).
        name: String,
    },
}

/// Where the `[scheduler]` defaults come from (the same words as the README).
pub const SCHEDULER_DEFAULTS: &str = "max_batch_size 256 and max_batch_tokens 2048 follow vLLM's defaults (max_num_seqs, max_num_batched_tokens); FastServe's scenarios use max_batch_size 16, which moves capacity a lot: compare runs at the same values";

/// The `[scheduler]` defaults (`max_num_seqs` and `max_num_batched_tokens` of vLLM).
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 256;
pub const DEFAULT_MAX_BATCH_TOKENS: u32 = 2048;

/// The run summary's note, when the scenario sets a `[scheduler]` value that differs from its
/// default (these move results a lot): the values, the defaults and where they come from.
pub(super) fn overridden_defaults(s: &crate::scenario::SchedulerSpec) -> Option<String> {
    let mut set = Vec::new();
    if s.max_batch_size != DEFAULT_MAX_BATCH_SIZE {
        set.push(format!(
            "max_batch_size {} (default {DEFAULT_MAX_BATCH_SIZE}, vLLM's max_num_seqs)",
            s.max_batch_size
        ));
    }
    if s.max_batch_tokens != DEFAULT_MAX_BATCH_TOKENS {
        set.push(format!(
            "max_batch_tokens {} (default {DEFAULT_MAX_BATCH_TOKENS}, vLLM's max_num_batched_tokens)",
            s.max_batch_tokens
        ));
    }
    (!set.is_empty()).then(|| {
        format!(
            "note: the scenario sets {}; this moves capacity and latency a lot: compare runs at the same values",
            set.join(" and ")
        )
    })
}

pub(super) fn list_cmd(a: ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match (&a.what, a.json) {
        (Some(ListWhat::Policy { name }), json) => policy_cmd(name, json, out),
        (None, true) => {
            let text = crate::output::pretty_json(&everything_json());
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        (None, false) => list_text(out),
    }
}

fn list_text(out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "policies:")?;
    let w = crate::policy::REGISTRY.iter().map(|e| e.name.len()).max();
    for e in crate::policy::REGISTRY {
        writeln!(out, "  {:<w$} {}", e.name, e.summary, w = w.unwrap_or(0))?;
    }
    writeln!(out, "routers:")?;
    for e in crate::route::REGISTRY {
        writeln!(out, "  {:<18} {}", e.name, e.summary)?;
    }
    let cat = crate::catalogue::Catalogue::builtin();
    let (cpu_models, models): (Vec<String>, Vec<String>) = cat
        .models
        .keys()
        .cloned()
        .partition(|m| crate::catalogue::is_cpu_test_model(m));
    let cpu = crate::catalogue::CPU_DEVICE;
    writeln!(out, "models:   {}", models.join(", "))?;
    let gpus: Vec<String> = cat.gpus.keys().filter(|g| *g != cpu).cloned().collect();
    writeln!(out, "gpus:     {}", gpus.join(", "))?;
    writeln!(
        out,
        "cpu test models (f32, random weights, device `{cpu}`; `live --device cpu`, `calibrate run --device cpu`): {}",
        cpu_models.join(", ")
    )?;
    writeln!(
        out,
        "predictors: {}",
        crate::predict::PREDICTOR_NAMES.join(", ")
    )?;
    writeln!(out, "scheduler defaults: {SCHEDULER_DEFAULTS}")?;
    writeln!(
        out,
        "(`servesim list policy NAME` shows a policy's parameters and defaults)"
    )?;
    Ok(())
}

/// Every name `list` prints, as one JSON object.
fn everything_json() -> serde_json::Value {
    let cat = crate::catalogue::Catalogue::builtin();
    let policies: Vec<serde_json::Value> = crate::policy::REGISTRY
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "summary": e.summary,
                "default_predictor": e.default_predictor,
            })
        })
        .collect();
    let routers: Vec<serde_json::Value> = crate::route::REGISTRY
        .iter()
        .map(|e| serde_json::json!({ "name": e.name, "summary": e.summary }))
        .collect();
    serde_json::json!({
        "policies": policies,
        "routers": routers,
        "predictors": crate::predict::PREDICTOR_NAMES,
        "models": cat.models.keys().collect::<Vec<_>>(),
        "gpus": cat.gpus.keys().collect::<Vec<_>>(),
        "scheduler_defaults": {
            "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
            "max_batch_tokens": DEFAULT_MAX_BATCH_TOKENS,
            "note": SCHEDULER_DEFAULTS,
        },
    })
}

/// The iteration time that cost-model-derived defaults are shown for.
const SHOWN_ITERATION_S: f64 = 0.1;

/// Leave out of the listed parameters those a `[policies.NAME]` table may not set (recorded in
/// `config.json` but fixed by the policy, e.g. mlfq's `skip_join`, which `skip-join-mlfq` sets):
/// listed, they read as settable and the scenario then refused them.
fn drop_unsettable(
    e: &crate::policy::PolicyEntry,
    env: &crate::policy::PolicyEnv,
    params: &mut serde_json::Value,
) {
    let Some(m) = params.as_object_mut() else {
        return;
    };
    m.retain(|k, _| {
        let mut one = toml::Table::new();
        one.insert(k.clone(), toml::Value::Boolean(false));
        match (e.build)(Some(&toml::Value::Table(one)), env) {
            Err(err) => !err.to_string().contains("unknown field"),
            Ok(_) => true,
        }
    });
}

/// Policies whose chunked prefill is optional leave `chunked_prefill` (off) and `chunk_size`
/// (unset: `max_batch_tokens`) out of their resolved parameters, so that runs without it record
/// what they always did; `list policy` shows both with their defaults.
fn show_optional_chunking(
    e: &crate::policy::PolicyEntry,
    env: &crate::policy::PolicyEnv,
    params: &mut serde_json::Value,
) {
    let Some(m) = params.as_object_mut() else {
        return;
    };
    if m.contains_key("chunked_prefill") {
        return;
    }
    let mut on = toml::Table::new();
    on.insert("chunked_prefill".into(), toml::Value::Boolean(true));
    if (e.build)(Some(&toml::Value::Table(on)), env).is_ok() {
        m.insert("chunked_prefill".into(), false.into());
        m.insert("chunk_size".into(), env.limits.max_batch_tokens.into());
    }
}

/// `list policy NAME`: the entry, and its parameters as its constructor resolves them from an
/// empty `[policies.NAME]` table.
fn policy_cmd(name: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let e =
        crate::policy::lookup(name).map_err(|e| SimError::config(format!("list policy: {e}")))?;
    let env = crate::policy::PolicyEnv {
        limits: crate::policy::Limits {
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_context_tokens: 2048,
        },
        cost: std::sync::Arc::new(crate::cost::constant::ConstantCost {
            iteration_s: SHOWN_ITERATION_S,
        }),
    };
    let mut params = (e.build)(None, &env)
        .map(|(_, p)| p)
        .unwrap_or(serde_json::Value::Null);
    drop_unsettable(e, &env, &mut params);
    show_optional_chunking(e, &env, &mut params);
    let chunking = if params.get("chunked_prefill").is_some_and(|v| v == false) {
        "; chunk_size applies with chunked_prefill = true"
    } else {
        ""
    };
    let note = format!(
        "defaults derived from the cost model or the scenario are shown for a constant {SHOWN_ITERATION_S} s iteration, a 2048-token context, max_batch_size = {DEFAULT_MAX_BATCH_SIZE} and max_batch_tokens = {DEFAULT_MAX_BATCH_TOKENS}{chunking}; config.json of a run has the values it used"
    );
    if json {
        let v = serde_json::json!({
            "name": e.name,
            "summary": e.summary,
            "default_predictor": e.default_predictor,
            "forced_predictor": e.forced_predictor,
            "parameters": params,
            "note": note,
        });
        out.write_all(crate::output::pretty_json(&v).as_bytes())?;
        return Ok(());
    }
    writeln!(out, "{}: {}", e.name, e.summary)?;
    match e.forced_predictor {
        Some(p) => writeln!(out, "predictor: always {p}")?,
        None => writeln!(out, "default predictor: {}", e.default_predictor)?,
    }
    match params.as_object() {
        Some(m) if !m.is_empty() => {
            writeln!(out, "parameters ([policies.{}]), with defaults:", e.name)?;
            for (k, v) in m {
                writeln!(out, "  {k} = {v}")?;
            }
            writeln!(out, "({note})")?;
        }
        _ => writeln!(out, "parameters: none")?,
    }
    Ok(())
}
