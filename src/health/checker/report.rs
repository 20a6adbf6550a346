//! The checker's status as the admin API, the status page and `meridian admin status`
//! show it: built from the core's parts on request, never kept.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::core::Core;
use super::publish::addresses_in;
use crate::health::status::{AddressStatus, EndpointStatus, RegionStatus, Status};
use crate::health::view::Effective;
use crate::traffic;

pub(super) fn status(core: &Core) -> Status {
    let now = Instant::now();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let endpoints = core
        .probes
        .iter()
        .map(|(k, e)| {
            let s = e.signals;
            EndpointStatus {
                region: e.region.clone(),
                endpoint: e.ep.name.clone(),
                probe: e.ep.kind().into(),
                address: e.ep.address.to_string(),
                measured: e.state.name().into(),
                effective: core.endpoint_effective(k).unwrap_or(Effective::Up),
                samples: s.samples,
                error_rate: s.error_rate,
                latency_p50_ms: ms(s.p50),
                latency_p90_ms: ms(s.latency),
                latency_p99_ms: ms(s.p99),
                consecutive_failures: s.consecutive_failures,
                consecutive_successes: s.consecutive_successes,
                in_state_seconds: now.saturating_duration_since(e.since).as_secs(),
                cooldown_remaining_seconds: e.cooldown_left(now).as_secs(),
                r#override: core.overrides.endpoint(k).cloned(),
                quorum: core.cluster.as_ref().and_then(|c| c.quorum_status(k, now)),
                serves: core
                    .plan
                    .region(&e.region)
                    .map(|r| {
                        addresses_in(&r.addresses, e.ep.serves)
                            .map(IpAddr::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let view = core.release.latest();
    let split = core.shifting.outcome().map(|o| o.as_ref());
    let name = |i: u16| {
        core.plan
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
    let modelled = !core.plan.clients.is_empty();
    let regions = core
        .plan
        .regions
        .iter()
        .zip(core.regions())
        .enumerate()
        .map(|(i, (r, st))| {
            let published = view.region(r.id);
            let serving: Vec<(&str, u64)> = core
                .probes
                .iter()
                .filter(|(_, e)| e.region == r.name && e.ep.serves != 0)
                .map(|(_, e)| (e.ep.name.as_str(), e.ep.serves))
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
            let measured_load = core.loads.measured(&r.name);
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
                load: measured_load.or_else(|| {
                    split
                        .filter(|_| modelled)
                        .and_then(|o| o.load.get(i).copied())
                }),
                load_source: if measured_load.is_some() {
                    Some("prometheus")
                } else if modelled {
                    Some(estimate_source(core, i))
                } else {
                    None
                },
                keep: published.keep.fraction(),
                shedding: core.shifting.is_shedding(&r.name),
                shed_keep: published.shed.fraction(),
                admit: published.admit.fraction(),
                spill_out: flows(split, i, true),
                spill_in: flows(split, i, false),
                failback_progress: core.shifting.failback_progress(r, now),
            }
        })
        .collect();
    Status {
        ready: *core.ready_tx.borrow(),
        regions,
        endpoints,
        transitions: core.history.iter().cloned().collect(),
        failovers: core.failovers.all(),
        demand: core.demand.status(&core.plan),
        cluster: core.cluster.as_ref().map(|c| c.status(now)),
    }
}

/// Where plan region `i`'s estimated load comes from: the sources of the policies with
/// a `demand` that may answer with it.
fn estimate_source(core: &Core, i: usize) -> &'static str {
    use crate::traffic::demand::Source;
    let mut seen = core
        .plan
        .demands
        .iter()
        .zip(core.demand.sources())
        .filter(|(d, _)| d.candidates.iter().any(|&c| usize::from(c) == i))
        .map(|(_, s)| *s);
    let Some(first) = seen.next() else {
        return "address_space";
    };
    let label = |s: Source| match s {
        Source::Answers => "answers",
        Source::AddressSpace => "address_space",
    };
    if seen.all(|s| s == first) {
        label(first)
    } else {
        "mixed"
    }
}
