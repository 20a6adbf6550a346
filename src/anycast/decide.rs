//! One prefix's route from one evaluation: a pure function of the last state, this
//! evaluation's health and the guards. `rise` healthy evaluations in a row announce,
//! `fall` unhealthy ones withdraw (or de-prefer); an operator's withdrawal and a stop
//! withdraw at once. Guards hold a route a withdrawal would otherwise take away:
//! - `LastAnnouncers`: with a cluster, fewer than `min_announcing` other live instances
//!   announce a `serving` prefix, so withdrawing would leave too few (or none) to carry
//!   it (a region prefix follows the shared view, which all instances agree on);
//! - `ChecksSuspect`: more than half the regions look down from here at once, which is
//!   likelier a fault of this instance's checks than of the regions;
//! - `Isolated`: cut off from the cluster but answering DNS itself, a serving prefix
//!   keeps what it had (no new announcement either: rise starts again afterwards).

use tokio::time::Instant;

use super::{Kind, OnUnhealthy};

/// What BGP is told about the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Withdrawn,
    Announced,
    /// Announced with a worse MED or a longer AS path (`on_unhealthy`).
    Depreferred,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Withdrawn => "withdrawn",
            Route::Announced => "announced",
            Route::Depreferred => "depreferred",
        }
    }

    /// Whether routers get the prefix from us at all.
    pub fn is_announced(self) -> bool {
        self != Route::Withdrawn
    }
}

/// Why a prefix's route is what it is: the label of
/// `meridian_anycast_transitions_total{reason}` and the status page's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Healthy, not yet `rise` evaluations in a row.
    Rising,
    Healthy,
    /// The first probe round is not done.
    NotReady,
    /// This instance did not answer a DNS query to itself.
    NoAnswer,
    /// The region is down in the shared view.
    RegionDown,
    /// The region is not in the policies loaded.
    UnknownRegion,
    /// Withdrawn by an operator (admin API).
    Operator,
    /// Held: withdrawing would leave fewer than `min_announcing` announcing.
    LastAnnouncers,
    /// Held: more than half the regions look down from this instance.
    ChecksSuspect,
    /// Held: cut off from the cluster while answering DNS.
    Isolated,
    /// Withdrawn for shutdown (`drain_on_stop`).
    Stopping,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Why::Rising => "rising",
            Why::Healthy => "healthy",
            Why::NotReady => "not_ready",
            Why::NoAnswer => "no_answer",
            Why::RegionDown => "region_down",
            Why::UnknownRegion => "unknown_region",
            Why::Operator => "operator",
            Why::LastAnnouncers => "last_announcers",
            Why::ChecksSuspect => "checks_suspect",
            Why::Isolated => "isolated",
            Why::Stopping => "stopping",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub rise: u32,
    pub fall: u32,
    pub on_unhealthy: OnUnhealthy,
    pub min_announcing: usize,
}

/// One evaluation's view of a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// `Err(why)`: unhealthy, with the cause (`NotReady`, `NoAnswer`, `RegionDown`, ...).
    pub health: Result<(), Why>,
    pub operator_withdrawn: bool,
    /// With a cluster and not isolated: how many other live instances announce it.
    pub others_announcing: Option<usize>,
    /// In a cluster, and cut off from every peer.
    pub isolated: bool,
    /// More than half the regions look down from here.
    pub checks_suspect: bool,
    pub stopping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub route: Route,
    pub why: Why,
    /// When `route` last changed.
    pub since: Instant,
    ok: u32,
    bad: u32,
}

impl State {
    /// A prefix at start: withdrawn until it has risen.
    pub fn start(now: Instant) -> State {
        State {
            route: Route::Withdrawn,
            why: Why::Rising,
            since: now,
            ok: 0,
            bad: 0,
        }
    }
}

/// The prefix's next state.
pub fn step(s: &State, kind: &Kind, i: &Inputs, p: &Params, now: Instant) -> State {
    let to = |route: Route, why: Why, ok: u32, bad: u32| State {
        route,
        why,
        since: if route == s.route { s.since } else { now },
        ok,
        bad,
    };
    if i.stopping {
        return to(Route::Withdrawn, Why::Stopping, 0, 0);
    }
    if i.operator_withdrawn {
        return to(Route::Withdrawn, Why::Operator, 0, 0);
    }
    match i.health {
        Ok(()) if i.isolated && *kind == Kind::Serving => to(s.route, Why::Isolated, 0, 0),
        Ok(()) => {
            let ok = s.ok.saturating_add(1);
            if s.route == Route::Announced || ok >= p.rise {
                to(Route::Announced, Why::Healthy, ok, 0)
            } else {
                // Still withdrawn (or de-preferred) until it has risen.
                to(s.route, Why::Rising, ok, 0)
            }
        }
        Err(why) => {
            let bad = s.bad.saturating_add(1);
            if !s.route.is_announced() || bad < p.fall {
                // Withdrawn stays so; an announced route waits for `fall`.
                let shown = if s.route.is_announced() { s.why } else { why };
                return to(s.route, shown, 0, bad);
            }
            if let OnUnhealthy::Med(_) | OnUnhealthy::Prepend(_) = p.on_unhealthy {
                return to(Route::Depreferred, why, 0, bad);
            }
            if i.checks_suspect && matches!(kind, Kind::Region(_)) {
                return to(s.route, Why::ChecksSuspect, 0, bad);
            }
            // Only an instance's own health is guarded: a region prefix follows the
            // shared (quorum) view, which every instance agrees on, so the last one to
            // withdraw would only attract clients to a region that is down.
            if *kind == Kind::Serving && i.others_announcing.is_some_and(|n| n < p.min_announcing) {
                return to(s.route, Why::LastAnnouncers, 0, bad);
            }
            to(Route::Withdrawn, why, 0, bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const P: Params = Params {
        rise: 3,
        fall: 2,
        on_unhealthy: OnUnhealthy::Withdraw,
        min_announcing: 1,
    };

    const OK: Inputs = Inputs {
        health: Ok(()),
        operator_withdrawn: false,
        others_announcing: None,
        isolated: false,
        checks_suspect: false,
        stopping: false,
    };

    fn bad(why: Why) -> Inputs {
        Inputs {
            health: Err(why),
            ..OK
        }
    }

    /// Runs `inputs` one evaluation a second from a fresh prefix; returns each route.
    fn run(kind: &Kind, p: &Params, inputs: &[Inputs]) -> Vec<(Route, Why)> {
        let t0 = Instant::now();
        let mut s = State::start(t0);
        inputs
            .iter()
            .enumerate()
            .map(|(n, i)| {
                s = step(&s, kind, i, p, t0 + Duration::from_secs(n as u64 + 1));
                (s.route, s.why)
            })
            .collect()
    }

    use Route::{Announced as A, Depreferred as D, Withdrawn as W};

    #[tokio::test(start_paused = true)]
    async fn the_table() {
        let region = Kind::Region("eu-west".into());
        let down = bad(Why::RegionDown);
        let last = |n| Inputs {
            others_announcing: Some(n),
            ..down
        };
        let sick = |others| Inputs {
            others_announcing: others,
            ..bad(Why::NoAnswer)
        };
        type Case<'a> = (&'a str, &'a Kind, Params, Vec<Inputs>, Vec<(Route, Why)>);
        let cases: Vec<Case> = vec![
            (
                "announced after rise healthy evaluations, not before",
                &Kind::Serving,
                P,
                vec![OK, OK, OK, OK],
                vec![
                    (W, Why::Rising),
                    (W, Why::Rising),
                    (A, Why::Healthy),
                    (A, Why::Healthy),
                ],
            ),
            (
                "withdrawn after fall unhealthy ones; one blip does nothing",
                &region,
                P,
                vec![OK, OK, OK, down, OK, down, down],
                vec![
                    (W, Why::Rising),
                    (W, Why::Rising),
                    (A, Why::Healthy),
                    (A, Why::Healthy),
                    (A, Why::Healthy),
                    (A, Why::Healthy),
                    (W, Why::RegionDown),
                ],
            ),
            (
                "back only after rise again: a flap does not re-announce",
                &Kind::Serving,
                Params {
                    rise: 2,
                    fall: 1,
                    ..P
                },
                vec![OK, OK, bad(Why::NoAnswer), OK, bad(Why::NoAnswer), OK, OK],
                vec![
                    (W, Why::Rising),
                    (A, Why::Healthy),
                    (W, Why::NoAnswer),
                    (W, Why::Rising),
                    (W, Why::NoAnswer),
                    (W, Why::Rising),
                    (A, Why::Healthy),
                ],
            ),
            (
                "never withdraws the last announcer; withdraws once another announces",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![OK, sick(Some(0)), sick(Some(0)), sick(Some(1))],
                vec![
                    (A, Why::Healthy),
                    (A, Why::LastAnnouncers),
                    (A, Why::LastAnnouncers),
                    (W, Why::NoAnswer),
                ],
            ),
            (
                "min_announcing 2 holds while only one other announces",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    min_announcing: 2,
                    ..P
                },
                vec![OK, sick(Some(1)), sick(Some(2))],
                vec![
                    (A, Why::Healthy),
                    (A, Why::LastAnnouncers),
                    (W, Why::NoAnswer),
                ],
            ),
            (
                "a region prefix follows the shared view even from the last announcer",
                &region,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![OK, last(0)],
                vec![(A, Why::Healthy), (W, Why::RegionDown)],
            ),
            (
                "isolated, the others unknown: no guard for a serving prefix that does not answer",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![OK, sick(None)],
                vec![(A, Why::Healthy), (W, Why::NoAnswer)],
            ),
            (
                "more than half the regions down: region prefixes held, serving ones not",
                &region,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![
                    OK,
                    Inputs {
                        checks_suspect: true,
                        ..down
                    },
                ],
                vec![(A, Why::Healthy), (A, Why::ChecksSuspect)],
            ),
            (
                "checks suspect does not hold a serving prefix that does not answer",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![
                    OK,
                    Inputs {
                        checks_suspect: true,
                        ..bad(Why::NoAnswer)
                    },
                ],
                vec![(A, Why::Healthy), (W, Why::NoAnswer)],
            ),
            (
                "isolated and answering: keeps its route, announces nothing new",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![
                    Inputs {
                        isolated: true,
                        ..OK
                    },
                    OK,
                    Inputs {
                        isolated: true,
                        ..OK
                    },
                ],
                vec![(W, Why::Isolated), (A, Why::Healthy), (A, Why::Isolated)],
            ),
            (
                "isolated and not answering: withdrawn",
                &Kind::Serving,
                Params {
                    rise: 1,
                    fall: 1,
                    ..P
                },
                vec![
                    OK,
                    Inputs {
                        isolated: true,
                        ..bad(Why::NoAnswer)
                    },
                ],
                vec![(A, Why::Healthy), (W, Why::NoAnswer)],
            ),
            (
                "de-preferred instead of withdrawn, no guard needed; back when healthy",
                &region,
                Params {
                    rise: 1,
                    fall: 1,
                    on_unhealthy: OnUnhealthy::Med(500),
                    ..P
                },
                vec![OK, last(0), OK],
                vec![(A, Why::Healthy), (D, Why::RegionDown), (A, Why::Healthy)],
            ),
            (
                "an operator's withdrawal beats every guard; healthy again rises",
                &region,
                Params {
                    rise: 2,
                    fall: 1,
                    ..P
                },
                vec![
                    OK,
                    OK,
                    Inputs {
                        operator_withdrawn: true,
                        others_announcing: Some(0),
                        ..OK
                    },
                    OK,
                    OK,
                ],
                vec![
                    (W, Why::Rising),
                    (A, Why::Healthy),
                    (W, Why::Operator),
                    (W, Why::Rising),
                    (A, Why::Healthy),
                ],
            ),
            (
                "stopping withdraws at once, even the last announcer",
                &Kind::Serving,
                Params { rise: 1, ..P },
                vec![
                    OK,
                    Inputs {
                        stopping: true,
                        others_announcing: Some(0),
                        ..OK
                    },
                ],
                vec![(A, Why::Healthy), (W, Why::Stopping)],
            ),
            (
                "never announced while unhealthy, whatever the guards",
                &region,
                P,
                vec![
                    last(0),
                    Inputs {
                        checks_suspect: true,
                        ..down
                    },
                ],
                vec![(W, Why::RegionDown), (W, Why::RegionDown)],
            ),
        ];
        for (name, kind, p, inputs, want) in cases {
            assert_eq!(run(kind, &p, &inputs), want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn since_moves_only_with_the_route() {
        let t0 = Instant::now();
        let p = Params {
            rise: 1,
            fall: 2,
            ..P
        };
        let s = step(
            &State::start(t0),
            &Kind::Serving,
            &OK,
            &p,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(s.since, t0 + Duration::from_secs(1));
        let s2 = step(
            &s,
            &Kind::Serving,
            &bad(Why::NoAnswer),
            &p,
            t0 + Duration::from_secs(2),
        );
        assert_eq!((s2.route, s2.since), (Route::Announced, s.since));
        let s3 = step(
            &s2,
            &Kind::Serving,
            &bad(Why::NoAnswer),
            &p,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(
            (s3.route, s3.since),
            (Route::Withdrawn, t0 + Duration::from_secs(3))
        );
    }
}
