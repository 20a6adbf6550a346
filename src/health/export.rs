//! What the checker core exports after a publication: the health gauges of
//! `meridian_*` and the state file. Kept apart from deciding (`checker`, `aggregate`).

use tokio::time::Instant;
use tracing::warn;

use super::checker::{Core, EndpointRt};
use super::store::{self, EndpointRecord, StateFile};
use super::view::Effective;
use crate::traffic::{self, RegionIn};

impl Core {
    fn region_up(&self, name: &str) -> bool {
        self.last_region
            .get(name)
            .is_none_or(|s| s.effective != Effective::Down)
    }

    /// After a sample: the sampled endpoint's series and the changed regions'.
    pub(super) fn export_sample_gauges(&self, now: Instant, key: &str, changed_regions: &[String]) {
        for r in changed_regions {
            self.metrics
                .region_healthy
                .with_label_values(&[r.as_str()])
                .set(i64::from(self.region_up(r)));
        }
        if let Some(e) = self.endpoints.get(key) {
            self.export_endpoint(now, e);
        }
    }

    fn export_endpoint(&self, now: Instant, e: &EndpointRt) {
        let m = &self.metrics;
        let (region, ep) = (e.region.as_str(), e.ep.name.as_str());
        for st in ["up", "degraded", "down"] {
            m.endpoint_state
                .with_label_values(&[region, ep, st])
                .set(i64::from(e.state.name() == st));
        }
        let s = e.window.signals(e.thresholds.latency_percentile);
        m.endpoint_error_rate
            .with_label_values(&[region, ep])
            .set(s.error_rate);
        m.cooldown_remaining
            .with_label_values(&[region, ep])
            .set(e.cooldown_left(now).as_secs_f64());
    }

    /// Every series. Series of removed regions and endpoints go at a reconfiguration;
    /// otherwise the existing series are set in place (a reset drops and re-creates every
    /// labelled series, which was most of the checker's CPU with a hundred endpoints).
    pub(super) fn export_gauges(&mut self, now: Instant) {
        if std::mem::take(&mut self.gauges_stale) {
            let m = &self.metrics;
            m.region_healthy.reset();
            m.endpoint_state.reset();
            m.endpoint_error_rate.reset();
            m.cooldown_remaining.reset();
        }
        let m = &self.metrics;
        m.overrides.reset();
        for r in &self.plan.regions {
            m.region_healthy
                .with_label_values(&[r.name.as_str()])
                .set(i64::from(self.region_up(&r.name)));
            let o = self
                .last_region
                .get(&r.name)
                .and_then(|s| s.r#override.as_ref());
            if let Some(o) = o {
                m.overrides
                    .with_label_values(&[r.name.as_str(), "", o.kind.name()])
                    .set(1);
            }
        }
        for (key, e) in &self.endpoints {
            self.export_endpoint(now, e);
            if let Some(o) = self.endpoint_overrides.get(key) {
                m.overrides
                    .with_label_values(&[e.region.as_str(), e.ep.name.as_str(), o.kind.name()])
                    .set(1);
            }
        }
    }

    /// Writes measured endpoint states and runtime overrides to the state file.
    pub(super) fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let file = StateFile {
            version: store::STATE_VERSION,
            endpoints: self
                .endpoints
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
            region_overrides: self.region_overrides.clone(),
            endpoint_overrides: self.endpoint_overrides.clone(),
            override_records: self
                .records
                .iter()
                .map(|(t, r)| {
                    let (super::peers::OverrideTarget::Region(k)
                    | super::peers::OverrideTarget::Endpoint(k)) = t;
                    (k.clone(), r.clone())
                })
                .collect(),
        };
        if let Err(e) = file.save(path) {
            warn!("cannot write state file {}: {e}", path.display());
        }
    }
}

impl Core {
    /// The split's gauges: capacity, modelled load, keep share, spill between regions,
    /// failback progress. Set afresh on each recomputation (a spill that ended must not
    /// linger as a stale series).
    pub(super) fn export_split(&self, regions: &[RegionIn], outcome: &traffic::Outcome) {
        let m = &self.metrics;
        m.region_capacity.reset();
        m.region_load.reset();
        m.region_spill.reset();
        let modelled = !self.plan.clients.is_empty();
        let name = |i: u16| {
            self.plan
                .regions
                .get(usize::from(i))
                .map(|r| r.name.as_str())
        };
        for (i, (r, input)) in self.plan.regions.iter().zip(regions).enumerate() {
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
            if let Some(&(measured, _)) = self.loads.get(&r.name) {
                m.region_load
                    .with_label_values(&[r.name.as_str(), "prometheus"])
                    .set(measured);
            }
            // Shares are 32-bit thresholds: shown to six places.
            m.region_keep
                .with_label_values(&[r.name.as_str()])
                .set((input.keep.fraction() * 1e6).round() / 1e6);
            let progress = match (r.failback, self.ramps.get(&r.name)) {
                (Some(f), Some(&since)) => {
                    f.progress(Instant::now().saturating_duration_since(since))
                }
                _ => 1.0,
            };
            m.region_failback
                .with_label_values(&[r.name.as_str()])
                .set(progress);
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
}
