//! The checker core: one value owned by one task, composed of parts that each own
//! their state (`probes`, `overrides`, `shifting`, `loads`, `history`, `cluster`). The
//! core only joins them: a sample or an override becomes transitions to record, and
//! every change ends in one publication of a fresh [`HealthView`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::info;

use super::cluster::{ClusterSide, ClusterState};
use super::demand::Demand;
use super::export;
use super::failovers::{Failovers, Pending};
use super::history::History;
use super::loads::Loads;
use super::overrides::{FromPeer, Overrides};
use super::probes::{Probes, Probing, SampleTx};
use super::publish;
use super::release::Release;
use super::shifting::Shifting;
use crate::health::aggregate::{self, Member, RegionState};
use crate::health::cause::Cause;
use crate::health::peers::OverrideTarget;
use crate::health::plan::HealthPlan;
use crate::health::probe;
use crate::health::state::Sample;
use crate::health::status::{Direction, OverrideError, Target};
use crate::health::store::{self, StateFile};
use crate::health::view::{Effective, HealthView, OverrideKind, RegionHealth};
use crate::metrics::Metrics;

pub(crate) struct Core {
    pub(super) plan: Arc<HealthPlan>,
    pub(super) probes: Probes,
    pub(super) overrides: Overrides,
    pub(super) shifting: Shifting,
    /// Where the demand is: the population the split works on.
    pub(super) demand: Demand,
    pub(super) loads: Loads,
    pub(super) history: History,
    pub(super) failovers: Failovers,
    /// `Some` in a cluster: peers, quorum, the shared states.
    pub(super) cluster: Option<ClusterState>,
    /// Each region's state at the last publication, by name.
    pub(super) last_region: HashMap<String, RegionState>,
    /// Hands each view to the query path (after DNSSEC prepared it, off this task).
    pub(super) release: Release,
    pub(super) ready_tx: Arc<watch::Sender<bool>>,
    /// The plan in force, where the supervisor finds it to restart the checker.
    plan_store: Arc<ArcSwap<HealthPlan>>,
    state_file: Option<store::Writer>,
    pub(super) metrics: Arc<Metrics>,
    /// Set when regions or endpoints change: the next export starts the gauges afresh.
    gauges_stale: bool,
    /// A publication owed for samples that changed no state (see `intake`).
    pub(super) publish_due: Option<Instant>,
    /// A state file write owed for measured states that changed (see `persist_soon`).
    pub(super) persist_due: Option<Instant>,
}

/// How long samples that change no state wait to be published together: the view then
/// differs only in its TTL caps (whole seconds), so a publication per sample, which
/// costs a pass over every endpoint, is not worth it past a few hundred endpoints.
pub(super) const COALESCE: Duration = Duration::from_millis(200);

/// How long measured state changes wait to be written together: a region going down
/// moves all its endpoints within a few probes, and one write covers them. Overrides
/// are written at once, and shutdown writes what is owed.
pub(super) const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// What the run loop does after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intake {
    /// A stale or unknown sample.
    Ignored,
    /// Nothing moved: the view can wait for the next coalesced publication.
    Quiet,
    /// A transition, or the first failure after successes (or the reverse), which moves
    /// a TTL cap by a whole interval: publish now. `persist`: a measured state changed.
    Publish { persist: bool },
}

impl Core {
    /// What a core starts from: the view it publishes into (the query path's), the
    /// readiness it reports, where it keeps its plan, and where samples arrive.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plan_store: Arc<ArcSwap<HealthPlan>>,
        view: Arc<ArcSwap<HealthView>>,
        persisted: &StateFile,
        state_file: Option<PathBuf>,
        ready_tx: Arc<watch::Sender<bool>>,
        sample_tx: SampleTx,
        metrics: Arc<Metrics>,
        probing: Probing,
    ) -> Core {
        let plan = plan_store.load_full();
        let mut core = Core {
            plan: plan.clone(),
            probes: Probes::new(sample_tx, probing),
            overrides: Overrides::restore(persisted, probe::instance()),
            shifting: Shifting::default(),
            demand: Demand::default(),
            loads: Loads::new(probing),
            history: History::default(),
            failovers: Failovers::restore(&persisted.failovers, &plan),
            cluster: None,
            last_region: HashMap::new(),
            release: Release::new(view),
            ready_tx,
            plan_store,
            state_file: state_file
                .map(|p| store::Writer::new(p).counting(metrics.state_file_write_failures.clone())),
            metrics,
            gauges_stale: true,
            publish_due: None,
            persist_due: None,
        };
        core.reconfigure(plan, Some(persisted));
        // Restored overrides keep their deadlines; those past theirs end now.
        core.expire_overrides();
        core.publish(false);
        core
    }

    /// A core without probe tasks, fed by `observe` (tests, `meridian simulate`).
    pub(in crate::health) fn offline(plan: Arc<HealthPlan>) -> (Core, watch::Receiver<bool>) {
        Core::offline_from(plan, &StateFile::default())
    }

    /// An offline core restored from a state file.
    pub(in crate::health) fn offline_from(
        plan: Arc<HealthPlan>,
        persisted: &StateFile,
    ) -> (Core, watch::Receiver<bool>) {
        let (ready_tx, ready) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let sample_tx = SampleTx {
            tx: mpsc::channel(1).0,
            overflow: metrics
                .health_queue_overflow
                .with_label_values(&["samples"]),
        };
        let core = Core::new(
            Arc::new(ArcSwap::new(plan)),
            Arc::new(ArcSwap::from_pointee(HealthView::default())),
            persisted,
            None,
            Arc::new(ready_tx),
            sample_tx,
            metrics,
            Probing::Off,
        );
        (core, ready)
    }

    /// Joins the gossip runtime: from now on endpoints count by quorum.
    pub(super) fn join(&mut self, side: ClusterSide) {
        let cluster = ClusterState::new(side);
        self.overrides.set_instance(cluster.instance().to_string());
        self.cluster = Some(cluster);
        self.apply_peer_overrides();
        self.publish(false);
    }

    /// A new plan (reload): states carry over for endpoints that persist.
    pub(in crate::health) fn reconfigure(
        &mut self,
        plan: Arc<HealthPlan>,
        persisted: Option<&StateFile>,
    ) {
        let old = std::mem::replace(&mut self.plan, plan.clone());
        self.plan_store.store(plan.clone());
        self.gauges_stale = true;
        self.demand.reset(&old, &plan);
        self.shifting.forget_split();
        self.probes.reconfigure(&plan, persisted, Instant::now());
        self.loads.respawn(&plan);
    }

    fn record(&mut self, key: String, from: &str, to: &str, cause: Cause, held: bool) {
        self.history
            .record(&self.metrics, &self.plan, key, from, to, cause, held);
    }

    /// Feeds one sample to endpoint `key` (see `Probes::observe`) and records the
    /// transition it caused. Returns whether a persisted state changed.
    pub(in crate::health) fn observe(
        &mut self,
        key: &str,
        generation: u64,
        sample: Sample,
        silent: Option<Duration>,
    ) -> bool {
        self.take_sample(key, generation, sample, silent)
            .is_some_and(|(changed, _)| changed)
    }

    /// `observe`'s work: `None` for a stale or unknown sample, else whether the measured
    /// state changed and whether the endpoint moved (a transition was recorded).
    fn take_sample(
        &mut self,
        key: &str,
        generation: u64,
        sample: Sample,
        silent: Option<Duration>,
    ) -> Option<(bool, bool)> {
        let now = Instant::now();
        let seen = self
            .probes
            .observe(key, generation, sample, silent, now, &self.metrics)?;
        let moved = seen.moved.is_some();
        if let Some(m) = seen.moved {
            self.record(key.to_string(), m.from, m.to, m.cause, m.cooldown_held);
        }
        Some((seen.changed, moved))
    }

    /// Replaces probe tasks that fell silent, counting the silence as a failed probe.
    /// Returns whether a persisted state changed.
    pub(super) fn revive_silent_probes(&mut self) -> bool {
        let mut changed = false;
        for (key, timeout, quiet) in self.probes.silent(Instant::now()) {
            tracing::warn!(key, "probe task stopped reporting: restarting it");
            let Some(generation) = self.probes.restart(&key) else {
                continue;
            };
            let failed = Sample {
                ok: false,
                latency: timeout,
            };
            changed |= self.observe(&key, generation, failed, Some(quiet));
        }
        changed
    }

    #[cfg(test)]
    pub(super) fn set_override(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
    ) -> Result<(), OverrideError> {
        self.set_override_fraction(target, kind, reason, None)
    }

    pub(in crate::health) fn set_override_fraction(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
    ) -> Result<(), OverrideError> {
        self.set_override_until(target, kind, reason, fraction, None)
    }

    /// Sets or clears an operator's override; `lasts`: it ends by itself after that.
    pub(in crate::health) fn set_override_until(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
    ) -> Result<(), OverrideError> {
        let known = match &target {
            Target::Region(r) => self.plan.region(r).is_some(),
            Target::Endpoint { region, endpoint } => {
                self.probes.contains(&format!("{region}/{endpoint}"))
            }
        };
        let (target, state) =
            self.overrides
                .request(&target, kind, reason.clone(), fraction, lasts, known)?;
        let key = super::overrides::target_key(&target).to_string();
        let endpoint = matches!(target, OverrideTarget::Endpoint(_));
        let before = if endpoint {
            self.endpoint_effective(&key)
        } else {
            None
        };
        let cause = match kind {
            Some(k) => Cause::OverrideSet {
                kind: k,
                reason: reason.clone(),
            },
            None => Cause::OverrideCleared,
        };
        self.overrides.set(target, state);
        info!(
            target = key,
            override_ = cause.label(),
            reason = reason.as_deref().unwrap_or(""),
            "operator override"
        );
        // An endpoint's change is its own transition; a region's is recorded when the
        // view is published, with the same cause.
        if endpoint {
            self.record_endpoint_change(&key, before, cause);
        }
        Ok(())
    }

    fn record_endpoint_change(&mut self, key: &str, before: Option<Effective>, cause: Cause) {
        if let (Some(b), Some(a)) = (before, self.endpoint_effective(key))
            && a != b
        {
            self.record(key.to_string(), b.name(), a.name(), cause, false);
        }
    }

    /// Removes overrides whose time is up and records what that changed (a region's
    /// change is recorded at publication). Returns whether any ended.
    pub(in crate::health) fn expire_overrides(&mut self) -> bool {
        let ended = self.overrides.expire();
        for e in &ended {
            if let OverrideTarget::Endpoint(key) = &e.target
                && let Some(rt) = self.probes.get(key)
            {
                let (before, after) = (e.kind.effective(), rt.measured());
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
        !ended.is_empty()
    }

    /// Applies peers' override records newer than ours (last writer wins), for targets
    /// this instance knows; returns whether any applied.
    pub(super) fn apply_peer_overrides(&mut self) -> bool {
        let Some(peers) = self.cluster.as_ref().map(ClusterState::peers) else {
            return false;
        };
        let mut applied = false;
        for peer in &peers.peers {
            for (target, rec) in &peer.overrides {
                let (known, endpoint) = match target {
                    OverrideTarget::Region(r) => (self.plan.region(r).is_some(), None),
                    OverrideTarget::Endpoint(k) => (self.probes.contains(k), Some(k.as_str())),
                };
                let before = endpoint.and_then(|k| self.endpoint_effective(k));
                let FromPeer::Applied(cause) = self.overrides.apply_peer(target, rec, known) else {
                    continue;
                };
                info!(
                    target = super::overrides::target_key(target),
                    from = rec.by,
                    override_ = cause.label(),
                    "operator override from a peer"
                );
                if let Some(k) = endpoint {
                    self.record_endpoint_change(k, before, cause);
                }
                applied = true;
            }
        }
        if applied {
            self.expire_overrides();
        }
        applied
    }

    /// A load poller's answer (see `Loads::observe`); whether to publish again.
    pub(super) fn observe_load(&mut self, region: &str, value: Option<f64>) -> bool {
        let i = self.plan.regions.iter().position(|r| r.name == region);
        let modelled = i.map_or(0.0, |i| self.shifting.modelled(i));
        if let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0)
            && self
                .failovers
                .observe_load(&self.metrics, region, v, Instant::now())
        {
            self.persist_soon();
        }
        self.loads.observe(region, value, modelled, &self.metrics)
    }

    /// Ends the `answer` phase of failover events whose view has answered.
    pub(super) fn poll_answers(&mut self) {
        if self.failovers.poll_answers(&self.metrics) {
            self.persist_soon();
        }
    }

    /// The state aggregation uses for endpoint `key`: the shared one in a cluster.
    fn vantage_state(&self, key: &str, measured: Effective) -> Effective {
        self.cluster
            .as_ref()
            .map_or(measured, |c| c.vantage(key, measured))
    }

    pub(super) fn endpoint_effective(&self, key: &str) -> Option<Effective> {
        let rt = self.probes.get(key)?;
        Some(aggregate::endpoint(
            self.vantage_state(key, rt.measured()),
            self.overrides.endpoint(key),
        ))
    }

    /// Every region's aggregate state, in plan order, in one pass over the endpoints.
    pub(super) fn regions(&self) -> Vec<RegionState> {
        let mut members: HashMap<&str, Vec<Member>> = HashMap::new();
        for (k, e) in self.probes.iter() {
            members.entry(e.region.as_str()).or_default().push(Member {
                state: aggregate::endpoint(
                    self.vantage_state(k, e.measured()),
                    self.overrides.endpoint(k),
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
                    self.overrides.region(&r.name),
                    self.plan.config_overrides.get(&r.name),
                )
            })
            .collect()
    }

    /// In a cluster, whether any peer has been heard (true outside a cluster).
    pub(super) fn heard_a_peer(&self) -> bool {
        self.cluster.as_ref().is_none_or(ClusterState::heard_a_peer)
    }

    /// Writes the state file now (fsynced before this returns): an override must be on
    /// disk before its reply.
    pub(super) fn persist(&mut self) {
        self.persist_due = None;
        let Some(w) = self.state_file.as_mut() else {
            return;
        };
        let file = export::state_file(&self.probes, &self.overrides, &self.failovers);
        if let Err(e) = w.save_now(&file) {
            tracing::warn!("cannot write state file {}: {e}", w.path().display());
        }
    }

    /// Writes the state file within `PERSIST_EVERY`, in the background.
    pub(super) fn persist_soon(&mut self) {
        if self.state_file.is_some() {
            self.persist_due
                .get_or_insert_with(|| Instant::now() + PERSIST_EVERY);
        }
    }

    /// The write `persist_soon` promised.
    pub(super) fn persist_owed(&mut self) {
        self.persist_due = None;
        if let Some(w) = self.state_file.as_mut() {
            w.save_in_background(export::state_file(
                &self.probes,
                &self.overrides,
                &self.failovers,
            ));
        }
    }

    /// Feeds a probe task's sample and says when to publish (see [`Intake`]).
    pub(super) fn intake(&mut self, key: &str, generation: u64, sample: Sample) -> Intake {
        let Some((changed, moved)) = self.take_sample(key, generation, sample, None) else {
            return Intake::Ignored;
        };
        let now = Instant::now();
        let flipped = self.probes.get(key).is_some_and(|e| {
            e.signals.consecutive_failures == 1 || e.signals.consecutive_successes == 1
        });
        if moved || changed || flipped {
            return Intake::Publish { persist: changed };
        }
        if !self.gauges_stale {
            export::sample_gauges(
                &self.metrics,
                &self.last_region,
                self.probes.get(key),
                &[],
                now,
            );
        }
        self.publish_due.get_or_insert(now + COALESCE);
        Intake::Quiet
    }

    /// The endpoints of `region` with their generations (`meridian simulate` feeds them).
    pub(in crate::health) fn probes_of(&self, region: &str) -> Vec<(String, u64)> {
        self.probes.of_region(region)
    }

    pub(in crate::health) fn current_view(&self) -> Arc<HealthView> {
        self.release.latest().clone()
    }

    /// Reads the answer counters into the load estimate; whether its population moved
    /// (the next publication splits it afresh).
    pub(in crate::health) fn sample_demand(&mut self) -> bool {
        let plan = self.plan.clone();
        self.demand
            .sample(&plan, &self.metrics.policies, Instant::now())
    }

    /// The split of the last publication.
    pub(in crate::health) fn outcome(&self) -> Option<Arc<crate::traffic::Outcome>> {
        self.shifting.outcome().cloned()
    }

    /// Transitions recorded since the last call.
    pub(in crate::health) fn drain_history(
        &mut self,
    ) -> Vec<crate::health::status::TransitionRecord> {
        self.history.drain()
    }

    pub(in crate::health) fn publish(&mut self, log: bool) {
        self.publish_after(log, None);
    }

    /// When the run of samples that moved `region` began: the earliest first failing
    /// (for a leave) or passing (for a return) sample among its endpoints in such a run.
    fn streak_start(&self, region: &str, direction: Direction) -> Option<Instant> {
        let want_ok = direction == Direction::Return;
        self.probes
            .iter()
            .filter(|(_, e)| e.region == region && !e.ep.is_metric())
            .filter_map(|(_, e)| e.streak.filter(|(ok, _)| *ok == want_ok).map(|(_, t)| t))
            .min()
    }

    /// Publishes the health view after a change (a sample of `sampled`, or anything
    /// else when `None`), records region transitions, and updates the gauges: after a
    /// sample only that endpoint's and the changed regions' series.
    pub(super) fn publish_after(&mut self, log: bool, sampled: Option<&str>) {
        let now = Instant::now();
        self.publish_due = None;
        if let Some(c) = self.cluster.as_mut() {
            let changes = c.refresh(&self.probes, now);
            if log {
                for (key, from, to, cause, held) in changes {
                    self.record(key, from.name(), to.name(), cause, held);
                }
            }
        }
        let ttl_caps = publish::ttl_caps(&self.probes, self.cluster.as_ref(), now);
        let states = self.regions();
        let plan = self.plan.clone();
        let keeps = self.shifting.keeps(&plan, &states, &self.last_region, now);
        let (admits, sheds, fresh, shed_changes) = self.shifting.admits(
            &plan,
            self.demand.clients(),
            self.demand.generation(),
            &keeps,
            &self.loads,
        );
        if let Some(f) = fresh {
            export::split(
                &self.metrics,
                &plan,
                &f.regions,
                &f.outcome,
                &self.loads,
                &self.shifting,
                now,
            );
        }
        let mut view = HealthView::default();
        let mut changed_regions = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for (index, starts) in shed_changes {
            let Some(region) = plan.regions.get(index) else {
                continue;
            };
            info!(
                region = region.name,
                capacity = region.capacity,
                "{}",
                if starts {
                    "shedding: its own clients bring more than its capacity; the excess goes to their next regions with room"
                } else {
                    "shedding stopped: its own clients are back under the low mark"
                }
            );
            if log {
                pending.push(Pending {
                    region: index,
                    direction: if starts {
                        Direction::Leave
                    } else {
                        Direction::Return
                    },
                    cause: "shedding",
                    started: now,
                    changed: now,
                    cap_before: self.release.latest().ttl_cap(region.id),
                    level: self.loads.measured(&region.name),
                });
            }
        }
        for ((((region, next), &keep), admit), shed) in
            plan.regions.iter().zip(states).zip(&keeps).zip(admits).zip(
                sheds
                    .into_iter()
                    .chain(std::iter::repeat(crate::traffic::Share::ALL)),
            )
        {
            view.put(
                region.id,
                RegionHealth {
                    state: next.effective,
                    ttl_cap: ttl_caps.get(&region.name).copied(),
                    keep,
                    admit,
                    shed,
                    live: next.live,
                },
            );
            let prev = self.last_region.remove(&region.name);
            if prev.as_ref().is_none_or(|p| p.effective != next.effective) {
                changed_regions.push(region.name.clone());
            }
            if log {
                if let Some(p) = &prev {
                    publish::log_addresses(region, p, &next);
                }
                if let Some(cause) = aggregate::transition(prev.as_ref(), &next) {
                    let from = prev.as_ref().map_or(Effective::Up, |p| p.effective);
                    let direction = match (from, next.effective) {
                        (Effective::Down, Effective::Up | Effective::Degraded) => {
                            Some(Direction::Return)
                        }
                        (Effective::Up | Effective::Degraded, Effective::Down) => {
                            Some(Direction::Leave)
                        }
                        _ => None,
                    };
                    if let (Some(direction), Some(index)) = (
                        direction,
                        plan.regions.iter().position(|r| r.name == region.name),
                    ) {
                        pending.push(Pending {
                            region: index,
                            direction,
                            cause: cause.label(),
                            started: self.streak_start(&region.name, direction).unwrap_or(now),
                            changed: now,
                            cap_before: self.release.latest().ttl_cap(region.id),
                            level: self.loads.measured(&region.name),
                        });
                    }
                    self.record(
                        region.name.clone(),
                        from.name(),
                        next.effective.name(),
                        cause,
                        false,
                    );
                }
            }
            self.last_region.insert(region.name.clone(), next);
        }
        view.refresh_shifting();
        #[cfg(test)]
        fault::hit(&self.plan);
        // Until a query is answered, each new view shares the last one's stamp: an event
        // waits for the first answer after its publication, whichever later view gave it.
        let last = &self.release.latest().answered;
        if last.get().is_none() {
            view.answered = last.clone();
        }
        let stamp = view.answered.clone();
        self.release.hand_over(view, self.plan.prepare.as_ref());
        let published = Instant::now();
        for p in pending {
            if let Some(region) = plan.regions.get(p.region) {
                let event = super::failovers::finish(&p, region, published, store::now_unix());
                self.failovers
                    .record_awaiting(&self.metrics, event, &p, stamp.clone());
            }
        }
        if let Some(c) = &self.cluster {
            c.publish_local(&self.probes, self.overrides.records());
            c.export(&self.metrics, &self.probes);
        }
        match sampled {
            Some(key) if !self.gauges_stale => export::sample_gauges(
                &self.metrics,
                &self.last_region,
                self.probes.get(key),
                &changed_regions,
                now,
            ),
            _ => {
                let fresh = std::mem::take(&mut self.gauges_stale);
                export::all_gauges(
                    &self.metrics,
                    &self.plan,
                    &self.last_region,
                    &self.probes,
                    &self.overrides,
                    fresh,
                    now,
                );
            }
        }
    }
}

/// A fault the supervisor's test injects: the next publication of a plan with an armed
/// region's name panics (by name, so that tests running alongside are not hit).
#[cfg(test)]
pub(super) mod fault {
    use std::sync::Mutex;

    pub(in crate::health::checker) static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub(super) fn hit(plan: &crate::health::plan::HealthPlan) {
        let hit = {
            let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
            let at = armed
                .iter()
                .position(|n| plan.regions.iter().any(|r| &r.name == n));
            at.map(|i| armed.remove(i))
        };
        if let Some(name) = hit {
            panic!("an injected fault (region {name})");
        }
    }
}
