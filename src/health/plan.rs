//! What the checker is given to watch: per region its stable id, endpoints, thresholds,
//! `MinUp` and the policies that use it (for logs), and the overrides written in the
//! configuration. The snapshot builds it (`Snapshot::health_plan`); the checker never
//! sees the snapshot itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{Endpoint, LoadQuery, MinUp, Thresholds};
use super::view::{Effective, HealthView, Override};
use crate::traffic::demand::PolicyDemand;
use crate::traffic::{Client, Failback};

#[derive(Debug, Clone)]
pub struct PlanRegion {
    pub name: String,
    /// Stable across reloads for the same name: the view is indexed by it.
    pub id: u32,
    pub endpoints: Vec<Endpoint>,
    pub thresholds: Thresholds,
    pub min_up: MinUp,
    /// Names of the policies that may answer with this region, comma-separated.
    pub policies: String,
    /// Requests/s it can serve; `None`: unlimited.
    pub capacity: Option<f64>,
    pub failback: Option<Failback>,
    pub load: Option<LoadQuery>,
    /// Its answered addresses, A before AAAA: the positions `Endpoint::serves` masks.
    pub addresses: Vec<std::net::IpAddr>,
    /// The longest TTL of the policies answering with it: how long a resolver may hold
    /// an answer naming it (failover events' cache bound).
    pub max_ttl: u32,
}

/// Called with each new health view before it is published (DNSSEC signs the answers
/// the view makes possible, so that none is served unsigned).
#[derive(Clone)]
pub struct Prepare(pub Arc<dyn Fn(&super::HealthView) + Send + Sync>);

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepare")
    }
}

#[derive(Debug, Clone, Default)]
pub struct HealthPlan {
    pub regions: Vec<PlanRegion>,
    /// Overrides written in the configuration (runtime ones, from the admin API and the
    /// state file, take precedence).
    pub config_overrides: BTreeMap<String, Override>,
    /// The client population the split models (`traffic::split`): lists index
    /// `regions`. Empty when no policy has a `demand`.
    pub clients: Arc<[Client]>,
    /// The policies with a `demand` (clients' `policy` indexes them): what the load
    /// estimate reweights the population by (`traffic::demand`).
    pub demands: Arc<[PolicyDemand]>,
    pub prepare: Option<Prepare>,
}

impl HealthPlan {
    pub fn region(&self, name: &str) -> Option<&PlanRegion> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The view before any probe has run: configured overrides only.
    pub fn static_view(&self) -> HealthView {
        let mut view = HealthView::default();
        for r in &self.regions {
            let state = self
                .config_overrides
                .get(&r.name)
                .and_then(Override::effective)
                .unwrap_or(Effective::Up);
            view.set(r.id, state);
        }
        view
    }
}
