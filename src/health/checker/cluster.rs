//! The checker in a cluster: this instance's verdicts and override records go out,
//! peers' come in, and each endpoint's *shared* state (the quorum of live vantage
//! points, with the cooldown counted on the shared state) replaces the locally measured
//! one wherever the core aggregates. Without `cluster:` none of this runs and the
//! shared state is the measured one. The decisions are `peers`' pure functions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::probes::{EndpointRt, Probes};
use crate::health::cause::Cause;
use crate::health::peers::{
    self, Local, OverrideRecord, OverrideTarget, Peers, Policy, Tally, Verdict,
};
use crate::health::status::{ClusterStatus, PeerStatus, QuorumStatus, Vote};
use crate::health::view::Effective;
use crate::metrics::Metrics;

/// What the serve wiring hands the checker to join it to the gossip runtime (kept by
/// the supervisor, so a restarted checker joins again).
#[derive(Clone)]
pub struct ClusterSide {
    pub policy: Policy,
    pub peers: watch::Receiver<Arc<Peers>>,
    pub local: Arc<watch::Sender<Arc<Local>>>,
}

/// One endpoint's shared state.
#[derive(Debug, Clone, Copy)]
struct SharedState {
    state: Effective,
    since: Instant,
    tally: Tally,
    held: bool,
}

/// A change of an endpoint's shared state, to record: (key, from, to, cause, held).
pub(super) type SharedChange = (String, Effective, Effective, Cause, bool);

pub(super) struct ClusterState {
    policy: Policy,
    peers_rx: Option<watch::Receiver<Arc<Peers>>>,
    peers: Arc<Peers>,
    local_tx: Arc<watch::Sender<Arc<Local>>>,
    started: Instant,
    isolated: bool,
    shared: HashMap<String, SharedState>,
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

    pub(super) fn instance(&self) -> &str {
        &self.policy.instance
    }

    /// The gossip runtime's channel of peers, for the run loop (once).
    pub(super) fn take_peers_rx(&mut self) -> Option<watch::Receiver<Arc<Peers>>> {
        self.peers_rx.take()
    }

    pub(super) fn set_peers(&mut self, peers: Arc<Peers>) {
        self.peers = peers;
    }

    pub(super) fn peers(&self) -> Arc<Peers> {
        self.peers.clone()
    }

    #[cfg(test)]
    pub(super) fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// Whether any peer has been heard (its votes and overrides are in).
    pub(super) fn heard_a_peer(&self) -> bool {
        self.peers.peers.iter().any(|p| p.last_heard.is_some())
    }

    /// The state aggregation uses for endpoint `key`: the shared one.
    pub(super) fn vantage(&self, key: &str, measured: Effective) -> Effective {
        self.shared.get(key).map_or(measured, |s| s.state)
    }

    /// How soon endpoint `key`'s shared state could change without its own probes
    /// changing: when the shared cooldown holding it ends, or, with the voters split, at
    /// the next probe round (a peer's next verdict may tip it). `None`: unanimous.
    pub(super) fn change_bound(&self, key: &str, e: &EndpointRt, now: Instant) -> Option<Duration> {
        let s = self.shared.get(key)?;
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

    /// How long until the isolation state could change on its own (no message
    /// arriving): when the last peer heard falls past the timeout.
    pub(super) fn isolation_due(&self) -> Option<Duration> {
        if self.isolated {
            return None;
        }
        let last = self
            .peers
            .peers
            .iter()
            .filter_map(|p| p.last_heard)
            .max()
            .unwrap_or(self.started);
        let due = last.checked_add(self.policy.isolation_timeout)?;
        Some(due.saturating_duration_since(Instant::now()))
    }

    /// Recomputes isolation and every endpoint's shared state; returns the changes.
    pub(super) fn refresh(&mut self, probes: &Probes, now: Instant) -> Vec<SharedChange> {
        let timeout = self.policy.isolation_timeout;
        let isolated = peers::isolated(&self.peers, timeout, self.started, now);
        if isolated != self.isolated {
            if isolated {
                warn!(
                    timeout = ?timeout,
                    "cluster: no peer heard within the isolation timeout; deciding from this instance's own probes"
                );
            } else {
                info!("cluster: peers heard again; deciding by quorum");
            }
            self.isolated = isolated;
        }
        let voters = peers::voters(&self.peers, timeout, isolated, now);
        let quorum = self.policy.quorum;
        let mut changes = Vec::new();
        for (key, rt) in probes.iter() {
            let mut votes = vec![rt.measured()];
            votes.extend(
                voters
                    .iter()
                    .filter_map(|p| p.verdicts.get(key).map(|v| v.state)),
            );
            let tally = peers::decide(&votes, quorum);
            let prev = self.shared.get(key).copied();
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
            self.shared.insert(
                key.clone(),
                SharedState {
                    state,
                    since,
                    tally,
                    held,
                },
            );
        }
        self.shared.retain(|k, _| probes.contains(k));
        changes
    }

    /// Hands this instance's verdicts and override records to the gossip runtime (it
    /// publishes what changed).
    pub(super) fn publish_local(
        &self,
        probes: &Probes,
        records: &BTreeMap<OverrideTarget, OverrideRecord>,
    ) {
        let verdicts: BTreeMap<String, Verdict> = probes
            .iter()
            .map(|(k, e)| {
                let s = e.signals;
                (
                    k.clone(),
                    Verdict {
                        state: e.measured(),
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
            overrides: records.clone(),
        };
        if **self.local_tx.borrow() != local {
            self.local_tx.send_replace(Arc::new(local));
        }
    }

    pub(super) fn export(&self, metrics: &Metrics, probes: &Probes) {
        metrics.cluster_isolated.set(i64::from(self.isolated));
        for (key, s) in &self.shared {
            let Some(e) = probes.get(key) else {
                continue;
            };
            for (st, n) in [
                ("up", s.tally.up),
                ("degraded", s.tally.degraded),
                ("down", s.tally.down),
            ] {
                metrics
                    .endpoint_votes
                    .with_label_values(&[e.region.as_str(), e.ep.name.as_str(), st])
                    .set(n as i64);
            }
        }
    }

    pub(super) fn status(&self, now: Instant) -> ClusterStatus {
        ClusterStatus {
            instance: self.policy.instance.clone(),
            quorum: self.policy.quorum.name(),
            isolation_timeout_seconds: self.policy.isolation_timeout.as_secs(),
            isolated: self.isolated,
            peers: self
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
        }
    }

    /// The votes behind endpoint `key`'s shared state.
    pub(super) fn quorum_status(&self, key: &str, now: Instant) -> Option<QuorumStatus> {
        let s = self.shared.get(key)?;
        let counted: Vec<&str> = peers::voters(
            &self.peers,
            self.policy.isolation_timeout,
            self.isolated,
            now,
        )
        .iter()
        .map(|p| p.name.as_str())
        .collect();
        let votes = self
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
