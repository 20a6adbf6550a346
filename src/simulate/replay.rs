//! A scenario replayed on tokio's paused clock through the checker's core and the
//! split: per step, each region's state, load against capacity and keep share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::scenario::{Condition, Scenario};
use crate::health::simulator::Simulator;
use crate::health::{Effective, HealthPlan, OverrideKind, Probe};
use crate::policy::decide;
use crate::snapshot::Snapshot;
use crate::traffic::{Client, subnet_of};

#[derive(Debug, Clone, Serialize)]
pub struct RegionRow {
    pub region: String,
    pub state: Effective,
    /// Requests/s sent to it.
    pub load: f64,
    pub capacity: Option<f64>,
    /// Share of the clients ranking it first that it keeps.
    pub keep: f64,
    /// While it sheds load past its capacity: the share of its `overflow: spill`
    /// clients it keeps (1 when not shedding).
    pub shed: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_s: u64,
    pub regions: Vec<RegionRow>,
    /// Load no region could take within its capacity.
    pub overflow: f64,
    /// Regions over capacity at this step.
    pub overloaded: Vec<String>,
    /// What changed since the last step: scenario events and health transitions.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub spill: bool,
    pub clients: usize,
    pub demand: f64,
    pub steps: Vec<Step>,
    /// Steps at which some region was over capacity.
    pub overloaded_steps: usize,
    pub max_overflow: f64,
}

/// Replays `scenario`. `spill: false` models plain failover (capacities ignored by the
/// split, still reported) for comparison.
pub fn run(snapshot: &Snapshot, scenario: &Scenario, spill: bool) -> Result<Report, String> {
    let set = &snapshot.policies;
    let total_weight: f64 = scenario.clients.iter().map(|c| c.1).sum();
    if total_weight <= 0.0 {
        return Err("the clients carry no weight".into());
    }
    let mut clients = Vec::new();
    for (at, &(p, demand)) in scenario.demand.iter().enumerate() {
        let Some(policy) = set.policies.get(p) else {
            continue;
        };
        for &(ip, w) in &scenario.clients {
            let (list, _) = decide::order(set, &policy.route, Some(ip));
            clients.push(Client {
                weight: demand * w / total_weight,
                subnet: subnet_of(ip).0,
                list,
                spill: policy.spill_overflow,
                policy: at as u32,
            });
        }
    }
    let mut capacities: Vec<Option<f64>> = set.regions.iter().map(|r| r.capacity).collect();
    let plan_for = |capacities: &[Option<f64>]| -> Arc<HealthPlan> {
        let mut plan = snapshot.health_plan();
        plan.clients = clients.clone().into();
        for (r, cap) in plan.regions.iter_mut().zip(capacities) {
            r.capacity = if spill { *cap } else { None };
            // Regions without probes get one, so outages go through the state machine.
            if r.endpoints.is_empty() {
                r.endpoints.push(crate::health::Endpoint {
                    name: "simulated".into(),
                    address: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
                    probe: Probe::Tcp,
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    serves: 0,
                });
            }
        }
        Arc::new(plan)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    let demand: f64 = scenario.demand.iter().map(|d| d.1).sum();
    runtime.block_on(async {
        let plan = plan_for(&capacities);
        let mut sim = Simulator::new(plan.clone());
        let mut plan = plan;
        let mut condition: BTreeMap<String, Condition> = BTreeMap::new();
        let mut pending = scenario.events.iter().peekable();
        let mut steps = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut shedding: BTreeMap<String, bool> = BTreeMap::new();
        let tick = Duration::from_secs(1);
        let mut t = Duration::ZERO;
        loop {
            while let Some(e) = pending.next_if(|e| e.at <= t) {
                if let Some(c) = e.capacity {
                    if let Some(slot) = set
                        .region_index(&e.region)
                        .and_then(|i| capacities.get_mut(usize::from(i)))
                    {
                        *slot = Some(c);
                    }
                    plan = plan_for(&capacities);
                    sim.reconfigure(plan.clone());
                    notes.push(format!("{} capacity {c}", e.region));
                }
                match e.state {
                    Some(Condition::Drain) => {
                        sim.set_override(&e.region, Some(OverrideKind::Drain), e.fraction)?;
                        notes.push(match e.fraction {
                            Some(f) => format!("{} drained {:.0} %", e.region, f * 100.0),
                            None => format!("{} drained", e.region),
                        });
                    }
                    Some(Condition::Undrain) => {
                        sim.set_override(&e.region, None, None)?;
                        notes.push(format!("{} undrained", e.region));
                    }
                    Some(c) => {
                        condition.insert(e.region.clone(), c);
                        notes.push(format!(
                            "{} {}",
                            e.region,
                            match c {
                                Condition::Down => "fails",
                                Condition::Slow => "slows down",
                                _ => "serves again",
                            }
                        ));
                    }
                    None => {}
                }
            }
            for r in &plan.regions {
                let interval = r
                    .endpoints
                    .first()
                    .map_or(Duration::from_secs(2), |e| e.interval)
                    .max(tick);
                if !t.as_millis().is_multiple_of(interval.as_millis()) {
                    continue;
                }
                let timeout = r
                    .endpoints
                    .first()
                    .map_or(Duration::from_secs(1), |e| e.timeout);
                match condition.get(&r.name).copied().unwrap_or(Condition::Up) {
                    Condition::Down => sim.sample(&r.name, false, timeout),
                    Condition::Slow => sim.sample(
                        &r.name,
                        true,
                        r.thresholds.fail_latency + Duration::from_millis(100),
                    ),
                    _ => sim.sample(&r.name, true, Duration::from_millis(5)),
                }
            }
            sim.publish();
            let view = sim.view();
            for r in &set.regions {
                let now = view.region(r.id).shed != crate::traffic::Share::ALL;
                let was = shedding.insert(r.name.clone(), now).unwrap_or(false);
                if now != was {
                    notes.push(if now {
                        format!("{} sheds past its capacity", r.name)
                    } else {
                        format!("{} stops shedding", r.name)
                    });
                }
            }
            for tr in sim.drain_transitions() {
                if !tr.key.contains('/') {
                    notes.push(format!("{} {}→{} ({})", tr.key, tr.from, tr.to, tr.cause));
                }
            }
            if t.as_millis()
                .is_multiple_of(scenario.step.as_millis().max(1))
            {
                steps.push(row(&sim, set, &capacities, t, std::mem::take(&mut notes)));
            }
            if t >= scenario.duration {
                break;
            }
            tokio::time::advance(tick).await;
            t += tick;
        }
        let overloaded_steps = steps.iter().filter(|s| !s.overloaded.is_empty()).count();
        let max_overflow = steps.iter().map(|s| s.overflow).fold(0.0, f64::max);
        Ok(Report {
            spill,
            clients: scenario.clients.len(),
            demand,
            steps,
            overloaded_steps,
            max_overflow,
        })
    })
}

fn row(
    sim: &Simulator,
    set: &crate::policy::PolicySet,
    capacities: &[Option<f64>],
    t: Duration,
    events: Vec<String>,
) -> Step {
    let view = sim.view();
    let outcome = sim.outcome();
    let regions: Vec<RegionRow> = set
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let h = view.region(r.id);
            RegionRow {
                region: r.name.clone(),
                state: h.state,
                load: outcome
                    .as_ref()
                    .and_then(|o| o.load.get(i).copied())
                    .unwrap_or(0.0),
                capacity: capacities.get(i).copied().flatten(),
                keep: h.keep.fraction(),
                shed: h.shed.fraction(),
            }
        })
        .collect();
    let overloaded = regions
        .iter()
        .filter(|r| r.capacity.is_some_and(|c| r.load > c * 1.000_001))
        .map(|r| r.region.clone())
        .collect();
    Step {
        at_s: t.as_secs(),
        overflow: outcome.as_ref().map_or(0.0, |o| o.overflow),
        regions,
        overloaded,
        events,
    }
}
