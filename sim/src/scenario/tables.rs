//! The policy, its predictor and the router, with their parameter tables (`[policies.NAME]`,
//! `[predictors.NAME]`, `[routers.NAME]`): every table present is checked, also of names this
//! run does not use.

use super::{Loaded, Resolved, Scenario};
use crate::error::Result;
use crate::policy::PolicyEntry;

impl Loaded {
    /// The scenario's policy; every `[policies.NAME]` must name a known policy.
    pub(super) fn lookup_policy(&self, s: &Scenario) -> Result<&'static PolicyEntry> {
        let sch = &s.scheduler;
        let entry = crate::policy::lookup(&sch.policy).map_err(|e| self.wrap(e))?;
        for k in s.policies.keys() {
            crate::policy::lookup(k).map_err(|_| {
                self.err_at(
                    &["policies", k],
                    format!(
                        "[policies.{}]: unknown policy; {}valid policies: {}",
                        crate::error::echo(k),
                        crate::error::did_you_mean(k, crate::policy::policy_names()),
                        crate::policy::policy_names().join(", ")
                    ),
                )
            })?;
        }
        Ok(entry)
    }

    /// The predictor the policy sees (forced, named, or the policy's default), and every
    /// `[predictors.NAME]` table checked.
    pub(super) fn resolve_predictor(&self, s: &Scenario, entry: &PolicyEntry) -> Result<String> {
        let sch = &s.scheduler;
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
        crate::predict::check_name(&predictor).map_err(|e| self.wrap(e))?;
        for (k, v) in &s.predictors {
            crate::predict::check_name(k)
                .map_err(|e| self.err_at(&["predictors", k], format!("[predictors.{k}]: {e}")))?;
            let check = |t: &toml::Value| crate::predict::check_params(k, t);
            self.expect_table("predictors", k, v)?;
            check(v).map_err(|e| self.table_err("predictors", k, v, e, &check))?;
        }
        Ok(predictor)
    }

    /// Every `[policies.NAME]` table checked, and the run's policy parameters (with the policy's
    /// own offloaded-KV format, where it has one) written into `resolved`.
    pub(super) fn resolve_policy_params(
        &self,
        s: &Scenario,
        entry: &PolicyEntry,
        resolved: &mut Resolved,
    ) -> Result<()> {
        let env = crate::policy::PolicyEnv {
            limits: resolved.limits,
            cost: resolved.cost_model()?.into(),
        };
        // Every table present is checked, also of policies this run does not use (a typo there
        // would otherwise pass until the policy is swept or named with --policy).
        for (k, v) in &s.policies {
            let build = crate::policy::lookup(k).map_err(|e| self.wrap(e))?.build;
            let check = |t: &toml::Value| build(Some(t), &env).map(|_| ());
            self.expect_table("policies", k, v)?;
            check(v).map_err(|e| self.table_err("policies", k, v, e, &check))?;
        }
        let (_, policy_params) =
            (entry.build)(s.policies.get(&s.scheduler.policy), &env).map_err(|e| self.wrap(e))?;
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
        Ok(())
    }

    /// Every `[routers.NAME]` table checked, and the run's router parameters written into
    /// `resolved`.
    pub(super) fn resolve_router_params(
        &self,
        s: &Scenario,
        resolved: &mut Resolved,
    ) -> Result<()> {
        let router = crate::route::lookup(&s.router).map_err(|e| self.wrap(e))?;
        for k in s.routers.keys() {
            crate::route::lookup(k).map_err(|_| {
                self.err_at(
                    &["routers", k],
                    format!(
                        "[routers.{}]: unknown router; {}valid routers: {}",
                        crate::error::echo(k),
                        crate::error::did_you_mean(k, crate::route::router_names()),
                        crate::route::router_names().join(", ")
                    ),
                )
            })?;
        }
        let router_env = resolved.router_env()?;
        for (k, v) in &s.routers {
            let build = crate::route::lookup(k).map_err(|e| self.wrap(e))?.build;
            let check = |t: &toml::Value| build(Some(t), &router_env).map(|_| ());
            self.expect_table("routers", k, v)?;
            check(v).map_err(|e| self.table_err("routers", k, v, e, &check))?;
        }
        let (_, router_params) =
            (router.build)(s.routers.get(&s.router), &router_env).map_err(|e| self.wrap(e))?;
        resolved.router_params = router_params;
        Ok(())
    }
}
