//! What other instances of the NS set say, and how their votes combine: the types the
//! gossip runtime (the top-level `cluster` module) hands the checker, and the quorum rule as pure
//! functions. Nothing here does I/O or knows about gossip; the checker applies the
//! result exactly where it used its own measurements before.
//!
//! Each instance probes every endpoint itself, through its own thresholds, hysteresis
//! and cooldown, and publishes the resulting *verdict*. An endpoint's shared state is
//! the worst state that at least `needed` voters report (or worse): with `majority` of
//! three, one instance seeing `down` alone changes nothing, two do.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::view::{Effective, Override};

/// How many vantage points must agree before an endpoint takes a worse state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the live vantage points.
    Majority,
    /// Every live vantage point: the least sensitive.
    All,
    /// Any one: the most sensitive (one instance's bad link moves traffic).
    Any,
    /// This many, or all of them when fewer are live.
    Count(usize),
}

impl Quorum {
    /// Voters needed for a state, out of `voters` (at least 1: this instance).
    pub fn needed(self, voters: usize) -> usize {
        let n = voters.max(1);
        match self {
            Quorum::Majority => n / 2 + 1,
            Quorum::All => n,
            Quorum::Any => 1,
            Quorum::Count(k) => k.clamp(1, n),
        }
    }

    pub fn name(self) -> String {
        match self {
            Quorum::Majority => "majority".into(),
            Quorum::All => "all".into(),
            Quorum::Any => "any".into(),
            Quorum::Count(k) => k.to_string(),
        }
    }
}

/// One instance's verdict on one endpoint: its own measured state and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub state: Effective,
    pub error_rate: f64,
    /// The latency percentile the thresholds judge, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Unix seconds when it entered the state, as that instance counts them.
    pub since: u64,
}

impl Verdict {
    /// The gossip value: `state error_rate latency_ms|- since`, a few dozen bytes.
    pub fn encode(&self) -> String {
        let latency = self
            .latency_ms
            .map_or_else(|| "-".to_string(), |l| format!("{l:.1}"));
        format!(
            "{} {:.3} {latency} {}",
            self.state.name(),
            self.error_rate,
            self.since
        )
    }

    /// `None` for anything malformed: a peer's bad value is ignored, never guessed at.
    pub fn decode(text: &str) -> Option<Verdict> {
        let mut parts = text.split(' ');
        let state = match parts.next()? {
            "up" => Effective::Up,
            "degraded" => Effective::Degraded,
            "down" => Effective::Down,
            _ => return None,
        };
        let error_rate: f64 = parts.next()?.parse().ok()?;
        if !(0.0..=1.0).contains(&error_rate) {
            return None;
        }
        let latency_ms = match parts.next()? {
            "-" => None,
            l => Some(
                l.parse::<f64>()
                    .ok()
                    .filter(|l| l.is_finite() && *l >= 0.0)?,
            ),
        };
        let since = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Verdict {
            state,
            error_rate,
            latency_ms,
            since,
        })
    }
}

/// An override as gossiped: set (`state: Some`) or cleared (`None`, a tombstone, so a
/// clear travels like a set), ordered by `(stamp, by)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub state: Option<Override>,
    /// The writer's order: Unix milliseconds when set, but always above every stamp
    /// the writer had seen for the target, so an operator's later action wins even
    /// when the clock of the instance it is sent to runs behind.
    pub stamp: u64,
    /// The instance it was set on: breaks ties between equal stamps.
    pub by: String,
}

impl OverrideRecord {
    /// Last writer wins: a higher stamp, then the higher instance name.
    pub fn newer_than(&self, other: &OverrideRecord) -> bool {
        (self.stamp, self.by.as_str()) > (other.stamp, other.by.as_str())
    }
}

/// What an override applies to, as its gossip key names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OverrideTarget {
    Region(String),
    /// `region/endpoint`.
    Endpoint(String),
}

/// This instance's part of the shared view, as the checker publishes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Local {
    /// By `region/endpoint`.
    pub verdicts: BTreeMap<String, Verdict>,
    pub overrides: BTreeMap<OverrideTarget, OverrideRecord>,
}

/// Another instance as gossip knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub name: String,
    pub address: std::net::SocketAddr,
    /// Live by the gossip failure detector.
    pub live: bool,
    /// When its heartbeat last advanced (relayed or direct); `None`: never since start.
    pub last_heard: Option<Instant>,
    /// By `region/endpoint`.
    pub verdicts: BTreeMap<String, Verdict>,
    pub overrides: BTreeMap<OverrideTarget, OverrideRecord>,
}

/// Every peer, as of one poll of the gossip state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers {
    pub peers: Vec<Peer>,
}

/// The cluster settings the checker decides with.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub instance: String,
    pub quorum: Quorum,
    pub isolation_timeout: Duration,
}

/// Whether this instance decides alone: it has peers configured but has heard none
/// for `isolation_timeout` (counted from `started` when it never heard one).
pub fn isolated(peers: &Peers, timeout: Duration, started: Instant, now: Instant) -> bool {
    let last = peers
        .peers
        .iter()
        .filter_map(|p| p.last_heard)
        .max()
        .unwrap_or(started);
    now.saturating_duration_since(last) >= timeout
}

/// Which peers vote. Isolated: none (this instance's own view). Otherwise the live
/// ones; when the failure detector has none live but the isolation timeout has not
/// run out, the ones heard within it, with their last verdicts: a short partition keeps
/// the last shared view rather than switching to this instance's own at once.
pub fn voters(peers: &Peers, timeout: Duration, isolated: bool, now: Instant) -> Vec<&Peer> {
    if isolated {
        return Vec::new();
    }
    let live: Vec<&Peer> = peers.peers.iter().filter(|p| p.live).collect();
    if !live.is_empty() {
        return live;
    }
    peers
        .peers
        .iter()
        .filter(|p| {
            p.last_heard
                .is_some_and(|h| now.saturating_duration_since(h) < timeout)
        })
        .collect()
}

fn severity(s: Effective) -> u8 {
    match s {
        Effective::Up => 0,
        Effective::Degraded => 1,
        Effective::Down => 2,
    }
}

/// The votes for one endpoint, and the state they decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub up: usize,
    pub degraded: usize,
    pub down: usize,
    pub needed: usize,
    pub state: Effective,
}

impl Tally {
    pub fn voters(&self) -> usize {
        self.up + self.degraded + self.down
    }
}

/// The shared state of one endpoint: the worst state at least `needed` voters report
/// or report worse. `votes` holds this instance's own first; peers without a verdict
/// for the endpoint (another configuration) do not vote.
pub fn decide(votes: &[Effective], quorum: Quorum) -> Tally {
    let count = |s: Effective| votes.iter().filter(|v| **v == s).count();
    let (up, degraded, down) = (
        count(Effective::Up),
        count(Effective::Degraded),
        count(Effective::Down),
    );
    let needed = quorum.needed(votes.len());
    let at_least = |s: Effective| {
        votes
            .iter()
            .filter(|v| severity(**v) >= severity(s))
            .count()
    };
    let state = if at_least(Effective::Down) >= needed {
        Effective::Down
    } else if at_least(Effective::Degraded) >= needed {
        Effective::Degraded
    } else {
        Effective::Up
    };
    Tally {
        up,
        degraded,
        down,
        needed,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effective::{Degraded, Down, Up};

    #[test]
    fn the_quorum_decides_the_worst_state_enough_voters_report() {
        let table: &[(&[Effective], Quorum, Effective)] = &[
            // One instance whose probes fail alone moves nothing.
            (&[Down, Up, Up], Quorum::Majority, Up),
            (&[Up, Down, Up], Quorum::Majority, Up),
            (&[Down, Down, Up], Quorum::Majority, Down),
            (&[Down, Degraded, Up], Quorum::Majority, Degraded),
            (&[Degraded, Degraded, Up], Quorum::Majority, Degraded),
            (&[Down, Up], Quorum::Majority, Up),
            (&[Down, Down], Quorum::Majority, Down),
            // Alone: its own view.
            (&[Down], Quorum::Majority, Down),
            (&[Up], Quorum::Majority, Up),
            (&[Down, Down, Up], Quorum::All, Up),
            (&[Down, Down, Down], Quorum::All, Down),
            (&[Down, Down, Degraded], Quorum::All, Degraded),
            (&[Up, Up, Down], Quorum::Any, Down),
            (&[Up, Degraded, Up], Quorum::Any, Degraded),
            (&[Down, Up, Up, Up], Quorum::Count(2), Up),
            (&[Down, Down, Up, Up], Quorum::Count(2), Down),
            // Fewer voters than the count: all of them.
            (&[Down], Quorum::Count(2), Down),
            (&[Down, Up], Quorum::Count(3), Up),
        ];
        for (votes, q, want) in table {
            let t = decide(votes, *q);
            assert_eq!(t.state, *want, "{votes:?} {q:?}");
            assert_eq!(t.voters(), votes.len());
        }
        assert_eq!(Quorum::Majority.needed(4), 3);
        assert_eq!(Quorum::Majority.needed(0), 1);
    }

    fn peer(name: &str, live: bool, heard: Option<Instant>) -> Peer {
        Peer {
            name: name.into(),
            address: "127.0.0.1:1".parse().unwrap(),
            live,
            last_heard: heard,
            verdicts: BTreeMap::new(),
            overrides: BTreeMap::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_cluster_keeps_the_last_shared_view_until_the_isolation_timeout() {
        let t = Duration::from_secs(30);
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let heard = Instant::now();
        let peers = Peers {
            peers: vec![
                peer("ns2", true, Some(heard)),
                peer("ns3", false, Some(heard)),
            ],
        };
        let now = Instant::now();
        assert!(!isolated(&peers, t, start, now));
        let names = |v: Vec<&Peer>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(voters(&peers, t, false, now)),
            ["ns2"],
            "the live ones"
        );
        // Both dead by the failure detector, heard 10 s ago: their last verdicts hold.
        let dead = Peers {
            peers: vec![
                peer("ns2", false, Some(heard)),
                peer("ns3", false, Some(heard)),
            ],
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert!(!isolated(&dead, t, start, now));
        assert_eq!(names(voters(&dead, t, false, now)), ["ns2", "ns3"]);
        tokio::time::advance(Duration::from_secs(20)).await;
        let now = Instant::now();
        assert!(
            isolated(&dead, t, start, now),
            "30 s since anyone was heard"
        );
        assert!(voters(&dead, t, true, now).is_empty());
        // Never heard anyone: isolated once the timeout has passed since the start.
        let never = Peers {
            peers: vec![peer("ns2", false, None)],
        };
        assert!(isolated(&never, t, start, now));
        assert!(!isolated(&never, t, now, now));
    }

    #[test]
    fn verdicts_round_trip_and_malformed_ones_are_refused() {
        let v = Verdict {
            state: Down,
            error_rate: 0.5,
            latency_ms: Some(12.25),
            since: 1_700_000_000,
        };
        let text = v.encode();
        assert_eq!(text, "down 0.500 12.2 1700000000");
        let back = Verdict::decode(&text).unwrap();
        assert_eq!(back.state, Down);
        assert_eq!(back.since, 1_700_000_000);
        for bad in [
            "",
            "sideways 0 - 1",
            "up 2 - 1",
            "up 0.1 -5 1",
            "up 0.1 - x",
            "up 0.1 - 1 extra",
            "up NaN - 1",
        ] {
            assert_eq!(Verdict::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_last_writer_wins_by_stamp_then_instance() {
        let r = |stamp, by: &str| OverrideRecord {
            state: None,
            stamp,
            by: by.into(),
        };
        assert!(r(2, "ns1").newer_than(&r(1, "ns9")));
        assert!(r(1, "ns2").newer_than(&r(1, "ns1")));
        assert!(!r(1, "ns1").newer_than(&r(1, "ns1")));
    }
}
