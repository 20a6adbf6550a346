//! Why a state changed, as a value. The state machine (`state::observe`) and region
//! aggregation (`aggregate::region`) produce a [`Cause`]; logs and the status page render
//! it as text (`Display`) and the `reason` label of `meridian_health_transitions_total`
//! is its [`Cause::label`]. Nothing matches on the text. This module imports nothing
//! else of the crate.

use std::fmt;
use std::time::Duration;

use super::view::OverrideKind;

#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// `count` failed probes in a row reached `fail_consecutive`.
    ConsecutiveFailures { count: u32, threshold: u32 },
    /// The window's error rate reached `fail_error_rate`.
    ErrorRate {
        rate: f64,
        threshold: f64,
        samples: usize,
    },
    /// The window's latency percentile reached `fail_latency`.
    Latency {
        percentile: u8,
        latency: Duration,
        threshold: Duration,
    },
    /// Slow but working: the latency percentile reached `degraded_latency`.
    Degraded {
        percentile: u8,
        latency: Duration,
        threshold: Duration,
    },
    /// A degraded endpoint's latency fell back below `degraded_latency`.
    LatencyRecovered,
    /// A down endpoint met every recovery rule and its cooldown had passed.
    Recovered {
        successes: u32,
        error_rate: f64,
        threshold: f64,
        percentile: u8,
        latency: Duration,
        recover_latency: Duration,
        down_for: Duration,
    },
    /// Recovery rules are met but the cooldown holds the endpoint down.
    CooldownHeld {
        successes: u32,
        error_rate: f64,
        left: Duration,
    },
    /// The probe task stopped reporting; its silence counted as a failure.
    ProbeSilent { silent_for: Duration },
    /// The region's Prometheus `metric:` is at or above `fail_above`.
    MetricVeto,
    /// The region's metric is back at or below `recover_below`.
    MetricCleared,
    /// Region aggregation: how many endpoints serve against how many are needed.
    Endpoints {
        serving: usize,
        total: usize,
        needed: usize,
    },
    /// An operator override was set (admin API, CLI or the configuration).
    OverrideSet {
        kind: OverrideKind,
        reason: Option<String>,
    },
    /// An operator override was cleared; the measured state applies again.
    OverrideCleared,
    /// Cluster: the shared state of an endpoint changed with the vantage points' votes.
    Quorum {
        down: usize,
        degraded: usize,
        voters: usize,
        needed: usize,
    },
    /// Cluster: the votes would bring a down endpoint back, but the cooldown counted on
    /// the shared state holds it down.
    QuorumCooldownHeld { left: Duration },
}

impl Cause {
    /// The bounded `reason` label of `meridian_health_transitions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Cause::ConsecutiveFailures { .. } => "consecutive_failures",
            Cause::ErrorRate { .. } => "error_rate",
            Cause::Latency { .. } => "latency",
            Cause::Degraded { .. } => "latency_degraded",
            Cause::LatencyRecovered | Cause::Recovered { .. } => "recovered",
            Cause::CooldownHeld { .. } => "cooldown_held",
            Cause::ProbeSilent { .. } => "probe_silent",
            Cause::MetricVeto => "metric_veto",
            Cause::MetricCleared => "metric_cleared",
            Cause::Endpoints { .. } => "endpoints",
            Cause::OverrideSet { .. } => "override_set",
            Cause::OverrideCleared => "override_cleared",
            Cause::Quorum { .. } => "quorum",
            Cause::QuorumCooldownHeld { .. } => "cooldown_held",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ConsecutiveFailures { count, threshold } => {
                write!(f, "{count} consecutive failures >= {threshold}")
            }
            Cause::ErrorRate {
                rate,
                threshold,
                samples,
            } => write!(
                f,
                "error rate {rate:.2} >= {threshold:.2} over {samples} probes"
            ),
            Cause::Latency {
                percentile,
                latency,
                threshold,
            } => write!(f, "p{percentile} latency {latency:?} >= {threshold:?}"),
            Cause::Degraded {
                percentile,
                latency,
                threshold,
            } => write!(
                f,
                "p{percentile} latency {latency:?} >= degraded {threshold:?}"
            ),
            Cause::LatencyRecovered => write!(f, "latency back below the degraded threshold"),
            Cause::Recovered {
                successes,
                error_rate,
                threshold,
                percentile,
                latency,
                recover_latency,
                down_for,
            } => write!(
                f,
                "{successes} consecutive successes, error rate {error_rate:.2} <= {threshold:.2}, \
                 p{percentile} latency {latency:?} <= {recover_latency:?}, down for {down_for:?}"
            ),
            Cause::CooldownHeld {
                successes,
                error_rate,
                left,
            } => write!(
                f,
                "recovered ({successes} successes, error rate {error_rate:.2}) but cooldown \
                 holds it down for {left:?} more"
            ),
            Cause::ProbeSilent { silent_for } => write!(
                f,
                "the probe did not report for {silent_for:?}: counted as a failure, probe restarted"
            ),
            Cause::MetricVeto => {
                write!(
                    f,
                    "the region's Prometheus metric is at or above fail_above"
                )
            }
            Cause::MetricCleared => write!(
                f,
                "the region's Prometheus metric is back at or below recover_below"
            ),
            Cause::Endpoints {
                total: 0,
                needed: 0,
                ..
            } => write!(f, "no endpoints: up unless overridden"),
            Cause::Endpoints {
                serving,
                total,
                needed,
            } => write!(f, "{serving} of {total} endpoints serving, {needed} needed"),
            Cause::OverrideSet { kind, reason } => write!(
                f,
                "operator override {} ({})",
                kind.name(),
                reason.as_deref().unwrap_or("")
            ),
            Cause::OverrideCleared => write!(f, "operator override cleared"),
            Cause::Quorum {
                down,
                degraded,
                voters,
                needed,
            } => write!(
                f,
                "{down} of {voters} vantage points see it down and {degraded} degraded, \
                 {needed} needed"
            ),
            Cause::QuorumCooldownHeld { left } => write!(
                f,
                "the vantage points see it recovered but the cooldown holds it down for {left:?} more"
            ),
        }
    }
}
