//! The instances of an NS set as one system: each publishes its verdict per endpoint
//! and its operator overrides through chitchat (Quickwit's Scuttlebutt gossip, with
//! phi-accrual failure detection) and reads everybody else's. Deciding is not done
//! here: this module only moves [`Local`] out and [`Peers`] in; the checker applies the
//! quorum (`health::peers`).
//!
//! ```text
//!  checker ── watch<Local> ──► publish: keys v/<region>/<endpoint>, o/r/<region>, o/e/<key>
//!  checker ◄── watch<Peers> ── poll every quarter gossip interval: peers, liveness, keys
//!                 chitchat ◄──► AuthTransport (HMAC, replay window) ◄──► UDP
//! ```

pub mod auth;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::health::peers::{Local, OverrideRecord, OverrideTarget, Peer, Peers, Verdict};
use crate::metrics::Metrics;

pub use auth::Counters;

const VERDICT: &str = "v/";
const REGION_OVERRIDE: &str = "o/r/";
const ENDPOINT_OVERRIDE: &str = "o/e/";
/// An anycast prefix this instance announces (`a/198.51.100.53/32`).
const ANNOUNCING: &str = "a/";
/// Largest gossiped value read: a verdict is ~30 bytes and an override record ~200.
const MAX_VALUE: usize = 4096;

/// Anycast prefixes through gossip: ours out, the live peers' in (by instance), so
/// that `min_announcing` counts who else announces a prefix.
pub struct AnycastGossip {
    pub mine: watch::Receiver<Arc<BTreeSet<String>>>,
    pub theirs: watch::Sender<Arc<crate::anycast::run::Announcing>>,
}

/// The running gossip: stop it by dropping.
pub struct Cluster {
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
    handle: Option<ChitchatHandle>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Joins the cluster: binds the gossip socket (an error now if the port is taken) and
/// starts publishing `local` and feeding `peers`.
pub async fn start(
    cfg: &ClusterConfig,
    local: watch::Receiver<Arc<Local>>,
    peers: watch::Sender<Arc<Peers>>,
    anycast: Option<AnycastGossip>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Cluster> {
    let boot = unix_nanos();
    let counters = Arc::new(Counters::default());
    let transport = auth::AuthTransport {
        secret: cfg.secret.clone(),
        boot,
        counters: counters.clone(),
        advertise: cfg.advertise,
    };
    let generation = boot / 1_000_000;
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(cfg.instance.as_str(), generation, cfg.advertise),
        cluster_id: "meridian".into(),
        gossip_interval: cfg.gossip_interval,
        listen_addr: cfg.listen,
        seed_nodes: cfg.peers.clone(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: cfg.gossip_interval,
            max_interval: cfg.gossip_interval * 10,
            dead_node_grace_period: Duration::from_secs(3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V1,
    };
    let handle = spawn_chitchat(config, Vec::new(), &transport).await?;
    info!(
        instance = cfg.instance,
        listen = %cfg.listen,
        seeds = ?cfg.peers,
        quorum = cfg.quorum.name(),
        "cluster: gossiping"
    );
    let chitchat = handle.chitchat();
    let own = cfg.instance.clone();
    let poll = (cfg.gossip_interval / 4).max(Duration::from_millis(5));
    let counted = counters.clone();
    let task = tokio::spawn(async move {
        let mut exported = Exported::default();
        let mut warned_twin = false;
        let mut twins: HashMap<u64, u64> = HashMap::new();
        let mut local = local;
        let mut published: Option<Arc<Local>> = None;
        let mut announced: BTreeSet<String> = BTreeSet::new();
        let mut beats: HashMap<String, (u64, u64, Option<Instant>)> = HashMap::new();
        let mut last_sent: Option<(Arc<Peers>, Instant)> = None;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mine = local.borrow_and_update().clone();
            let mut guard = chitchat.lock().await;
            if published.as_ref().is_none_or(|p| **p != *mine) {
                publish(guard.self_node_state(), published.as_deref(), &mine);
                published = Some(mine);
            }
            if let Some(a) = &anycast {
                let now_announced = a.mine.borrow().clone();
                if *now_announced != announced {
                    let state = guard.self_node_state();
                    for p in now_announced.difference(&announced) {
                        state.set(format!("{ANNOUNCING}{p}"), "1");
                    }
                    for p in announced.difference(&now_announced) {
                        state.delete(&format!("{ANNOUNCING}{p}"));
                    }
                    announced = (*now_announced).clone();
                }
            }
            let mut theirs = crate::anycast::run::Announcing::new();
            let live: Vec<ChitchatId> = guard.live_nodes().cloned().collect();
            // The newest generation of each other instance.
            let mut newest: BTreeMap<&str, (&ChitchatId, &chitchat::NodeState)> = BTreeMap::new();
            let mut own_generations: Vec<u64> = Vec::new();
            for (id, state) in guard.node_states() {
                if *id.node_id == *own {
                    own_generations.push(id.generation_id);
                    // Another process gossiping under this name: its verdicts would be
                    // taken for ours. Said once; the operator must rename one.
                    // (An earlier run of this very instance, relayed by a peer, is seen
                    // too, but its heartbeat no longer advances.)
                    let first = *twins
                        .entry(id.generation_id)
                        .or_insert(u64::from(state.heartbeat()));
                    let advancing = u64::from(state.heartbeat()) >= first + 3;
                    if id.generation_id != generation
                        && advancing
                        && live.contains(id)
                        && !warned_twin
                    {
                        warn!(
                            instance = own,
                            other = %id.gossip_advertise_addr,
                            "cluster: another live instance uses this instance's name; give each a distinct cluster.instance"
                        );
                        warned_twin = true;
                    }
                    continue;
                }
                let slot = newest.entry(&id.node_id).or_insert((id, state));
                if id.generation_id > slot.0.generation_id {
                    *slot = (id, state);
                }
            }
            let mut out = Vec::with_capacity(newest.len());
            for (name, (id, state)) in newest {
                let beat = u64::from(state.heartbeat());
                // Heard: its heartbeat advanced while we watched (first sight may be a
                // long-dead instance relayed by another).
                let entry = beats
                    .entry(name.to_string())
                    .or_insert((id.generation_id, beat, None));
                if (entry.0, entry.1) != (id.generation_id, beat) {
                    *entry = (id.generation_id, beat, Some(now));
                }
                let heard = entry.2;
                if anycast.is_some() && live.contains(id) {
                    let set: BTreeSet<String> = state
                        .key_values()
                        .filter(|(_, v)| *v == "1")
                        .filter_map(|(k, _)| k.strip_prefix(ANNOUNCING))
                        .map(str::to_string)
                        .collect();
                    theirs.insert(name.to_string(), set);
                }
                out.push(read_peer(name, id, state, live.contains(id), heard));
            }
            drop(guard);
            if let Some(a) = &anycast {
                a.theirs.send_if_modified(|cur| {
                    let changed = **cur != theirs;
                    if changed {
                        *cur = Arc::new(theirs);
                    }
                    changed
                });
            }
            // Instances no longer gossiped about are forgotten here too.
            beats.retain(|name, _| out.iter().any(|p| p.name == *name));
            twins.retain(|g, _| own_generations.contains(g));
            exported.export(&metrics, &counted, &out);
            let next = Arc::new(Peers { peers: out });
            // Liveness and values when they change; `last_heard` at least every second,
            // which is what the checker's isolation clock needs.
            let send = match &last_sent {
                None => true,
                Some((prev, at)) => {
                    !same_content(prev, &next)
                        || now.saturating_duration_since(*at) >= Duration::from_secs(1)
                }
            };
            if send {
                if peers.send(next.clone()).is_err() {
                    return;
                }
                last_sent = Some((next, now));
            }
        }
    });
    Ok(Cluster {
        counters,
        task,
        handle: Some(handle),
    })
}

/// Counter values already added to the metrics.
#[derive(Default)]
struct Exported {
    dropped: [u64; 4],
    sent: u64,
    received: u64,
}

impl Exported {
    fn export(&mut self, m: &Metrics, c: &Counters, peers: &[Peer]) {
        let live = peers.iter().filter(|p| p.live).count();
        m.cluster_peers
            .with_label_values(&["live"])
            .set(live as i64);
        m.cluster_peers
            .with_label_values(&["dead"])
            .set((peers.len() - live) as i64);
        for (why, seen) in auth::Drop::ALL.iter().zip(self.dropped.iter_mut()) {
            let now = c.dropped(*why);
            m.cluster_auth_failures
                .with_label_values(&[why.label()])
                .inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
        for (dir, counter, seen) in [
            ("sent", &c.sent_bytes, &mut self.sent),
            ("received", &c.received_bytes, &mut self.received),
        ] {
            let now = counter.load(std::sync::atomic::Ordering::Relaxed);
            m.cluster_gossip_bytes
                .with_label_values(&[dir])
                .inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
    }
}

fn same_content(a: &Peers, b: &Peers) -> bool {
    a.peers.len() == b.peers.len()
        && a.peers.iter().zip(&b.peers).all(|(x, y)| {
            x.name == y.name
                && x.address == y.address
                && x.live == y.live
                && x.verdicts == y.verdicts
                && x.overrides == y.overrides
        })
}

fn override_key(target: &OverrideTarget) -> String {
    match target {
        OverrideTarget::Region(r) => format!("{REGION_OVERRIDE}{r}"),
        OverrideTarget::Endpoint(k) => format!("{ENDPOINT_OVERRIDE}{k}"),
    }
}

/// Sets what changed since `before` in this instance's keys and deletes what is gone.
fn publish(state: &mut chitchat::NodeState, before: Option<&Local>, now: &Local) {
    for (key, v) in &now.verdicts {
        if before.and_then(|b| b.verdicts.get(key)) != Some(v) {
            state.set(format!("{VERDICT}{key}"), v.encode());
        }
    }
    for (target, rec) in &now.overrides {
        if before.and_then(|b| b.overrides.get(target)) != Some(rec) {
            match serde_json::to_string(rec) {
                Ok(text) => state.set(override_key(target), text),
                Err(e) => warn!(error = %e, "cannot encode an override for gossip"),
            }
        }
    }
    if let Some(b) = before {
        for key in b.verdicts.keys().filter(|k| !now.verdicts.contains_key(*k)) {
            state.delete(&format!("{VERDICT}{key}"));
        }
        for target in b
            .overrides
            .keys()
            .filter(|t| !now.overrides.contains_key(*t))
        {
            state.delete(&override_key(target));
        }
    }
}

/// A peer's keys as verdicts and override records; anything malformed is skipped.
fn read_peer(
    name: &str,
    id: &ChitchatId,
    state: &chitchat::NodeState,
    live: bool,
    last_heard: Option<Instant>,
) -> Peer {
    let mut verdicts = BTreeMap::new();
    let mut overrides = BTreeMap::new();
    for (key, value) in state.key_values() {
        if value.len() > MAX_VALUE {
            continue;
        }
        if let Some(k) = key.strip_prefix(VERDICT) {
            if let Some(v) = Verdict::decode(value) {
                verdicts.insert(k.to_string(), v);
            }
        } else if let Some(target) = key
            .strip_prefix(REGION_OVERRIDE)
            .map(|r| OverrideTarget::Region(r.to_string()))
            .or_else(|| {
                key.strip_prefix(ENDPOINT_OVERRIDE)
                    .map(|k| OverrideTarget::Endpoint(k.to_string()))
            })
            && let Ok(rec) = serde_json::from_str::<OverrideRecord>(value)
        {
            overrides.insert(target, rec);
        }
    }
    Peer {
        name: name.to_string(),
        address: id.gossip_advertise_addr,
        live,
        last_heard,
        verdicts,
        overrides,
    }
}
