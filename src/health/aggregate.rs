//! Region health from its endpoints' states, and override precedence, as pure functions:
//! the checker calls them after every sample, the status page and `meridian query` read
//! the same results.
//!
//! Precedence, strongest first: a runtime override (admin API, kept in the state file),
//! an override written in the configuration, the region's Prometheus `metric:` veto,
//! then `MinUp` over the probed endpoints (up when enough are up, degraded when enough
//! still serve, else down).

use super::cause::Cause;
use super::model::MinUp;
use super::view::{Effective, Override};

/// One endpoint of a region as aggregation sees it: its effective state (endpoint
/// override applied) and whether it is the region's metric pseudo-endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub state: Effective,
    pub metric: bool,
    /// The addresses it serves (`Endpoint::serves`; 0: none in particular).
    pub serves: u64,
}

/// Every address of a region answered.
pub const ALL_ADDRESSES: u64 = u64::MAX;

/// The region's addresses that may be answered: those no endpoint serves, and those
/// served by at least one endpoint that is not down.
pub fn live_addresses(members: &[Member]) -> u64 {
    let (served, alive) =
        members
            .iter()
            .filter(|m| !m.metric)
            .fold((0u64, 0u64), |(served, alive), m| {
                let up = if m.state == Effective::Down {
                    0
                } else {
                    m.serves
                };
                (served | m.serves, alive | up)
            });
    !served | alive
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegionState {
    /// What the endpoints (and the metric) say.
    pub measured: Effective,
    /// What answers use: `measured` unless overridden.
    pub effective: Effective,
    pub r#override: Option<Override>,
    /// Probed endpoints (not the metric) serving, in all, and needed.
    pub serving: usize,
    pub total: usize,
    pub needed: usize,
    pub metric_veto: bool,
    /// The addresses answered (`live_addresses`; all of them under `force_up`).
    pub live: u64,
}

/// The endpoint's effective state: its override, else what was measured.
pub fn endpoint(measured: Effective, r#override: Option<&Override>) -> Effective {
    r#override.and_then(Override::effective).unwrap_or(measured)
}

/// Aggregates a region. `runtime` overrides take precedence over `config` ones.
pub fn region(
    members: &[Member],
    min_up: MinUp,
    runtime: Option<&Override>,
    config: Option<&Override>,
) -> RegionState {
    let metric_veto = members
        .iter()
        .any(|m| m.metric && m.state == Effective::Down);
    let probed = members.iter().filter(|m| !m.metric);
    let total = probed.clone().count();
    let up = probed.clone().filter(|m| m.state == Effective::Up).count();
    let serving = probed.filter(|m| m.state != Effective::Down).count();
    let needed = if total == 0 { 0 } else { min_up.needed(total) };
    let measured = if metric_veto {
        Effective::Down
    } else if total == 0 || up >= needed {
        Effective::Up
    } else if serving >= needed {
        Effective::Degraded
    } else {
        Effective::Down
    };
    let r#override = runtime.or(config).cloned();
    let forced = r#override.as_ref().and_then(Override::effective);
    RegionState {
        measured,
        effective: forced.unwrap_or(measured),
        // Forced up, the operator vouches for the region as a whole.
        live: if forced == Some(Effective::Up) {
            ALL_ADDRESSES
        } else {
            live_addresses(members)
        },
        r#override,
        serving,
        total,
        needed,
        metric_veto,
    }
}

/// Why the effective state changed from `prev` to `next`; `None` when it did not (or
/// there is no previous state to change from).
pub fn transition(prev: Option<&RegionState>, next: &RegionState) -> Option<Cause> {
    let prev = prev?;
    if prev.effective == next.effective {
        return None;
    }
    Some(match (&prev.r#override, &next.r#override) {
        (_, Some(o)) => Cause::OverrideSet {
            kind: o.kind,
            reason: o.reason.clone(),
        },
        (Some(_), None) => Cause::OverrideCleared,
        (None, None) if next.metric_veto => Cause::MetricVeto,
        (None, None) if prev.metric_veto => Cause::MetricCleared,
        (None, None) => Cause::Endpoints {
            serving: next.serving,
            total: next.total,
            needed: next.needed,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::view::OverrideKind;
    use Effective::{Degraded, Down, Up};

    fn ep(state: Effective) -> Member {
        Member {
            state,
            metric: false,
            serves: 0,
        }
    }

    fn metric(state: Effective) -> Member {
        Member {
            state,
            metric: true,
            serves: 0,
        }
    }

    fn serving(state: Effective, serves: u64) -> Member {
        Member {
            state,
            metric: false,
            serves,
        }
    }

    #[test]
    fn an_address_is_answered_while_one_endpoint_serving_it_is_not_down() {
        // Addresses 0, 1, 2; bit 2 is served by nobody.
        let table: &[(&[Member], u64)] = &[
            (&[ep(Up), ep(Down)], ALL_ADDRESSES),
            (&[serving(Up, 0b01), serving(Up, 0b10)], ALL_ADDRESSES),
            (&[serving(Up, 0b01), serving(Down, 0b10)], !0b10),
            (&[serving(Down, 0b01), serving(Down, 0b10)], !0b11),
            // Two endpoints for one address: either keeps it.
            (
                &[serving(Down, 0b01), serving(Degraded, 0b01)],
                ALL_ADDRESSES,
            ),
            (&[serving(Down, 0b01), serving(Down, 0b01)], !0b01),
            // An endpoint for both, one for the first only.
            (&[serving(Up, 0b11), serving(Down, 0b01)], ALL_ADDRESSES),
            (&[serving(Down, 0b11), serving(Up, 0b01)], !0b10),
            // The metric pseudo-endpoint serves nothing in particular.
            (&[serving(Up, 0b01), metric(Down)], ALL_ADDRESSES),
        ];
        for (i, (members, live)) in table.iter().enumerate() {
            assert_eq!(live_addresses(members), *live, "row {i}");
        }
        let forced = ovr(OverrideKind::ForceUp);
        let r = region(
            &[serving(Down, 0b01), serving(Up, 0b10)],
            MinUp::Count(1),
            Some(&forced),
            None,
        );
        assert_eq!(r.live, ALL_ADDRESSES, "force_up answers every address");
        let r = region(
            &[serving(Down, 0b01), serving(Up, 0b10)],
            MinUp::Count(1),
            None,
            None,
        );
        assert_eq!((r.effective, r.live), (Up, !0b01));
    }

    fn ovr(kind: OverrideKind) -> Override {
        Override {
            kind,
            reason: Some("test".into()),
            since: 0,
            fraction: None,
            until: None,
        }
    }

    #[test]
    fn min_up_metric_veto_and_overrides_decide_a_region_in_that_order() {
        let drain = ovr(OverrideKind::Drain);
        let up = ovr(OverrideKind::ForceUp);
        let down = ovr(OverrideKind::ForceDown);
        // (members, min_up, runtime, config) → (measured, effective, serving, needed)
        #[allow(clippy::type_complexity)]
        let table: &[(
            &[Member],
            MinUp,
            Option<&Override>,
            Option<&Override>,
            Effective,
            Effective,
            usize,
            usize,
        )] = &[
            (&[], MinUp::Count(1), None, None, Up, Up, 0, 0),
            (
                &[ep(Up), ep(Down)],
                MinUp::Count(1),
                None,
                None,
                Up,
                Up,
                1,
                1,
            ),
            (
                &[ep(Up), ep(Down)],
                MinUp::Count(2),
                None,
                None,
                Down,
                Down,
                1,
                2,
            ),
            (
                &[ep(Degraded), ep(Up)],
                MinUp::Count(2),
                None,
                None,
                Degraded,
                Degraded,
                2,
                2,
            ),
            (
                &[ep(Up), ep(Up), ep(Down)],
                MinUp::Fraction(0.5),
                None,
                None,
                Up,
                Up,
                2,
                2,
            ),
            (
                &[ep(Up), ep(Down), ep(Down)],
                MinUp::Fraction(0.5),
                None,
                None,
                Down,
                Down,
                1,
                2,
            ),
            // The metric vetoes whatever the probes say, and does not count as an endpoint.
            (
                &[ep(Up), metric(Down)],
                MinUp::Count(1),
                None,
                None,
                Down,
                Down,
                1,
                1,
            ),
            (
                &[metric(Down)],
                MinUp::Count(1),
                None,
                None,
                Down,
                Down,
                0,
                0,
            ),
            (
                &[ep(Up), metric(Up)],
                MinUp::Count(1),
                None,
                None,
                Up,
                Up,
                1,
                1,
            ),
            // Overrides: runtime over configuration over measurement.
            (
                &[ep(Up)],
                MinUp::Count(1),
                Some(&drain),
                None,
                Up,
                Down,
                1,
                1,
            ),
            (
                &[ep(Down)],
                MinUp::Count(1),
                Some(&up),
                Some(&down),
                Down,
                Up,
                0,
                1,
            ),
            (
                &[ep(Up)],
                MinUp::Count(1),
                None,
                Some(&down),
                Up,
                Down,
                1,
                1,
            ),
            (
                &[ep(Up), metric(Down)],
                MinUp::Count(1),
                Some(&up),
                None,
                Down,
                Up,
                1,
                1,
            ),
        ];
        for (i, (members, min_up, runtime, config, measured, effective, serving, needed)) in
            table.iter().enumerate()
        {
            let r = region(members, *min_up, *runtime, *config);
            assert_eq!(
                (r.measured, r.effective, r.serving, r.needed),
                (*measured, *effective, *serving, *needed),
                "row {i}: {r:?}"
            );
        }
    }

    #[test]
    fn a_region_transition_names_its_cause() {
        let state = |members: &[Member], runtime: Option<&Override>| {
            region(members, MinUp::Count(1), runtime, None)
        };
        let healthy = state(&[ep(Up), metric(Up)], None);
        let vetoed = state(&[ep(Up), metric(Down)], None);
        let dead = state(&[ep(Down), metric(Up)], None);
        let drained = state(&[ep(Up), metric(Up)], Some(&ovr(OverrideKind::Drain)));
        let label = |p: &RegionState, n: &RegionState| transition(Some(p), n).map(|c| c.label());
        assert_eq!(label(&healthy, &vetoed), Some("metric_veto"));
        assert_eq!(label(&vetoed, &healthy), Some("metric_cleared"));
        assert_eq!(label(&healthy, &dead), Some("endpoints"));
        assert_eq!(label(&dead, &healthy), Some("endpoints"));
        assert_eq!(label(&healthy, &drained), Some("override_set"));
        assert_eq!(label(&drained, &healthy), Some("override_cleared"));
        assert_eq!(label(&healthy, &healthy), None, "no change, no transition");
        assert_eq!(
            transition(None, &dead),
            None,
            "the first state is not a change"
        );
        assert_eq!(
            transition(Some(&healthy), &dead).map(|c| c.to_string()),
            Some("0 of 1 endpoints serving, 1 needed".into())
        );
    }
}
