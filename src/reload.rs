//! Hot reload (SIGHUP and `POST /api/v1/reload`): read and validate everything into a new
//! snapshot; on success swap it in whole and tell the health checker (state carries over
//! for endpoints that persist); on failure keep serving the old one. Either way the
//! outcome is logged, counted and returned.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::{Config, Overrides, Startup};
use crate::health::RegionIds;
use crate::health::checker::HealthHandle;
use crate::metrics::Metrics;
use crate::snapshot::{Shared, Snapshot};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    pub ok: bool,
    pub errors: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Startup settings the new file changes: they take effect only after a restart.
    pub restart_required: Vec<String>,
    /// What to tell the operator, e.g. "restart required: dns.listen".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub struct Reloader {
    pub config_file: PathBuf,
    pub overrides: Overrides,
    /// The startup settings the server runs with (a reload cannot change them).
    pub startup: Startup,
    /// Only touched while loading, never on the query path.
    pub ids: Mutex<RegionIds>,
    pub shared: Shared,
    pub health: HealthHandle,
    pub metrics: Arc<Metrics>,
    serial: tokio::sync::Mutex<()>,
}

fn fingerprint(parts: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Everything a snapshot serves, by kind and name, with a fingerprint of its content.
fn inventory(s: &Snapshot) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for z in s.zones.iter() {
        let mut nodes: Vec<String> = z
            .nodes
            .iter()
            .map(|(k, n)| format!("{k:?}{:?}{:?}", n.rrsets, n.policy.is_some()))
            .collect();
        nodes.sort();
        out.insert(format!("zone {}", z.display), fingerprint(&nodes));
    }
    for r in &s.policies.regions {
        let parts = vec![format!(
            "{:?}{:?}{:?}{:?}{}{:?}{:?}{:?}{:?}",
            r.point, r.a, r.aaaa, r.cname, r.weight, r.labels, r.endpoints, r.thresholds, r.min_up
        )];
        out.insert(format!("region {}", r.name), fingerprint(&parts));
    }
    for p in &s.policies.policies {
        let regions: Vec<&str> = p
            .candidates
            .iter()
            .filter_map(|&i| {
                s.policies
                    .regions
                    .get(usize::from(i))
                    .map(|r| r.name.as_str())
            })
            .collect();
        let parts = vec![format!(
            "{:?}{}{}{:?}{:?}{:?}",
            p.method, p.ttl, p.answers, regions, p.residency, p.all_down
        )];
        out.insert(format!("policy {}", p.display), fingerprint(&parts));
    }
    out.insert(
        "geoip".into(),
        fingerprint(&[s.geo.database.clone(), s.geo.build_epoch.to_string()]),
    );
    out
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Reloader {
    pub fn new(
        config_file: PathBuf,
        overrides: Overrides,
        startup: Startup,
        ids: RegionIds,
        shared: Shared,
        health: HealthHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reloader {
            config_file,
            overrides,
            startup,
            ids: Mutex::new(ids),
            shared,
            health,
            metrics,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn reload(self: &Arc<Self>) -> ReloadReport {
        // One reload at a time; the build runs off the async workers.
        let _serial = self.serial.lock().await;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let config = Config::load(&this.config_file, &this.overrides)
                .map_err(|errs| errs.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
            let mut ids = match this.ids.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            Snapshot::build(&config, &mut ids, &this.metrics.policies)
                .map(|b| (b, config))
                .map_err(|errs| errs.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        })
        .await
        .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]));
        match built {
            Ok((built, config)) => {
                for w in &built.warnings {
                    warn!("{w}");
                }
                let old = inventory(&self.shared.load());
                let new = inventory(&built.snapshot);
                let mut report = ReloadReport {
                    ok: true,
                    ..Default::default()
                };
                for (k, v) in &new {
                    match old.get(k) {
                        None => report.added.push(k.clone()),
                        Some(o) if o != v => report.changed.push(k.clone()),
                        _ => {}
                    }
                }
                report.removed = old
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect();
                report.restart_required = self
                    .startup
                    .changed(&config.startup)
                    .into_iter()
                    .map(String::from)
                    .collect();
                if !report.restart_required.is_empty() {
                    let message =
                        format!("restart required: {}", report.restart_required.join(", "));
                    warn!(
                        "{message} (the running server keeps its startup settings; the rest of the reload applied)"
                    );
                    report.message = Some(message);
                }
                let snapshot = Arc::new(built.snapshot);
                self.metrics
                    .geoip_build_epoch
                    .set(snapshot.geo.build_epoch as i64);
                // Signed before it serves: the answers today's health view gives.
                snapshot
                    .dnssec
                    .prepare(&snapshot.policies, &self.health.view.load());
                self.metrics
                    .set_dnssec_expiry(&snapshot.dnssec.earliest_expiry);
                let previous = self.shared.swap(snapshot.clone());
                crate::dns::notify::spawn(Some(&previous), &snapshot, self.metrics.clone());
                self.health
                    .reconfigure(Arc::new(snapshot.health_plan_serving(&self.shared)));
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.last_reload_success.set(now_secs());
                info!(
                    added = ?report.added,
                    changed = ?report.changed,
                    removed = ?report.removed,
                    "reload succeeded"
                );
                report
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                error!(
                    errors = errors.len(),
                    "reload failed: still serving the previous configuration"
                );
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                ReloadReport {
                    ok: false,
                    errors,
                    ..Default::default()
                }
            }
        }
    }
}
