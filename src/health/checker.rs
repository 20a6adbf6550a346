//! The running checker: probe tasks feed one core task that owns every window, state
//! machine and override, and publishes a fresh [`HealthView`] after each change. The
//! query path only ever loads that view; nothing here is shared behind a lock.
//!
//! The core is given a [`HealthPlan`] (what to probe, with which thresholds), never the
//! snapshot. Deciding is left to pure functions (`state::observe`,
//! `aggregate::region`); exporting gauges and the state file is in `export`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::aggregate::{self, Member, RegionState};
use super::cause::Cause;
use super::model::{Endpoint, Thresholds};
use super::peers::{OverrideRecord, OverrideTarget};
use super::plan::HealthPlan;
use super::probe;
use super::shared::{ClusterSide, ClusterState};
use super::state::{self, Sample, State, Window};
use super::status::{
    AddressStatus, EndpointStatus, HISTORY, RegionStatus, Status, Target, TransitionRecord,
};
use super::store::{self, EndpointRecord, StateFile};
use super::view::{Effective, HealthView, Override, OverrideKind, RegionHealth};
use crate::metrics::Metrics;
use crate::traffic::{self, RegionIn, Share};

enum Command {
    Reconfigure(Arc<HealthPlan>),
    Override {
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Status(oneshot::Sender<Status>),
}

/// The handle the rest of the server holds.
#[derive(Clone)]
pub struct HealthHandle {
    pub view: Arc<ArcSwap<HealthView>>,
    tx: mpsc::UnboundedSender<Command>,
    ready: watch::Receiver<bool>,
}

/// Where samples come from: the real probe tasks, or nowhere but `observe` (tests, and
/// `meridian simulate`, which feeds the core synthetic samples on a virtual clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probing {
    Tasks,
    Off,
}

impl HealthHandle {
    /// Starts probing everything `plan` names. Must run inside a tokio runtime.
    pub fn start(
        plan: Arc<HealthPlan>,
        state_file: Option<PathBuf>,
        startup_wait: Duration,
        metrics: Arc<Metrics>,
        cluster: Option<ClusterSide>,
    ) -> HealthHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let (sample_tx, sample_rx) = mpsc::unbounded_channel();
        let persisted = match &state_file {
            Some(p) => StateFile::load(p).unwrap_or_else(|e| {
                warn!("ignoring unreadable state file: {e}");
                StateFile::default()
            }),
            None => StateFile::default(),
        };
        let mut core = Core::new(
            plan,
            &persisted,
            state_file,
            ready_tx,
            sample_tx,
            metrics,
            Probing::Tasks,
        );
        if let Some(side) = cluster {
            core.join(side);
        }
        let view = core.view.clone();
        let deadline = Instant::now() + startup_wait;
        tokio::spawn(core.run(rx, sample_rx, deadline));
        HealthHandle { view, tx, ready }
    }

    /// A new plan (reload): states carry over for endpoints that persist.
    pub fn reconfigure(&self, plan: Arc<HealthPlan>) {
        let _ = self.tx.send(Command::Reconfigure(plan));
    }

    /// Sets (`Some`) or clears (`None`) an operator override; persisted. `fraction`
    /// (a drain of a region only): move that share of its clients, not all. `lasts`:
    /// the override ends by itself after that long.
    pub async fn set_override(
        &self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Override {
                target,
                kind,
                reason,
                fraction,
                lasts,
                reply,
            })
            .map_err(|_| "health checker stopped".to_string())?;
        rx.await.map_err(|_| "health checker stopped".to_string())?
    }

    pub async fn status(&self) -> Option<Status> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Status(reply)).ok()?;
        rx.await.ok()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first full probe round is in (or the startup wait ran out).
    pub async fn wait_ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|v| *v).await;
    }
}

pub(super) struct EndpointRt {
    pub(super) region: String,
    pub(super) ep: Endpoint,
    pub(super) thresholds: Thresholds,
    pub(super) window: Window,
    pub(super) state: State,
    pub(super) since: Instant,
    pub(super) since_unix: u64,
    probed: bool,
    /// When the probe task last reported; a task that stops reporting (it panicked or
    /// hangs) is replaced and its silence counted as a failure.
    last_report: Instant,
    pub(super) generation: u64,
    task: Option<JoinHandle<()>>,
}

impl EndpointRt {
    /// How long a down endpoint must still wait before it may recover (zero otherwise).
    pub(super) fn cooldown_left(&self, now: Instant) -> Duration {
        match self.state {
            State::Down { since, .. } => self
                .thresholds
                .cooldown
                .saturating_sub(now.saturating_duration_since(since)),
            _ => Duration::ZERO,
        }
    }

    fn measured(&self) -> Effective {
        match self.state {
            State::Up => Effective::Up,
            State::Degraded => Effective::Degraded,
            State::Down { .. } => Effective::Down,
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for EndpointRt {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per region (keep, load not modelled) and the split computed for them.
type LastSplit = (Vec<(Share, u64)>, Arc<traffic::Outcome>);

pub(super) struct Core {
    pub(super) plan: Arc<HealthPlan>,
    pub(super) endpoints: BTreeMap<String, EndpointRt>,
    pub(super) region_overrides: BTreeMap<String, Override>,
    pub(super) endpoint_overrides: BTreeMap<String, Override>,
    /// Each region's state at the last publication, by name.
    pub(super) last_region: HashMap<String, RegionState>,
    pub(super) view: Arc<ArcSwap<HealthView>>,
    sample_tx: mpsc::UnboundedSender<(String, u64, Sample)>,
    pub(super) state_file: Option<PathBuf>,
    pub(super) history: VecDeque<TransitionRecord>,
    ready_tx: watch::Sender<bool>,
    generation: u64,
    pub(super) metrics: Arc<Metrics>,
    /// Set when regions or endpoints change: the next export starts the gauges afresh.
    pub(super) gauges_stale: bool,
    probing: Probing,
    /// Regions ramping back after a recovery (`failback`), by name: since when.
    pub(super) ramps: HashMap<String, Instant>,
    /// When the next ramp step is due.
    pub(super) next_step: Option<Instant>,
    /// When the next override with a deadline ends.
    next_expiry: Option<Instant>,
    /// Unix seconds at a moment of tokio's clock: override deadlines are kept as Unix
    /// seconds (they outlive the process) but counted on tokio's clock, so paused-time
    /// tests can run them.
    pub(super) epoch: (u64, Instant),
    /// The split's last inputs and result: recomputed only when they change.
    pub(super) split: Option<LastSplit>,
    /// Measured loads (requests/s) from the regions' `load:` queries, by name, with the
    /// part of each the model did not account for when it was measured.
    pub(super) loads: HashMap<String, (f64, f64)>,
    /// By plan region: the load the last split modelled (own and admitted clients).
    modelled: Vec<f64>,
    load_tx: mpsc::UnboundedSender<(String, Option<f64>)>,
    load_rx: Option<mpsc::UnboundedReceiver<(String, Option<f64>)>>,
    load_tasks: HashMap<String, (crate::health::LoadQuery, JoinHandle<()>)>,
    /// Regions whose load query failed since it last answered (warned once).
    load_unread: std::collections::HashSet<String>,
    /// This instance's name (`cluster.instance`, else the host name).
    pub(super) instance: String,
    /// The last change of each override target, set or cleared, as gossiped.
    pub(super) records: BTreeMap<OverrideTarget, OverrideRecord>,
    /// `Some` in a cluster: peers, quorum, the shared states.
    pub(super) cluster: Option<ClusterState>,
}

fn jitter(key: &str, interval: Duration) -> Duration {
    // Spread first probes over the interval, deterministically per endpoint.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h % ms)
}

fn spawn_probe(
    key: String,
    ep: Endpoint,
    generation: u64,
    tx: mpsc::UnboundedSender<(String, u64, Sample)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = probe::client(&ep);
        tokio::time::sleep(jitter(&key, ep.interval).min(ep.interval / 4)).await;
        let mut next = Instant::now();
        let mut last_ok = true;
        loop {
            let sample = probe::run_with(&ep, client.as_ref(), last_ok).await;
            last_ok = sample.ok;
            if tx.send((key.clone(), generation, sample)).is_err() {
                return;
            }
            next += ep.interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            tokio::time::sleep_until(next).await;
        }
    })
}

fn restore(rec: &EndpointRecord, now: Instant) -> (State, Instant, u64) {
    let age = Duration::from_secs(store::now_unix().saturating_sub(rec.since));
    let since = now.checked_sub(age).unwrap_or(now);
    let state = match rec.state.as_str() {
        "down" => State::Down {
            since,
            held_logged: false,
        },
        "degraded" => State::Degraded,
        _ => State::Up,
    };
    (state, since, rec.since)
}

impl Core {
    pub(super) fn new(
        plan: Arc<HealthPlan>,
        persisted: &StateFile,
        state_file: Option<PathBuf>,
        ready_tx: watch::Sender<bool>,
        sample_tx: mpsc::UnboundedSender<(String, u64, Sample)>,
        metrics: Arc<Metrics>,
        probing: Probing,
    ) -> Core {
        let (load_tx, load_rx) = mpsc::unbounded_channel();
        let mut core = Core {
            plan: plan.clone(),
            endpoints: BTreeMap::new(),
            region_overrides: persisted.region_overrides.clone(),
            endpoint_overrides: persisted.endpoint_overrides.clone(),
            last_region: HashMap::new(),
            view: Arc::new(ArcSwap::from_pointee(HealthView::default())),
            sample_tx,
            state_file,
            history: VecDeque::new(),
            ready_tx,
            generation: 0,
            metrics,
            gauges_stale: true,
            probing,
            ramps: HashMap::new(),
            next_step: None,
            next_expiry: None,
            epoch: (store::now_unix(), Instant::now()),
            split: None,
            loads: HashMap::new(),
            modelled: Vec::new(),
            load_tx,
            load_rx: Some(load_rx),
            load_tasks: HashMap::new(),
            load_unread: Default::default(),
            instance: probe::instance(),
            records: persisted
                .override_records
                .iter()
                .map(|(k, r)| (super::shared::target_of(k), r.clone()))
                .collect(),
            cluster: None,
        };
        // Overrides from a state file written before records were kept.
        let unrecorded: Vec<(OverrideTarget, Override)> = core
            .region_overrides
            .iter()
            .chain(&core.endpoint_overrides)
            .map(|(k, o)| (super::shared::target_of(k), o.clone()))
            .filter(|(t, _)| !core.records.contains_key(t))
            .collect();
        for (t, o) in unrecorded {
            let rec = OverrideRecord {
                stamp: o.since * 1000,
                state: Some(o),
                by: core.instance.clone(),
            };
            core.records.insert(t, rec);
        }
        core.reconfigure(plan, Some(persisted));
        // Restored overrides keep their deadlines; those past theirs end now.
        core.expire_overrides();
        core.publish(false);
        core
    }

    /// A core without probe tasks, fed by `observe` (tests, `meridian simulate`).
    pub(super) fn offline(plan: Arc<HealthPlan>) -> (Core, watch::Receiver<bool>) {
        let (ready_tx, ready) = watch::channel(false);
        let (sample_tx, _) = mpsc::unbounded_channel();
        let core = Core::new(
            plan,
            &StateFile::default(),
            None,
            ready_tx,
            sample_tx,
            Arc::new(Metrics::new()),
            Probing::Off,
        );
        (core, ready)
    }

    /// Joins the gossip runtime: from now on endpoints count by quorum.
    pub(super) fn join(&mut self, side: ClusterSide) {
        self.instance = side.policy.instance.clone();
        self.cluster = Some(ClusterState::new(side));
        self.apply_peer_overrides();
        self.publish(false);
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut samples: mpsc::UnboundedReceiver<(String, u64, Sample)>,
        deadline: Instant,
    ) {
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut loads = self.load_rx.take();
        let mut peers_rx = self.cluster.as_mut().and_then(|c| c.peers_rx.take());
        let mut waiting = true;
        self.check_ready(&mut waiting);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Command::Reconfigure(plan)) => {
                        self.reconfigure(plan, None);
                        self.publish(true);
                    }
                    Some(Command::Override { target, kind, reason, fraction, lasts, reply }) => {
                        let r = self.set_override_until(target, kind, reason, fraction, lasts);
                        if r.is_ok() {
                            self.expire_overrides();
                            self.publish(true);
                            self.persist();
                        }
                        let _ = reply.send(r);
                    }
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                },
                Some((key, generation, sample)) = samples.recv() => {
                    let changed = self.observe(&key, generation, sample, None);
                    self.publish_after(true, Some(&key));
                    if changed {
                        self.persist();
                    }
                    self.check_ready(&mut waiting);
                }
                _ = watchdog.tick() => {
                    let revived = self.revive_silent_probes();
                    // Isolation starts when nobody has been heard for a while: nothing
                    // arrives to say so, hence the check here (to the second).
                    let isolation_due = self
                        .cluster
                        .as_ref()
                        .and_then(super::shared::isolation_due)
                        .is_some_and(|d| d.is_zero());
                    if revived || isolation_due {
                        self.publish(true);
                    }
                    if revived {
                        self.persist();
                    }
                }
                Ok(()) = async { match peers_rx.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                    if let (Some(c), Some(rx)) = (self.cluster.as_mut(), peers_rx.as_ref()) {
                        c.peers = rx.borrow().clone();
                    }
                    let applied = self.apply_peer_overrides();
                    self.publish(true);
                    if applied {
                        self.persist();
                    }
                    self.check_ready(&mut waiting);
                }
                Some((region, value)) = async { match loads.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    if self.observe_load(&region, value) {
                        self.publish(true);
                    }
                }
                _ = tokio::time::sleep_until(self.next_step.unwrap_or(deadline)), if self.next_step.is_some() => {
                    self.publish(true);
                }
                _ = tokio::time::sleep_until(self.next_expiry.unwrap_or(deadline)), if self.next_expiry.is_some() => {
                    if self.expire_overrides() {
                        self.publish(true);
                        self.persist();
                    }
                }
                _ = tokio::time::sleep_until(deadline), if waiting => {
                    let missing: Vec<&String> = self.endpoints.iter().filter(|(_, e)| !e.probed).map(|(k, _)| k).collect();
                    if !missing.is_empty() {
                        warn!(?missing, "serving before every endpoint answered its first probe");
                    }
                    if !self.heard_a_peer() {
                        warn!("serving before any cluster peer was heard: deciding from this instance's own probes meanwhile");
                    }
                    let _ = self.ready_tx.send(true);
                    waiting = false;
                }
            }
        }
    }

    /// In a cluster, whether any peer has been heard (its votes and overrides are in).
    fn heard_a_peer(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.peers.peers.iter().any(|p| p.last_heard.is_some()))
    }

    /// Ready to serve: every endpoint probed once and, in a cluster, a peer heard (so a
    /// fresh instance whose own probes fail alone does not answer from them), or the
    /// startup wait ran out.
    fn check_ready(&mut self, waiting: &mut bool) {
        if *waiting && self.endpoints.values().all(|e| e.probed) && self.heard_a_peer() {
            info!("first probe round complete");
            let _ = self.ready_tx.send(true);
            *waiting = false;
        }
    }

    fn spawn(&mut self, key: &str, ep: &Endpoint) -> (u64, Option<JoinHandle<()>>) {
        self.generation += 1;
        let task = match self.probing {
            Probing::Tasks => Some(spawn_probe(
                key.to_string(),
                ep.clone(),
                self.generation,
                self.sample_tx.clone(),
            )),
            Probing::Off => None,
        };
        (self.generation, task)
    }

    pub(super) fn reconfigure(&mut self, plan: Arc<HealthPlan>, persisted: Option<&StateFile>) {
        self.plan = plan.clone();
        self.gauges_stale = true;
        self.split = None;
        let now = Instant::now();
        let mut next: BTreeMap<String, EndpointRt> = BTreeMap::new();
        for region in &plan.regions {
            for ep in &region.endpoints {
                let key = format!("{}/{}", region.name, ep.name);
                match self.endpoints.remove(&key) {
                    // Same probe: keep task, window and state.
                    Some(mut rt) if rt.ep == *ep => {
                        rt.thresholds = region.thresholds.clone();
                        next.insert(key, rt);
                    }
                    // Changed probe: keep the state, restart the probing.
                    Some(mut rt) => {
                        rt.stop();
                        let (generation, task) = self.spawn(&key, ep);
                        rt.task = task;
                        rt.generation = generation;
                        rt.ep = ep.clone();
                        rt.thresholds = region.thresholds.clone();
                        next.insert(key, rt);
                    }
                    None => {
                        let (state, since, since_unix) = persisted
                            .and_then(|p| p.endpoints.get(&key))
                            .map(|r| restore(r, now))
                            .unwrap_or((State::Up, now, store::now_unix()));
                        if state.is_down() {
                            info!(key, "restored as down from the state file");
                        }
                        let (generation, task) = self.spawn(&key, ep);
                        next.insert(
                            key,
                            EndpointRt {
                                region: region.name.clone(),
                                ep: ep.clone(),
                                thresholds: region.thresholds.clone(),
                                window: Window::default(),
                                state,
                                since,
                                since_unix,
                                probed: false,
                                last_report: now,
                                generation,
                                task,
                            },
                        );
                    }
                }
            }
        }
        // Dropping what is left stops probes of endpoints that are gone.
        self.endpoints = next;
        self.respawn_load_queries();
    }

    /// One poller per region with a `load:` query; changed or removed queries stop theirs.
    fn respawn_load_queries(&mut self) {
        let wanted: HashMap<String, crate::health::LoadQuery> = self
            .plan
            .regions
            .iter()
            .filter_map(|r| r.load.clone().map(|q| (r.name.clone(), q)))
            .collect();
        self.load_tasks.retain(|name, (q, task)| {
            let keep = wanted.get(name) == Some(q);
            if !keep {
                task.abort();
            }
            keep
        });
        self.loads.retain(|name, _| wanted.contains_key(name));
        if self.probing != Probing::Tasks {
            return;
        }
        for (name, q) in wanted {
            if self.load_tasks.contains_key(&name) {
                continue;
            }
            let tx = self.load_tx.clone();
            let (region, query) = (name.clone(), q.clone());
            let task = tokio::spawn(async move {
                let client = probe::prometheus_client(query.timeout);
                loop {
                    let value = match &client {
                        Some(c) => probe::metric_value(&query.url, &query.query, c).await,
                        None => None,
                    };
                    if tx.send((region.clone(), value)).is_err() {
                        return;
                    }
                    tokio::time::sleep(query.interval).await;
                }
            });
            self.load_tasks.insert(name, (q, task));
        }
    }

    /// A load query's answer: `None` (Prometheus unreadable) keeps the last value, with
    /// one warning: no signal is not zero load. Returns whether the split should be
    /// recomputed (the value moved by more than 5 %).
    pub(super) fn observe_load(&mut self, region: &str, value: Option<f64>) -> bool {
        let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
            if self.load_unread.insert(region.to_string()) {
                warn!(region, "load query cannot be read: keeping the last value");
            }
            return false;
        };
        if self.load_unread.remove(region) {
            info!(region, load = v, "load query answers again");
        }
        self.metrics
            .region_load
            .with_label_values(&[region, "prometheus"])
            .set(v);
        // A value within 5 % of the one in use is no news (and may well predate the
        // clients the split moved since): the split keeps what it has.
        if let Some(&(b, _)) = self.loads.get(region)
            && (v - b).abs() <= 0.05 * b.max(1.0)
        {
            return false;
        }
        // Compared with what the split sent there when it was measured: the part the
        // model does not account for (other names, other traffic) is kept as such.
        let i = self.plan.regions.iter().position(|r| r.name == region);
        let modelled = i.and_then(|i| self.modelled.get(i)).copied().unwrap_or(0.0);
        self.loads
            .insert(region.to_string(), (v, (v - modelled).max(0.0)));
        true
    }

    fn policies_using(&self, region: &str) -> String {
        self.plan
            .region(region)
            .map(|r| r.policies.clone())
            .unwrap_or_default()
    }

    pub(super) fn record(
        &mut self,
        key: String,
        from: &str,
        to: &str,
        cause: Cause,
        cooldown_held: bool,
    ) {
        let (region, endpoint) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let policies = self.policies_using(region);
        self.metrics
            .transitions
            .with_label_values(&[region, endpoint, from, to, cause.label()])
            .inc();
        let reason = cause.to_string();
        info!(
            key,
            policies,
            from,
            to,
            cause = cause.label(),
            cooldown_held,
            "health transition: {reason}"
        );
        self.history.push_back(TransitionRecord {
            at: store::now_unix(),
            key,
            policies,
            from: from.to_string(),
            to: to.to_string(),
            cause: cause.label(),
            reason,
            cooldown_held,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Feeds one sample to an endpoint's window and state machine. `silent` is set when
    /// the sample stands for a probe task's silence: a transition it causes is then
    /// labelled `probe_silent`. Returns whether a persisted state changed.
    pub(super) fn observe(
        &mut self,
        key: &str,
        generation: u64,
        sample: Sample,
        silent: Option<Duration>,
    ) -> bool {
        let now = Instant::now();
        let Some(rt) = self.endpoints.get_mut(key) else {
            return false;
        };
        if rt.generation != generation {
            return false; // from a probe task that was replaced
        }
        rt.probed = true;
        rt.last_report = now;
        self.metrics
            .probe_duration
            .with_label_values(&[rt.region.as_str(), rt.ep.name.as_str()])
            .observe(sample.latency.as_secs_f64());
        rt.window.push(sample, rt.thresholds.window);
        let signals = rt.window.signals(rt.thresholds.latency_percentile);
        let (next, tr) = state::observe(rt.state, &signals, &rt.thresholds, now);
        let changed = next.name() != rt.state.name();
        rt.state = next;
        if changed {
            rt.since = now;
            rt.since_unix = store::now_unix();
        }
        if let Some(tr) = tr {
            let metric = rt.ep.is_metric();
            let cause = match (silent, metric, tr.to) {
                (Some(silent_for), ..) if tr.to == "down" && !tr.cooldown_held => {
                    Cause::ProbeSilent { silent_for }
                }
                // The metric pseudo-endpoint's own transitions say what they mean.
                (_, true, "down") if !tr.cooldown_held => Cause::MetricVeto,
                (_, true, "up") => Cause::MetricCleared,
                _ => tr.cause,
            };
            self.record(key.to_string(), tr.from, tr.to, cause, tr.cooldown_held);
        }
        changed
    }

    /// Replaces probe tasks that have not reported for two intervals plus a timeout
    /// plus a second, counting the silence as a failed probe. Returns whether a
    /// persisted state changed.
    pub(super) fn revive_silent_probes(&mut self) -> bool {
        let now = Instant::now();
        let silent: Vec<(String, Duration, Duration)> = self
            .endpoints
            .iter()
            .map(|(k, e)| (k, e, now.saturating_duration_since(e.last_report)))
            .filter(|(_, e, quiet)| {
                *quiet > e.ep.interval * 2 + e.ep.timeout + Duration::from_secs(1)
            })
            .map(|(k, e, quiet)| (k.clone(), e.ep.timeout, quiet))
            .collect();
        let mut changed = false;
        for (key, timeout, quiet) in silent {
            warn!(key, "probe task stopped reporting: restarting it");
            let Some(ep) = self.endpoints.get(&key).map(|rt| rt.ep.clone()) else {
                continue;
            };
            let (generation, task) = self.spawn(&key, &ep);
            if let Some(rt) = self.endpoints.get_mut(&key) {
                rt.stop();
                rt.task = task;
                rt.generation = generation;
            }
            changed |= self.observe(
                &key,
                generation,
                Sample {
                    ok: false,
                    latency: timeout,
                },
                Some(quiet),
            );
        }
        changed
    }

    #[cfg(test)]
    pub(super) fn set_override(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
    ) -> Result<(), String> {
        self.set_override_fraction(target, kind, reason, None)
    }

    pub(super) fn set_override_fraction(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
    ) -> Result<(), String> {
        self.set_override_until(target, kind, reason, fraction, None)
    }

    pub(super) fn set_override_until(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
    ) -> Result<(), String> {
        if lasts.is_some_and(|d| d.is_zero()) || (lasts.is_some() && kind.is_none()) {
            return Err("a duration applies to setting an override, and must be above 0".into());
        }
        if let Some(f) = fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(format!("fraction {f} must be in (0, 1]"));
            }
            if kind != Some(OverrideKind::Drain) || !matches!(target, Target::Region(_)) {
                return Err("a fraction applies to draining a region".into());
            }
        }
        let endpoint_key = match &target {
            Target::Region(r) => {
                if self.plan.region(r).is_none() {
                    return Err(format!("no region {r:?}"));
                }
                None
            }
            Target::Endpoint { region, endpoint } => {
                let key = format!("{region}/{endpoint}");
                if !self.endpoints.contains_key(&key) {
                    return Err(format!("no endpoint {key:?}"));
                }
                Some(key)
            }
        };
        let before = endpoint_key
            .as_deref()
            .and_then(|k| self.endpoint_effective(k));
        let until = lasts.map(|d| self.unix_now() + d.as_secs().max(1));
        let (map, key) = match (&target, &endpoint_key) {
            (Target::Region(r), _) => (&mut self.region_overrides, r.clone()),
            (_, Some(k)) => (&mut self.endpoint_overrides, k.clone()),
            (_, None) => return Err("no target".into()),
        };
        let target_id = match &target {
            Target::Region(_) => OverrideTarget::Region(key.clone()),
            Target::Endpoint { .. } => OverrideTarget::Endpoint(key.clone()),
        };
        let cause = match kind {
            Some(k) => {
                let o = Override {
                    kind: k,
                    reason: reason.clone(),
                    since: store::now_unix(),
                    fraction: fraction.filter(|&f| f < 1.0),
                    until,
                };
                map.insert(key.clone(), o.clone());
                self.note_override(target_id, Some(o));
                Cause::OverrideSet {
                    kind: k,
                    reason: reason.clone(),
                }
            }
            None => {
                map.remove(&key);
                self.note_override(target_id, None);
                Cause::OverrideCleared
            }
        };
        info!(
            target = key,
            override_ = cause.label(),
            reason = reason.as_deref().unwrap_or(""),
            "operator override"
        );
        // An endpoint's change is its own transition; a region's is recorded when the
        // view is published (`publish`), with the same cause.
        if let Some(k) = endpoint_key {
            let after = self.endpoint_effective(&k);
            if let (Some(b), Some(a)) = (before, after)
                && a != b
            {
                self.record(k, b.name(), a.name(), cause, false);
            }
        }
        Ok(())
    }

    pub(super) fn endpoint_effective(&self, key: &str) -> Option<Effective> {
        let rt = self.endpoints.get(key)?;
        Some(aggregate::endpoint(
            self.vantage_state(key, rt.measured()),
            self.endpoint_overrides.get(key),
        ))
    }

    /// Every region's aggregate state, in plan order, in one pass over the endpoints.
    pub(super) fn regions(&self) -> Vec<RegionState> {
        let mut members: HashMap<&str, Vec<Member>> = HashMap::new();
        for (k, e) in &self.endpoints {
            members.entry(e.region.as_str()).or_default().push(Member {
                state: aggregate::endpoint(
                    self.vantage_state(k, e.measured()),
                    self.endpoint_overrides.get(k),
                ),
                metric: e.ep.is_metric(),
                serves: e.ep.serves,
            });
        }
        self.plan
            .regions
            .iter()
            .map(|r| {
                aggregate::region(
                    members.get(r.name.as_str()).map_or(&[][..], Vec::as_slice),
                    r.min_up,
                    self.region_overrides.get(&r.name),
                    self.plan.config_overrides.get(&r.name),
                )
            })
            .collect()
    }

    pub(super) fn publish(&mut self, log: bool) {
        self.publish_after(log, None);
    }

    /// Removes overrides whose time is up (logged, and recorded like any override
    /// change when the view is published), and sets when the next one ends. Returns
    /// whether any ended.
    fn unix_now(&self) -> u64 {
        self.epoch.0
            + Instant::now()
                .saturating_duration_since(self.epoch.1)
                .as_secs()
    }

    pub(super) fn expire_overrides(&mut self) -> bool {
        let now = self.unix_now();
        let mut ended = Vec::new();
        for (map, what) in [
            (&mut self.region_overrides, "region"),
            (&mut self.endpoint_overrides, "endpoint"),
        ] {
            map.retain(|key, o| {
                let live = o.until.is_none_or(|u| u > now);
                if !live {
                    ended.push((what, key.clone(), o.kind));
                }
                live
            });
        }
        for (what, key, kind) in &ended {
            info!(target = key, kind = kind.name(), "{what} override expired");
            self.note_override(super::shared::target_of(key), None);
            if *what == "endpoint" {
                // An endpoint's change is its own transition (a region's is recorded
                // at publication).
                if let Some(rt) = self.endpoints.get(key) {
                    let (before, after) = (kind.effective(), rt.measured());
                    if before != after {
                        self.record(
                            key.clone(),
                            before.name(),
                            after.name(),
                            Cause::OverrideCleared,
                            false,
                        );
                    }
                }
            }
        }
        let next = self
            .region_overrides
            .values()
            .chain(self.endpoint_overrides.values())
            .filter_map(|o| o.until)
            .min();
        self.next_expiry =
            next.map(|u| Instant::now() + Duration::from_secs(u.saturating_sub(now)));
        !ended.is_empty()
    }

    /// Per region in plan order: the share of its own clients it keeps (none when down,
    /// `1 - fraction` under a partial drain, the ramp's step after a recovery; only a
    /// region keeping all takes displaced clients). Starts, restarts and ends ramps, and
    /// sets when the next step is due.
    fn keeps(&mut self, plan: &HealthPlan, states: &[RegionState], now: Instant) -> Vec<Share> {
        let mut next_step: Option<Instant> = None;
        let out = plan
            .regions
            .iter()
            .zip(states)
            .map(|(region, st)| {
                let down = st.effective == Effective::Down;
                let was_down = self
                    .last_region
                    .get(&region.name)
                    .is_some_and(|p| p.effective == Effective::Down);
                match region.failback {
                    // A failure during the ramp restarts it at the next recovery.
                    Some(_) if down => {
                        self.ramps.remove(&region.name);
                    }
                    Some(f) if was_down => {
                        info!(
                            region = region.name,
                            ramp = ?f.ramp,
                            steps = f.steps,
                            "failback: taking clients back in steps"
                        );
                        self.ramps.insert(region.name.clone(), now);
                    }
                    _ => {}
                }
                let ramp = match (region.failback, self.ramps.get(&region.name)) {
                    (Some(f), Some(&since)) => {
                        let elapsed = now.saturating_duration_since(since);
                        if let Some(wait) = f.next_change(elapsed) {
                            let at = now + wait;
                            next_step = Some(next_step.map_or(at, |n| n.min(at)));
                        }
                        f.keep(elapsed)
                    }
                    _ => Share::ALL,
                };
                if ramp == Share::ALL {
                    self.ramps.remove(&region.name);
                }
                if down {
                    Share::NONE
                } else {
                    let by_override = st.r#override.as_ref().map_or(Share::ALL, Override::keep);
                    by_override.min(ramp)
                }
            })
            .collect();
        self.next_step = next_step;
        out
    }

    /// The split's admission shares for these keeps (recomputed only when they change).
    fn admits(&mut self, plan: &HealthPlan, keeps: &[Share]) -> Vec<Share> {
        // A measured load counts whole; what the model does not account for of it (other
        // names, other traffic) is carried as `other_load`, so sending more clients there
        // does not count twice.
        let regions: Vec<RegionIn> = plan
            .regions
            .iter()
            .zip(keeps)
            .map(|(r, &keep)| RegionIn {
                id: r.id,
                capacity: r.capacity,
                keep,
                // A down region keeps none; a partly drained or ramping one takes none.
                accepts: keep == Share::ALL,
                other_load: self.loads.get(&r.name).map_or(0.0, |&(_, other)| other),
            })
            .collect();
        let key: Vec<(Share, u64)> = keeps
            .iter()
            .zip(&regions)
            .map(|(&k, r)| (k, r.other_load.round() as u64))
            .collect();
        let stale = self.split.as_ref().is_none_or(|(k, _)| *k != key);
        if stale {
            let outcome = traffic::split(&regions, &plan.clients);
            if outcome.flows.iter().any(|f| f.2 > 0.0) || outcome.overflow > 0.0 {
                let moved: Vec<String> = outcome
                    .flows
                    .iter()
                    .map(|&(from, to, load)| {
                        let name = |i: u16| {
                            plan.regions
                                .get(usize::from(i))
                                .map_or("?", |r| r.name.as_str())
                        };
                        format!("{}→{} {load:.0}/s", name(from), name(to))
                    })
                    .collect();
                info!(
                    moved = moved.join(", "),
                    overflow = outcome.overflow,
                    "traffic split"
                );
            }
            self.export_split(&regions, &outcome);
            self.modelled = outcome
                .load
                .iter()
                .zip(&regions)
                .map(|(l, r)| l - r.other_load)
                .collect();
            self.split = Some((key, Arc::new(outcome)));
        }
        self.split
            .as_ref()
            .map(|(_, o)| o.admit.clone())
            .unwrap_or_default()
    }

    /// Publishes the health view after a change (a sample of `sampled`, or anything
    /// else when `None`), records region transitions, and updates the gauges: after a
    /// sample only that endpoint's and the changed regions' series. One pass over the
    /// endpoints: it runs after every sample.
    fn publish_after(&mut self, log: bool, sampled: Option<&str>) {
        let now = Instant::now();
        self.refresh_shared(log);
        // Health-aware TTL: the soonest any endpoint of the region could change.
        let mut ttl_caps: HashMap<&str, Duration> = HashMap::new();
        for (key, e) in &self.endpoints {
            let s = e.window.signals(e.thresholds.latency_percentile);
            let local = state::time_to_change(e.state, &s, &e.thresholds, e.ep.interval, now);
            // In a cluster the shared state can also change with the votes.
            let shared = self.shared_change_bound(key, e, now);
            let soonest = match (local, shared) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(d) = soonest {
                let cap = ttl_caps.entry(e.region.as_str()).or_insert(d);
                *cap = (*cap).min(d);
            }
        }
        let ttl_caps: HashMap<String, u32> = ttl_caps
            .into_iter()
            .map(|(r, d)| {
                (
                    r.to_string(),
                    d.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
                )
            })
            .collect();
        let states = self.regions();
        let plan = self.plan.clone();
        let keeps = self.keeps(&plan, &states, now);
        let admits = self.admits(&plan, &keeps);
        let mut view = HealthView::default();
        let mut changed_regions = Vec::new();
        for (((region, next), &keep), admit) in
            plan.regions.iter().zip(states).zip(&keeps).zip(admits)
        {
            view.put(
                region.id,
                RegionHealth {
                    state: next.effective,
                    ttl_cap: ttl_caps.get(&region.name).copied(),
                    keep,
                    admit,
                    live: next.live,
                },
            );
            let prev = self.last_region.get(&region.name);
            if prev.is_none_or(|p| p.effective != next.effective) {
                changed_regions.push(region.name.clone());
            }
            if log
                && let Some(p) = prev
                && p.live != next.live
                && next.effective != Effective::Down
            {
                let list = |mask: u64| {
                    region
                        .addresses
                        .iter()
                        .take(64)
                        .enumerate()
                        .filter(|(i, _)| mask & (1u64 << i) != 0)
                        .map(|(_, a)| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                info!(
                    region = region.name,
                    withheld = list(!next.live),
                    back = list(next.live & !p.live),
                    "addresses answered changed: the servers of the withheld ones are down"
                );
            }
            if log && let Some(cause) = aggregate::transition(prev, &next) {
                let from = prev.map_or(Effective::Up, |p| p.effective);
                self.record(
                    region.name.clone(),
                    from.name(),
                    next.effective.name(),
                    cause,
                    false,
                );
            }
            self.last_region.insert(region.name.clone(), next);
        }
        view.refresh_shifting();
        if let Some(p) = &self.plan.prepare {
            (p.0)(&view);
        }
        self.view.store(Arc::new(view));
        self.publish_local();
        self.export_cluster();
        match sampled {
            Some(key) if !self.gauges_stale => {
                self.export_sample_gauges(now, key, &changed_regions)
            }
            _ => self.export_gauges(now),
        }
    }

    pub(super) fn status(&self) -> Status {
        // The addresses a `serves` mask names, as text.
        fn served(addresses: &[std::net::IpAddr], mask: u64) -> Vec<String> {
            addresses
                .iter()
                .take(64)
                .enumerate()
                .filter(|(i, _)| mask & (1u64 << i) != 0)
                .map(|(_, a)| a.to_string())
                .collect()
        }
        let now = Instant::now();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let endpoints = self
            .endpoints
            .iter()
            .map(|(k, e)| {
                let s = e.window.signals(e.thresholds.latency_percentile);
                EndpointStatus {
                    region: e.region.clone(),
                    endpoint: e.ep.name.clone(),
                    probe: e.ep.kind().into(),
                    address: e.ep.address.to_string(),
                    measured: e.state.name().into(),
                    effective: self.endpoint_effective(k).unwrap_or(Effective::Up),
                    samples: s.samples,
                    error_rate: s.error_rate,
                    latency_p50_ms: ms(s.p50),
                    latency_p90_ms: ms(s.latency),
                    latency_p99_ms: ms(s.p99),
                    consecutive_failures: s.consecutive_failures,
                    consecutive_successes: s.consecutive_successes,
                    in_state_seconds: now.saturating_duration_since(e.since).as_secs(),
                    cooldown_remaining_seconds: e.cooldown_left(now).as_secs(),
                    r#override: self.endpoint_overrides.get(k).cloned(),
                    quorum: self.quorum_status(k),
                    serves: self
                        .plan
                        .region(&e.region)
                        .map(|r| served(&r.addresses, e.ep.serves))
                        .unwrap_or_default(),
                }
            })
            .collect();
        let view = self.view.load();
        let split = self.split.as_ref().map(|(_, o)| o.as_ref());
        let name = |i: u16| {
            self.plan
                .regions
                .get(usize::from(i))
                .map_or_else(|| "?".to_string(), |r| r.name.clone())
        };
        // The split's flows out of (`out`) or into region `i`, by the other region's name.
        let flows = |split: Option<&traffic::Outcome>, i: usize, out: bool| {
            split
                .map(|o| {
                    o.flows
                        .iter()
                        .filter(|f| usize::from(if out { f.0 } else { f.1 }) == i)
                        .map(|f| (name(if out { f.1 } else { f.0 }), f.2))
                        .collect()
                })
                .unwrap_or_default()
        };
        let regions = self
            .plan
            .regions
            .iter()
            .zip(self.regions())
            .enumerate()
            .map(|(i, (r, st))| {
                let published = view.region(r.id);
                let serving: Vec<(&str, u64)> = self
                    .endpoints
                    .values()
                    .filter(|e| e.region == r.name && e.ep.serves != 0)
                    .map(|e| (e.ep.name.as_str(), e.ep.serves))
                    .collect();
                let addresses = r
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let bit = if i < 64 { 1u64 << i } else { 0 };
                        AddressStatus {
                            address: a.to_string(),
                            answered: bit == 0 || published.live & bit != 0,
                            served_by: serving
                                .iter()
                                .filter(|(_, m)| m & bit != 0)
                                .map(|(n, _)| n.to_string())
                                .collect(),
                        }
                    })
                    .collect();
                RegionStatus {
                    addresses,
                    region: r.name.clone(),
                    measured: st.measured,
                    effective: st.effective,
                    r#override: st.r#override,
                    endpoints_up: st.serving,
                    endpoints: st.total,
                    needed: st.needed,
                    capacity: r.capacity,
                    load: self.loads.get(&r.name).map(|l| l.0).or_else(|| {
                        split
                            .filter(|_| !self.plan.clients.is_empty())
                            .and_then(|o| o.load.get(i).copied())
                    }),
                    load_source: if self.loads.contains_key(&r.name) {
                        Some("prometheus")
                    } else if self.plan.clients.is_empty() {
                        None
                    } else {
                        Some("demand")
                    },
                    keep: published.keep.fraction(),
                    admit: published.admit.fraction(),
                    spill_out: flows(split, i, true),
                    spill_in: flows(split, i, false),
                    failback_progress: match (r.failback, self.ramps.get(&r.name)) {
                        (Some(f), Some(&since)) => {
                            f.progress(Instant::now().saturating_duration_since(since))
                        }
                        _ => 1.0,
                    },
                }
            })
            .collect();
        Status {
            ready: *self.ready_tx.borrow(),
            regions,
            endpoints,
            transitions: self.history.iter().cloned().collect(),
            cluster: self.cluster_status(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The core on paused time, fed samples directly (no probe tasks): what it publishes
    //! and how it labels each transition.
    use super::*;
    use crate::health::model::{MinUp, Probe};
    use crate::health::plan::PlanRegion;

    fn endpoint(name: &str, probe: Probe) -> Endpoint {
        Endpoint {
            name: name.into(),
            address: "127.0.0.1:9".parse().unwrap(),
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            serves: 0,
        }
    }

    pub(super) fn plan() -> Arc<HealthPlan> {
        let metric = Probe::Metric {
            url: "http://127.0.0.1:9".into(),
            query: "up".into(),
            fail_above: 1.0,
            recover_below: 0.5,
        };
        Arc::new(HealthPlan {
            regions: vec![PlanRegion {
                name: "eu".into(),
                id: 0,
                endpoints: vec![endpoint("web", Probe::Tcp), endpoint("metric", metric)],
                thresholds: Thresholds {
                    cooldown: Duration::from_secs(30),
                    ..Thresholds::aggressive()
                },
                min_up: MinUp::Count(1),
                policies: "www.example".into(),
                capacity: None,
                failback: None,
                load: None,
                addresses: vec![],
            }],
            config_overrides: BTreeMap::new(),
            clients: Arc::new([]),
            prepare: None,
        })
    }

    /// eu (id 0) ramps back in 3 steps over 60 s; us (id 1) serves 1000 req/s. Half
    /// the 2000 modelled clients (1 req/s each) rank eu first.
    fn shifting_core() -> Core {
        let region = |name: &str, id: u32, capacity, failback| PlanRegion {
            name: name.into(),
            id,
            endpoints: vec![endpoint("web", Probe::Tcp)],
            thresholds: Thresholds {
                cooldown: Duration::from_secs(30),
                ..Thresholds::aggressive()
            },
            min_up: MinUp::Count(1),
            policies: "www.example".into(),
            capacity,
            failback,
            load: None,
            addresses: vec![],
        };
        let clients: Vec<traffic::Client> = (0..2000u64)
            .map(|i| traffic::Client {
                weight: 1.0,
                subnet: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                list: if i % 2 == 0 { vec![0, 1] } else { vec![1, 0] },
                spill: true,
            })
            .collect();
        let plan = Arc::new(HealthPlan {
            regions: vec![
                region(
                    "eu",
                    0,
                    None,
                    Some(traffic::Failback {
                        ramp: Duration::from_secs(60),
                        steps: 3,
                    }),
                ),
                region("us", 1, Some(1500.0), None),
            ],
            config_overrides: BTreeMap::new(),
            clients: clients.into(),
            prepare: None,
        });
        Core::offline(plan).0
    }

    /// DNSSEC's hook runs with every new view while readers still see the previous
    /// one: an answer the new view gives is signed before any query can get it.
    #[tokio::test(start_paused = true)]
    async fn the_prepare_hook_sees_each_view_before_it_is_published() {
        use std::sync::Mutex as StdMutex;
        let seen: Arc<StdMutex<Vec<(Effective, Effective)>>> = Arc::default();
        let published: Arc<StdMutex<Option<Arc<ArcSwap<HealthView>>>>> = Arc::default();
        let mut p = (*plan()).clone();
        let (s, pb) = (seen.clone(), published.clone());
        p.prepare = Some(crate::health::plan::Prepare(Arc::new(
            move |next: &HealthView| {
                // What a query reads at this instant, against what is about to be published.
                let current = pb
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map_or(Effective::Up, |v| v.load().state(0));
                s.lock().unwrap().push((current, next.state(0)));
            },
        )));
        let mut c = Core::offline(Arc::new(p)).0;
        *published.lock().unwrap() = Some(c.view.clone());
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        let seen = seen.lock().unwrap();
        // The view that takes eu out went through the hook while eu was still up.
        assert!(seen.contains(&(Effective::Up, Effective::Down)), "{seen:?}");
        assert!(seen.len() >= 2, "every publication is prepared: {seen:?}");
    }

    fn keep_admit(c: &Core, id: u32) -> (f64, f64) {
        let r = c.view.load().region(id);
        (
            (r.keep.fraction() * 100.0).round() / 100.0,
            (r.admit.fraction() * 100.0).round() / 100.0,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_region_spills_up_to_capacity_and_ramps_back_in_steps() {
        let mut c = shifting_core();
        assert!(!c.view.load().shifting);
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // us has 500 req/s spare for eu's 1000: it admits half of the displaced.
        assert_eq!(keep_admit(&c, 0).0, 0.0);
        let (_, us_admit) = keep_admit(&c, 1);
        assert!((0.45..=0.55).contains(&us_admit), "{us_admit}");
        assert!(c.view.load().shifting);
        // Back after the 30 s cooldown: a third at once, a third more every 20 s.
        feed(&mut c, "eu/web", &[OK; 31]).await;
        assert_eq!(eu(&c), Effective::Up);
        assert_eq!(keep_admit(&c, 0).0, 0.33);
        // The recovery came with the 30th sample, one second ago.
        let step = c
            .next_step
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert_eq!(step, Duration::from_secs(19));
        feed(&mut c, "eu/web", &[OK; 20]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.67);
        // A failure during the ramp restarts it at the next recovery.
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.0);
        feed(&mut c, "eu/web", &[OK; 31]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.33, "the ramp starts over");
        feed(&mut c, "eu/web", &[OK; 40]).await;
        assert_eq!(keep_admit(&c, 0), (1.0, 1.0));
        assert_eq!(c.next_step, None);
        assert!(!c.view.load().shifting, "all back: plain answers again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_measured_load_above_the_model_leaves_less_room_and_an_unread_one_holds() {
        let mut c = shifting_core();
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        let (_, modelled) = keep_admit(&c, 1);
        assert!((0.45..=0.55).contains(&modelled), "{modelled}");
        // The model sends us 2000 req/s (its own 1000, eu's 500 it admits, and eu's other
        // 500, which have nowhere else to go: overflow spills by rank). us measures 2300:
        // 300 of other traffic, so only 200 of its 1500 are left for eu's clients.
        assert!(c.observe_load("us", Some(2300.0)));
        c.publish(true);
        let (_, admit) = keep_admit(&c, 1);
        assert!((0.17..=0.23).contains(&admit), "{admit}");
        // The next publications keep that (the measurement is not compared again with
        // the model it changed).
        feed(&mut c, "us/web", &[OK; 3]).await;
        assert_eq!(keep_admit(&c, 1).1, admit);
        // Prometheus unreadable: the last value holds.
        assert!(!c.observe_load("us", None));
        c.publish(true);
        assert_eq!(keep_admit(&c, 1).1, admit);
        assert_eq!(c.status().regions[1].load, Some(2300.0));
        assert_eq!(c.status().regions[1].load_source, Some("prometheus"));
        // A small change does not recompute; a large one does.
        assert!(!c.observe_load("us", Some(2320.0)));
        assert!(c.observe_load("us", Some(1000.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_for_a_while_ends_by_itself_and_is_recorded() {
        let mut c = core();
        feed(&mut c, "eu/web", &[OK, OK]).await;
        c.set_override_until(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            Some("deploy".into()),
            None,
            Some(Duration::from_secs(30)),
        )
        .unwrap();
        c.expire_overrides();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down);
        let due = c
            .next_expiry
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert_eq!(due, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!c.expire_overrides(), "not yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.expire_overrides());
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up);
        assert_eq!(c.next_expiry, None);
        let last = causes(&c).pop().unwrap();
        assert_eq!(last, ("eu".into(), "down>up".into(), "override_cleared"));
        assert!(
            c.set_override_until(
                Target::Region("eu".into()),
                None,
                None,
                None,
                Some(Duration::from_secs(5))
            )
            .is_err(),
            "a duration needs an override to end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_drain_keeps_the_rest_of_the_region_in_the_answers() {
        let mut c = shifting_core();
        c.set_override_fraction(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            Some("canary".into()),
            Some(0.3),
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up, "a partial drain is not a state");
        assert_eq!(keep_admit(&c, 0).0, 0.7);
        assert!(c.view.load().shifting);
        for bad in [0.0, 1.5, f64::NAN] {
            let r = c.set_override_fraction(
                Target::Region("eu".into()),
                Some(OverrideKind::Drain),
                None,
                Some(bad),
            );
            assert!(r.is_err(), "{bad}");
        }
        // A full drain is today's drain.
        c.set_override_fraction(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            None,
            Some(1.0),
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down);
    }

    use super::tests_support::*;

    #[tokio::test(start_paused = true)]
    async fn each_transition_is_labelled_by_its_cause() {
        let mut c = core();
        assert_eq!(eu(&c), Effective::Up);
        // Two failed probes in a row (aggressive: fail_consecutive 2).
        feed(&mut c, "eu/web", &[OK, FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // Healthy again: held by the 30 s cooldown, then back.
        feed(&mut c, "eu/web", &[OK; 5]).await;
        assert_eq!(eu(&c), Effective::Down, "cooldown");
        feed(&mut c, "eu/web", &[OK; 25]).await;
        assert_eq!(eu(&c), Effective::Up);
        // The metric vetoes the region although its endpoint is up, then clears.
        feed(&mut c, "eu/metric", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // An operator drain and its removal.
        c.set_override(
            Target::Region("eu".into()),
            Some(OverrideKind::ForceUp),
            None,
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up);
        c.set_override(Target::Region("eu".into()), None, None)
            .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down, "the metric still vetoes");
        let got = causes(&c);
        let want: Vec<(String, String, &str)> = [
            ("eu/web", "up>down", "consecutive_failures"),
            ("eu", "up>down", "endpoints"),
            ("eu/web", "down>down", "cooldown_held"),
            ("eu/web", "down>up", "recovered"),
            ("eu", "down>up", "endpoints"),
            ("eu/metric", "up>down", "metric_veto"),
            ("eu", "up>down", "metric_veto"),
            ("eu", "down>up", "override_set"),
            ("eu", "up>down", "override_cleared"),
        ]
        .iter()
        .map(|(k, t, c)| (k.to_string(), t.to_string(), *c))
        .collect();
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_falls_silent_is_restarted_and_its_silence_labelled() {
        let mut c = core();
        feed(&mut c, "eu/web", &[OK, OK, OK]).await;
        feed(&mut c, "eu/metric", &[OK]).await;
        // No reports for longer than 2 intervals + timeout + 1 s, twice.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(4)).await;
            let metric_generation = c.endpoints.get("eu/metric").map(|e| e.generation).unwrap();
            c.observe("eu/metric", metric_generation, OK, None);
            c.revive_silent_probes();
            c.publish(true);
        }
        assert_eq!(eu(&c), Effective::Down);
        let got = causes(&c);
        assert_eq!(
            got.first().map(|(k, t, c)| (k.as_str(), t.as_str(), *c)),
            Some(("eu/web", "up>down", "probe_silent")),
            "{got:?}"
        );
        let text = &c.history.front().unwrap().reason;
        assert!(text.contains("did not report"), "{text}");
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub(super) fn core() -> Core {
        Core::offline(super::tests::plan()).0
    }

    pub(super) const OK: Sample = Sample {
        ok: true,
        latency: Duration::from_millis(5),
    };
    pub(super) const FAIL: Sample = Sample {
        ok: false,
        latency: Duration::from_millis(500),
    };

    /// One sample a second, each followed by a publication.
    pub(super) async fn feed(c: &mut Core, key: &str, samples: &[Sample]) {
        let generation = c.endpoints.get(key).map(|e| e.generation).unwrap();
        for s in samples {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.observe(key, generation, *s, None);
            c.publish(true);
        }
    }

    pub(super) fn causes(c: &Core) -> Vec<(String, String, &'static str)> {
        c.history
            .iter()
            .map(|t| (t.key.clone(), format!("{}>{}", t.from, t.to), t.cause))
            .collect()
    }

    pub(super) fn eu(c: &Core) -> Effective {
        c.view.load().state(0)
    }
}

#[cfg(test)]
mod cluster_tests {
    //! The core in a cluster, on paused time: peers' verdicts arrive as the gossip
    //! runtime would hand them over, and the shared state decides.
    use super::tests_support::*;
    use super::*;
    use crate::health::peers::{Local, Peer, Peers, Policy, Quorum, Verdict};
    use crate::health::shared::ClusterSide;

    fn verdict(state: Effective) -> Verdict {
        Verdict {
            state,
            error_rate: 0.0,
            latency_ms: None,
            since: 0,
        }
    }

    fn peer(name: &str, web: Effective) -> Peer {
        Peer {
            name: name.into(),
            address: "127.0.0.2:7946".parse().unwrap(),
            live: true,
            last_heard: Some(Instant::now()),
            verdicts: [("eu/web".to_string(), verdict(web))].into(),
            overrides: BTreeMap::new(),
        }
    }

    fn clustered() -> (Core, watch::Receiver<Arc<Local>>) {
        let mut c = core();
        let (local_tx, local_rx) = watch::channel(Arc::new(Local::default()));
        let (_peers_tx, peers_rx) = watch::channel(Arc::new(Peers::default()));
        c.join(ClusterSide {
            policy: Policy {
                instance: "ns1".into(),
                quorum: Quorum::Majority,
                isolation_timeout: Duration::from_secs(30),
            },
            peers: peers_rx,
            local: local_tx,
        });
        (c, local_rx)
    }

    fn set_peers(c: &mut Core, peers: Vec<Peer>) {
        if let Some(cl) = c.cluster.as_mut() {
            cl.peers = Arc::new(Peers { peers });
        }
        c.apply_peer_overrides();
        c.publish(true);
    }

    #[tokio::test(start_paused = true)]
    async fn one_vantage_point_alone_moves_nothing_and_the_shared_cooldown_holds() {
        let (mut c, local) = clustered();
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(c.endpoints["eu/web"].measured(), Effective::Down);
        assert_eq!(eu(&c), Effective::Up, "only this instance sees it down");
        assert_eq!(
            c.view.load().ttl_cap(0),
            Some(1),
            "votes split: the next probe round may tip it, so answers last a round"
        );
        assert_eq!(
            local.borrow().verdicts["eu/web"].state,
            Effective::Down,
            "but says so"
        );
        // A second vantage point agrees: down, labelled by the quorum.
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Down), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down);
        assert!(
            causes(&c).contains(&("eu/web".into(), "up>down".into(), "quorum")),
            "{:?}",
            causes(&c)
        );
        // The peers recover at once; the shared state waits out the 30 s cooldown.
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down, "cooldown on the shared state");
        // (Heard all along: each `set_peers` is a fresh poll of the gossip state.)
        tokio::time::advance(Duration::from_secs(29)).await;
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down);
        tokio::time::advance(Duration::from_secs(2)).await;
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Up, "two of three say up, cooldown over");
    }

    #[tokio::test(start_paused = true)]
    async fn alone_past_the_timeout_it_decides_from_its_own_view() {
        let (mut c, _local) = clustered();
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Up);
        // The failure detector has both dead; within the timeout their last votes hold.
        let mut silent = vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)];
        for p in &mut silent {
            p.live = false;
        }
        set_peers(&mut c, silent);
        tokio::time::advance(Duration::from_secs(20)).await;
        c.publish(true);
        assert_eq!(
            eu(&c),
            Effective::Up,
            "20 s of silence: the last shared view"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        c.publish(true);
        assert!(c.cluster.as_ref().unwrap().isolated);
        assert_eq!(eu(&c), Effective::Down, "isolated: its own probes decide");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_operator_action_wins_whatever_the_clocks_say() {
        let (mut c, local) = clustered();
        // A drain set on ns2, whose clock runs an hour ahead of ours.
        let ahead = c.unix_ms() + 3_600_000;
        let drain = OverrideRecord {
            state: Some(Override {
                kind: OverrideKind::Drain,
                reason: Some("on ns2".into()),
                since: ahead / 1000,
                fraction: None,
                until: None,
            }),
            stamp: ahead,
            by: "ns2".into(),
        };
        let mut ns2 = peer("ns2", Effective::Up);
        ns2.overrides
            .insert(OverrideTarget::Region("eu".into()), drain.clone());
        // An override for a region this instance does not have is ignored.
        ns2.overrides.insert(
            OverrideTarget::Region("mars".into()),
            OverrideRecord {
                by: "ns2".into(),
                ..drain.clone()
            },
        );
        set_peers(&mut c, vec![ns2.clone()]);
        assert_eq!(eu(&c), Effective::Down, "ns2's drain applies here");
        assert!(!c.region_overrides.contains_key("mars"));
        // Cleared here, later, on a clock an hour behind: the clear still wins.
        c.set_override(Target::Region("eu".into()), None, None)
            .unwrap();
        c.publish(true);
        let mine = local.borrow().overrides[&OverrideTarget::Region("eu".into())].clone();
        assert!(mine.newer_than(&drain), "{mine:?}");
        assert_eq!(mine.state, None);
        set_peers(&mut c, vec![ns2]);
        assert_eq!(
            eu(&c),
            Effective::Up,
            "ns2's older record does not come back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_record_no_instance_could_make_is_ignored() {
        let (mut c, _local) = clustered();
        let stamp = c.unix_ms() + 1;
        let mut ns2 = peer("ns2", Effective::Up);
        for (fraction, kind) in [
            (Some(5.0), OverrideKind::Drain),
            (Some(0.5), OverrideKind::ForceUp),
        ] {
            ns2.overrides.insert(
                OverrideTarget::Region("eu".into()),
                OverrideRecord {
                    state: Some(Override {
                        kind,
                        reason: None,
                        since: stamp / 1000,
                        fraction,
                        until: None,
                    }),
                    stamp,
                    by: "ns2".into(),
                },
            );
            set_peers(&mut c, vec![ns2.clone()]);
            assert!(c.region_overrides.is_empty(), "{fraction:?} {kind:?}");
        }
        // A plausible one applies.
        if let Some(r) = ns2.overrides.get_mut(&OverrideTarget::Region("eu".into()))
            && let Some(o) = r.state.as_mut()
        {
            o.kind = OverrideKind::Drain;
            o.fraction = Some(0.5);
        }
        set_peers(&mut c, vec![ns2]);
        assert!(c.region_overrides.contains_key("eu"));
    }
}
