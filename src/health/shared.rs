//! The checker core in a cluster: its verdicts and override records go out, peers' come
//! in, and each endpoint's *shared* state (the quorum of live vantage points, with the
//! cooldown counted on the shared state) replaces the locally measured one wherever the
//! core aggregates. Without `cluster:` none of this runs and the shared state is the
//! measured one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::cause::Cause;
use super::checker::Core;
use super::peers::{self, Local, OverrideRecord, OverrideTarget, Peers, Policy, Tally, Verdict};
use super::view::Effective;

/// What `main` hands the checker to join it to the gossip runtime.
pub struct ClusterSide {
    pub policy: Policy,
    pub peers: watch::Receiver<Arc<Peers>>,
    pub local: watch::Sender<Arc<Local>>,
}

/// One endpoint's shared state.
#[derive(Debug, Clone, Copy)]
pub(super) struct SharedState {
    pub(super) state: Effective,
    pub(super) since: Instant,
    pub(super) tally: Tally,
    pub(super) held: bool,
}

pub(super) struct ClusterState {
    pub(super) policy: Policy,
    pub(super) peers_rx: Option<watch::Receiver<Arc<Peers>>>,
    pub(super) peers: Arc<Peers>,
    local_tx: watch::Sender<Arc<Local>>,
    started: Instant,
    pub(super) isolated: bool,
    pub(super) shared: HashMap<String, SharedState>,
}

impl ClusterState {
    pub(super) fn new(side: ClusterSide) -> ClusterState {
        let peers = side.peers.borrow().clone();
        ClusterState {
            policy: side.policy,
            peers,
            peers_rx: Some(side.peers),
            local_tx: side.local,
            started: Instant::now(),
            isolated: false,
            shared: HashMap::new(),
        }
    }
}

/// A peer's verdict on one endpoint, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    pub instance: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether it counts now (a live peer, or one within the isolation timeout).
    pub counted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: String,
    pub live: bool,
    /// Seconds since its heartbeat last advanced; `None`: not since this start.
    pub last_heard_seconds: Option<f64>,
    pub verdicts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub instance: String,
    pub quorum: String,
    pub isolation_timeout_seconds: u64,
    /// Deciding from this instance's own probes: no peer heard for the timeout.
    pub isolated: bool,
    pub peers: Vec<PeerStatus>,
}

/// The quorum's outcome for one endpoint, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QuorumStatus {
    pub state: Effective,
    pub up: usize,
    pub degraded: usize,
    pub down: usize,
    pub needed: usize,
    /// The shared cooldown holds it down although the votes say otherwise.
    pub cooldown_held: bool,
    pub votes: Vec<Vote>,
}

fn target_key(t: &OverrideTarget) -> &str {
    match t {
        OverrideTarget::Region(k) | OverrideTarget::Endpoint(k) => k,
    }
}

/// A state-file key back to its target: endpoint keys are `region/endpoint`, and
/// region names hold no `/`.
pub(super) fn target_of(key: &str) -> OverrideTarget {
    if key.contains('/') {
        OverrideTarget::Endpoint(key.to_string())
    } else {
        OverrideTarget::Region(key.to_string())
    }
}

/// A peer's record this instance could have made itself: a fraction only on a drain
/// and within (0, 1), a deadline after the setting, a short reason and name.
fn plausible(rec: &OverrideRecord) -> bool {
    let short = |s: &str| s.len() <= 256;
    short(&rec.by)
        && rec.state.as_ref().is_none_or(|o| {
            o.fraction
                .is_none_or(|f| o.kind == super::view::OverrideKind::Drain && f > 0.0 && f < 1.0)
                && o.until.is_none_or(|u| u > o.since)
                && o.reason.as_deref().is_none_or(short)
        })
}

impl Core {
    /// The state aggregation uses for endpoint `key`: the shared one in a cluster.
    pub(super) fn vantage_state(&self, key: &str, measured: Effective) -> Effective {
        self.cluster
            .as_ref()
            .and_then(|c| c.shared.get(key))
            .map_or(measured, |s| s.state)
    }

    /// How soon endpoint `key`'s shared state could change without its own probes
    /// changing: when the shared cooldown holding it ends, or, with the voters split, at
    /// the next probe round (a peer's next verdict may tip it). `None`: unanimous.
    pub(super) fn shared_change_bound(
        &self,
        key: &str,
        e: &super::checker::EndpointRt,
        now: Instant,
    ) -> Option<Duration> {
        let s = self.cluster.as_ref()?.shared.get(key)?;
        if s.held {
            return Some(
                e.thresholds
                    .cooldown
                    .saturating_sub(now.saturating_duration_since(s.since)),
            );
        }
        let t = s.tally;
        let unanimous = [t.up, t.degraded, t.down].contains(&t.voters());
        (!unanimous).then_some(e.ep.interval)
    }

    /// Unix milliseconds on tokio's clock (see `epoch`).
    pub(super) fn unix_ms(&self) -> u64 {
        self.epoch.0 * 1000
            + Instant::now()
                .saturating_duration_since(self.epoch.1)
                .as_millis() as u64
    }

    /// The record of an override change made here: ordered after every record seen for
    /// the target, whatever this instance's clock says.
    pub(super) fn note_override(&mut self, target: OverrideTarget, state: Option<super::Override>) {
        let stamp = self
            .unix_ms()
            .max(self.records.get(&target).map_or(0, |r| r.stamp + 1));
        let by = self.instance.clone();
        self.records
            .insert(target, OverrideRecord { state, stamp, by });
    }

    /// Applies peers' override records newer than ours (last writer wins), for targets
    /// this instance knows; returns whether any applied.
    pub(super) fn apply_peer_overrides(&mut self) -> bool {
        let Some(c) = &self.cluster else { return false };
        let peers = c.peers.clone();
        let mut applied = false;
        for peer in &peers.peers {
            for (target, rec) in &peer.overrides {
                let known = match target {
                    OverrideTarget::Region(r) => self.plan.region(r).is_some(),
                    OverrideTarget::Endpoint(k) => self.endpoints.contains_key(k),
                };
                if !known
                    || !plausible(rec)
                    || self
                        .records
                        .get(target)
                        .is_some_and(|mine| !rec.newer_than(mine))
                {
                    continue;
                }
                let key = target_key(target).to_string();
                let before = match target {
                    OverrideTarget::Endpoint(k) => self.endpoint_effective(k),
                    OverrideTarget::Region(_) => None,
                };
                let map = match target {
                    OverrideTarget::Region(_) => &mut self.region_overrides,
                    OverrideTarget::Endpoint(_) => &mut self.endpoint_overrides,
                };
                let cause = match &rec.state {
                    Some(o) => {
                        map.insert(key.clone(), o.clone());
                        Cause::OverrideSet {
                            kind: o.kind,
                            reason: o.reason.clone(),
                        }
                    }
                    None => {
                        if map.remove(&key).is_none() {
                            // A clear of something never set here: nothing changes.
                            self.records.insert(target.clone(), rec.clone());
                            continue;
                        }
                        Cause::OverrideCleared
                    }
                };
                info!(
                    target = key,
                    from = rec.by,
                    override_ = cause.label(),
                    "operator override from a peer"
                );
                if let OverrideTarget::Endpoint(k) = target {
                    let after = self.endpoint_effective(k);
                    if let (Some(b), Some(a)) = (before, after)
                        && a != b
                    {
                        self.record(k.clone(), b.name(), a.name(), cause, false);
                    }
                }
                self.records.insert(target.clone(), rec.clone());
                applied = true;
            }
        }
        if applied {
            self.expire_overrides();
        }
        applied
    }

    /// Recomputes isolation and every endpoint's shared state; records the changes.
    pub(super) fn refresh_shared(&mut self, log: bool) {
        let now = Instant::now();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let timeout = c.policy.isolation_timeout;
        let isolated = peers::isolated(&c.peers, timeout, c.started, now);
        if isolated != c.isolated {
            if isolated {
                warn!(
                    timeout = ?timeout,
                    "cluster: no peer heard within the isolation timeout; deciding from this instance's own probes"
                );
            } else {
                info!("cluster: peers heard again; deciding by quorum");
            }
            c.isolated = isolated;
        }
        let voters = peers::voters(&c.peers, timeout, isolated, now);
        let quorum = c.policy.quorum;
        let mut changes = Vec::new();
        for (key, rt) in &self.endpoints {
            let mut votes = vec![match rt.state {
                super::state::State::Up => Effective::Up,
                super::state::State::Degraded => Effective::Degraded,
                super::state::State::Down { .. } => Effective::Down,
            }];
            votes.extend(
                voters
                    .iter()
                    .filter_map(|p| p.verdicts.get(key).map(|v| v.state)),
            );
            let tally = peers::decide(&votes, quorum);
            let prev = c.shared.get(key).copied();
            let cooldown = rt.thresholds.cooldown;
            let (state, held) = match prev {
                // Down on the shared state: back only after the cooldown, counted from
                // when the shared state went down (also across a switch of views).
                Some(p) if p.state == Effective::Down && tally.state != Effective::Down => {
                    let down_for = now.saturating_duration_since(p.since);
                    if down_for < cooldown {
                        if !p.held {
                            changes.push((
                                key.clone(),
                                Effective::Down,
                                Effective::Down,
                                Cause::QuorumCooldownHeld {
                                    left: cooldown - down_for,
                                },
                                true,
                            ));
                        }
                        (Effective::Down, true)
                    } else {
                        (tally.state, false)
                    }
                }
                _ => (tally.state, false),
            };
            let since = match prev {
                Some(p) if p.state == state => p.since,
                // A restored down state keeps its age.
                None if state == Effective::Down => rt.since,
                _ => now,
            };
            if let Some(p) = prev
                && p.state != state
            {
                changes.push((
                    key.clone(),
                    p.state,
                    state,
                    Cause::Quorum {
                        down: tally.down,
                        degraded: tally.degraded,
                        voters: tally.voters(),
                        needed: tally.needed,
                    },
                    false,
                ));
            }
            c.shared.insert(
                key.clone(),
                SharedState {
                    state,
                    since,
                    tally,
                    held,
                },
            );
        }
        c.shared.retain(|k, _| self.endpoints.contains_key(k));
        if log {
            for (key, from, to, cause, held) in changes {
                self.record(key, from.name(), to.name(), cause, held);
            }
        }
    }

    /// Hands this instance's verdicts and override records to the gossip runtime (it
    /// publishes what changed).
    pub(super) fn publish_local(&self) {
        let Some(c) = &self.cluster else { return };
        let verdicts: BTreeMap<String, Verdict> = self
            .endpoints
            .iter()
            .map(|(k, e)| {
                let s = e.window.signals(e.thresholds.latency_percentile);
                (
                    k.clone(),
                    Verdict {
                        state: match e.state {
                            super::state::State::Up => Effective::Up,
                            super::state::State::Degraded => Effective::Degraded,
                            super::state::State::Down { .. } => Effective::Down,
                        },
                        error_rate: (s.error_rate * 1000.0).round() / 1000.0,
                        // Rounded so that a moving latency does not gossip every probe.
                        latency_ms: s.latency.map(|l| (l.as_secs_f64() * 100.0).round() * 10.0),
                        since: e.since_unix,
                    },
                )
            })
            .collect();
        let local = Local {
            verdicts,
            overrides: self.records.clone(),
        };
        if **c.local_tx.borrow() != local {
            c.local_tx.send_replace(Arc::new(local));
        }
    }

    pub(super) fn export_cluster(&self) {
        let Some(c) = &self.cluster else { return };
        let m = &self.metrics;
        m.cluster_isolated.set(i64::from(c.isolated));
        for (key, s) in &c.shared {
            let Some(e) = self.endpoints.get(key) else {
                continue;
            };
            for (st, n) in [
                ("up", s.tally.up),
                ("degraded", s.tally.degraded),
                ("down", s.tally.down),
            ] {
                m.endpoint_votes
                    .with_label_values(&[e.region.as_str(), e.ep.name.as_str(), st])
                    .set(n as i64);
            }
        }
    }

    pub(super) fn cluster_status(&self) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref()?;
        let now = Instant::now();
        Some(ClusterStatus {
            instance: c.policy.instance.clone(),
            quorum: c.policy.quorum.name(),
            isolation_timeout_seconds: c.policy.isolation_timeout.as_secs(),
            isolated: c.isolated,
            peers: c
                .peers
                .peers
                .iter()
                .map(|p| PeerStatus {
                    name: p.name.clone(),
                    address: p.address.to_string(),
                    live: p.live,
                    last_heard_seconds: p.last_heard.map(|h| {
                        (now.saturating_duration_since(h).as_secs_f64() * 10.0).round() / 10.0
                    }),
                    verdicts: p.verdicts.len(),
                })
                .collect(),
        })
    }

    /// The votes behind endpoint `key`'s shared state.
    pub(super) fn quorum_status(&self, key: &str) -> Option<QuorumStatus> {
        let c = self.cluster.as_ref()?;
        let s = c.shared.get(key)?;
        let now = Instant::now();
        let counted: Vec<&str> =
            peers::voters(&c.peers, c.policy.isolation_timeout, c.isolated, now)
                .iter()
                .map(|p| p.name.as_str())
                .collect();
        let votes = c
            .peers
            .peers
            .iter()
            .filter_map(|p| {
                p.verdicts.get(key).map(|v| Vote {
                    instance: p.name.clone(),
                    verdict: v.clone(),
                    counted: counted.contains(&p.name.as_str()),
                })
            })
            .collect();
        Some(QuorumStatus {
            state: s.state,
            up: s.tally.up,
            degraded: s.tally.degraded,
            down: s.tally.down,
            needed: s.tally.needed,
            cooldown_held: s.held,
            votes,
        })
    }
}

/// How long until the isolation state could change on its own (no message arriving):
/// when the last peer heard falls past the timeout.
pub(super) fn isolation_due(c: &ClusterState) -> Option<Duration> {
    if c.isolated {
        return None;
    }
    let last = c
        .peers
        .peers
        .iter()
        .filter_map(|p| p.last_heard)
        .max()
        .unwrap_or(c.started);
    Some((last + c.policy.isolation_timeout).saturating_duration_since(Instant::now()))
}
