//! Transitions as they happened: each one logged once with its cause, counted in
//! `meridian_health_transitions_total`, and kept (the last [`HISTORY`]) for the status
//! page.

use std::collections::VecDeque;

use tracing::info;

use crate::health::cause::Cause;
use crate::health::plan::HealthPlan;
use crate::health::status::{HISTORY, TransitionRecord};
use crate::health::store;
use crate::metrics::Metrics;

#[derive(Default)]
pub(super) struct History {
    kept: VecDeque<TransitionRecord>,
}

impl History {
    /// Records that `key` (`region` or `region/endpoint`) went `from` → `to`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &mut self,
        metrics: &Metrics,
        plan: &HealthPlan,
        key: String,
        from: &str,
        to: &str,
        cause: Cause,
        cooldown_held: bool,
    ) {
        let (region, endpoint) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let policies = plan
            .region(region)
            .map(|r| r.policies.clone())
            .unwrap_or_default();
        metrics
            .transitions
            .with_label_values(&[region, endpoint, from, to, cause.label()])
            .inc();
        let reason = cause.to_string();
        info!(
            key,
            policies,
            from,
            to,
            cause = cause.label(),
            cooldown_held,
            "health transition: {reason}"
        );
        self.kept.push_back(TransitionRecord {
            at: store::now_unix(),
            key,
            policies,
            from: from.to_string(),
            to: to.to_string(),
            cause: cause.label(),
            reason,
            cooldown_held,
        });
        while self.kept.len() > HISTORY {
            self.kept.pop_front();
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &TransitionRecord> {
        self.kept.iter()
    }

    /// Everything recorded so far, leaving none (`meridian simulate` reads as it goes).
    pub(super) fn drain(&mut self) -> Vec<TransitionRecord> {
        self.kept.drain(..).collect()
    }
}
