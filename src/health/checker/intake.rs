//! Sample intake: a probe outcome enters its endpoint's window and state machine
//! (`state::observe`, pure), and the watchdog finds probe tasks that fell silent.
//! What a transition means for regions and logs is the core's to record.

use std::time::Duration;

use tokio::time::Instant;

use super::probes::Probes;
use crate::health::cause::Cause;
use crate::health::state::{self, Sample};
use crate::metrics::Metrics;

/// A transition one sample caused.
pub(super) struct Moved {
    pub(super) from: &'static str,
    pub(super) to: &'static str,
    pub(super) cause: Cause,
    pub(super) cooldown_held: bool,
}

/// What one sample did.
pub(super) struct Observed {
    /// The measured state (what the state file keeps) changed.
    pub(super) changed: bool,
    pub(super) moved: Option<Moved>,
}

impl Probes {
    /// Feeds one sample to endpoint `key`. `silent` is set when the sample stands for a
    /// probe task's silence: a transition it causes is labelled `probe_silent`. `None`
    /// for an unknown endpoint or a replaced task's sample.
    pub(super) fn observe(
        &mut self,
        key: &str,
        generation: u64,
        sample: Sample,
        silent: Option<Duration>,
        now: Instant,
        metrics: &Metrics,
    ) -> Option<Observed> {
        let rt = self.get_mut(key)?;
        if rt.generation != generation {
            return None;
        }
        rt.probed = true;
        rt.last_report = now;
        metrics
            .probe_duration
            .with_label_values(&[rt.region.as_str(), rt.ep.name.as_str()])
            .observe(sample.latency.as_secs_f64());
        if rt.streak.is_none_or(|(ok, _)| ok != sample.ok) {
            rt.streak = Some((sample.ok, now));
        }
        rt.window.push(sample, rt.thresholds.window);
        rt.signals = rt.window.signals(rt.thresholds.latency_percentile);
        let (next, tr) = state::observe(rt.state, &rt.signals, &rt.thresholds, now);
        let changed = next.name() != rt.state.name();
        rt.state = next;
        if changed {
            rt.since = now;
            rt.since_unix = crate::health::store::now_unix();
        }
        let moved = tr.map(|tr| {
            let metric = rt.ep.is_metric();
            let cause = match (silent, metric, tr.to) {
                (Some(silent_for), ..) if tr.to == "down" && !tr.cooldown_held => {
                    Cause::ProbeSilent { silent_for }
                }
                // The metric pseudo-endpoint's own transitions say what they mean.
                (_, true, "down") if !tr.cooldown_held => Cause::MetricVeto,
                (_, true, "up") => Cause::MetricCleared,
                _ => tr.cause,
            };
            Moved {
                from: tr.from,
                to: tr.to,
                cause,
                cooldown_held: tr.cooldown_held,
            }
        });
        Some(Observed { changed, moved })
    }

    /// Endpoints whose task has not reported for two intervals plus a timeout plus a
    /// second: (key, the probe's timeout, how long it has been quiet).
    pub(super) fn silent(&self, now: Instant) -> Vec<(String, Duration, Duration)> {
        self.iter()
            .map(|(k, e)| (k, e, now.saturating_duration_since(e.last_report)))
            .filter(|(_, e, quiet)| {
                *quiet > e.ep.interval * 2 + e.ep.timeout + Duration::from_secs(1)
            })
            .map(|(k, e, quiet)| (k.clone(), e.ep.timeout, quiet))
            .collect()
    }
}
