//! [`Loaded::resolve`]: CLI overrides applied, then every table checked and turned into the parts
//! of a [`Resolved`], in a fixed order (the first error found is the one reported).

use super::hardware::NO_BLOCK_ROOM;
use super::{
    CostSpec, Loaded, MAX_BLOCK_TOKENS, MAX_REPLICAS, Overrides, Resolved, SyntheticLengths,
    TraceSource, TraceSpec, analytic_params_for, kv_blocks_from_memory,
};
use crate::catalogue::Catalogue;
use crate::cost::analytic::AnalyticCost;
use crate::cost::profile::ProfileTables;
use crate::engine::Guards;
use crate::error::{Result, SimError};
use crate::policy::Limits;
use crate::trace::ArrivalProcess;

impl Loaded {
    /// Apply CLI overrides and validate everything that can be checked before the run.
    pub fn resolve(mut self, o: &Overrides) -> Result<Resolved> {
        let s = &mut self.scenario;
        if let Some(seed) = o.seed {
            s.seed = seed;
        }
        if let Some(p) = &o.policy {
            s.scheduler.policy = p.clone();
        }
        let mut trace_from_cli = false;
        if let Some(t) = &o.trace {
            s.trace = TraceSpec {
                file: Some(t.clone()),
                ..Default::default()
            };
            trace_from_cli = true;
        }
        if let Some(r) = o.rate_per_s {
            s.trace.rate_per_s = Some(r);
        }
        if let Some(n) = o.num_requests {
            s.trace.num_requests = Some(n);
        }
        let groups = self.resolve_groups()?;
        if let Some(first) = groups.first() {
            // The top-level `gpu`, `tp`, `pp` are only the groups' defaults: what the cluster as a
            // whole resolves to (config.json, validation) is replica 0's hardware, so a default
            // that no group keeps need not fit the model.
            self.scenario.replicas = groups.iter().map(|g| g.scenario.replicas).sum();
            self.scenario.gpu = first.scenario.gpu.clone();
            self.scenario.tp = first.scenario.tp;
            self.scenario.pp = first.scenario.pp;
        }
        let s = self.scenario.clone();
        let mut cat = Catalogue::builtin();
        for f in &s.catalogue_files {
            cat.extend_from_file(&self.rel(f))?;
        }
        let wrap = |e: SimError| match e {
            SimError::Config(m) => self.err(m),
            other => other,
        };
        let model = cat.model(&s.model).map_err(wrap)?.clone();
        let gpu = cat.gpu(&s.gpu).map_err(wrap)?.clone();
        for (k, v) in [("tp", s.tp), ("pp", s.pp), ("replicas", s.replicas)] {
            if v == 0 {
                return Err(self.err_at(&[k], format!("`{k}` must be ≥ 1")));
            }
        }
        if s.replicas > MAX_REPLICAS {
            return Err(self.err_at(
                &["replicas"],
                format!(
                    "`replicas` = {} is above the limit of {MAX_REPLICAS} replicas per scenario",
                    s.replicas
                ),
            ));
        }
        if model.layers % s.pp != 0 {
            return Err(self.err_at(
                &["pp"],
                format!(
                    "pp = {} does not divide the model's {} layers",
                    s.pp, model.layers
                ),
            ));
        }
        if model.heads % s.tp != 0 {
            return Err(self.err_at(
                &["tp"],
                format!(
                    "tp = {} does not divide the model's {} attention heads",
                    s.tp, model.heads
                ),
            ));
        }
        if !model.kv_heads.is_multiple_of(s.tp) && !s.tp.is_multiple_of(model.kv_heads) {
            return Err(self.err_at(&["tp"], format!(
                "tp = {} and the model's {} KV heads: one must divide the other (each GPU holds whole KV heads, or each KV head is replicated over whole GPUs)",
                s.tp, model.kv_heads
            )));
        }

        // Trace.
        let t = &s.trace;
        let parametric = t.input_lengths.is_some() || t.output_lengths.is_some();
        let synthetic_keys = t.lengths_file.is_some() || parametric || t.replay_file.is_some();
        let trace = match &t.file {
            Some(_) if synthetic_keys => {
                return Err(self.err_at(
                    &["trace", "file"],
                    "[trace]: give either `file` or a synthetic trace (`lengths_file`, `input_lengths`/`output_lengths`, `replay_file`), not both",
                ));
            }
            None if !synthetic_keys => {
                return Err(self.err_at(
                    &["trace"],
                    "[trace]: give `file` (a trace CSV) or a synthetic trace (`arrival`, `rate_per_s`, `num_requests`, and `lengths_file` or `input_lengths` + `output_lengths`)",
                ));
            }
            Some(f) => {
                if t.arrival.is_some() || t.cv.is_some() || t.drop_over_context {
                    return Err(self.err_at(
                        &["trace", "file"],
                        "[trace]: `arrival`, `cv` and `drop_over_context` apply to synthetic traces only, not to `file`",
                    ));
                }
                TraceSource::File {
                    path: if trace_from_cli {
                        f.clone()
                    } else {
                        self.rel(f)
                    },
                    rate_per_s: t.rate_per_s,
                    limit: t.num_requests,
                }
            }
            None => {
                let lengths = match (&t.lengths_file, &t.input_lengths, &t.output_lengths) {
                    (Some(l), None, None) => SyntheticLengths::File(self.rel(l)),
                    (None, Some(i), Some(o)) => {
                        for (k, d) in [("input_lengths", i), ("output_lengths", o)] {
                            d.validate().map_err(|e| {
                                self.err_at(&["trace", k], format!("[trace] {k}: {e}"))
                            })?;
                        }
                        SyntheticLengths::Parametric {
                            input: i.clone(),
                            output: o.clone(),
                        }
                    }
                    (Some(_), _, _) => {
                        return Err(self.err_at(
                            &["trace", "lengths_file"],
                            "[trace]: give either `lengths_file` or `input_lengths` + `output_lengths`, not both",
                        ));
                    }
                    (None, None, None) => {
                        return Err(self.err_at(
                            &["trace"],
                            "[trace]: synthetic traces need lengths: `lengths_file` or `input_lengths` + `output_lengths`",
                        ));
                    }
                    (None, _, _) => {
                        return Err(self.err_at(
                            &["trace"],
                            "[trace]: `input_lengths` and `output_lengths` go together; give both",
                        ));
                    }
                };
                let arrival = match (t.arrival, &t.replay_file) {
                    (None, Some(_)) | (Some(ArrivalProcess::Replay), Some(_)) => {
                        ArrivalProcess::Replay
                    }
                    (Some(ArrivalProcess::Replay), None) => {
                        return Err(self.err_at(
                            &["trace", "arrival"],
                            "[trace]: `arrival = \"replay\"` needs `replay_file` (the trace whose arrival times are replayed)",
                        ));
                    }
                    (Some(a), Some(_)) => {
                        return Err(self.err_at(
                            &["trace", "replay_file"],
                            format!(
                                "[trace]: `replay_file` goes with `arrival = \"replay\"`, not `{}`",
                                ArrivalProcess::NAMES[a as usize]
                            ),
                        ));
                    }
                    (a, None) => a.unwrap_or(ArrivalProcess::Poisson),
                };
                // `cv` shapes gamma arrivals; elsewhere it may only state the process's own cv
                // (Poisson 1, constant 0), so a sweep over `arrival` can keep one `cv`.
                let own_cv = match arrival {
                    ArrivalProcess::Poisson => Some(1.0),
                    ArrivalProcess::Constant => Some(0.0),
                    _ => None,
                };
                if let Some(cv) = t.cv
                    && arrival != ArrivalProcess::Gamma
                    && own_cv != Some(cv)
                {
                    return Err(self.err_at(
                        &["trace", "cv"],
                        format!(
                            "[trace] cv = {} has no effect on `{}` arrivals{}; it shapes `arrival = \"gamma\"` only",
                            crate::error::num(cv),
                            ArrivalProcess::NAMES[arrival as usize],
                            own_cv.map_or(String::new(), |c| format!(" (whose cv is {c})"))
                        ),
                    ));
                }
                if arrival != ArrivalProcess::Replay && t.rate_per_s.is_none() {
                    return Err(
                        self.err_at(&["trace"], "[trace]: synthetic traces need `rate_per_s`")
                    );
                }
                TraceSource::Synthetic {
                    arrival,
                    rate_per_s: t.rate_per_s,
                    cv: t.cv.unwrap_or(1.0),
                    replay_file: t.replay_file.as_ref().map(|p| self.rel(p)),
                    lengths,
                    num_requests: t.num_requests.ok_or_else(|| {
                        self.err_at(&["trace"], "[trace]: synthetic traces need `num_requests`")
                    })?,
                    drop_over_context: t.drop_over_context,
                }
            }
        };
        if let Some(r) = t.rate_per_s
            && !(r.is_finite() && r > 0.0)
        {
            return Err(self.err_at(
                &["trace", "rate_per_s"],
                format!(
                    "[trace] rate_per_s must be a finite number > 0, got {}",
                    crate::error::num(r)
                ),
            ));
        }
        use crate::trace::synthetic::{MAX_CV, MIN_CV};
        if let Some(cv) = t.cv
            && t.arrival == Some(ArrivalProcess::Gamma)
            && !(cv.is_finite() && (MIN_CV..=MAX_CV).contains(&cv))
        {
            return Err(self.err_at(
                &["trace", "cv"],
                format!(
                    "[trace] cv must be from {MIN_CV:e} to {MAX_CV:e} for gamma arrivals, got {}",
                    crate::error::num(cv)
                ),
            ));
        }

        // Limits.
        let sch = &s.scheduler;
        if let Some(slo) = &s.slo {
            slo.validate().map_err(|m| self.err_at(&["slo"], m))?;
        }
        if sch.max_batch_size == 0 || sch.max_batch_tokens == 0 {
            let key = if sch.max_batch_size == 0 {
                "max_batch_size"
            } else {
                "max_batch_tokens"
            };
            return Err(self.err_at(
                &["scheduler", key],
                "[scheduler] max_batch_size and max_batch_tokens must be ≥ 1",
            ));
        }
        let limits = Limits {
            max_batch_size: sch.max_batch_size,
            max_batch_tokens: sch.max_batch_tokens,
            max_context_tokens: sch.max_context_tokens.unwrap_or(model.max_context_tokens),
        };
        let l = &s.limits;
        if !(l.max_sim_s.is_finite() && l.max_sim_s > 0.0) || l.max_events == 0 || l.max_queue == 0
        {
            return Err(self.err_at(&["limits"], "[limits]: every limit must be > 0"));
        }
        if !(l.overload_window_s.is_finite() && l.overload_window_s >= 0.0) {
            return Err(self.err_at(
                &["limits", "overload_window_s"],
                "[limits] overload_window_s must be a finite number of seconds ≥ 0 (0 turns the overload check off)",
            ));
        }
        let guards = Guards {
            max_events: l.max_events,
            max_sim_ns: (l.max_sim_s * 1e9).min(u64::MAX as f64 / 2.0) as u64,
            max_queue: l.max_queue.min(usize::MAX as u64) as usize,
            overload_window_ns: (l.overload_window_s * 1e9)
                .min(u64::MAX as f64 / 2.0)
                .ceil() as u64,
            overload_min_queue: l.overload_min_queue.min(usize::MAX as u64) as usize,
        };

        // Memory.
        let m = &s.memory;
        if m.block_tokens == 0 {
            return Err(self.err_at(
                &["memory", "block_tokens"],
                "[memory] block_tokens must be ≥ 1",
            ));
        }
        if m.block_tokens > MAX_BLOCK_TOKENS {
            return Err(self.err_at(
                &["memory", "block_tokens"],
                format!(
                    "[memory] block_tokens must be at most {MAX_BLOCK_TOKENS}, got {}",
                    m.block_tokens
                ),
            ));
        }
        if sch.max_context_tokens == Some(0) {
            return Err(self.err_at(
                &["scheduler", "max_context_tokens"],
                "[scheduler] max_context_tokens must be ≥ 1",
            ));
        }
        // The memory arithmetic runs even with `kv_capacity_blocks`: the override replaces the
        // computed KV capacity, not the checks that the utilization is a fraction and that the
        // weights fit.
        let computed = kv_blocks_from_memory(&model, &gpu, s.tp, s.pp, m);
        let kv_capacity_blocks = match (m.kv_capacity_blocks, computed) {
            (Some(0), _) => {
                return Err(self.err_at(
                    &["memory", "kv_capacity_blocks"],
                    "[memory] kv_capacity_blocks must be ≥ 1",
                ));
            }
            (Some(b), Ok(_)) => b,
            (Some(b), Err(e)) if e.starts_with(NO_BLOCK_ROOM) => b,
            (_, Err(e)) if e.contains("gpu_memory_utilization") => {
                return Err(self.err_at(&["memory", "gpu_memory_utilization"], e));
            }
            (_, Err(e)) => return Err(self.err_at(&["model"], e)),
            (None, Ok(b)) => b,
        };

        // Policy parameters.
        let entry = crate::policy::lookup(&sch.policy).map_err(wrap)?;
        for k in s.policies.keys() {
            crate::policy::lookup(k).map_err(|_| {
                self.err_at(
                    &["policies", k],
                    format!(
                        "[policies.{}]: unknown policy; valid policies: {}",
                        crate::error::echo(k),
                        crate::policy::policy_names().join(", ")
                    ),
                )
            })?;
        }
        let predictor = match (entry.forced_predictor, &s.predictor) {
            (Some(f), Some(named)) if named != f => {
                return Err(self.err(format!(
                    "policy `{}` always uses the `{f}` predictor; remove `predictor = \"{named}\"` or use the policy without the suffix",
                    sch.policy
                )));
            }
            (Some(f), _) => f.to_string(),
            (None, Some(named)) => named.clone(),
            (None, None) => entry.default_predictor.to_string(),
        };
        crate::predict::check_name(&predictor).map_err(wrap)?;
        for (k, v) in &s.predictors {
            crate::predict::check_name(k)
                .map_err(|e| self.err_at(&["predictors", k], format!("[predictors.{k}]: {e}")))?;
            let check = |t: &toml::Value| crate::predict::check_params(k, t);
            check(v).map_err(|e| self.table_err("predictors", k, v, e, &check))?;
        }

        // Cost model.
        let mut cost_profile = None;
        let analytic_params = match &s.cost {
            CostSpec::Constant { iteration_s } => {
                if !(iteration_s.is_finite() && *iteration_s >= 0.0) {
                    return Err(self.err_at(
                        &["cost", "iteration_s"],
                        format!(
                            "[cost] iteration_s must be a finite number ≥ 0, got {iteration_s}"
                        ),
                    ));
                }
                None
            }
            CostSpec::Linear(lc) => {
                lc.validate().map_err(wrap)?;
                None
            }
            CostSpec::Analytic { params } => {
                let p = analytic_params_for(&s.gpu, params.as_ref())
                    .map_err(|e| self.err_at(&["cost", "params"], e))?;
                AnalyticCost::new(model.clone(), gpu.clone(), s.tp, p.clone()).map_err(wrap)?;
                Some(p)
            }
            CostSpec::Profile {
                path,
                mode,
                iteration_overhead_s,
            } => {
                let dir = self.rel(path);
                let profile = self.load_profile(&dir, &s.gpu, "[cost]")?;
                let tables = ProfileTables::new(
                    &profile,
                    &s.model,
                    &model,
                    s.tp,
                    *mode,
                    *iteration_overhead_s,
                )
                .map_err(|e| self.err(format!("[cost] profile {}: {e}", dir.display())))?;
                cost_profile = Some((std::sync::Arc::new(tables), dir));
                None
            }
        };

        let kv_block_bytes = model
            .kv_bytes_per_token()
            .checked_mul(m.block_tokens as u64)
            .ok_or_else(|| {
                self.err(format!(
                    "[memory] block_tokens = {}: a KV block of {} bytes per token × {} tokens does not fit in 64 bits; use fewer tokens per block",
                    m.block_tokens,
                    model.kv_bytes_per_token(),
                    m.block_tokens
                ))
            })?;
        let host_kv_blocks = (m.host_kv_bytes / kv_block_bytes).min(u32::MAX as u64) as u32;
        let kv_layout = s.swap.kv_layout.unwrap_or(entry.kv_layout);
        let stage_layers = crate::swap::layers_per_stage(model.layers, s.pp);
        let swap_timing = crate::swap::timing::SwapTiming {
            reactive: s.swap.reactive.unwrap_or(entry.reactive),
            layers: stage_layers,
        };
        let swap = crate::swap::PcieSwap::resolve(
            &s.swap,
            gpu.pcie_bytes_per_s,
            s.tp * s.pp,
            kv_layout,
            stage_layers,
        )
        .map_err(|e| match e {
            SimError::Config(m) => {
                let w = &s.swap;
                let bad = [
                    ("per_call_s", w.per_call_s),
                    ("per_block_s", w.per_block_s),
                    ("latency_s", w.latency_s),
                ]
                .into_iter()
                .find(|(_, v)| matches!(v, Some(v) if !(v.is_finite() && *v >= 0.0)))
                .map(|(k, _)| k);
                match bad {
                    Some(k) => self.err_at(&["swap", k], m),
                    None => self.err_at(&["swap"], m),
                }
            }
            other => other,
        })?;
        let swap_profile = self.swap_profile(&model, &s, kv_layout)?;
        // Checked whatever `pp` (a bad value is a mistake even where it is not used).
        let pipeline = {
            let p = crate::exec::Pipeline {
                stages: s.pp,
                send_latency_s: s.pipeline.send_latency_s.unwrap_or(20e-6),
                send_bytes_per_token: (model.hidden as u64 * model.dtype_bytes as u64) as f64,
                send_bytes_per_s: s.pipeline.send_bytes_per_s.unwrap_or(12.5e9),
            };
            if !(p.send_latency_s.is_finite() && p.send_latency_s >= 0.0) {
                return Err(self.err_at(
                    &["pipeline", "send_latency_s"],
                    "[pipeline] send_latency_s must be a finite number ≥ 0",
                ));
            }
            if !(p.send_bytes_per_s.is_finite() && p.send_bytes_per_s > 0.0) {
                return Err(self.err_at(
                    &["pipeline", "send_bytes_per_s"],
                    "[pipeline] send_bytes_per_s must be a finite number > 0",
                ));
            }
            if s.pp > 1 {
                p
            } else {
                crate::exec::Pipeline::SINGLE
            }
        };
        let offload = crate::swap::KvOffload::resolve(&s.swap).map_err(wrap)?;
        let iv = s.output.kv_timeline_interval_s;
        if !(iv.is_finite() && (iv == 0.0 || iv >= 1e-6)) {
            return Err(self.err_at(&["output", "kv_timeline_interval_s"], format!(
                "[output] kv_timeline_interval_s must be 0 (off) or a finite number ≥ 1e-6 s, got {iv}"
            )));
        }
        let kv_timeline_interval_ns = (iv * 1e9).round() as u64;
        let mut resolved = Resolved {
            scenario: s.clone(),
            scenario_path: self.path.clone(),
            model,
            gpu,
            trace,
            limits,
            guards,
            kv_capacity_blocks,
            host_kv_blocks,
            kv_block_bytes,
            swap,
            swap_timing,
            pipeline,
            offload,
            kv_timeline_interval_ns,
            swap_profile,
            cost_profile,
            policy_params: serde_json::Value::Null,
            groups,
            router_params: serde_json::Value::Null,
            analytic_params,
            predictor,
        };
        let env = crate::policy::PolicyEnv {
            limits,
            cost: resolved.cost_model()?.into(),
        };
        // Every table present is checked, also of policies this run does not use (a typo there
        // would otherwise pass until the policy is swept or named with --policy).
        for (k, v) in &s.policies {
            let build = crate::policy::lookup(k).map_err(wrap)?.build;
            let check = |t: &toml::Value| build(Some(t), &env).map(|_| ());
            check(v).map_err(|e| self.table_err("policies", k, v, e, &check))?;
        }
        let (_, policy_params) =
            (entry.build)(s.policies.get(&s.scheduler.policy), &env).map_err(wrap)?;
        // A policy's own offloaded-KV format (`alise`: `kv_offload_bits`, validated by its build)
        // applies when `[swap] kv_offload_bits` is not given; both written must agree.
        if let Some(bits) = policy_params
            .get("kv_offload_bits")
            .and_then(|v| v.as_u64())
        {
            let policy = &s.scheduler.policy;
            let written = s
                .policies
                .get(policy)
                .and_then(|t| t.get("kv_offload_bits"));
            match s.swap.kv_offload_bits {
                None => resolved.offload.bits = bits as u32,
                Some(g) if g as u64 != bits && written.is_some() => {
                    return Err(self.err_at(
                        &["policies", policy, "kv_offload_bits"],
                        format!(
                            "[policies.{policy}] kv_offload_bits = {bits} contradicts [swap] kv_offload_bits = {g}; give one of them"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        resolved.policy_params = policy_params;
        let router = crate::route::lookup(&s.router).map_err(wrap)?;
        for k in s.routers.keys() {
            crate::route::lookup(k).map_err(|_| {
                self.err_at(
                    &["routers", k],
                    format!(
                        "[routers.{}]: unknown router; valid routers: {}",
                        crate::error::echo(k),
                        crate::route::router_names().join(", ")
                    ),
                )
            })?;
        }
        let router_env = resolved.router_env()?;
        for (k, v) in &s.routers {
            let build = crate::route::lookup(k).map_err(wrap)?.build;
            let check = |t: &toml::Value| build(Some(t), &router_env).map(|_| ());
            check(v).map_err(|e| self.table_err("routers", k, v, e, &check))?;
        }
        let (_, router_params) =
            (router.build)(s.routers.get(&s.router), &router_env).map_err(wrap)?;
        resolved.router_params = router_params;
        Ok(resolved)
    }
}
