//! Traffic shifting at each publication: the share of its own clients each region
//! keeps (none when down, `1 - fraction` under a partial drain, the ramp's step after a
//! recovery) and, from those, the split's admission shares (`traffic::split`, pure),
//! recomputed only when its inputs change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;
use tracing::info;

use super::loads::Loads;
use crate::health::aggregate::RegionState;
use crate::health::plan::{HealthPlan, PlanRegion};
use crate::health::view::{Effective, Override};
use crate::traffic::{self, RegionIn, Share};

/// What a split is computed from: per region (keep, load not modelled), and the
/// population's generation (`demand::Demand`).
type Key = (Vec<(Share, u64)>, u64);

/// A split's key, outcome and the sheds it decided (by plan region).
type LastSplit = (Key, Arc<traffic::Outcome>, Vec<Share>);

#[derive(Default)]
pub(super) struct Shifting {
    /// Regions ramping back after a recovery (`failback`), by name: since when.
    ramps: HashMap<String, Instant>,
    /// When the next ramp step is due.
    next_step: Option<Instant>,
    /// The split's last inputs and result.
    split: Option<LastSplit>,
    /// By plan region: the load the last split modelled (own and admitted clients).
    modelled: Vec<f64>,
    /// Regions shedding load past their capacity (`traffic::shed`), by name: the
    /// hysteresis' memory.
    shedding: HashSet<String>,
}

/// A region starting (`true`) or stopping to shed, by plan index.
pub(super) type ShedChange = (usize, bool);

/// A split computed afresh: its inputs and outcome, for the gauges.
pub(super) struct Recomputed {
    pub(super) regions: Vec<RegionIn>,
    pub(super) outcome: Arc<traffic::Outcome>,
}

impl Shifting {
    /// A new plan: the next publication computes the split afresh.
    pub(super) fn forget_split(&mut self) {
        self.split = None;
    }

    pub(super) fn next_step(&self) -> Option<Instant> {
        self.next_step
    }

    pub(super) fn outcome(&self) -> Option<&Arc<traffic::Outcome>> {
        self.split.as_ref().map(|(_, o, _)| o)
    }

    /// Whether `region` is shedding load past its capacity.
    pub(super) fn is_shedding(&self, region: &str) -> bool {
        self.shedding.contains(region)
    }

    /// The load the last split sent to plan region `i`.
    pub(super) fn modelled(&self, i: usize) -> f64 {
        self.modelled.get(i).copied().unwrap_or(0.0)
    }

    /// How far `region`'s ramp back has come (1 when not ramping).
    pub(super) fn failback_progress(&self, region: &PlanRegion, now: Instant) -> f64 {
        match (region.failback, self.ramps.get(&region.name)) {
            (Some(f), Some(&since)) => f.progress(now.saturating_duration_since(since)),
            _ => 1.0,
        }
    }

    /// Per region in plan order, the share of its own clients it keeps. Starts,
    /// restarts and ends ramps, and sets when the next step is due. `last`: each
    /// region's state at the previous publication.
    pub(super) fn keeps(
        &mut self,
        plan: &HealthPlan,
        states: &[RegionState],
        last: &HashMap<String, RegionState>,
        now: Instant,
    ) -> Vec<Share> {
        let mut next_step: Option<Instant> = None;
        let out = plan
            .regions
            .iter()
            .zip(states)
            .map(|(region, st)| {
                let down = st.effective == Effective::Down;
                let was_down = last
                    .get(&region.name)
                    .is_some_and(|p| p.effective == Effective::Down);
                match region.failback {
                    // A failure during the ramp restarts it at the next recovery.
                    Some(_) if down => {
                        self.ramps.remove(&region.name);
                    }
                    Some(f) if was_down => {
                        info!(
                            region = region.name,
                            ramp = ?f.ramp,
                            steps = f.steps,
                            "failback: taking clients back in steps"
                        );
                        self.ramps.insert(region.name.clone(), now);
                    }
                    _ => {}
                }
                let ramp = match (region.failback, self.ramps.get(&region.name)) {
                    (Some(f), Some(&since)) => {
                        let elapsed = now.saturating_duration_since(since);
                        if let Some(at) = f.next_change(elapsed).and_then(|w| now.checked_add(w)) {
                            next_step = Some(next_step.map_or(at, |n| n.min(at)));
                        }
                        f.keep(elapsed)
                    }
                    _ => Share::ALL,
                };
                if ramp == Share::ALL {
                    self.ramps.remove(&region.name);
                }
                if down {
                    Share::NONE
                } else {
                    let by_override = st.r#override.as_ref().map_or(Share::ALL, Override::keep);
                    by_override.min(ramp)
                }
            })
            .collect();
        self.next_step = next_step;
        out
    }

    /// The split's admission and shed shares for these keeps over `clients` (whose
    /// generation is `generation`), the split itself when it was computed afresh (its
    /// inputs changed), and the regions that started or stopped shedding.
    pub(super) fn admits(
        &mut self,
        plan: &HealthPlan,
        clients: &[traffic::Client],
        generation: u64,
        keeps: &[Share],
        loads: &Loads,
    ) -> (Vec<Share>, Vec<Share>, Option<Recomputed>, Vec<ShedChange>) {
        // A measured load counts whole; what the model does not account for of it (other
        // names, other traffic) is carried as `other_load`, so sending more clients there
        // does not count twice.
        let mut regions: Vec<RegionIn> = plan
            .regions
            .iter()
            .zip(keeps)
            .map(|(r, &keep)| RegionIn {
                id: r.id,
                capacity: r.capacity,
                keep,
                shed: Share::ALL,
                // A down region keeps none; a partly drained or ramping one takes none.
                accepts: keep == Share::ALL,
                other_load: loads.unmodelled(&r.name),
            })
            .collect();
        let key: Key = (
            keeps
                .iter()
                .zip(&regions)
                .map(|(&k, r)| (k, r.other_load.round() as u64))
                .collect(),
            generation,
        );
        let mut fresh = None;
        let mut changes = Vec::new();
        if self.split.as_ref().is_none_or(|(k, _, _)| *k != key) {
            let was: Vec<bool> = plan
                .regions
                .iter()
                .map(|r| self.shedding.contains(&r.name))
                .collect();
            let (outcome, now) = traffic::shed::split_shedding(&mut regions, clients, &was);
            for (i, (r, (&before, &after))) in
                plan.regions.iter().zip(was.iter().zip(&now)).enumerate()
            {
                if before == after {
                    continue;
                }
                changes.push((i, after));
                if after {
                    self.shedding.insert(r.name.clone());
                } else {
                    self.shedding.remove(&r.name);
                }
            }
            let outcome = Arc::new(outcome);
            log_split(plan, &outcome);
            self.modelled = outcome
                .load
                .iter()
                .zip(&regions)
                .map(|(l, r)| l - r.other_load)
                .collect();
            let sheds = regions.iter().map(|r| r.shed).collect();
            self.split = Some((key, outcome.clone(), sheds));
            fresh = Some(Recomputed { regions, outcome });
        }
        let (admit, sheds) = self
            .split
            .as_ref()
            .map(|(_, o, s)| (o.admit.clone(), s.clone()))
            .unwrap_or_default();
        (admit, sheds, fresh, changes)
    }
}

fn log_split(plan: &HealthPlan, outcome: &traffic::Outcome) {
    if outcome.flows.iter().all(|f| f.2 <= 0.0) && outcome.overflow <= 0.0 {
        return;
    }
    let name = |i: u16| {
        plan.regions
            .get(usize::from(i))
            .map_or("?", |r| r.name.as_str())
    };
    let moved: Vec<String> = outcome
        .flows
        .iter()
        .map(|&(from, to, load)| format!("{}→{} {load:.0}/s", name(from), name(to)))
        .collect();
    info!(
        moved = moved.join(", "),
        overflow = outcome.overflow,
        "traffic split"
    );
}
