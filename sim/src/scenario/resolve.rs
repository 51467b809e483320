//! [`Loaded::resolve`]: CLI overrides applied, then every table checked and turned into the parts
//! of a [`Resolved`], in a fixed order (the first error found is the one reported).

use super::{Loaded, MAX_REPLICAS, MAX_SEED, Overrides, Resolved, Scenario, TraceSpec};
use crate::catalogue::{Catalogue, GpuSpec, ModelSpec};
use crate::engine::Guards;
use crate::error::Result;
use crate::policy::Limits;

impl Loaded {
    /// Apply CLI overrides and validate everything that can be checked before the run.
    pub fn resolve(mut self, o: &Overrides) -> Result<Resolved> {
        let trace_from_cli = self.apply_overrides(o);
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
        self.check_seed(s.seed)?;
        let (model, gpu) = self.model_and_gpu(&s)?;
        let trace = self.resolve_trace(&s.trace, trace_from_cli)?;
        let (limits, guards) = self.resolve_limits(&s, &model)?;
        let (kv_capacity_blocks, kv_warning) = self.resolve_kv_capacity(&s, &model, &gpu)?;
        let mut warnings: Vec<String> = Vec::new();
        for w in kv_warning
            .into_iter()
            .chain(self.context_warning(&s, &model))
            .chain(groups.iter().flat_map(|g| g.warnings.iter().cloned()))
        {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        let entry = self.lookup_policy(&s)?;
        let predictor = self.resolve_predictor(&s, entry)?;
        let (analytic_params, cost_profile) = self.resolve_cost(&s, &model, &gpu)?;
        let kv_block_bytes = self.kv_block_bytes(&s, &model)?;
        let host_kv_blocks = (s.memory.host_kv_bytes / kv_block_bytes).min(u32::MAX as u64) as u32;
        let kv_layout = s.swap.kv_layout.unwrap_or(entry.kv_layout);
        let stage_layers = crate::swap::layers_per_stage(model.layers, s.pp);
        let swap_timing = crate::swap::timing::SwapTiming {
            reactive: s.swap.reactive.unwrap_or(entry.reactive),
            layers: stage_layers,
        };
        let swap = self.resolve_swap(&s, &gpu, kv_layout, stage_layers)?;
        let swap_profile = self.swap_profile(&model, &s, kv_layout)?;
        let pipeline = self.resolve_pipeline(&s, &model)?;
        let offload = self.kv_offload(&s.swap)?;
        let kv_timeline_interval_ns = self.kv_timeline_interval_ns(&s)?;
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
            warnings,
        };
        self.resolve_policy_params(&s, entry, &mut resolved)?;
        self.resolve_router_params(&s, &mut resolved)?;
        self.check_time_scales(&resolved)?;
        Ok(resolved)
    }

    /// The `[swap]` quantization keys, an error naming the key's line.
    fn kv_offload(&self, spec: &crate::swap::SwapSpec) -> Result<crate::swap::KvOffload> {
        crate::swap::KvOffload::resolve(spec).map_err(|e| {
            let key = if e.to_string().contains("kv_offload_bits") {
                "kv_offload_bits"
            } else {
                "kv_quant_s_per_byte"
            };
            self.wrap_at(&["swap", key], e)
        })
    }

    /// The seed within what a flag or a sweep axis can give (a TOML integer).
    fn check_seed(&self, seed: u64) -> Result<()> {
        if seed <= MAX_SEED {
            return Ok(());
        }
        Err(self.err_at(
            &["seed"],
            format!(
                "seed must be a whole number from 0 to {MAX_SEED} (what --seed, --seeds and a [sweep] seed axis can give), got {seed}"
            ),
        ))
    }

    /// The CLI overrides, written into the scenario; whether `--trace` replaced `[trace]` (its
    /// path is then relative to the working directory).
    fn apply_overrides(&mut self, o: &Overrides) -> bool {
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
        trace_from_cli
    }

    /// The model and GPU from the catalogue (built-in and `catalogue_files`), checked against the
    /// parallelism: `tp`, `pp`, `replicas` ≥ 1 and within bounds, `pp` dividing the layers, `tp`
    /// the attention heads, and `tp` and the KV heads dividing one another.
    fn model_and_gpu(&self, s: &Scenario) -> Result<(ModelSpec, GpuSpec)> {
        let mut cat = Catalogue::builtin();
        for f in &s.catalogue_files {
            cat.extend_from_file(&self.rel(f))?;
        }
        let model = cat
            .model(&s.model)
            .map_err(|e| self.wrap_at(&["model"], e))?
            .clone();
        let gpu = cat
            .gpu(&s.gpu)
            .map_err(|e| self.wrap_at(&["gpu"], e))?
            .clone();
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
        Ok((model, gpu))
    }

    /// A warning when `[scheduler] max_context_tokens` is above the model's own limit (allowed: a
    /// what-if).
    fn context_warning(&self, s: &Scenario, model: &ModelSpec) -> Option<String> {
        let c = s.scheduler.max_context_tokens?;
        (c > model.max_context_tokens).then(|| {
            let at = super::load::line_of_key(&self.text, &["scheduler", "max_context_tokens"])
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            format!(
                "{at}[scheduler] max_context_tokens = {c} is above model `{}`'s own limit of {} tokens; the run admits contexts the model was not built for",
                s.model, model.max_context_tokens
            )
        })
    }

    /// `[slo]`, `[scheduler]` batch limits and `[limits]`: the policy's [`Limits`] and the
    /// engine's [`Guards`].
    fn resolve_limits(&self, s: &Scenario, model: &ModelSpec) -> Result<(Limits, Guards)> {
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
        if !(l.max_sim_s.is_finite() && l.max_sim_s >= 1e-9) {
            return Err(self.err_at(
                &["limits", "max_sim_s"],
                format!(
                    "[limits] max_sim_s must be a finite number of seconds ≥ 1e-9, got {}",
                    crate::error::num(l.max_sim_s)
                ),
            ));
        }
        for (key, v) in [("max_events", l.max_events), ("max_queue", l.max_queue)] {
            if v == 0 {
                return Err(self.err_at(&["limits", key], format!("[limits] {key} must be ≥ 1")));
            }
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
        Ok((limits, guards))
    }

    /// `[pipeline]`: the stage-to-stage link (one stage unless `pp` > 1).
    fn resolve_pipeline(&self, s: &Scenario, model: &ModelSpec) -> Result<crate::exec::Pipeline> {
        // Checked whatever `pp` (a bad value is a mistake even where it is not used).
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
            Ok(p)
        } else {
            Ok(crate::exec::Pipeline::SINGLE)
        }
    }

    /// `[output] kv_timeline_interval_s` in ns (0 = off).
    fn kv_timeline_interval_ns(&self, s: &Scenario) -> Result<u64> {
        let iv = s.output.kv_timeline_interval_s;
        if !(iv.is_finite() && (iv == 0.0 || iv >= 1e-6)) {
            return Err(self.err_at(&["output", "kv_timeline_interval_s"], format!(
                "[output] kv_timeline_interval_s must be 0 (off) or a finite number ≥ 1e-6 s, got {iv}"
            )));
        }
        Ok((iv * 1e9).round() as u64)
    }
}
