//! Failover events: each time a region leaves the answers or returns, its phases from
//! the first sample that led to it to the moment no cache can hold the old answer,
//! held against the region's `failover_target`, counted in
//! `meridian_failover_phase_seconds{phase}` and `meridian_failover_slo_breaches_total`,
//! and kept (the last [`FAILOVERS_PER_REGION`] per region) for `/api/v1/failovers`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::health::plan::PlanRegion;
use crate::health::status::{Direction, FAILOVERS_PER_REGION, FailoverEvent, Phases};
use crate::health::view::AnswerStamp;
use crate::metrics::Metrics;

/// A state change waiting for its publication.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) region: usize,
    pub(super) direction: Direction,
    pub(super) cause: &'static str,
    /// The first sample of the run that led to it (the change itself without one).
    pub(super) started: Instant,
    pub(super) changed: Instant,
    /// The TTL cap the previous view put on the region's answers, if any.
    pub(super) cap_before: Option<u32>,
    /// The region's measured load (`load:`) at the change, if it has one.
    pub(super) level: Option<f64>,
}

/// The `traffic` phase ends when a leave's measured load falls below this share of its
/// level before the event …
pub(super) const TRAFFIC_GONE: f64 = 0.1;
/// … and a return's rises back to this share of its level before the last leave.
pub(super) const TRAFFIC_BACK: f64 = 0.9;

/// How long an event waits for its first answer or its traffic to move.
const AWAIT_LIMIT: Duration = Duration::from_secs(3600);

/// An event whose later phases are still to come.
struct Awaiting {
    region: String,
    at: u64,
    direction: Direction,
    started: Instant,
    /// The publication, in seconds from `started`: no answer from the new view is
    /// earlier (a batch still on the previous view may mark the stamp it shares).
    published: f64,
    /// The view that carried the change: its first answer ends the `answer` phase.
    stamp: Option<AnswerStamp>,
    /// The measured load that ends the `traffic` phase (below it for a leave, at or
    /// above it for a return).
    traffic: Option<f64>,
}

/// The event of `p` published at `published` (pure: the table test's subject).
pub(super) fn finish(
    p: &Pending,
    region: &PlanRegion,
    published: Instant,
    at: u64,
) -> FailoverEvent {
    let secs = |t: Instant| t.saturating_duration_since(p.started).as_secs_f64();
    let (detect, publish) = (secs(p.changed), secs(published));
    let full = f64::from(region.max_ttl);
    let cache_bound = match p.direction {
        // Answers before the first failing sample carried the full TTL; the ones after
        // it at most the cap the last view before the change put on them.
        Direction::Leave => {
            let capped = p.cap_before.map_or(full, |c| f64::from(c).min(full));
            full.max(publish + capped)
        }
        // Clients holding another region's answer come back when it expires.
        Direction::Return => publish + full,
    };
    let target = region.thresholds.failover_target.as_secs_f64();
    FailoverEvent {
        region: region.name.clone(),
        direction: p.direction,
        cause: p.cause.to_string(),
        at,
        phases: Phases {
            detect,
            publish,
            cache_bound,
            answer: None,
            traffic: None,
        },
        target,
        over_target: p.direction == Direction::Leave && cache_bound > target,
    }
}

#[derive(Default)]
pub(super) struct Failovers {
    kept: BTreeMap<String, VecDeque<FailoverEvent>>,
    awaiting: Vec<Awaiting>,
    /// By region: its measured load before its last leave (what a return rises back to).
    levels: HashMap<String, f64>,
}

impl Failovers {
    /// The events a state file kept, for regions still in the plan (a hand-edited file
    /// is held to the same bounds: at most the last few per region, finite phases).
    pub(super) fn restore(
        events: &[FailoverEvent],
        plan: &crate::health::plan::HealthPlan,
    ) -> Failovers {
        let mut f = Failovers::default();
        for e in events {
            let finite = [
                e.phases.detect,
                e.phases.publish,
                e.phases.cache_bound,
                e.target,
            ]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0);
            if !finite || plan.region(&e.region).is_none() {
                continue;
            }
            let list = f.kept.entry(e.region.clone()).or_default();
            if list.len() < FAILOVERS_PER_REGION {
                list.push_back(e.clone());
            }
        }
        f
    }

    /// Records `e`, published in the view whose answers `stamp` marks, and waits for its
    /// later phases (the first answer; with a measured load, the traffic moving).
    pub(super) fn record_awaiting(
        &mut self,
        metrics: &Metrics,
        e: FailoverEvent,
        p: &Pending,
        stamp: AnswerStamp,
    ) {
        let traffic = match p.direction {
            Direction::Leave => p.level.filter(|l| *l > 0.0).map(|l| {
                self.levels.insert(e.region.clone(), l);
                l * TRAFFIC_GONE
            }),
            Direction::Return => self.levels.get(&e.region).map(|l| l * TRAFFIC_BACK),
        };
        // A newer event of the region ends the wait for the older one's traffic.
        for a in self.awaiting.iter_mut().filter(|a| a.region == e.region) {
            a.traffic = None;
        }
        self.awaiting.push(Awaiting {
            region: e.region.clone(),
            at: e.at,
            direction: e.direction,
            started: p.started,
            published: e.phases.publish,
            stamp: Some(stamp),
            traffic,
        });
        self.record(metrics, e);
    }

    /// Ends the `answer` phase of events whose view (or a later one sharing its stamp,
    /// published before any query came) has answered. Returns whether an event changed.
    pub(super) fn poll_answers(&mut self, metrics: &Metrics) -> bool {
        let mut done = Vec::new();
        for (i, a) in self.awaiting.iter_mut().enumerate() {
            let Some(stamp) = &a.stamp else { continue };
            if let Some(t) = stamp.get() {
                let secs = Instant::from_std(t)
                    .saturating_duration_since(a.started)
                    .as_secs_f64()
                    .max(a.published);
                a.stamp = None;
                done.push((i, secs));
            }
        }
        let changed = !done.is_empty();
        for (i, secs) in done {
            let Some(a) = self.awaiting.get(i) else {
                continue;
            };
            let (region, at, direction) = (a.region.clone(), a.at, a.direction);
            if let Some(e) = self.event_mut(&region, at, direction) {
                e.phases.answer = Some(secs);
                metrics
                    .failover_phase
                    .with_label_values(&["answer"])
                    .observe(secs);
            }
        }
        self.prune();
        changed
    }

    /// A measured load of `region`: ends the `traffic` phase of its event when the load
    /// crossed its mark. Returns whether an event changed.
    pub(super) fn observe_load(
        &mut self,
        metrics: &Metrics,
        region: &str,
        value: f64,
        now: Instant,
    ) -> bool {
        let mut done = Vec::new();
        for a in self.awaiting.iter_mut().filter(|a| a.region == region) {
            let Some(mark) = a.traffic else { continue };
            let crossed = match a.direction {
                Direction::Leave => value < mark,
                Direction::Return => value >= mark,
            };
            if crossed {
                a.traffic = None;
                done.push((
                    a.at,
                    a.direction,
                    now.saturating_duration_since(a.started).as_secs_f64(),
                ));
            }
        }
        let changed = !done.is_empty();
        for (at, direction, secs) in done {
            if let Some(e) = self.event_mut(region, at, direction) {
                e.phases.traffic = Some(secs);
                metrics
                    .failover_phase
                    .with_label_values(&["traffic"])
                    .observe(secs);
            }
        }
        self.prune();
        changed
    }

    fn event_mut(
        &mut self,
        region: &str,
        at: u64,
        direction: Direction,
    ) -> Option<&mut FailoverEvent> {
        self.kept
            .get_mut(region)?
            .iter_mut()
            .find(|e| e.at == at && e.direction == direction)
    }

    /// Forgets waits that are over, past [`AWAIT_LIMIT`], or whose event is gone.
    fn prune(&mut self) {
        let now = Instant::now();
        let kept = &self.kept;
        self.awaiting.retain(|a| {
            (a.stamp.is_some() || a.traffic.is_some())
                && now.saturating_duration_since(a.started) < AWAIT_LIMIT
                && kept
                    .get(&a.region)
                    .is_some_and(|l| l.iter().any(|e| e.at == a.at && e.direction == a.direction))
        });
    }

    pub(super) fn record(&mut self, metrics: &Metrics, e: FailoverEvent) {
        for (phase, v) in [
            ("detect", e.phases.detect),
            ("publish", e.phases.publish),
            ("cache_bound", e.phases.cache_bound),
        ] {
            metrics
                .failover_phase
                .with_label_values(&[phase])
                .observe(v);
        }
        let direction = match e.direction {
            Direction::Leave => "leave",
            Direction::Return => "return",
        };
        metrics
            .failovers
            .with_label_values(&[e.region.as_str(), direction])
            .inc();
        if e.over_target {
            metrics
                .failover_slo_breaches
                .with_label_values(&[e.region.as_str()])
                .inc();
            warn!(
                region = e.region,
                direction,
                cache_bound = e.phases.cache_bound,
                target = e.target,
                "failover over target: clients may hold the region past its failover_target"
            );
        } else {
            info!(
                region = e.region,
                direction,
                detect = e.phases.detect,
                publish = e.phases.publish,
                cache_bound = e.phases.cache_bound,
                target = e.target,
                "failover"
            );
        }
        let list = self.kept.entry(e.region.clone()).or_default();
        list.push_front(e);
        list.truncate(FAILOVERS_PER_REGION);
    }

    /// Every region's, newest first.
    pub(super) fn all(&self) -> Vec<FailoverEvent> {
        let mut out: Vec<FailoverEvent> = self.kept.values().flatten().cloned().collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.at));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::{MinUp, Thresholds};

    fn region(max_ttl: u32, target: u64) -> PlanRegion {
        PlanRegion {
            name: "eu".into(),
            id: 0,
            endpoints: vec![],
            thresholds: Thresholds {
                failover_target: Duration::from_secs(target),
                ..Thresholds::default_preset()
            },
            min_up: MinUp::Count(1),
            policies: String::new(),
            capacity: None,
            failback: None,
            load: None,
            addresses: vec![],
            max_ttl,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn phases_from_the_first_sample() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let pending = |direction, cap_before, changed, cause| Pending {
            region: 0,
            direction,
            cause,
            started: t0,
            changed: ms(changed),
            cap_before,
            level: None,
        };
        // (pending, max_ttl, target, published ms) → (detect, publish, cache bound, over)
        let cases = [
            // Two failures 1 s apart; answers before the first carried TTL 30.
            (
                pending(Direction::Leave, Some(1), 1000, "consecutive_failures"),
                30,
                60,
                1002,
                (1.0, 1.002, 30.0, false),
            ),
            // A short TTL: the capped answers given up to the publication bound it.
            (
                pending(Direction::Leave, Some(2), 1000, "consecutive_failures"),
                1,
                60,
                1500,
                (1.0, 1.5, 2.5, false),
            ),
            // A TTL past the target; no cap: the last answer before the publication
            // carried the full TTL.
            (
                pending(Direction::Leave, None, 2000, "error_rate"),
                90,
                60,
                2000,
                (2.0, 2.0, 92.0, true),
            ),
            // A return: clients holding the other region come back within one TTL.
            (
                pending(Direction::Return, None, 5000, "recovered"),
                30,
                60,
                5001,
                (5.0, 5.001, 35.001, false),
            ),
        ];
        for (p, ttl, target, published, (detect, publish, bound, over)) in cases {
            let e = finish(&p, &region(ttl, target), ms(published), 0);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
            assert!(close(e.phases.detect, detect), "{e:?}");
            assert!(close(e.phases.publish, publish), "{e:?}");
            assert!(close(e.phases.cache_bound, bound), "{e:?}");
            assert_eq!(e.over_target, over, "{e:?}");
            assert!(
                e.phases.detect <= e.phases.publish && e.phases.publish <= e.phases.cache_bound
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_went_backwards_gives_no_negative_phase() {
        let t0 = Instant::now();
        let p = Pending {
            region: 0,
            direction: Direction::Leave,
            cause: "override_set",
            started: t0 + Duration::from_secs(5),
            changed: t0,
            cap_before: None,
            level: None,
        };
        let e = finish(&p, &region(30, 60), t0, 0);
        assert_eq!((e.phases.detect, e.phases.publish), (0.0, 0.0));
    }
}
