//! Launching a planned batch (single stage or pipelined) and finishing iterations and copies.

use super::replica::{Flight, Replica};
use super::{CLASS_END, CLASS_STAGE_FREE, CLASS_TRANSFER, Observer, Sim};
use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::exec::{ExecBatch, ExecItem, KvEventKind};
use crate::policy::{PreemptMode, ReplicaView};
use crate::predict::{Predictor, bound_by_context, extend_prediction};
use crate::swap::Direction;
use crate::swap::timing::StepCopies;
use crate::vocab::TraceRow;
use crate::vocab::kv::{blocks_for_tokens, extra_blocks_for};
use crate::vocab::request::{KvLoc, Request, SampleState, Slab, Slot};
use crate::vocab::sketch::GapRun;
use crate::vocab::time::{Ns, duration_ns_ceil, ns_to_s};

impl Sim {
    pub(super) fn start_iteration(
        &mut self,
        r: u32,
        now: Ns,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let limits = self.cfg.limits;
        let block_tokens = self.cfg.block_tokens;
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        {
            let view = view!(rep, now, limits);
            rep.policy.schedule(&view, &mut rep.plan);
        }
        let policy = rep.policy.name();
        let plan_err = |msg: String| SimError::Plan {
            policy: policy.to_string(),
            time_s: ns_to_s(now),
            msg,
        };
        let mut transfers: Vec<(Ns, Slot)> = Vec::new();
        // This step's swap-outs and the batch's reactive swap-ins (they may delay the compute).
        let mut copies = StepCopies::default();
        // Preemptions first: they free blocks for the batch.
        rep.apply_preemptions(now, &mut transfers, &mut copies, &plan_err)?;
        rep.apply_swap_ins(now, &mut transfers, &plan_err)?;
        if rep.plan.run.is_empty() {
            return self.idle_step(r, now, transfers, observer);
        }
        if rep.plan.run.len() > limits.max_batch_size as usize {
            return Err(plan_err(format!(
                "batch of {} requests exceeds max_batch_size = {}",
                rep.plan.run.len(),
                limits.max_batch_size
            )));
        }
        let shape = rep.form_batch(now, block_tokens, &mut transfers, &mut copies, &plan_err)?;
        if rep.plan.run.iter().any(|i| i.prefill_chunk_tokens > 0) {
            // A chunked plan: prefill chunks and decodes share one token budget.
            if shape.tokens() > limits.max_batch_tokens as u64 {
                return Err(plan_err(format!(
                    "{} tokens ({} in prefill chunks, {} decodes) exceed max_batch_tokens = {}",
                    shape.tokens(),
                    shape.prefill_tokens,
                    shape.decode_requests,
                    limits.max_batch_tokens
                )));
            }
        } else if shape.prefill_requests > 1
            && shape.prefill_tokens > limits.max_batch_tokens as u64
        {
            return Err(plan_err(format!(
                "{} prefill tokens exceed max_batch_tokens = {}",
                shape.prefill_tokens, limits.max_batch_tokens
            )));
        }
        let compute = match &mut rep.exec {
            None => rep.executor.run_iteration(&shape)?,
            Some(b) => {
                let d = rep.executor.run_batch(b, &shape);
                b.clear();
                d?
            }
        };
        if rep.pipeline.stages > 1 {
            let pipeline = rep.pipeline;
            for (t, s) in transfers {
                self.push_slot(t, CLASS_TRANSFER, r, s);
            }
            return self.launch_micro_batch(r, now, compute, copies, &shape, pipeline, observer);
        }
        let io = (transfers, shape);
        self.launch_single(r, now, compute, copies, io, trace, predictor, observer)
    }

    /// Nothing to run: queue the plan's copies, and fail if the replica could never run again.
    fn idle_step(
        &mut self,
        r: u32,
        now: Ns,
        transfers: Vec<(Ns, Slot)>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let rep = &mut self.replicas[r as usize];
        rep.busy = false;
        rep.flush_transfers(observer);
        for (end, s) in transfers {
            self.push_slot(end, CLASS_TRANSFER, r, s);
        }
        let rep = &self.replicas[r as usize];
        if !rep.reqs.is_empty() && rep.transfers_in_flight == 0 && rep.flights.is_empty() {
            return Err(SimError::Plan {
                policy: rep.policy.name().to_string(),
                time_s: ns_to_s(now),
                msg: format!(
                    "nothing to run while {} requests are unfinished (free KV blocks: {}); the run would never end",
                    rep.reqs.len(),
                    rep.kv.free_blocks()
                ),
            });
        }
        Ok(())
    }

    /// Launch the batch just formed on a single-stage replica, fast-forwarding when it repeats.
    #[allow(clippy::too_many_arguments)]
    fn launch_single(
        &mut self,
        r: u32,
        now: Ns,
        compute: Ns,
        copies: StepCopies,
        formed: (Vec<(Ns, Slot)>, BatchShape),
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let (transfers, shape) = formed;
        let block_tokens = self.cfg.block_tokens;
        let rep = &mut self.replicas[r as usize];
        let overflow = || SimError::Limit("simulated time overflowed u64 nanoseconds".into());
        let compute_end = now.checked_add(compute).ok_or_else(overflow)?;
        let timing = rep.swap_timing;
        let end =
            crate::swap::timing::compute_end(timing.reactive, timing.layers, now, compute, &copies)
                .ok_or_else(overflow)?;
        if end > compute_end {
            rep.charge_stall(end - compute_end);
        }
        rep.busy = true;
        rep.iter_start_ns = now;
        rep.count_iteration(end - now, shape.requests() as u64);
        self.stats.iterations += 1;
        observer.on_iteration(r, now, end, &shape);
        rep.report_memory(r, now, end, block_tokens, observer);
        let repeatable = self.fast_forward
            && rep.transfer_log.is_none()
            && rep.pipeline.stages == 1
            && transfers.is_empty()
            && rep.plan.preempt.is_empty()
            && rep.plan.swap_in.is_empty()
            && copies == StepCopies::default()
            && rep.exec.is_none();
        for (t, s) in transfers {
            self.push_slot(t, CLASS_TRANSFER, r, s);
        }
        let end = if repeatable {
            self.fast_forward(r, now, end, shape, trace, predictor, observer)?
        } else {
            end
        };
        self.push(end, CLASS_END, r);
        Ok(())
    }

    /// Put the batch just formed into the pipeline: stage k starts it when stage k − 1 has sent it
    /// and stage k is done with the previous micro-batch; each stage takes `compute / stages` plus
    /// the activation send. The first stage takes the next micro-batch when it is done; the batch's
    /// tokens come out of the last stage. Reactive swap-ins (`copies`): every stage's GPUs copy
    /// their own `⌈layers / pp⌉` layers over their own links in parallel, so each stage sees the
    /// whole copy window; under `overlap` the tokens come out no earlier than the last copy, under
    /// the other modes each stage's compute waits for it as [`crate::swap::timing`] says (over
    /// the stage's layers) and its send follows. Busy time counts the mean stage occupancy, so
    /// pipeline bubbles lower the busy fraction.
    #[allow(clippy::too_many_arguments)]
    fn launch_micro_batch(
        &mut self,
        r: u32,
        now: Ns,
        compute: Ns,
        copies: StepCopies,
        shape: &BatchShape,
        pipeline: crate::exec::Pipeline,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let stages = pipeline.stages as u64;
        let send_s = pipeline.send_s(shape.tokens());
        let send = duration_ns_ceil(send_s)
            .ok_or_else(|| SimError::config(format!("pipeline send time {send_s} s is invalid")))?;
        let stage_compute = compute.div_ceil(stages);
        let stage_ns = stage_compute + send;
        let rep = &mut self.replicas[r as usize];
        let timing = rep.swap_timing;
        let overflow = || SimError::Limit("simulated time overflowed u64 nanoseconds".into());
        let mut t = now;
        let mut ungated = now;
        let mut first_stage_end = now;
        for (k, free) in rep.stage_free_ns.iter_mut().enumerate() {
            let start = t.max(*free);
            let end = if timing.reactive == crate::swap::timing::Reactive::Overlap {
                start.checked_add(stage_ns)
            } else {
                crate::swap::timing::compute_end(
                    timing.reactive,
                    timing.layers,
                    start,
                    stage_compute,
                    &copies,
                )
                .and_then(|e| e.checked_add(send))
            }
            .ok_or_else(overflow)?;
            // The same stage without any wait for copies (for the stall it charges).
            ungated = ungated
                .max(*free)
                .checked_add(stage_ns)
                .ok_or_else(overflow)?;
            *free = end;
            t = end;
            if k == 0 {
                first_stage_end = end;
            }
        }
        let exit = match (timing.reactive, copies.swap_in) {
            (crate::swap::timing::Reactive::Overlap, Some((_, b))) => t.max(b),
            _ => t,
        };
        // The last stage emits micro-batches in launch order: one held back by its copy under
        // `overlap` (whose stages do not wait for it) holds back the ones behind it. The end
        // events pop flights in that order; an overtaking one finished the earlier batch while
        // its swap-in was still copying.
        let exit = rep.flights.back().map_or(exit, |f| exit.max(f.exit_ns));
        if exit > ungated {
            rep.charge_stall(exit - ungated);
        }
        rep.count_iteration(stage_ns, shape.requests() as u64);
        self.stats.iterations += 1;
        observer.on_iteration(r, now, exit, shape);
        rep.report_memory(r, now, exit, self.cfg.block_tokens, observer);
        let batch = std::mem::take(&mut rep.batch);
        if rep.flights.is_empty() {
            rep.occupied_since_ns = now;
        }
        rep.flights.push_back(Flight {
            batch,
            start_ns: now,
            exit_ns: exit,
        });
        rep.stage0_busy = true;
        rep.busy = true;
        rep.iter_start_ns = now;
        self.push(first_stage_end, CLASS_STAGE_FREE, r);
        self.push(exit, CLASS_END, r);
        Ok(())
    }

    pub(super) fn finish_transfer(&mut self, r: u32, s: Slot, now: Ns) {
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        rep.transfers_in_flight -= 1;
        let mut req = rep.reqs.get_mut(s);
        match req.kv_loc {
            KvLoc::SwappingOut => {
                rep.kv.free(req.blocks);
                req.blocks = 0;
                req.kv_loc = KvLoc::Host;
            }
            KvLoc::SwappingIn => {
                rep.host.free(req.host_blocks);
                req.host_blocks = 0;
                req.kv_loc = KvLoc::Gpu;
            }
            other => {
                unreachable!("engine bug: transfer completed for a request in state {other:?}")
            }
        }
    }

    pub(super) fn finish_iteration(
        &mut self,
        r: u32,
        now: Ns,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) {
        let limits = self.cfg.limits;
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        let dur = now - rep.iter_start_ns;
        rep.busy = false;
        rep.survivors.clear();
        let mut run = GapRun::default();
        for i in 0..rep.batch.len() {
            let s = rep.batch[i];
            // Out of the batch with its KV on the GPU: waiting (or finished, below).
            let req = rep.reqs.get_mut_moving(s, SampleState::Waiting);
            req.in_batch = false;
            req.attained_ns += dur;
            req.kv_tokens = req.kv_tokens_after_step();
            req.kv_loc = KvLoc::Gpu;
            if req.kv_tokens < req.prefill_tokens() {
                // A prefill chunk that leaves part of the prompt: no token yet (and no token gap
                // ends here: `last_run_end_ns` stays at its last token).
                req.mid_prefill = true;
                rep.survivors.push(s);
                continue;
            }
            req.mid_prefill = false;
            // A token comes out at the end of each iteration (the last stage's, with pipelines).
            // Members mostly share their gap: equal gaps go to the sketch together.
            if let Some(gap) = req.emit_token_gap(now) {
                run.push(&mut rep.itl, gap, 1);
            }
            req.last_run_end_ns = now;
            req.generated_tokens += 1;
            if req.first_token_ns.is_none() {
                req.first_token_ns = Some(now);
            }
            debug_assert!(
                req.blocks as u64 >= blocks_for_tokens(req.kv_tokens as u64, self.cfg.block_tokens)
            );
            if req.generated_tokens >= req.output_tokens {
                rep.complete(r, s, now, predictor, observer);
            } else {
                if req.generated_tokens >= req.predicted_output_tokens {
                    let extended =
                        extend_prediction(req.generated_tokens, req.predicted_output_tokens);
                    req.predicted_output_tokens =
                        bound_by_context(extended, req.input_tokens, limits.max_context_tokens);
                }
                rep.survivors.push(s);
            }
        }
        run.flush(&mut rep.itl);
        let view = view!(rep, now, limits);
        rep.policy.on_iteration_end(&rep.survivors, dur, &view);
    }
}

impl Replica {
    /// Apply the plan's preemptions (swap-outs, or frees for recomputation).
    fn apply_preemptions(
        &mut self,
        now: Ns,
        transfers: &mut Vec<(Ns, Slot)>,
        copies: &mut StepCopies,
        plan_err: &dyn Fn(String) -> SimError,
    ) -> Result<()> {
        for i in 0..self.plan.preempt.len() {
            let (s, mode) = self.plan.preempt[i];
            if !self.reqs.contains(s) {
                return Err(plan_err(format!("preempts unknown slot {s}")));
            }
            let mut req = self.reqs.get_mut(s);
            if req.in_transfer() {
                return Err(plan_err(format!(
                    "preempts request {} while its KV is being copied",
                    req.id
                )));
            }
            if req.in_flight() {
                return Err(plan_err(format!(
                    "preempts request {} while its micro-batch is in the pipeline",
                    req.id
                )));
            }
            let host_need = self.offload.host_blocks_for(req.blocks);
            let host_room = host_need <= self.host.free_blocks();
            match mode {
                PreemptMode::Swap if req.kv_loc == KvLoc::Gpu && host_room => {
                    let ok = self.host.try_alloc(host_need);
                    debug_assert!(ok, "host room was checked");
                    req.host_blocks = host_need;
                    req.offloaded_gpu_blocks = req.blocks;
                    drop(req);
                    let (_, end) = self.start_transfer(s, Direction::DeviceToHost, now)?;
                    transfers.push((end, s));
                    copies.add_swap_out(end);
                    self.reqs.get_mut(s).preemptions += 1;
                    self.stats.preemptions += 1;
                }
                PreemptMode::Swap if req.kv_loc == KvLoc::Host => {}
                // Recompute (or a swap with no room on the host: degrade to recompute).
                _ => {
                    if req.kv_loc == KvLoc::None {
                        continue;
                    }
                    if let Some(b) = &mut self.exec {
                        b.push_event(req.id, KvEventKind::Recompute, req.blocks, req.host_blocks);
                    }
                    self.kv.free(req.blocks);
                    self.host.free(req.host_blocks);
                    req.blocks = 0;
                    req.host_blocks = 0;
                    // Mid-prefill, only the chunks done so far are redone.
                    req.recomputed_tokens += if req.mid_prefill {
                        req.kv_tokens
                    } else {
                        req.prefill_tokens()
                    } as u64;
                    req.kv_tokens = 0;
                    req.mid_prefill = false;
                    req.kv_loc = KvLoc::None;
                    req.preemptions += 1;
                    self.stats.preemptions += 1;
                }
            }
        }
        Ok(())
    }

    /// Start the plan's proactive swap-ins.
    fn apply_swap_ins(
        &mut self,
        now: Ns,
        transfers: &mut Vec<(Ns, Slot)>,
        plan_err: &dyn Fn(String) -> SimError,
    ) -> Result<()> {
        for i in 0..self.plan.swap_in.len() {
            let s = self.plan.swap_in[i];
            if !self.reqs.contains(s) || self.reqs.get(s).kv_loc != KvLoc::Host {
                return Err(plan_err(format!(
                    "swaps in slot {s}, which is not on the host"
                )));
            }
            let need = self.reqs.get(s).offloaded_gpu_blocks;
            if !self.kv.try_alloc(need) {
                return Err(plan_err(format!(
                    "swap-in needs {need} GPU blocks but only {} are free",
                    self.kv.free_blocks()
                )));
            }
            self.reqs.get_mut(s).blocks = need;
            let (_, end) = self.start_transfer(s, Direction::HostToDevice, now)?;
            transfers.push((end, s));
        }
        Ok(())
    }

    /// Check the plan's batch and take it into `batch`, allocating the KV blocks each member
    /// needs (reactive swap-ins start their copies); returns the batch's shape.
    fn form_batch(
        &mut self,
        now: Ns,
        block_tokens: u32,
        transfers: &mut Vec<(Ns, Slot)>,
        copies: &mut StepCopies,
        plan_err: &dyn Fn(String) -> SimError,
    ) -> Result<BatchShape> {
        let mut shape = BatchShape::default();
        self.batch.clear();
        for i in 0..self.plan.run.len() {
            let item = self.plan.run[i];
            let s = item.slot;
            let Some(req) = self.reqs.try_get(s) else {
                return Err(plan_err(format!("runs unknown slot {s}")));
            };
            if req.in_batch {
                return Err(plan_err(format!("runs request {} twice", req.id)));
            }
            if !req.runnable() {
                return Err(plan_err(format!(
                    "runs request {} while its KV is being copied",
                    req.id
                )));
            }
            let req = self.reqs.get_mut_moving(s, SampleState::Running);
            req.in_batch = true;
            self.batch.push(s);
            let req = if req.kv_loc != KvLoc::Host {
                req
            } else {
                // Reactive swap-in: the iteration waits for the copy.
                let need = req.offloaded_gpu_blocks;
                if !self.kv.try_alloc(need) {
                    self.release_batch();
                    return Err(plan_err(format!(
                        "reactive swap-in needs {need} GPU blocks but only {} are free",
                        self.kv.free_blocks()
                    )));
                }
                self.reqs.get_mut(s).blocks = need;
                let (start, end) = self.start_transfer(s, Direction::HostToDevice, now)?;
                transfers.push((end, s));
                copies.add_swap_in(start, end);
                self.reqs.get_mut_moving(s, SampleState::Running)
            };
            if let Err(msg) = take_step(req, item.prefill_chunk_tokens, &mut shape) {
                self.release_batch();
                return Err(plan_err(msg));
            }
            let target = (req.blocks
                + extra_blocks_for(req.kv_tokens_after_step() as u64, req.blocks, block_tokens))
            .max(item.reserve_blocks);
            if target > req.blocks {
                let extra = target - req.blocks;
                if !self.kv.try_alloc(extra) {
                    let id = req.id;
                    let free = self.kv.free_blocks();
                    self.release_batch();
                    return Err(plan_err(format!(
                        "request {id} needs {extra} more KV blocks but only {free} are free"
                    )));
                }
                req.blocks = target;
            }
            if req.first_scheduled_ns.is_none() {
                req.first_scheduled_ns = Some(now);
            }
        }
        // After the loop, so that the simulator's path pays one test per batch.
        if let Some(b) = &mut self.exec {
            record_items(b, &self.batch, &self.reqs);
        }
        Ok(shape)
    }

    /// The plan was rejected: the members taken into `batch` so far are no longer in it.
    fn release_batch(&mut self) {
        for &b in &self.batch {
            self.reqs.get_mut(b).in_batch = false;
        }
    }
}

/// The request-level view of the batch just formed (for an executor that wants it).
fn record_items(b: &mut ExecBatch, batch: &[Slot], reqs: &Slab) {
    b.items.extend(batch.iter().map(|&s| {
        let req = reqs.get(s);
        ExecItem {
            id: req.id,
            cached_tokens: req.kv_tokens,
            new_tokens: req.step_tokens,
            prefill: req.in_prefill(),
            blocks: req.blocks,
        }
    }));
}

/// What `req` runs in the batch being formed: its prefill chunk (`chunk` tokens, or the whole
/// remaining prefill when 0) or one decode token; adds it to `shape`. An error is the plan's fault.
#[inline]
fn take_step(
    req: &mut Request,
    chunk: u32,
    shape: &mut BatchShape,
) -> std::result::Result<(), String> {
    if req.in_prefill() {
        let left = req.prefill_left();
        if chunk > left {
            return Err(format!(
                "gives request {} a prefill chunk of {chunk} tokens but only {left} are left",
                req.id
            ));
        }
        req.step_tokens = if chunk == 0 { left } else { chunk };
        shape.add_prefill_chunk(req.step_tokens, req.kv_tokens);
    } else {
        if chunk > 0 {
            return Err(format!(
                "gives request {} a prefill chunk of {chunk} tokens but it is decoding",
                req.id
            ));
        }
        req.step_tokens = 1;
        shape.add_decode(req.kv_tokens + 1);
    }
    Ok(())
}
