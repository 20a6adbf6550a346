//! Measured load: one poller per region with a `load:` query asks Prometheus for the
//! region's requests/s; the split counts a measured load whole, carrying the part its
//! model does not account for as other traffic.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::probes::Probing;
use crate::health::model::LoadQuery;
use crate::health::plan::HealthPlan;
use crate::health::probe;
use crate::metrics::Metrics;

/// A poller's answer: the region and its load (`None`: Prometheus unreadable).
pub(super) type LoadMsg = (String, Option<f64>);

pub(super) struct Loads {
    /// By region: the measured load and the part of it the model did not account for
    /// when it was measured.
    measured: HashMap<String, (f64, f64)>,
    tx: mpsc::Sender<LoadMsg>,
    rx: Option<mpsc::Receiver<LoadMsg>>,
    tasks: HashMap<String, (LoadQuery, JoinHandle<()>)>,
    /// Regions whose query failed since it last answered (warned once).
    unread: HashSet<String>,
    probing: Probing,
}

impl Drop for Loads {
    fn drop(&mut self) {
        for (_, t) in self.tasks.values() {
            t.abort();
        }
    }
}

impl Loads {
    pub(super) fn new(probing: Probing) -> Loads {
        // One message per region and interval: a full queue makes the pollers wait.
        let (tx, rx) = mpsc::channel(256);
        Loads {
            measured: HashMap::new(),
            tx,
            rx: Some(rx),
            tasks: HashMap::new(),
            unread: HashSet::new(),
            probing,
        }
    }

    /// The receiving end, for the run loop (once).
    pub(super) fn take_rx(&mut self) -> Option<mpsc::Receiver<LoadMsg>> {
        self.rx.take()
    }

    /// The measured load of `region`, if its query answered.
    pub(super) fn measured(&self, region: &str) -> Option<f64> {
        self.measured.get(region).map(|&(v, _)| v)
    }

    /// The part of `region`'s measured load the model does not account for.
    pub(super) fn unmodelled(&self, region: &str) -> f64 {
        self.measured.get(region).map_or(0.0, |&(_, other)| other)
    }

    /// Starts a poller per region with a `load:` query; changed or removed queries
    /// stop theirs.
    pub(super) fn respawn(&mut self, plan: &HealthPlan) {
        let wanted: HashMap<String, LoadQuery> = plan
            .regions
            .iter()
            .filter_map(|r| r.load.clone().map(|q| (r.name.clone(), q)))
            .collect();
        self.tasks.retain(|name, (q, task)| {
            let keep = wanted.get(name) == Some(q);
            if !keep {
                task.abort();
            }
            keep
        });
        self.measured.retain(|name, _| wanted.contains_key(name));
        if self.probing != Probing::Tasks {
            return;
        }
        for (name, q) in wanted {
            if self.tasks.contains_key(&name) {
                continue;
            }
            let tx = self.tx.clone();
            let (region, query) = (name.clone(), q.clone());
            let task = tokio::spawn(async move {
                let client = probe::prometheus_client(query.timeout);
                loop {
                    let value = match &client {
                        Some(c) => probe::metric_value(&query.url, &query.query, c).await,
                        None => None,
                    };
                    if tx.send((region.clone(), value)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(query.interval).await;
                }
            });
            self.tasks.insert(name, (q, task));
        }
    }

    /// A poller's answer. `None` (Prometheus unreadable) keeps the last value, with one
    /// warning: no signal is not zero load. `modelled`: what the split sends there now.
    /// Returns whether the split should be recomputed (the value moved by over 5 %).
    pub(super) fn observe(
        &mut self,
        region: &str,
        value: Option<f64>,
        modelled: f64,
        metrics: &Metrics,
    ) -> bool {
        let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
            if self.unread.insert(region.to_string()) {
                warn!(region, "load query cannot be read: keeping the last value");
            }
            return false;
        };
        if self.unread.remove(region) {
            info!(region, load = v, "load query answers again");
        }
        metrics
            .region_load
            .with_label_values(&[region, "prometheus"])
            .set(v);
        // A value within 5 % of the one in use is no news (and may well predate the
        // clients the split moved since): the split keeps what it has.
        if let Some(&(b, _)) = self.measured.get(region)
            && (v - b).abs() <= 0.05 * b.max(1.0)
        {
            return false;
        }
        // Compared with what the split sent there when it was measured: the part the
        // model does not account for (other names, other traffic) is kept as such.
        self.measured
            .insert(region.to_string(), (v, (v - modelled).max(0.0)));
        true
    }
}
