//! What the checker exports after a publication: the health gauges of `meridian_*`
//! and the state file. Kept apart from deciding (`core`, `aggregate`).

use std::collections::HashMap;

use tokio::time::Instant;

use super::loads::Loads;
use super::overrides::{Overrides, target_key};
use super::probes::{EndpointRt, Probes};
use super::shifting::Shifting;
use crate::health::aggregate::RegionState;
use crate::health::plan::HealthPlan;
use crate::health::store::{self, EndpointRecord, StateFile};
use crate::health::view::Effective;
use crate::metrics::Metrics;
use crate::traffic::{self, RegionIn};

fn region_up(last: &HashMap<String, RegionState>, name: &str) -> bool {
    last.get(name)
        .is_none_or(|s| s.effective != Effective::Down)
}

/// After a sample: the sampled endpoint's series and the changed regions'.
pub(super) fn sample_gauges(
    metrics: &Metrics,
    last: &HashMap<String, RegionState>,
    sampled: Option<&EndpointRt>,
    changed_regions: &[String],
    now: Instant,
) {
    for r in changed_regions {
        metrics
            .region_healthy
            .with_label_values(&[r.as_str()])
            .set(i64::from(region_up(last, r)));
    }
    if let Some(e) = sampled {
        endpoint_gauges(metrics, e, now);
    }
}

fn endpoint_gauges(m: &Metrics, e: &EndpointRt, now: Instant) {
    let (region, ep) = (e.region.as_str(), e.ep.name.as_str());
    for st in ["up", "degraded", "down"] {
        m.endpoint_state
            .with_label_values(&[region, ep, st])
            .set(i64::from(e.state.name() == st));
    }
    let s = e.signals;
    m.endpoint_error_rate
        .with_label_values(&[region, ep])
        .set(s.error_rate);
    m.cooldown_remaining
        .with_label_values(&[region, ep])
        .set(e.cooldown_left(now).as_secs_f64());
}

/// Every series. `fresh` (regions or endpoints changed): series of removed ones go;
/// otherwise the existing series are set in place (a reset drops and re-creates every
/// labelled series, which was most of the checker's CPU with a hundred endpoints).
pub(super) fn all_gauges(
    m: &Metrics,
    plan: &HealthPlan,
    last: &HashMap<String, RegionState>,
    probes: &Probes,
    overrides: &Overrides,
    fresh: bool,
    now: Instant,
) {
    if fresh {
        m.region_healthy.reset();
        m.endpoint_state.reset();
        m.endpoint_error_rate.reset();
        m.cooldown_remaining.reset();
    }
    m.overrides.reset();
    for r in &plan.regions {
        m.region_healthy
            .with_label_values(&[r.name.as_str()])
            .set(i64::from(region_up(last, &r.name)));
        if let Some(o) = last.get(&r.name).and_then(|s| s.r#override.as_ref()) {
            m.overrides
                .with_label_values(&[r.name.as_str(), "", o.kind.name()])
                .set(1);
        }
    }
    for (key, e) in probes.iter() {
        endpoint_gauges(m, e, now);
        if let Some(o) = overrides.endpoint(key) {
            m.overrides
                .with_label_values(&[e.region.as_str(), e.ep.name.as_str(), o.kind.name()])
                .set(1);
        }
    }
}

/// What the state file keeps: measured endpoint states and runtime overrides.
pub(super) fn state_file(
    probes: &Probes,
    overrides: &Overrides,
    failovers: &super::failovers::Failovers,
) -> StateFile {
    StateFile {
        version: store::STATE_VERSION,
        endpoints: probes
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
        region_overrides: overrides.regions().clone(),
        endpoint_overrides: overrides.endpoints().clone(),
        override_records: overrides
            .records()
            .iter()
            .map(|(t, r)| (target_key(t).to_string(), r.clone()))
            .collect(),
        failovers: failovers.all(),
    }
}

/// The split's gauges: capacity, modelled load, keep share, spill between regions,
/// failback progress. Set afresh on each recomputation (a spill that ended must not
/// linger as a stale series).
pub(super) fn split(
    m: &Metrics,
    plan: &HealthPlan,
    regions: &[RegionIn],
    outcome: &traffic::Outcome,
    loads: &Loads,
    shifting: &Shifting,
    now: Instant,
) {
    m.region_capacity.reset();
    m.region_load.reset();
    m.region_spill.reset();
    let modelled = !plan.clients.is_empty();
    let name = |i: u16| plan.regions.get(usize::from(i)).map(|r| r.name.as_str());
    for (i, (r, input)) in plan.regions.iter().zip(regions).enumerate() {
        if let Some(c) = r.capacity {
            m.region_capacity
                .with_label_values(&[r.name.as_str()])
                .set(c);
        }
        if modelled && let Some(&l) = outcome.load.get(i) {
            m.region_load
                .with_label_values(&[r.name.as_str(), "demand"])
                .set(l);
        }
        if let Some(measured) = loads.measured(&r.name) {
            m.region_load
                .with_label_values(&[r.name.as_str(), "prometheus"])
                .set(measured);
        }
        // Shares are 32-bit thresholds: shown to six places.
        m.region_keep
            .with_label_values(&[r.name.as_str()])
            .set((input.keep.fraction() * 1e6).round() / 1e6);
        m.region_failback
            .with_label_values(&[r.name.as_str()])
            .set(shifting.failback_progress(r, now));
    }
    let own: Vec<f64> = (0..regions.len())
        .map(|i| {
            let i = i as u16;
            outcome.load.get(usize::from(i)).copied().unwrap_or(0.0)
                - outcome
                    .flows
                    .iter()
                    .filter(|f| f.1 == i)
                    .map(|f| f.2)
                    .sum::<f64>()
                + outcome
                    .flows
                    .iter()
                    .filter(|f| f.0 == i)
                    .map(|f| f.2)
                    .sum::<f64>()
        })
        .collect();
    for &(from, to, load) in &outcome.flows {
        let total = own.get(usize::from(from)).copied().unwrap_or(0.0);
        if let (Some(f), Some(t)) = (name(from), name(to))
            && total > 0.0
        {
            m.region_spill
                .with_label_values(&[f, t])
                .set((load / total * 1e6).round() / 1e6);
        }
    }
}
