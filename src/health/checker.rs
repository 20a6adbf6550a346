//! The running checker: probe tasks feed one core task that owns every window, state
//! machine and override, and publishes a fresh [`HealthView`] after each change. The
//! query path only ever loads that view; nothing here is shared behind a lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::probe::{self, Endpoint};
use super::state::{self, Sample, State, Thresholds, Window};
use super::store::{self, EndpointRecord, StateFile};
use super::{Effective, HealthView, MinUp, Override, OverrideKind, RegionHealth};
use crate::metrics::{Metrics, reason_label};
use crate::snapshot::Snapshot;

/// Transitions kept for the status page.
const HISTORY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Region(String),
    Endpoint { region: String, endpoint: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct TransitionRecord {
    pub at: u64,
    /// `region/endpoint`, or `region` for a region's effective state.
    pub key: String,
    pub policies: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub cooldown_held: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub region: String,
    pub endpoint: String,
    pub probe: String,
    pub address: String,
    pub measured: String,
    pub effective: Effective,
    pub samples: usize,
    pub error_rate: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub in_state_seconds: u64,
    pub cooldown_remaining_seconds: u64,
    pub r#override: Option<Override>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    pub region: String,
    pub measured: Effective,
    pub effective: Effective,
    pub r#override: Option<Override>,
    pub endpoints_up: usize,
    pub endpoints: usize,
    pub needed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ready: bool,
    pub regions: Vec<RegionStatus>,
    pub endpoints: Vec<EndpointStatus>,
    pub transitions: Vec<TransitionRecord>,
}

enum Command {
    Reconfigure(Arc<Snapshot>),
    Override {
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
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

impl HealthHandle {
    /// Starts probing everything `snapshot` names. Must run inside a tokio runtime.
    pub fn start(
        snapshot: Arc<Snapshot>,
        state_file: Option<PathBuf>,
        startup_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> HealthHandle {
        let view = Arc::new(ArcSwap::from_pointee(HealthView::default()));
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
        let mut core = Core {
            snapshot: snapshot.clone(),
            endpoints: BTreeMap::new(),
            region_overrides: persisted.region_overrides.clone(),
            endpoint_overrides: persisted.endpoint_overrides.clone(),
            last_region: HashMap::new(),
            view: view.clone(),
            sample_tx,
            state_file,
            history: VecDeque::new(),
            ready_tx,
            generation: 0,
            metrics,
            gauges_stale: true,
        };
        core.reconfigure(snapshot, Some(&persisted));
        core.publish(false);
        let deadline = Instant::now() + startup_wait;
        tokio::spawn(core.run(rx, sample_rx, deadline));
        HealthHandle { view, tx, ready }
    }

    /// A new snapshot (reload): states carry over for endpoints that persist.
    pub fn reconfigure(&self, snapshot: Arc<Snapshot>) {
        let _ = self.tx.send(Command::Reconfigure(snapshot));
    }

    /// Sets (`Some`) or clears (`None`) an operator override; persisted.
    pub async fn set_override(
        &self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Override {
                target,
                kind,
                reason,
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

struct EndpointRt {
    region: String,
    ep: Endpoint,
    thresholds: Thresholds,
    window: Window,
    state: State,
    since: Instant,
    since_unix: u64,
    probed: bool,
    /// When the probe task last reported; a task that stops reporting (it panicked or
    /// hangs) is replaced and its silence counted as a failure.
    last_report: Instant,
    generation: u64,
    task: JoinHandle<()>,
}

impl EndpointRt {
    /// How long a down endpoint must still wait before it may recover (zero otherwise).
    fn cooldown_left(&self, now: Instant) -> Duration {
        match self.state {
            State::Down { since, .. } => self
                .thresholds
                .cooldown
                .saturating_sub(now.saturating_duration_since(since)),
            _ => Duration::ZERO,
        }
    }
}

impl Drop for EndpointRt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Core {
    snapshot: Arc<Snapshot>,
    endpoints: BTreeMap<String, EndpointRt>,
    region_overrides: BTreeMap<String, Override>,
    endpoint_overrides: BTreeMap<String, Override>,
    last_region: HashMap<String, Effective>,
    view: Arc<ArcSwap<HealthView>>,
    sample_tx: mpsc::UnboundedSender<(String, u64, Sample)>,
    state_file: Option<PathBuf>,
    history: VecDeque<TransitionRecord>,
    ready_tx: watch::Sender<bool>,
    generation: u64,
    metrics: Arc<Metrics>,
    /// Set when regions or endpoints change: the next export starts the gauges afresh.
    gauges_stale: bool,
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
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut samples: mpsc::UnboundedReceiver<(String, u64, Sample)>,
        deadline: Instant,
    ) {
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting = true;
        if self.endpoints.is_empty() {
            let _ = self.ready_tx.send(true);
            waiting = false;
        }
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Command::Reconfigure(s)) => {
                        self.reconfigure(s, None);
                        self.publish(true);
                    }
                    Some(Command::Override { target, kind, reason, reply }) => {
                        let r = self.set_override(target, kind, reason);
                        if r.is_ok() {
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
                    let changed = self.observe(&key, generation, sample);
                    self.publish_after(true, Some(&key));
                    if changed {
                        self.persist();
                    }
                    if waiting && self.endpoints.values().all(|e| e.probed) {
                        info!("first probe round complete");
                        let _ = self.ready_tx.send(true);
                        waiting = false;
                    }
                }
                _ = watchdog.tick() => {
                    if self.revive_silent_probes() {
                        self.publish(true);
                        self.persist();
                    }
                }
                _ = tokio::time::sleep_until(deadline), if waiting => {
                    let missing: Vec<&String> = self.endpoints.iter().filter(|(_, e)| !e.probed).map(|(k, _)| k).collect();
                    warn!(?missing, "serving before every endpoint answered its first probe");
                    let _ = self.ready_tx.send(true);
                    waiting = false;
                }
            }
        }
    }

    fn policies_using(&self, region: &str) -> String {
        let set = &self.snapshot.policies;
        let Some(idx) = set.region_index(region) else {
            return String::new();
        };
        let names: Vec<&str> = set
            .policies
            .iter()
            .filter(|p| p.candidates.contains(&idx))
            .map(|p| p.display.trim_end_matches('.'))
            .collect();
        names.join(",")
    }

    fn reconfigure(&mut self, snapshot: Arc<Snapshot>, persisted: Option<&StateFile>) {
        self.snapshot = snapshot;
        self.gauges_stale = true;
        let now = Instant::now();
        let mut next: BTreeMap<String, EndpointRt> = BTreeMap::new();
        let regions = self.snapshot.policies.regions.clone();
        for region in &regions {
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
                        self.generation += 1;
                        rt.task.abort();
                        rt.task = spawn_probe(
                            key.clone(),
                            ep.clone(),
                            self.generation,
                            self.sample_tx.clone(),
                        );
                        rt.generation = self.generation;
                        rt.ep = ep.clone();
                        rt.thresholds = region.thresholds.clone();
                        next.insert(key, rt);
                    }
                    None => {
                        self.generation += 1;
                        let (state, since, since_unix) = persisted
                            .and_then(|p| p.endpoints.get(&key))
                            .map(|r| restore(r, now))
                            .unwrap_or((State::Up, now, store::now_unix()));
                        if state.is_down() {
                            info!(key, "restored as down from the state file");
                        }
                        next.insert(
                            key.clone(),
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
                                generation: self.generation,
                                task: spawn_probe(
                                    key,
                                    ep.clone(),
                                    self.generation,
                                    self.sample_tx.clone(),
                                ),
                            },
                        );
                    }
                }
            }
        }
        // Dropping what is left stops probes of endpoints that are gone.
        self.endpoints = next;
    }

    fn record(&mut self, rec: TransitionRecord) {
        let (region, endpoint) = rec.key.split_once('/').unwrap_or((rec.key.as_str(), ""));
        self.metrics
            .transitions
            .with_label_values(&[
                region,
                endpoint,
                rec.from.as_str(),
                rec.to.as_str(),
                reason_label(&rec.reason),
            ])
            .inc();
        info!(
            key = rec.key,
            policies = rec.policies,
            from = rec.from,
            to = rec.to,
            cooldown_held = rec.cooldown_held,
            "health transition: {}",
            rec.reason
        );
        self.history.push_back(rec);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Returns whether a persisted state changed.
    fn observe(&mut self, key: &str, generation: u64, sample: Sample) -> bool {
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
        let region = rt.region.clone();
        if let Some(tr) = tr {
            let policies = self.policies_using(&region);
            self.record(TransitionRecord {
                at: store::now_unix(),
                key: key.to_string(),
                policies,
                from: tr.from.into(),
                to: tr.to.into(),
                reason: tr.reason,
                cooldown_held: tr.cooldown_held,
            });
        }
        changed
    }

    /// Replaces probe tasks that have not reported for two intervals plus a timeout
    /// plus a second, counting the silence as a failed probe. Returns whether a
    /// persisted state changed.
    fn revive_silent_probes(&mut self) -> bool {
        let now = Instant::now();
        let silent: Vec<(String, Duration)> = self
            .endpoints
            .iter()
            .filter(|(_, e)| {
                now.saturating_duration_since(e.last_report)
                    > e.ep.interval * 2 + e.ep.timeout + Duration::from_secs(1)
            })
            .map(|(k, e)| (k.clone(), e.ep.timeout))
            .collect();
        let mut changed = false;
        for (key, timeout) in silent {
            warn!(key, "probe task stopped reporting: restarting it");
            self.generation += 1;
            let generation = self.generation;
            if let Some(rt) = self.endpoints.get_mut(&key) {
                rt.task.abort();
                rt.task = spawn_probe(
                    key.clone(),
                    rt.ep.clone(),
                    generation,
                    self.sample_tx.clone(),
                );
                rt.generation = generation;
            }
            changed |= self.observe(
                &key,
                generation,
                Sample {
                    ok: false,
                    latency: timeout,
                },
            );
        }
        changed
    }

    fn set_override(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
    ) -> Result<(), String> {
        let (map, key) = match &target {
            Target::Region(r) => {
                if self.snapshot.policies.region_index(r).is_none() {
                    return Err(format!("no region {r:?}"));
                }
                (&mut self.region_overrides, r.clone())
            }
            Target::Endpoint { region, endpoint } => {
                let key = format!("{region}/{endpoint}");
                if !self.endpoints.contains_key(&key) {
                    return Err(format!("no endpoint {key:?}"));
                }
                (&mut self.endpoint_overrides, key)
            }
        };
        let what = match kind {
            Some(k) => {
                map.insert(
                    key.clone(),
                    Override {
                        kind: k,
                        reason: reason.clone(),
                        since: store::now_unix(),
                    },
                );
                k.name().to_string()
            }
            None => {
                map.remove(&key);
                "cleared".to_string()
            }
        };
        info!(
            target = key,
            override_ = what,
            reason = reason.as_deref().unwrap_or(""),
            "operator override"
        );
        Ok(())
    }

    fn endpoint_effective(&self, key: &str, rt: &EndpointRt) -> Effective {
        if let Some(o) = self.endpoint_overrides.get(key) {
            return o.kind.effective();
        }
        match rt.state {
            State::Up => Effective::Up,
            State::Degraded => Effective::Degraded,
            State::Down { .. } => Effective::Down,
        }
    }

    /// Measured region state, endpoints up, endpoints needed.
    /// The endpoints of every region, in one pass over the endpoint map.
    fn by_region(&self) -> HashMap<&str, Vec<(&String, &EndpointRt)>> {
        let mut out: HashMap<&str, Vec<(&String, &EndpointRt)>> = HashMap::new();
        for (k, e) in &self.endpoints {
            out.entry(e.region.as_str()).or_default().push((k, e));
        }
        out
    }

    fn region_measured(
        &self,
        eps: &[(&String, &EndpointRt)],
        min_up: MinUp,
    ) -> (Effective, usize, usize, usize) {
        // A failing metric takes the region out whatever its probes say.
        let metric_down = eps
            .iter()
            .any(|(k, e)| e.ep.is_metric() && self.endpoint_effective(k, e) == Effective::Down);
        let eps: Vec<&(&String, &EndpointRt)> =
            eps.iter().filter(|(_, e)| !e.ep.is_metric()).collect();
        if eps.is_empty() {
            let state = if metric_down {
                Effective::Down
            } else {
                Effective::Up
            };
            return (state, 0, 0, 0);
        }
        let needed = min_up.needed(eps.len());
        let states: Vec<Effective> = eps
            .iter()
            .map(|(k, e)| self.endpoint_effective(k, e))
            .collect();
        let up = states.iter().filter(|s| **s == Effective::Up).count();
        let serving = states.iter().filter(|s| **s != Effective::Down).count();
        let state = if metric_down {
            Effective::Down
        } else if up >= needed {
            Effective::Up
        } else if serving >= needed {
            Effective::Degraded
        } else {
            Effective::Down
        };
        (state, serving, eps.len(), needed)
    }

    fn region_override(&self, name: &str) -> Option<Override> {
        self.region_overrides
            .get(name)
            .or_else(|| self.snapshot.config_overrides.get(name))
            .cloned()
    }

    /// Publishes the health view and the gauges. Runs after every sample, so it is one
    /// pass over the endpoints (it was regions × endpoints, 10 000 window evaluations
    /// per sample with a hundred regions).
    fn publish(&mut self, log: bool) {
        self.publish_after(log, None);
    }

    /// `publish` after a sample of `sampled`: the gauges of that endpoint and of regions
    /// whose state changed are updated, not every series.
    fn publish_after(&mut self, log: bool, sampled: Option<&str>) {
        let now = Instant::now();
        let mut changed_regions: Vec<String> = Vec::new();
        let mut view = HealthView::default();
        let regions = self.snapshot.policies.regions.clone();
        let mut changes = Vec::new();
        let groups = self.by_region();
        let mut measured_regions = Vec::with_capacity(regions.len());
        for region in &regions {
            let eps = groups
                .get(region.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            // Health-aware TTL: the soonest any endpoint of the region could change.
            let ttl_cap = eps
                .iter()
                .filter_map(|(_, e)| {
                    let s = e.window.signals(e.thresholds.latency_percentile);
                    state::time_to_change(e.state, &s, &e.thresholds, e.ep.interval, now)
                })
                .min()
                .map(|d| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
            measured_regions.push((self.region_measured(eps, region.min_up), ttl_cap));
        }
        drop(groups);
        for (region, ((measured, up, total, needed), ttl_cap)) in
            regions.iter().zip(measured_regions)
        {
            let effective = self
                .region_override(&region.name)
                .map(|o| o.kind.effective())
                .unwrap_or(measured);
            let i = region.id as usize;
            if view.regions.len() <= i {
                view.regions.resize(i + 1, None);
            }
            if let Some(slot) = view.regions.get_mut(i) {
                *slot = Some(RegionHealth {
                    state: effective,
                    ttl_cap,
                });
            }
            let prev = self.last_region.insert(region.name.clone(), effective);
            if prev != Some(effective) {
                changed_regions.push(region.name.clone());
            }
            if log && prev.is_some_and(|p| p != effective) {
                let why = match self.region_override(&region.name) {
                    Some(o) => format!(
                        "operator override {} ({})",
                        o.kind.name(),
                        o.reason.unwrap_or_default()
                    ),
                    None if effective == Effective::Down && up >= needed && total > 0 => {
                        "the region's Prometheus metric is at or above fail_above".to_string()
                    }
                    None if total == 0 && effective == Effective::Down => {
                        "the region's Prometheus metric is at or above fail_above".to_string()
                    }
                    None if total == 0 => "no endpoints: up unless overridden".to_string(),
                    None => format!("{up} of {total} endpoints serving, {needed} needed"),
                };
                changes.push((region.name.clone(), prev, effective, why));
            }
        }
        for (name, prev, now_state, why) in changes {
            let policies = self.policies_using(&name);
            self.record(TransitionRecord {
                at: store::now_unix(),
                key: name,
                policies,
                from: format!("{:?}", prev.unwrap_or(Effective::Up)).to_lowercase(),
                to: format!("{now_state:?}").to_lowercase(),
                reason: why,
                cooldown_held: false,
            });
        }
        self.view.store(Arc::new(view));
        match sampled {
            Some(key) if !self.gauges_stale => {
                self.export_sample_gauges(now, key, &changed_regions)
            }
            _ => self.export_gauges(now),
        }
    }

    fn export_sample_gauges(&self, now: Instant, key: &str, changed_regions: &[String]) {
        let m = &self.metrics;
        for r in changed_regions {
            let up = self
                .last_region
                .get(r)
                .is_none_or(|s| *s != Effective::Down);
            m.region_healthy
                .with_label_values(&[r.as_str()])
                .set(i64::from(up));
        }
        if let Some(e) = self.endpoints.get(key) {
            self.export_endpoint(now, e);
        }
    }

    fn export_endpoint(&self, now: Instant, e: &EndpointRt) {
        let m = &self.metrics;
        let (region, ep) = (e.region.as_str(), e.ep.name.as_str());
        for st in ["up", "degraded", "down"] {
            m.endpoint_state
                .with_label_values(&[region, ep, st])
                .set(i64::from(e.state.name() == st));
        }
        let s = e.window.signals(e.thresholds.latency_percentile);
        m.endpoint_error_rate
            .with_label_values(&[region, ep])
            .set(s.error_rate);
        m.cooldown_remaining
            .with_label_values(&[region, ep])
            .set(e.cooldown_left(now).as_secs_f64());
    }

    fn export_gauges(&mut self, now: Instant) {
        let m = &self.metrics;
        // Series of removed regions and endpoints go at a reconfiguration; otherwise the
        // existing series are set in place (a reset drops and re-creates every labelled
        // series, which was most of the checker's CPU with a hundred endpoints).
        if std::mem::take(&mut self.gauges_stale) {
            m.region_healthy.reset();
            m.endpoint_state.reset();
            m.endpoint_error_rate.reset();
            m.cooldown_remaining.reset();
        }
        m.overrides.reset();
        for r in &self.snapshot.policies.regions {
            let up = self
                .last_region
                .get(&r.name)
                .is_none_or(|s| *s != Effective::Down);
            m.region_healthy
                .with_label_values(&[r.name.as_str()])
                .set(i64::from(up));
            if let Some(o) = self.region_override(&r.name) {
                m.overrides
                    .with_label_values(&[r.name.as_str(), "", o.kind.name()])
                    .set(1);
            }
        }
        for (key, e) in &self.endpoints {
            self.export_endpoint(now, e);
            if let Some(o) = self.endpoint_overrides.get(key) {
                m.overrides
                    .with_label_values(&[e.region.as_str(), e.ep.name.as_str(), o.kind.name()])
                    .set(1);
            }
        }
    }

    fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let file = StateFile {
            version: store::STATE_VERSION,
            endpoints: self
                .endpoints
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        EndpointRecord {
                            state: e.state.name().into(),
                            since: e.since_unix,
                        },
                    )
                })
                .collect(),
            region_overrides: self.region_overrides.clone(),
            endpoint_overrides: self.endpoint_overrides.clone(),
        };
        if let Err(e) = file.save(path) {
            warn!("cannot write state file {}: {e}", path.display());
        }
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let endpoints = self
            .endpoints
            .iter()
            .map(|(k, e)| {
                let s = e.window.signals(e.thresholds.latency_percentile);
                let cooldown_remaining_seconds = e.cooldown_left(now).as_secs();
                EndpointStatus {
                    region: e.region.clone(),
                    endpoint: e.ep.name.clone(),
                    probe: e.ep.kind().into(),
                    address: e.ep.address.to_string(),
                    measured: e.state.name().into(),
                    effective: self.endpoint_effective(k, e),
                    samples: s.samples,
                    error_rate: s.error_rate,
                    latency_p50_ms: ms(s.p50),
                    latency_p90_ms: ms(s.latency),
                    latency_p99_ms: ms(s.p99),
                    consecutive_failures: s.consecutive_failures,
                    consecutive_successes: s.consecutive_successes,
                    in_state_seconds: now.saturating_duration_since(e.since).as_secs(),
                    cooldown_remaining_seconds,
                    r#override: self.endpoint_overrides.get(k).cloned(),
                }
            })
            .collect();
        let groups = self.by_region();
        let regions = self
            .snapshot
            .policies
            .regions
            .iter()
            .map(|r| {
                let eps = groups
                    .get(r.name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (measured, up, total, needed) = self.region_measured(eps, r.min_up);
                let o = self.region_override(&r.name);
                RegionStatus {
                    region: r.name.clone(),
                    measured,
                    effective: o.as_ref().map(|o| o.kind.effective()).unwrap_or(measured),
                    r#override: o,
                    endpoints_up: up,
                    endpoints: total,
                    needed,
                }
            })
            .collect();
        Status {
            ready: *self.ready_tx.borrow(),
            regions,
            endpoints,
            transitions: self.history.iter().cloned().collect(),
        }
    }
}
