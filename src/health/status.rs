//! The checker's status as the admin API, the status page and `meridian admin status`
//! show it, and the targets of operator overrides.

use serde::{Deserialize, Serialize};

use super::peers::Verdict;
use super::view::{Effective, Override};

/// Transitions kept for the status page.
pub const HISTORY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Region(String),
    Endpoint { region: String, endpoint: String },
}

/// Why an operator's override was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideError {
    /// No such region or endpoint.
    UnknownTarget(String),
    /// Not possible as asked: names the field and the limit.
    Invalid(String),
    /// The checker is not running (it is being restarted).
    Unavailable,
}

impl std::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverrideError::UnknownTarget(t) => write!(f, "no {t}"),
            OverrideError::Invalid(why) => f.write_str(why),
            OverrideError::Unavailable => f.write_str("health checker unavailable (restarting)"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TransitionRecord {
    pub at: u64,
    /// `region/endpoint`, or `region` for a region's effective state.
    pub key: String,
    pub policies: String,
    pub from: String,
    pub to: String,
    /// `Cause::label`: the bounded reason label of the transitions metric.
    pub cause: &'static str,
    /// The cause rendered, with its numbers.
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
    /// In a cluster: the peers' verdicts and the quorum's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    /// The region's addresses it stands for (`serves:`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<String>,
}

/// One of a region's answered addresses.
#[derive(Debug, Clone, Serialize)]
pub struct AddressStatus {
    pub address: String,
    /// In the answers now: no endpoint serves it, or one that does is not down.
    pub answered: bool,
    /// The endpoints whose `serves` names it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    pub region: String,
    /// Its addresses (A, then AAAA) and whether each is answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressStatus>,
    pub measured: Effective,
    pub effective: Effective,
    pub r#override: Option<Override>,
    pub endpoints_up: usize,
    pub endpoints: usize,
    pub needed: usize,
    /// Requests/s it can serve (`capacity:`), if given.
    pub capacity: Option<f64>,
    /// Load (requests/s): measured by its `load:` query, else modelled from the names'
    /// `demand`.
    pub load: Option<f64>,
    /// `prometheus`, or estimated from the policies' `demand`: `answers` (every such
    /// policy using it has enough answers), `address_space` (none has), or `mixed`.
    pub load_source: Option<&'static str>,
    /// Share of the clients ranking it first that it keeps (drain fraction, ramp, down).
    pub keep: f64,
    /// Shedding load past its capacity: the share of its `overflow: spill` clients it
    /// keeps (1 when not shedding).
    pub shedding: bool,
    pub shed_keep: f64,
    /// Share of displaced clients reaching it that it takes.
    pub admit: f64,
    /// Gradual failback: share of its clients taken back (1 when not ramping).
    pub failback_progress: f64,
    /// Requests/s of the clients ranking it first that the split sends elsewhere, by
    /// region, and that it takes from others.
    pub spill_out: std::collections::BTreeMap<String, f64>,
    pub spill_in: std::collections::BTreeMap<String, f64>,
}

/// Where a policy's load estimate comes from (`traffic::demand`).
#[derive(Debug, Clone, Serialize)]
pub struct DemandStatus {
    pub policy: String,
    /// Its `demand` (requests/s).
    pub demand: f64,
    /// `answers` once the window holds `needed` queries, else `address_space`.
    pub source: crate::traffic::demand::Source,
    /// Queries in the decaying window (5 minutes' time constant).
    pub queries_in_window: f64,
    pub needed: f64,
    /// With `answers`: the share of its queries whose client ranks each region first.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub first_ranked: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ready: bool,
    pub regions: Vec<RegionStatus>,
    pub endpoints: Vec<EndpointStatus>,
    pub transitions: Vec<TransitionRecord>,
    /// The last failover events of each region, newest first.
    pub failovers: Vec<FailoverEvent>,
    /// Per policy with a `demand`: where its load estimate comes from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub demand: Vec<DemandStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
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

/// Failover events kept per region.
pub const FAILOVERS_PER_REGION: usize = 20;

/// Whether the region left the answers or came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Leave,
    Return,
}

/// One failover: when each phase ended, in seconds from the first sample that led to it
/// (the first failing one for a leave, the first passing one for a return; the state
/// change itself for an override). Measured on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The state change.
    pub detect: f64,
    /// The new view published: every query from then on is answered from it.
    pub publish: f64,
    /// The last answer given under the old view has expired from every cache: the
    /// latest such answer's time plus its TTL (health-aware TTLs counted).
    pub cache_bound: f64,
    /// The first policy answer given from the new view (the query path reads a new view
    /// at its next batch). Absent until a query comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<f64>,
    /// With a `load:` query: the measured load fell below 10 % of its level before the
    /// event (a leave), or rose back to 90 % of its level before the last leave (a
    /// return). Absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverEvent {
    pub region: String,
    pub direction: Direction,
    /// The cause of the state change (`Cause::label`).
    pub cause: String,
    /// Unix seconds of the state change.
    pub at: u64,
    pub phases: Phases,
    /// The region's `failover_target`, seconds.
    pub target: f64,
    /// A leave whose cache bound passed the target.
    pub over_target: bool,
}
