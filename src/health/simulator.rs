//! The checker core without probe tasks, for `meridian simulate`: the caller feeds each
//! region synthetic probe outcomes on tokio's paused clock, and reads back exactly what
//! the server would publish (states after thresholds and cooldowns, ramp steps, the
//! split's shares and loads). Nothing here decides: it is the server's own core.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::checker::Core;
use super::plan::HealthPlan;
use super::state::Sample;
use super::status::{OverrideError, Target, TransitionRecord};
use super::store::StateFile;
use super::view::{HealthView, OverrideKind};
use crate::traffic::Outcome;

pub struct Simulator {
    core: Core,
    _ready: watch::Receiver<bool>,
}

impl Simulator {
    /// Must run inside a tokio runtime (the core reads tokio's clock).
    pub fn new(plan: Arc<HealthPlan>) -> Simulator {
        let (core, ready) = Core::offline(plan);
        Simulator {
            core,
            _ready: ready,
        }
    }

    /// A core restored from a state file (`meridian::fuzzing` feeds it any bytes).
    pub fn with_state(plan: Arc<HealthPlan>, persisted: &StateFile) -> Simulator {
        let (core, ready) = Core::offline_from(plan, persisted);
        Simulator {
            core,
            _ready: ready,
        }
    }

    /// An operator's override as the admin API passes it on, then a publication.
    pub fn request_override(
        &mut self,
        target: Target,
        kind: Option<OverrideKind>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
    ) -> Result<(), OverrideError> {
        self.core
            .set_override_until(target, kind, None, fraction, lasts)?;
        self.core.expire_overrides();
        self.core.publish(true);
        Ok(())
    }

    /// One probe outcome for every endpoint of `region`, then a publication.
    pub fn sample(&mut self, region: &str, ok: bool, latency: Duration) {
        let keys = self.core.probes_of(region);
        for (key, generation) in keys {
            self.core
                .observe(&key, generation, Sample { ok, latency }, None);
        }
        self.core.publish(true);
    }

    pub fn set_override(
        &mut self,
        region: &str,
        kind: Option<OverrideKind>,
        fraction: Option<f64>,
    ) -> Result<(), String> {
        self.core
            .set_override_fraction(
                Target::Region(region.to_string()),
                kind,
                Some("simulated".into()),
                fraction,
            )
            .map_err(|e| e.to_string())?;
        self.core.publish(true);
        Ok(())
    }

    /// A new plan (capacities changed): states carry over.
    pub fn reconfigure(&mut self, plan: Arc<HealthPlan>) {
        self.core.reconfigure(plan, None);
        self.core.publish(true);
    }

    /// Publishes again (a ramp step may be due).
    pub fn publish(&mut self) {
        self.core.publish(true);
    }

    pub fn view(&self) -> Arc<HealthView> {
        self.core.current_view()
    }

    /// The split of the last publication.
    pub fn outcome(&self) -> Option<Arc<Outcome>> {
        self.core.outcome()
    }

    /// Transitions recorded since the last call.
    pub fn drain_transitions(&mut self) -> Vec<TransitionRecord> {
        self.core.drain_history()
    }
}
