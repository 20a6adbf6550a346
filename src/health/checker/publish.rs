//! What goes into a published view besides the states: each region's health-aware TTL
//! cap (the soonest any of its endpoints could change state, so a resolver does not
//! hold an answer past the moment it may go stale), and the log line when the set of
//! answered addresses changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::cluster::ClusterState;
use super::probes::Probes;
use crate::health::aggregate::RegionState;
use crate::health::plan::PlanRegion;
use crate::health::state;
use crate::health::view::Effective;

/// The addresses mask `mask` names (bit i: the i-th address; only the first 64 can be
/// masked).
pub(super) fn addresses_in(addresses: &[IpAddr], mask: u64) -> impl Iterator<Item = &IpAddr> {
    addresses
        .iter()
        .take(64)
        .enumerate()
        .filter(move |(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, a)| a)
}

/// Per region name: the soonest, in whole seconds (at least 1), any of its endpoints'
/// states could change, by its own probes or, in a cluster, by the votes.
pub(super) fn ttl_caps(
    probes: &Probes,
    cluster: Option<&ClusterState>,
    now: Instant,
) -> HashMap<String, u32> {
    let mut caps: HashMap<&str, Duration> = HashMap::new();
    for (key, e) in probes.iter() {
        let s = e.signals;
        let local = state::time_to_change(e.state, &s, &e.thresholds, e.ep.interval, now);
        let shared = cluster.and_then(|c| c.change_bound(key, e, now));
        let soonest = match (local, shared) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = soonest {
            let cap = caps.entry(e.region.as_str()).or_insert(d);
            *cap = (*cap).min(d);
        }
    }
    caps.into_iter()
        .map(|(r, d)| {
            (
                r.to_string(),
                d.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            )
        })
        .collect()
}

/// Logs a change of `region`'s answered addresses while it serves.
pub(super) fn log_addresses(region: &PlanRegion, prev: &RegionState, next: &RegionState) {
    if prev.live == next.live || next.effective == Effective::Down {
        return;
    }
    let list = |mask: u64| {
        addresses_in(&region.addresses, mask)
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    info!(
        region = region.name,
        withheld = list(!next.live),
        back = list(next.live & !prev.live),
        "addresses answered changed: the servers of the withheld ones are down"
    );
}
