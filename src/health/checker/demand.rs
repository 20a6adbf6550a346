//! The checker's side of the load estimate (`traffic::demand`): every
//! [`SAMPLE_EVERY`] it reads each policy's first-ranked query counters (counted on the
//! query path), decays them into the window, and when a policy's blocks moved beyond
//! the noise hands the split a reweighted population.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::info;

use crate::health::plan::HealthPlan;
use crate::health::status::DemandStatus;
use crate::metrics::PolicyCounterStore;
use crate::traffic::Client;
use crate::traffic::demand::{self, Counts, MIN_ANSWERS, PolicyDemand, Source};

pub(super) use crate::traffic::demand::SAMPLE_EVERY;

#[derive(Default)]
pub(super) struct Demand {
    /// Aligned with the plan's `demands`.
    counts: Vec<Counts>,
    sources: Vec<Source>,
    /// The population the split works on: the plan's prior, reweighted.
    clients: Arc<[Client]>,
    /// Moves on whenever `clients` does: part of the split's key.
    generation: u64,
    last: Option<Instant>,
}

impl Demand {
    /// A new plan: counts of policies that remain (same name and candidates) carry over.
    pub(super) fn reset(&mut self, old: &HealthPlan, plan: &HealthPlan) {
        let mut counts = Vec::with_capacity(plan.demands.len());
        for d in plan.demands.iter() {
            let kept = old
                .demands
                .iter()
                .position(|o| o.name == d.name && same_regions(old, o, plan, d))
                .and_then(|i| self.counts.get(i).cloned());
            counts.push(kept.unwrap_or_default());
        }
        self.counts = counts;
        self.rebuild(plan);
    }

    /// Reads the counters (at most every [`SAMPLE_EVERY`]); returns whether the
    /// population moved.
    pub(super) fn sample(
        &mut self,
        plan: &HealthPlan,
        store: &PolicyCounterStore,
        now: Instant,
    ) -> bool {
        if plan.demands.is_empty() {
            return false;
        }
        let dt = self.last.map_or(std::time::Duration::ZERO, |l| {
            now.saturating_duration_since(l)
        });
        self.last = Some(now);
        self.counts.resize(plan.demands.len(), Counts::default());
        for (d, c) in plan.demands.iter().zip(&mut self.counts) {
            let names: Vec<&str> = d
                .candidates
                .iter()
                .map(|&r| {
                    plan.regions
                        .get(usize::from(r))
                        .map_or("", |r| r.name.as_str())
                })
                .collect();
            // A policy the counters do not know as such yet (a reload in between)
            // waits for the next reading.
            if let Some(reading) = store.ranked_first(&d.name, &names) {
                c.observe(&reading, dt);
            }
        }
        let before = self.clients.clone();
        let sources_before = self.sources.clone();
        let next = self.weighted(plan);
        let moved = self.sources != sources_before || demand::moved(&before, &next, &plan.demands);
        if moved {
            self.install(next);
            for (d, (was, now)) in plan
                .demands
                .iter()
                .zip(sources_before.iter().zip(&self.sources))
            {
                if was != now {
                    info!(
                        policy = d.name,
                        source = ?now,
                        "load estimate: source changed"
                    );
                }
            }
        }
        moved
    }

    pub(super) fn clients(&self) -> &Arc<[Client]> {
        &self.clients
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The source each policy's load comes from (`None`: the plan models no demand).
    pub(super) fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub(super) fn status(&self, plan: &HealthPlan) -> Vec<DemandStatus> {
        plan.demands
            .iter()
            .zip(&self.counts)
            .zip(&self.sources)
            .map(|((d, c), &source)| DemandStatus {
                policy: d.name.trim_end_matches('.').to_string(),
                demand: d.demand,
                source,
                queries_in_window: c.total().round(),
                needed: MIN_ANSWERS,
                first_ranked: c
                    .shares()
                    .map(|s| {
                        d.candidates
                            .iter()
                            .zip(s)
                            .filter_map(|(&r, s)| {
                                Some((plan.regions.get(usize::from(r))?.name.clone(), s))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn rebuild(&mut self, plan: &HealthPlan) {
        let next = self.weighted(plan);
        self.install(next);
    }

    fn install(&mut self, next: Vec<Client>) {
        self.clients = next.into();
        self.generation += 1;
    }

    /// The plan's prior reweighted by the shares the window holds; sets the sources.
    fn weighted(&mut self, plan: &HealthPlan) -> Vec<Client> {
        let shares: Vec<Option<Vec<f64>>> = plan
            .demands
            .iter()
            .enumerate()
            .map(|(i, _)| self.counts.get(i).and_then(Counts::shares))
            .collect();
        self.sources = shares
            .iter()
            .map(|s| {
                if s.is_some() {
                    Source::Answers
                } else {
                    Source::AddressSpace
                }
            })
            .collect();
        if shares.iter().all(Option::is_none) {
            return plan.clients.to_vec();
        }
        demand::reweight(&plan.clients, &plan.demands, &shares)
    }
}

fn same_regions(a: &HealthPlan, x: &PolicyDemand, b: &HealthPlan, y: &PolicyDemand) -> bool {
    let names = |p: &HealthPlan, d: &PolicyDemand| -> Vec<String> {
        d.candidates
            .iter()
            .map(|&r| {
                p.regions
                    .get(usize::from(r))
                    .map_or_else(String::new, |r| r.name.clone())
            })
            .collect()
    };
    names(a, x) == names(b, y)
}
