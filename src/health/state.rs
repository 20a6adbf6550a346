//! Per-endpoint health: a sliding window of probe results → signals → a state machine
//! with separate fail and recover thresholds (hysteresis) and a cooldown.
//!
//! ```text
//!            fail: error rate ≥ fail_error_rate (window) | latency ≥ fail_latency
//!                  | fail_consecutive failures                      (never held back)
//!   ┌────┐ ──────────────────────────────────────────────────────────────► ┌──────┐
//!   │ Up │ ◄──── recover: error rate ≤ recover_error_rate & latency ≤      │ Down │
//!   └────┘       recover_latency & recover_consecutive successes           └──────┘
//!    ▲ │         & cooldown elapsed since Down                                ▲
//!    │ ▼ latency ≥ degraded_latency (optional)                               │ fail
//!   ┌──────────┐ ─────────────────────────────────────────────────────────────┘
//!   │ Degraded │  kept in answers, ranked after Up regions
//!   └──────────┘
//! ```
//!
//! Everything here is pure: time is passed in, nothing is read from a clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::cause::Cause;
pub use super::model::Thresholds;
use super::view::Effective;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub ok: bool,
    pub latency: Duration,
}

/// What the window says about recent probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    pub samples: usize,
    pub error_rate: f64,
    /// The chosen percentile over all probes in the window (a timeout counts at its
    /// full duration), `None` with no samples.
    pub latency: Option<Duration>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

fn percentile(sorted: &[Duration], p: u8) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest-rank method.
    let rank = ((f64::from(p) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Window {
    pub fn push(&mut self, s: Sample, capacity: usize) {
        if s.ok {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
        }
        self.samples.push_back(s);
        while self.samples.len() > capacity.max(1) {
            self.samples.pop_front();
        }
    }

    pub fn signals(&self, percentile_of: u8) -> Signals {
        let n = self.samples.len();
        let errors = self.samples.iter().filter(|s| !s.ok).count();
        let mut lat: Vec<Duration> = self.samples.iter().map(|s| s.latency).collect();
        lat.sort_unstable();
        Signals {
            samples: n,
            error_rate: if n == 0 {
                0.0
            } else {
                errors as f64 / n as f64
            },
            latency: percentile(&lat, percentile_of),
            p50: percentile(&lat, 50),
            p99: percentile(&lat, 99),
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Degraded,
    /// Down since `since`; `held_logged` remembers that a held-back recovery was logged.
    Down {
        since: Instant,
        held_logged: bool,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down { .. } => "down",
        }
    }

    pub fn is_down(&self) -> bool {
        matches!(self, State::Down { .. })
    }

    /// The measured state as aggregation and peers see it (no cooldown detail).
    pub fn effective(&self) -> Effective {
        match self {
            State::Up => Effective::Up,
            State::Degraded => Effective::Degraded,
            State::Down { .. } => Effective::Down,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
    /// The rule that fired, with the numbers.
    pub cause: Cause,
    /// Recovery conditions are met but the cooldown holds the endpoint down.
    pub cooldown_held: bool,
}

fn fail_cause(s: &Signals, t: &Thresholds) -> Option<Cause> {
    if s.consecutive_failures >= t.fail_consecutive {
        return Some(Cause::ConsecutiveFailures {
            count: s.consecutive_failures,
            threshold: t.fail_consecutive,
        });
    }
    if s.samples >= t.min_samples.min(t.window) && s.error_rate >= t.fail_error_rate {
        return Some(Cause::ErrorRate {
            rate: s.error_rate,
            threshold: t.fail_error_rate,
            samples: s.samples,
        });
    }
    if let Some(l) = s.latency
        && s.samples >= t.min_samples.min(t.window)
        && l >= t.fail_latency
    {
        return Some(Cause::Latency {
            percentile: t.latency_percentile,
            latency: l,
            threshold: t.fail_latency,
        });
    }
    None
}

fn recovered(s: &Signals, t: &Thresholds) -> bool {
    s.consecutive_successes >= t.recover_consecutive
        && s.error_rate <= t.recover_error_rate
        && s.latency.is_some_and(|l| l <= t.recover_latency)
}

/// The transition function: the next state given the signals at `now`.
pub fn observe(
    state: State,
    s: &Signals,
    t: &Thresholds,
    now: Instant,
) -> (State, Option<Transition>) {
    let to = |from: State, next: State, cause: Cause, held: bool| {
        (
            next,
            Some(Transition {
                from: from.name(),
                to: next.name(),
                cause,
                cooldown_held: held,
            }),
        )
    };
    match state {
        State::Up | State::Degraded => {
            if let Some(cause) = fail_cause(s, t) {
                return to(
                    state,
                    State::Down {
                        since: now,
                        held_logged: false,
                    },
                    cause,
                    false,
                );
            }
            let slow = t
                .degraded_latency
                .zip(s.latency)
                .is_some_and(|(d, l)| l >= d);
            match (state, slow) {
                (State::Up, true) => to(
                    state,
                    State::Degraded,
                    Cause::Degraded {
                        percentile: t.latency_percentile,
                        latency: s.latency.unwrap_or_default(),
                        threshold: t.degraded_latency.unwrap_or_default(),
                    },
                    false,
                ),
                (State::Degraded, false) => to(state, State::Up, Cause::LatencyRecovered, false),
                _ => (state, None),
            }
        }
        State::Down { since, held_logged } => {
            if !recovered(s, t) {
                return (state, None);
            }
            let elapsed = now.saturating_duration_since(since);
            if elapsed < t.cooldown {
                if held_logged {
                    return (state, None);
                }
                let left = t.cooldown - elapsed;
                return (
                    State::Down {
                        since,
                        held_logged: true,
                    },
                    Some(Transition {
                        from: "down",
                        to: "down",
                        cause: Cause::CooldownHeld {
                            successes: s.consecutive_successes,
                            error_rate: s.error_rate,
                            left,
                        },
                        cooldown_held: true,
                    }),
                );
            }
            let next = if t
                .degraded_latency
                .zip(s.latency)
                .is_some_and(|(d, l)| l >= d)
            {
                State::Degraded
            } else {
                State::Up
            };
            to(
                state,
                next,
                Cause::Recovered {
                    successes: s.consecutive_successes,
                    error_rate: s.error_rate,
                    threshold: t.recover_error_rate,
                    percentile: t.latency_percentile,
                    latency: s.latency.unwrap_or_default(),
                    recover_latency: t.recover_latency,
                    down_for: elapsed,
                },
                false,
            )
        }
    }
}

/// How long until this endpoint could change state, for health-aware TTLs (gdnsd
/// shortens TTLs near a state change the same way): an Up endpoint that has started
/// failing could be down after the remaining consecutive failures; a Down endpoint whose
/// probes pass could come back when its cooldown ends.
pub fn time_to_change(
    state: State,
    s: &Signals,
    t: &Thresholds,
    interval: Duration,
    now: Instant,
) -> Option<Duration> {
    match state {
        State::Up | State::Degraded if s.consecutive_failures > 0 => {
            let left = t
                .fail_consecutive
                .saturating_sub(s.consecutive_failures)
                .max(1);
            Some(interval * left)
        }
        State::Down { since, .. } if s.consecutive_successes > 0 => {
            let cool = t
                .cooldown
                .saturating_sub(now.saturating_duration_since(since));
            let probes = interval
                * t.recover_consecutive
                    .saturating_sub(s.consecutive_successes);
            Some(cool.max(probes))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        ok: true,
        latency: Duration::from_millis(20),
    };
    const FAIL: Sample = Sample {
        ok: false,
        latency: Duration::from_secs(1),
    };
    const SLOW: Sample = Sample {
        ok: true,
        latency: Duration::from_secs(3),
    };

    /// Feeds `samples` one per `step`, returning the state after each.
    fn run(t: &Thresholds, start: State, samples: &[Sample], step: Duration) -> Vec<&'static str> {
        let mut w = Window::default();
        let mut state = start;
        let mut now = Instant::now();
        let mut out = Vec::new();
        for s in samples {
            now += step;
            w.push(*s, t.window);
            state = observe(state, &w.signals(t.latency_percentile), t, now).0;
            out.push(state.name());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_take_an_endpoint_down_without_delay() {
        let t = Thresholds::default_preset();
        // Six fine probes keep the error rate low (3 of 9): the consecutive rule fires.
        let states = run(
            &t,
            State::Up,
            &[OK, OK, OK, OK, OK, OK, FAIL, FAIL, FAIL],
            Duration::from_secs(1),
        );
        assert_eq!(
            states,
            ["up", "up", "up", "up", "up", "up", "up", "up", "down"]
        );
        let states = run(
            &Thresholds::aggressive(),
            State::Up,
            &[OK, FAIL, FAIL],
            Duration::from_secs(1),
        );
        assert_eq!(states, ["up", "up", "down"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_failing_every_other_probe_goes_down_on_error_rate() {
        let t = Thresholds::default_preset();
        let states = run(
            &t,
            State::Up,
            &[OK, FAIL, OK, FAIL, OK, FAIL],
            Duration::from_secs(2),
        );
        // Never 3 in a row, but half the probes fail: down once the window has 4.
        assert_eq!(states, ["up", "up", "up", "down", "down", "down"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_endpoint_does_not_come_back_until_it_is_well_and_cooled_down() {
        let t = Thresholds {
            cooldown: Duration::from_secs(60),
            ..Thresholds::default_preset()
        };
        let mut samples = vec![FAIL, FAIL, FAIL];
        // Flapping: never recovers while it keeps failing now and then.
        samples.extend([OK, OK, FAIL, OK, OK, FAIL, OK, OK, OK]);
        // Then well: the window fills with successes (error rate <= 10 %).
        samples.extend([OK; 12]);
        let states = run(&t, State::Up, &samples, Duration::from_secs(10));
        let first_up = states
            .iter()
            .skip(3)
            .position(|s| *s == "up")
            .map(|i| i + 3);
        // Down at the third probe. Recovery needs an error rate of at most 10 % over the
        // last 10 probes: the flapping failures at indices 5 and 8 keep it down until
        // index 15, when only the one at 8 is left in the window (and 60 s have passed).
        assert_eq!(states[2], "down");
        assert!(states[3..15].iter().all(|s| *s == "down"), "{states:?}");
        assert_eq!(first_up, Some(15), "{states:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_holds_a_recovered_endpoint_down_and_says_so_once() {
        let t = Thresholds {
            cooldown: Duration::from_secs(300),
            ..Thresholds::default_preset()
        };
        let start = Instant::now();
        let mut w = Window::default();
        for _ in 0..10 {
            w.push(OK, t.window);
        }
        let down = State::Down {
            since: start,
            held_logged: false,
        };
        let (s1, tr) = observe(down, &w.signals(90), &t, start + Duration::from_secs(60));
        let tr = tr.unwrap();
        assert!(tr.cooldown_held && tr.to == "down", "{tr:?}");
        let (s2, tr) = observe(s1, &w.signals(90), &t, start + Duration::from_secs(120));
        assert!(tr.is_none(), "logged once");
        let (s3, tr) = observe(s2, &w.signals(90), &t, start + Duration::from_secs(301));
        assert_eq!(s3, State::Up);
        assert_eq!(tr.unwrap().from, "down");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_endpoints_degrade_and_very_slow_ones_fail() {
        let t = Thresholds {
            degraded_latency: Some(Duration::from_millis(500)),
            ..Thresholds::aggressive()
        };
        let mut samples = vec![OK; 9];
        samples.push(Sample {
            ok: true,
            latency: Duration::from_millis(800),
        });
        let states = run(&t, State::Up, &samples, Duration::from_secs(1));
        assert_eq!(
            states.last(),
            Some(&"up"),
            "one slow probe in ten leaves p90 at 20 ms"
        );
        let states = run(
            &t,
            State::Up,
            &[
                OK,
                OK,
                OK,
                Sample {
                    ok: true,
                    latency: Duration::from_millis(800),
                },
            ],
            Duration::from_secs(1),
        );
        assert_eq!(
            states,
            ["up", "up", "up", "degraded"],
            "one in four is the p90"
        );
        let states = run(
            &t,
            State::Up,
            &[SLOW, SLOW, SLOW, SLOW],
            Duration::from_secs(1),
        );
        assert_eq!(
            states,
            ["degraded", "degraded", "degraded", "down"],
            "3 s >= fail_latency 2 s once the window has 4"
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut w = Window::default();
        for ms in [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000] {
            w.push(
                Sample {
                    ok: true,
                    latency: Duration::from_millis(ms),
                },
                10,
            );
        }
        let s = w.signals(90);
        assert_eq!(s.latency, Some(Duration::from_millis(90)));
        assert_eq!(s.p50, Some(Duration::from_millis(50)));
        assert_eq!(s.p99, Some(Duration::from_millis(1000)));
        w.push(
            Sample {
                ok: false,
                latency: Duration::from_secs(1),
            },
            10,
        );
        assert!((w.signals(90).error_rate - 0.1).abs() < 1e-9);
    }
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ttls_shrink_near_a_state_change() {
        let t = Thresholds::default_preset();
        let now = Instant::now();
        let interval = Duration::from_secs(2);
        let mut w = Window::default();
        w.push(
            Sample {
                ok: true,
                latency: Duration::from_millis(5),
            },
            t.window,
        );
        assert_eq!(
            time_to_change(State::Up, &w.signals(90), &t, interval, now),
            None,
            "steady: no cap"
        );
        w.push(
            Sample {
                ok: false,
                latency: Duration::from_secs(1),
            },
            t.window,
        );
        // One failure of three: two more probes could take it down.
        assert_eq!(
            time_to_change(State::Up, &w.signals(90), &t, interval, now),
            Some(Duration::from_secs(4))
        );
        let down = State::Down {
            since: now,
            held_logged: false,
        };
        w.push(
            Sample {
                ok: true,
                latency: Duration::from_millis(5),
            },
            t.window,
        );
        let later = now + Duration::from_secs(290);
        // Passing probes while down: back when the cooldown ends (10 s left).
        assert_eq!(
            time_to_change(down, &w.signals(90), &t, interval, later),
            Some(Duration::from_secs(10))
        );
    }
}
