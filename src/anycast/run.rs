//! The server's anycast loop: every `interval` it reads this instance's health (first
//! probe round, a DNS query to itself), each region's state in the published (shared)
//! view and the cluster's announcing sets, steps every prefix through
//! [`decide::step`], tells the driver what changed, and publishes the status. A driver
//! that cannot be reached is logged, counted and retried every interval; it never
//! touches DNS. Operator withdrawals are kept in `anycast.json` beside the state file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::bird::{Bird, Protocol};
use super::decide::{self, Inputs, Params, Route, State, Why};
use super::{Driver, Kind, PrefixPlan};
use crate::config::AnycastConfig;
use crate::health::HealthView;
use crate::metrics::Metrics;
use crate::snapshot::Shared;

/// Who else announces what: live peers' announced prefixes, by instance.
pub type Announcing = BTreeMap<String, BTreeSet<String>>;

/// The cluster side of the loop: ours out, theirs in, and whether we are cut off.
pub struct Gossip {
    pub mine: watch::Sender<Arc<BTreeSet<String>>>,
    pub theirs: watch::Receiver<Arc<Announcing>>,
    pub peers: watch::Receiver<Arc<crate::health::peers::Peers>>,
    pub isolation_timeout: Duration,
}

/// What the loop reads.
pub struct Deps {
    pub config: AnycastConfig,
    pub ready: watch::Receiver<bool>,
    pub view: Arc<arc_swap::ArcSwap<HealthView>>,
    pub shared: Shared,
    /// Where this instance answers DNS (the self-query's target).
    pub dns: SocketAddr,
    pub gossip: Option<Gossip>,
    pub metrics: Arc<Metrics>,
    /// `anycast.json` beside the state file; `None`: withdrawals last until restart.
    pub store: Option<PathBuf>,
}

/// One prefix on the status page and in `/api/v1/anycast`.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixStatus {
    pub prefix: String,
    pub when: String,
    pub route: Route,
    pub reason: Why,
    /// Seconds since the route last changed.
    pub for_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bird_protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<Withdrawal>,
    /// With a cluster: other live instances announcing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others_announcing: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnycastStatus {
    pub driver: &'static str,
    /// The last driver error, until the driver works again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_error: Option<String>,
    /// BIRD's `show protocols` (the static and BGP protocols), as last read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session: Vec<Protocol>,
    pub prefixes: Vec<PrefixStatus>,
}

/// An operator's withdrawal: until when (unix seconds; `None`: until announced) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnycastError {
    #[error("{0} is not an anycast prefix of this instance")]
    UnknownPrefix(String),
    #[error("the anycast loop stopped")]
    Unavailable,
}

enum Command {
    Withdraw {
        prefix: String,
        withdrawal: Option<Withdrawal>,
        reply: oneshot::Sender<Result<(), AnycastError>>,
    },
    Stop(oneshot::Sender<()>),
}

/// The handle the admin API and shutdown hold.
#[derive(Clone)]
pub struct AnycastHandle {
    pub status: watch::Receiver<Arc<AnycastStatus>>,
    tx: mpsc::Sender<Command>,
}

impl AnycastHandle {
    /// Withdraws `prefix` until `withdrawal.until` (or until announced); `None`
    /// returns it to its health.
    pub async fn set(
        &self,
        prefix: &str,
        withdrawal: Option<Withdrawal>,
    ) -> Result<(), AnycastError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Withdraw {
                prefix: prefix.to_string(),
                withdrawal,
                reply,
            })
            .await
            .map_err(|_| AnycastError::Unavailable)?;
        rx.await.map_err(|_| AnycastError::Unavailable)?
    }

    /// Withdraws every prefix for shutdown and returns once the driver was told.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the loop.
pub fn start(deps: Deps) -> AnycastHandle {
    let (status_tx, status) = watch::channel(Arc::new(AnycastStatus {
        driver: deps.config.driver.name(),
        ..AnycastStatus::default()
    }));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(deps, status_tx, rx));
    AnycastHandle { status, tx }
}

fn load_withdrawals(store: Option<&PathBuf>) -> BTreeMap<String, Withdrawal> {
    let Some(path) = store else {
        return BTreeMap::new();
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(file = %path.display(), "anycast: ignoring an unreadable withdrawals file: {e}");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn save_withdrawals(store: Option<&PathBuf>, w: &BTreeMap<String, Withdrawal>) {
    let Some(path) = store else { return };
    let result = serde_json::to_vec_pretty(w)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::health::store::write_atomic(path, &bytes));
    if let Err(e) = result {
        warn!(file = %path.display(), "anycast: cannot save the operator's withdrawals: {e}");
    }
}

/// The health of each prefix's subject at this evaluation.
fn health(
    kind: &Kind,
    ready: bool,
    answered: bool,
    view: &HealthView,
    shared: &Shared,
) -> Result<(), Why> {
    match kind {
        Kind::Serving if !ready => Err(Why::NotReady),
        Kind::Serving if !answered => Err(Why::NoAnswer),
        Kind::Serving => Ok(()),
        Kind::Region(name) => {
            let snapshot = shared.load();
            let Some(region) = snapshot.policies.regions.iter().find(|r| &r.name == name) else {
                return Err(Why::UnknownRegion);
            };
            if view.state(region.id) == crate::health::Effective::Down {
                Err(Why::RegionDown)
            } else {
                Ok(())
            }
        }
    }
}

/// More than half the regions (of at least two) look down from here.
fn checks_suspect(view: &HealthView, shared: &Shared) -> bool {
    let snapshot = shared.load();
    let regions = &snapshot.policies.regions;
    let down = regions
        .iter()
        .filter(|r| view.state(r.id) == crate::health::Effective::Down)
        .count();
    regions.len() >= 2 && down * 2 > regions.len()
}

/// Sends a query for the first zone's SOA to this instance and waits for an answer
/// (authoritative NOERROR; any answer when no zone is loaded).
async fn self_query(dns: SocketAddr, shared: &Shared, wait: Duration) -> bool {
    let apex: Vec<u8> = shared
        .load()
        .zones
        .iter()
        .next()
        .map_or_else(|| vec![0], |z| z.apex.to_vec());
    let zoned = apex != [0];
    // Unpredictable enough to tell our answer from a stray one on loopback.
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let id = (crate::hash::mix64(nanos) & 0xffff) as u16;
    let mut q = Vec::with_capacity(12 + apex.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&apex);
    q.extend_from_slice(&[0, 6, 0, 1]);
    let bind: SocketAddr = match dns.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    if sock.send_to(&q, dns).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        else {
            return false;
        };
        let Some(&[id0, id1, flags, codes]) = buf.get(..n.min(4)) else {
            continue;
        };
        if from != dns || [id0, id1] != id.to_be_bytes() || flags & 0x80 == 0 {
            continue;
        }
        let (aa, rcode) = (flags & 0x04 != 0, codes & 0x0f);
        return !zoned || (aa && rcode == 0);
    }
}

/// Where this instance answers, as a self-query reaches it.
pub fn self_query_target(listen: &[SocketAddr]) -> Option<SocketAddr> {
    let a = listen.first()?;
    let ip = match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, a.port()))
}

/// A prefix's route as the driver last applied it (`None`: not yet, or it failed).
struct Prefix {
    plan: PrefixPlan,
    label: String,
    state: State,
    applied: Option<Route>,
}

async fn apply(bird: &mut Option<Bird>, p: &Prefix, route: Route) -> Result<(), String> {
    match (bird, &p.plan.bird_protocol) {
        (Some(b), Some(name)) => b
            .set_protocol(name, route.is_announced())
            .await
            .map_err(|e| format!("{} ({name}): {e}", p.label)),
        // ExaBGP reads the routes from /api/v1/anycast.
        _ => Ok(()),
    }
}

async fn run(
    deps: Deps,
    status_tx: watch::Sender<Arc<AnycastStatus>>,
    mut rx: mpsc::Receiver<Command>,
) {
    let cfg = &deps.config;
    let params = Params {
        rise: cfg.rise,
        fall: cfg.fall,
        on_unhealthy: cfg.on_unhealthy,
        min_announcing: cfg.min_announcing,
    };
    let started = Instant::now();
    let mut prefixes: Vec<Prefix> = cfg
        .prefixes
        .iter()
        .map(|p| Prefix {
            label: p.prefix.to_string(),
            plan: p.clone(),
            state: State::start(started),
            applied: None,
        })
        .collect();
    for p in &prefixes {
        deps.metrics
            .anycast_announced
            .with_label_values(&[p.label.as_str()])
            .set(0);
        if !on_local_interface(&p.plan.prefix) {
            warn!(prefix = %p.label, "anycast: the prefix is on no local interface; announced all the same (add it, e.g. to lo, or clients will not reach this instance)");
        }
    }
    let mut bird = match &cfg.driver {
        Driver::Bird { socket } => Some(Bird::new(socket)),
        Driver::Exabgp => None,
    };
    let mut withdrawals = load_withdrawals(deps.store.as_ref());
    let mut stopping: Option<oneshot::Sender<()>> = None;
    let mut driver_error: Option<String> = None;
    let mut session: Vec<Protocol> = Vec::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready = deps.ready.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Stop(reply)) => stopping = Some(reply),
                Some(Command::Withdraw { prefix, withdrawal, reply }) => {
                    let known = prefix
                        .parse::<ipnet::IpNet>()
                        .ok()
                        .and_then(|n| prefixes.iter().find(|p| p.plan.prefix == n))
                        .map(|p| p.label.clone());
                    let Some(label) = known else {
                        let _ = reply.send(Err(AnycastError::UnknownPrefix(prefix)));
                        continue;
                    };
                    match &withdrawal {
                        Some(w) => info!(prefix = %label, reason = w.reason.as_deref().unwrap_or(""), until = w.until, "anycast: withdrawn by the operator"),
                        None => info!(prefix = %label, "anycast: operator's withdrawal cleared; the prefix follows its health again"),
                    }
                    match withdrawal {
                        Some(w) => withdrawals.insert(label, w),
                        None => withdrawals.remove(&label),
                    };
                    save_withdrawals(deps.store.as_ref(), &withdrawals);
                    let _ = reply.send(Ok(()));
                }
            },
        }
        let now = Instant::now();
        let unix = crate::health::store::now_unix();
        let expired: Vec<String> = withdrawals
            .iter()
            .filter(|(_, w)| w.until.is_some_and(|u| u <= unix))
            .map(|(p, _)| p.clone())
            .collect();
        if !expired.is_empty() {
            for p in &expired {
                info!(prefix = %p, "anycast: operator's withdrawal expired");
                withdrawals.remove(p);
            }
            save_withdrawals(deps.store.as_ref(), &withdrawals);
        }
        let is_ready = *ready.borrow_and_update();
        let wait = (cfg.interval / 2).min(Duration::from_secs(1));
        let answered = is_ready && self_query(deps.dns, &deps.shared, wait).await;
        let view = deps.view.load_full();
        let suspect = checks_suspect(&view, &deps.shared);
        let (isolated, theirs) = match &deps.gossip {
            None => (false, None),
            Some(g) => {
                let peers = g.peers.borrow().clone();
                let cut = crate::health::peers::isolated(&peers, g.isolation_timeout, started, now);
                (cut, Some(g.theirs.borrow().clone()))
            }
        };
        let mut statuses = Vec::with_capacity(prefixes.len());
        for p in &mut prefixes {
            let others = match &theirs {
                Some(t) if !isolated => {
                    Some(t.values().filter(|set| set.contains(&p.label)).count())
                }
                _ => None,
            };
            let inputs = Inputs {
                health: health(&p.plan.kind, is_ready, answered, &view, &deps.shared),
                operator_withdrawn: withdrawals.contains_key(&p.label),
                others_announcing: others,
                isolated,
                checks_suspect: suspect,
                stopping: stopping.is_some(),
            };
            let before = p.state;
            p.state = decide::step(&before, &p.plan.kind, &inputs, &params, now);
            if p.state.route != before.route {
                info!(prefix = %p.label, from = before.route.name(), to = p.state.route.name(), reason = p.state.why.label(), "anycast: route changed");
                deps.metrics
                    .anycast_transitions
                    .with_label_values(&[p.label.as_str(), p.state.why.label()])
                    .inc();
                deps.metrics
                    .anycast_announced
                    .with_label_values(&[p.label.as_str()])
                    .set(i64::from(p.state.route.is_announced()));
            } else if p.state.why != before.why
                && matches!(
                    p.state.why,
                    Why::LastAnnouncers | Why::ChecksSuspect | Why::Isolated
                )
            {
                warn!(prefix = %p.label, reason = p.state.why.label(), health = ?inputs.health, "anycast: keeping the route although its health says withdraw");
            }
            if p.applied != Some(p.state.route) {
                match apply(&mut bird, p, p.state.route).await {
                    Ok(()) => p.applied = Some(p.state.route),
                    Err(e) => {
                        deps.metrics.anycast_driver_errors.inc();
                        if driver_error.as_deref() != Some(e.as_str()) {
                            warn!("anycast: driver error, retrying every interval: {e}");
                        }
                        driver_error = Some(e);
                    }
                }
            }
            statuses.push(PrefixStatus {
                prefix: p.label.clone(),
                when: p.plan.kind.to_string(),
                route: p.state.route,
                reason: p.state.why,
                for_seconds: now.saturating_duration_since(p.state.since).as_secs(),
                bird_protocol: p.plan.bird_protocol.clone(),
                operator: withdrawals.get(&p.label).cloned(),
                others_announcing: others,
            });
        }
        if let Some(b) = bird.as_mut() {
            match b.protocols().await {
                Ok(rows) => {
                    if driver_error.is_some() && prefixes.iter().all(|p| p.applied.is_some()) {
                        info!("anycast: driver reachable again");
                        driver_error = None;
                    }
                    // BIRD restarted (or someone ran birdc): a protocol whose state is
                    // not what we applied is applied again at the next evaluation.
                    for p in &mut prefixes {
                        let Some(name) = p.plan.bird_protocol.as_deref() else {
                            continue;
                        };
                        let up = rows
                            .iter()
                            .find(|r| r.name == name)
                            .map(|r| r.state == "up");
                        if let (Some(up), Some(route)) = (up, p.applied)
                            && up != route.is_announced()
                        {
                            warn!(prefix = %p.label, protocol = name, "anycast: BIRD's protocol is not as Meridian set it (BIRD restarted?); setting it again");
                            p.applied = None;
                        }
                    }
                    let ours: BTreeSet<&str> = prefixes
                        .iter()
                        .filter_map(|p| p.plan.bird_protocol.as_deref())
                        .collect();
                    session = rows
                        .into_iter()
                        .filter(|r| ours.contains(r.name.as_str()) || r.proto == "BGP")
                        .collect();
                }
                Err(e) => {
                    deps.metrics.anycast_driver_errors.inc();
                    driver_error = Some(e.to_string());
                    session.clear();
                }
            }
        } else if prefixes.iter().all(|p| p.applied.is_some()) {
            driver_error = None;
        }
        if let Some(g) = &deps.gossip {
            let mine: BTreeSet<String> = prefixes
                .iter()
                .filter(|p| p.state.route.is_announced())
                .map(|p| p.label.clone())
                .collect();
            g.mine.send_if_modified(|cur| {
                let changed = **cur != mine;
                if changed {
                    *cur = Arc::new(mine);
                }
                changed
            });
        }
        status_tx.send_replace(Arc::new(AnycastStatus {
            driver: cfg.driver.name(),
            driver_error: driver_error.clone(),
            session: session.clone(),
            prefixes: statuses,
        }));
        if stopping.is_some() && prefixes.iter().all(|p| p.applied == Some(Route::Withdrawn)) {
            if let Some(reply) = stopping.take() {
                let _ = reply.send(());
            }
            // Withdrawn for good: the process is stopping.
            return;
        }
    }
}

/// Whether an address of `prefix` is on one of this host's interfaces (the kernel's
/// local addresses: `/32 host LOCAL` entries of fib_trie, and if_inet6).
fn on_local_interface(prefix: &ipnet::IpNet) -> bool {
    match prefix {
        ipnet::IpNet::V4(_) => {
            let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
                return true;
            };
            let lines: Vec<&str> = text.lines().collect();
            lines.windows(2).any(|w| {
                let &[addr, kind] = w else { return false };
                kind.contains("host LOCAL")
                    && addr
                        .trim_start_matches([' ', '|', '+', '-'])
                        .trim()
                        .parse::<IpAddr>()
                        .is_ok_and(|a| prefix.contains(&a))
            })
        }
        ipnet::IpNet::V6(_) => {
            let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") else {
                return true;
            };
            text.lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                    .is_some_and(|v| prefix.contains(&IpAddr::V6(Ipv6Addr::from(v))))
            })
        }
    }
}
