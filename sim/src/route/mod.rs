//! Cluster-level routers: which replica an arriving request joins. Adding a router = one file + one
//! line in [`REGISTRY`] (the same pattern as [`crate::policy`]).
//!
//! Contract: at every arrival the engine calls [`Router::route`] with what is known about the
//! request ([`Incoming`]: its prompt length and *predicted* output, never the true output) and a
//! read-only [`ClusterView`] of every replica's load at that instant (unfinished requests, KV
//! blocks in use, the requests themselves). The router returns a replica index; the engine checks
//! it. Routers are deterministic: ties go to the lowest replica index, and nothing here may use a
//! random source other than a seeded stream of its own.
//!
//! Cost: the view also names the replicas whose load may have changed since the router's previous
//! decision ([`ClusterView::changed`]: the replica each arrival joined and every replica that had
//! an event). The load-aware routers keep their scores in a [`min_tree::MinTree`] and rescore only
//! those, so a decision costs O(changed · log replicas), not O(replicas).
//!
//! | router | picks the replica with |
//! |---|---|
//! | `round-robin` (default) | the next index in turn (0, 1, …, N−1, 0, …), whatever the load |
//! | `least-outstanding` | the fewest unfinished requests (waiting, running or swapped) |
//! | `least-kv` | the lowest fraction of GPU KV blocks in use |
//! | `least-work` | the smallest predicted outstanding work: Σ over its unfinished requests of the cost model's batch-size-1 remaining time from the *predicted* output |

pub mod least_kv;
pub mod least_outstanding;
pub mod least_work;
pub mod min_tree;
pub mod round_robin;

use std::cell::Cell;
use std::sync::Arc;

use crate::cost::CostModel;
use crate::error::{Result, SimError};
use crate::vocab::KvPool;
use crate::vocab::request::{ChangeMark, Request, Slab, Slot};
use crate::vocab::time::Ns;

/// The router used when a scenario names none (and the behaviour of servesim before routers).
pub const DEFAULT_ROUTER: &str = "round-robin";

/// What a router may know about an arriving request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub id: u64,
    pub arrival_ns: Ns,
    pub input_tokens: u32,
    /// The scenario predictor's estimate (the true output length is not shown to routers).
    pub predicted_output_tokens: u32,
}

/// One replica's load as a router sees it (read-only, at the arrival instant).
#[derive(Clone, Copy)]
pub struct ReplicaLoad<'a> {
    pub(crate) reqs: &'a Slab,
    pub(crate) kv: &'a KvPool,
    pub(crate) host: &'a KvPool,
    /// Whether an iteration is running on the replica now.
    pub busy: bool,
}

impl<'a> ReplicaLoad<'a> {
    /// Unfinished requests (waiting, running, swapped out or being copied).
    pub fn outstanding(&self) -> usize {
        self.reqs.len()
    }
    /// GPU KV blocks in use (allocated or reserved, including blocks of in-flight copies).
    pub fn kv_used_blocks(&self) -> u32 {
        self.kv.used_blocks()
    }
    pub fn kv_capacity_blocks(&self) -> u32 {
        self.kv.capacity_blocks()
    }
    /// Fraction of the GPU KV pool in use, in [0, 1].
    pub fn kv_used_fraction(&self) -> f64 {
        if self.kv.capacity_blocks() == 0 {
            return 1.0;
        }
        self.kv.used_blocks() as f64 / self.kv.capacity_blocks() as f64
    }
    /// Host KV blocks in use (swapped-out requests).
    pub fn host_used_blocks(&self) -> u32 {
        self.host.used_blocks()
    }
    /// Every unfinished request of the replica, in slot order (use it for order-independent
    /// aggregates; O(unfinished requests)).
    pub fn requests(&self) -> impl Iterator<Item = &'a Request> + 'a {
        self.reqs.iter()
    }
    /// [`Self::requests`] with their slots.
    pub fn requests_by_slot(&self) -> impl Iterator<Item = (Slot, &'a Request)> + 'a {
        self.reqs.iter_slots()
    }
    /// The request in `slot`, if any.
    pub fn request(&self, slot: Slot) -> Option<&'a Request> {
        self.reqs.try_get(slot)
    }
    /// Where the replica's request change log ends now: keep it to ask
    /// [`Self::requests_changed_since`] at a later decision.
    pub fn requests_mark(&self) -> ChangeMark {
        self.reqs.change_mark()
    }
    /// The slots whose request was added, removed or written since `mark` (in order, with
    /// repeats; every other slot is as it was then), or `None` when that is no longer known
    /// (any request may have changed, or the log is not kept: see
    /// [`Router::reads_request_changes`]). An aggregate of [`Self::requests`] kept per slot is
    /// brought up to date by re-reading these slots only; the log is O(slots) long, and a
    /// reader that fell so far behind that it got `None` pays O(slots) for as many logged writes.
    pub fn requests_changed_since(&self, mark: ChangeMark) -> Option<&'a [Slot]> {
        self.reqs.changed_since(mark)
    }
}

/// The engine's side of a [`ClusterView`]: the replicas' loads by index.
pub(crate) trait LoadSource {
    fn count(&self) -> usize;
    fn load(&self, replica: usize) -> ReplicaLoad<'_>;
}

/// Every replica's load at one arrival.
pub struct ClusterView<'a> {
    src: &'a dyn LoadSource,
    pub now_ns: Ns,
    changed: Option<&'a [u32]>,
    /// Replica loads read through [`Self::replica`] (the cost of the decision).
    reads: Cell<u64>,
}

impl<'a> ClusterView<'a> {
    /// A view that does not know which replicas changed ([`Self::changed`] is `None`).
    pub(crate) fn new(src: &'a dyn LoadSource, now_ns: Ns) -> Self {
        ClusterView {
            src,
            now_ns,
            changed: None,
            reads: Cell::new(0),
        }
    }
    /// A view whose replicas other than `changed` (each listed at most once) have the loads they
    /// had at the router's previous decision.
    pub(crate) fn with_changed(src: &'a dyn LoadSource, now_ns: Ns, changed: &'a [u32]) -> Self {
        ClusterView {
            changed: Some(changed),
            ..Self::new(src, now_ns)
        }
    }
    /// Number of replicas (≥ 1).
    pub fn replicas(&self) -> usize {
        self.src.count()
    }
    pub fn replica(&self, r: usize) -> ReplicaLoad<'a> {
        self.reads.set(self.reads.get() + 1);
        self.src.load(r)
    }
    /// The replicas whose load (requests, KV pools, `busy`) may have changed since this router's
    /// previous decision, each once, in no particular order; `None` when unknown (any may have
    /// changed). Every other replica's load is as the previous decision saw it.
    pub fn changed(&self) -> Option<&'a [u32]> {
        self.changed
    }
    /// How many replica loads [`Self::replica`] has handed out.
    pub(crate) fn loads_read(&self) -> u64 {
        self.reads.get()
    }
    /// The replica with the smallest `key`; ties (and incomparable keys) go to the lowest index.
    pub fn argmin_by<K: PartialOrd>(&self, mut key: impl FnMut(ReplicaLoad<'a>) -> K) -> usize {
        self.argmin_by_index(|_, r| key(r))
    }
    /// [`Self::argmin_by`] with a key that also sees the replica's index.
    pub fn argmin_by_index<K: PartialOrd>(
        &self,
        mut key: impl FnMut(usize, ReplicaLoad<'a>) -> K,
    ) -> usize {
        let mut best = 0;
        let mut best_key = key(0, self.replica(0));
        for r in 1..self.replicas() {
            let k = key(r, self.replica(r));
            if k < best_key {
                best = r;
                best_key = k;
            }
        }
        best
    }
}

/// A cluster-level router.
pub trait Router: Send {
    fn name(&self) -> &'static str;
    /// The replica (index < `cluster.replicas()`) that `req` joins.
    fn route(&mut self, req: &Incoming, cluster: &ClusterView) -> usize;
    /// Whether it reads [`ReplicaLoad::requests_changed_since`]: the engine then keeps a change
    /// log of every replica's requests (a cost on every request write, which the other routers
    /// do not pay; without it the answer is always `None`).
    fn reads_request_changes(&self) -> bool {
        false
    }
}

/// Context a router constructor may use.
pub struct RouterEnv {
    /// The scenario's iteration-time model (every replica has the same one).
    pub cost: Arc<dyn CostModel>,
    pub replicas: u32,
    /// Model context limit (prompt + output tokens) of every request.
    pub max_context_tokens: u32,
}

/// A router constructor: its scenario parameter table (if any) → the router and its fully
/// resolved parameters (for `config.json`).
pub type BuildFn =
    fn(Option<&toml::Value>, &RouterEnv) -> Result<(Box<dyn Router>, serde_json::Value)>;

pub struct RouterEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub build: BuildFn,
}

/// Every router servesim knows. One line per router.
#[rustfmt::skip]
pub const REGISTRY: &[RouterEntry] = &[
    round_robin::ENTRY,
    least_outstanding::ENTRY,
    least_kv::ENTRY,
    least_work::ENTRY,
];

pub fn router_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

pub fn lookup(name: &str) -> Result<&'static RouterEntry> {
    REGISTRY.iter().find(|e| e.name == name).ok_or_else(|| {
        SimError::config(format!(
            "unknown router `{}`; {}valid routers: {}",
            crate::error::echo(name),
            crate::error::did_you_mean(name, router_names()),
            router_names().join(", ")
        ))
    })
}

/// A router without parameters: `[routers.NAME]` must be empty.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Parse a router's parameter table with its own `deny_unknown_fields` struct.
pub fn parse_params<P>(router: &str, table: Option<&toml::Value>) -> Result<(P, serde_json::Value)>
where
    P: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let p: P = match table {
        None => P::default(),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
            SimError::config(format!(
                "[routers.{router}]: {}",
                crate::error::plain_serde(e.message().trim())
            ))
        })?,
    };
    let json = serde_json::to_value(&p).map_err(|e| SimError::config(e.to_string()))?;
    Ok((p, json))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A hand-built cluster for the routers' unit tests.

    use super::*;
    use crate::vocab::request::KvLoc;

    pub struct FakeReplica {
        pub reqs: Slab,
        pub kv: KvPool,
        pub host: KvPool,
    }

    pub struct FakeCluster(pub Vec<FakeReplica>);

    impl LoadSource for FakeCluster {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn load(&self, r: usize) -> ReplicaLoad<'_> {
            let f = &self.0[r];
            ReplicaLoad {
                reqs: &f.reqs,
                kv: &f.kv,
                host: &f.host,
                busy: false,
            }
        }
    }

    /// A request with `input` prompt tokens, `predicted` output, `generated` emitted so far (KV
    /// resident when it has started).
    pub fn req(id: u64, input: u32, predicted: u32, generated: u32) -> Request {
        Request {
            generated_tokens: generated,
            kv_tokens: if generated > 0 {
                input + generated - 1
            } else {
                0
            },
            kv_loc: if generated > 0 {
                KvLoc::Gpu
            } else {
                KvLoc::None
            },
            ..Request::new(id, 0, input, predicted, predicted)
        }
    }

    /// `replicas[i]` = (KV blocks used of 100, requests).
    pub fn cluster(replicas: Vec<(u32, Vec<Request>)>) -> FakeCluster {
        FakeCluster(
            replicas
                .into_iter()
                .map(|(used, rs)| {
                    let mut reqs = Slab::default();
                    reqs.keep_change_log();
                    for r in rs {
                        reqs.insert(r);
                    }
                    let mut kv = KvPool::new(100, 16);
                    assert!(kv.try_alloc(used));
                    FakeReplica {
                        reqs,
                        kv,
                        host: KvPool::new(0, 16),
                    }
                })
                .collect(),
        )
    }

    pub fn incoming() -> Incoming {
        Incoming {
            id: 99,
            arrival_ns: 0,
            input_tokens: 10,
            predicted_output_tokens: 10,
        }
    }

    /// Route one request through `router` on `c`.
    pub fn pick(router: &mut dyn Router, c: &FakeCluster) -> usize {
        router.route(&incoming(), &ClusterView::new(c, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{cluster, incoming, req};
    use super::*;

    /// The load-aware routers told which replicas changed pick what a fresh router scanning
    /// every replica picks, over random changes (requests added, removed and advanced, KV blocks
    /// taken and freed; few distinct loads, so ties are frequent), and read only the changed
    /// replicas' loads.
    #[test]
    fn routers_told_what_changed_pick_as_a_full_scan() {
        let linear: crate::cost::linear::LinearCost = toml::from_str(
            "a_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.000001",
        )
        .unwrap();
        let env = RouterEnv {
            cost: Arc::new(linear),
            replicas: 37,
            max_context_tokens: 2048,
        };
        for name in ["least-outstanding", "least-kv", "least-work"] {
            let build = lookup(name).unwrap().build;
            let mut router = build(None, &env).unwrap().0;
            let mut c = cluster((0..37).map(|_| (0, vec![])).collect());
            let mut slots: Vec<Vec<_>> = vec![Vec::new(); 37];
            let mut x = 7u64;
            let mut next = move |m: u64| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) % m
            };
            let mut changed: Vec<u32> = (0..37).collect();
            for step in 0..600 {
                let view = ClusterView::with_changed(&c, 0, &changed);
                let got = router.route(&incoming(), &view);
                assert_eq!(
                    view.loads_read(),
                    changed.len() as u64,
                    "{name} step {step}"
                );
                let fresh = build(None, &env)
                    .unwrap()
                    .0
                    .route(&incoming(), &ClusterView::new(&c, 0));
                assert_eq!(got, fresh, "{name} step {step}");
                changed.clear();
                for _ in 0..next(4) {
                    let r = next(37) as usize;
                    let f = &mut c.0[r];
                    match next(5) {
                        0 | 1 => slots[r].push(f.reqs.insert(req(
                            step,
                            1 + next(3) as u32 * 10,
                            1 + next(3) as u32 * 5,
                            0,
                        ))),
                        2 if !slots[r].is_empty() => {
                            let k = next(slots[r].len() as u64) as usize;
                            let s = slots[r].swap_remove(k);
                            f.reqs.remove(s);
                        }
                        3 if !slots[r].is_empty() => {
                            let s = slots[r][next(slots[r].len() as u64) as usize];
                            let mut q = f.reqs.get_mut(s);
                            q.generated_tokens =
                                (q.generated_tokens + 1).min(q.predicted_output_tokens);
                            q.kv_tokens = q.input_tokens + q.generated_tokens - 1;
                            q.kv_loc = crate::vocab::request::KvLoc::Gpu;
                        }
                        _ => {
                            let used = f.kv.used_blocks();
                            f.kv.free(used);
                            assert!(f.kv.try_alloc(next(4) as u32 * 25));
                        }
                    }
                    if !changed.contains(&(r as u32)) {
                        changed.push(r as u32);
                    }
                }
            }
        }
    }

    #[test]
    fn registry_names_are_unique_and_default_exists() {
        let names = router_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(lookup(DEFAULT_ROUTER).is_ok());
        let e = lookup("random").err().unwrap().to_string();
        assert!(
            e.contains("valid routers: round-robin, least-outstanding"),
            "{e}"
        );
    }

    #[test]
    fn parameterless_routers_reject_unknown_keys() {
        let t: toml::Value = toml::from_str("bogus = 1").unwrap();
        let env = RouterEnv {
            cost: Arc::new(crate::cost::constant::ConstantCost { iteration_s: 0.01 }),
            replicas: 2,
            max_context_tokens: 2048,
        };
        for e in REGISTRY {
            let err = (e.build)(Some(&t), &env).err().unwrap().to_string();
            assert!(err.contains(&format!("[routers.{}]", e.name)), "{err}");
            assert!(err.contains("bogus"), "{err}");
            assert!((e.build)(None, &env).is_ok());
        }
    }
}
