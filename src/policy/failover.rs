//! The worst case a configuration allows between a region's endpoints failing and the
//! last client leaving it, resolver caches included, held against the region's
//! `health.failover_target`. Pure arithmetic on the validated model, for `meridian
//! check` and the policy loader.
//!
//! From the moment the endpoints fail:
//! - the first failing sample arrives within `interval + timeout` (the probe that was
//!   just sent when they failed still succeeded);
//! - an answer given just before it carries the policy's full TTL, so a resolver may
//!   hold the region until `interval + timeout + ttl`;
//! - after the first failure, health-aware TTLs shrink every answer naming the region
//!   to the time left before it could be down, so those expire by `detect + interval`,
//!   where `detect = interval × fail_consecutive + timeout` (of the slowest endpoint);
//! - the publication of the new view adds at most [`PUBLISH`], and with `cluster:` the
//!   peers' verdicts take up to two gossip rounds to reach the quorum.

use std::time::Duration;

use crate::health::{Endpoint, Thresholds};

/// A transition is published at once; this bounds the checker's turn-around.
pub const PUBLISH: Duration = Duration::from_millis(200);

/// When the region is seen failing, from the moment its endpoints fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The first failing sample.
    pub first: Duration,
    /// The sample that takes the region out.
    pub detect: Duration,
    /// The probe interval of the slowest endpoint (health-aware TTLs count in it).
    pub interval: Duration,
}

/// The detection of a region with probed endpoints; `None` when nothing probes it (it
/// never leaves the answers by itself). The slowest endpoint bounds it: with `min_up`
/// the region may need all of them down.
pub fn detection(endpoints: &[Endpoint], t: &Thresholds) -> Option<Detection> {
    endpoints
        .iter()
        .filter(|e| !e.is_metric())
        .map(|e| Detection {
            first: e.interval + e.timeout,
            detect: e.interval * t.fail_consecutive + e.timeout,
            interval: e.interval,
        })
        .max_by_key(|d| d.detect)
}

/// A policy's worst case through one of its regions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorstCase {
    pub detection: Detection,
    pub ttl: Duration,
    /// Two gossip rounds with `cluster:`, else zero.
    pub gossip: Duration,
    pub total: Duration,
    pub target: Duration,
}

impl WorstCase {
    pub fn meets_target(&self) -> bool {
        self.total <= self.target
    }

    /// The longest TTL that would meet the target, when lowering the TTL can.
    pub fn ttl_for_target(&self) -> Option<u32> {
        let fixed = self.detection.first + PUBLISH + self.gossip;
        let floor = self.detection.detect + self.detection.interval + PUBLISH + self.gossip;
        if floor > self.target {
            return None;
        }
        let secs = self.target.saturating_sub(fixed).as_secs();
        u32::try_from(secs).ok().filter(|&s| s >= 1)
    }

    /// How the total is made: `detect 4.0 s + ttl 60 s + publish 0.2 s`.
    pub fn explain(&self) -> String {
        let d = &self.detection;
        let via_ttl = d.first + self.ttl;
        let mut parts = if via_ttl >= d.detect + d.interval {
            vec![
                format!("first failed probe {:.1} s", d.first.as_secs_f64()),
                format!("ttl {} s", self.ttl.as_secs()),
            ]
        } else {
            vec![
                format!("detect {:.1} s", d.detect.as_secs_f64()),
                format!("health-aware ttl {:.1} s", d.interval.as_secs_f64()),
            ]
        };
        parts.push(format!("publish {:.1} s", PUBLISH.as_secs_f64()));
        if !self.gossip.is_zero() {
            parts.push(format!("quorum {:.1} s", self.gossip.as_secs_f64()));
        }
        parts.join(" + ")
    }
}

/// The worst case of a policy answering with `ttl` through a region detected as `d`.
pub fn worst_case(d: Detection, ttl: u32, target: Duration, gossip: Duration) -> WorstCase {
    let ttl = Duration::from_secs(u64::from(ttl));
    let held = (d.first + ttl).max(d.detect + d.interval);
    WorstCase {
        detection: d,
        ttl,
        gossip,
        total: held + PUBLISH + gossip,
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(interval_ms: u64, timeout_ms: u64, fails: u32) -> Detection {
        let (i, t) = (
            Duration::from_millis(interval_ms),
            Duration::from_millis(timeout_ms),
        );
        Detection {
            first: i + t,
            detect: i * fails + t,
            interval: i,
        }
    }

    #[test]
    fn the_table() {
        let s = Duration::from_secs;
        // (detection, ttl, target, gossip) → (total ms, meets, ttl for target)
        let cases = [
            // The example's www: 1 s probes, 1 s timeout, 2 failures, TTL 30.
            (
                d(1000, 1000, 2),
                30,
                s(60),
                Duration::ZERO,
                32_200,
                true,
                Some(57),
            ),
            // A TTL longer than the target allows: lower it.
            (
                d(2000, 1000, 2),
                60,
                s(60),
                Duration::ZERO,
                63_200,
                false,
                Some(56),
            ),
            // A short TTL: detection and the health-aware TTL bound it.
            (
                d(1000, 500, 3),
                1,
                s(10),
                Duration::ZERO,
                4_700,
                true,
                Some(8),
            ),
            // In a cluster, two gossip rounds more.
            (d(1000, 1000, 2), 30, s(60), s(2), 34_200, true, Some(55)),
            // Detection alone past the target: no TTL helps.
            (
                d(10_000, 5_000, 5),
                5,
                s(30),
                Duration::ZERO,
                65_200,
                false,
                None,
            ),
        ];
        for (det, ttl, target, gossip, total, meets, fix) in cases {
            let w = worst_case(det, ttl, target, gossip);
            assert_eq!(w.total, Duration::from_millis(total), "{w:?}");
            assert_eq!(w.meets_target(), meets, "{w:?}");
            assert_eq!(w.ttl_for_target(), fix, "{w:?}");
            if let Some(t) = fix {
                assert!(worst_case(det, t, target, gossip).meets_target());
                assert!(!worst_case(det, t + 1, target, gossip).meets_target());
            }
        }
    }

    #[test]
    fn the_explanation_names_the_terms_that_bound_it() {
        let w = worst_case(
            d(2000, 1000, 2),
            60,
            Duration::from_secs(60),
            Duration::ZERO,
        );
        assert_eq!(
            w.explain(),
            "first failed probe 3.0 s + ttl 60 s + publish 0.2 s"
        );
        let w = worst_case(
            d(1000, 500, 3),
            1,
            Duration::from_secs(10),
            Duration::from_millis(400),
        );
        assert_eq!(
            w.explain(),
            "detect 3.5 s + health-aware ttl 1.0 s + publish 0.2 s + quorum 0.4 s"
        );
    }
}
