//! Shedding at steady state: a region whose own clients (those ranking it first) bring
//! more than its capacity sends part of them to their next-ranked regions with room,
//! through the same stable split as a failover spill.
//!
//! With hysteresis: shedding starts when the region's own demand passes its capacity
//! and brings it down to [`LOW_MARK`] of it, and stops only when its own demand falls
//! below that mark. Going up the region runs to its capacity before anything moves;
//! once it sheds it keeps the headroom, and the share it keeps rises smoothly back to
//! all at the mark, so demand hovering around the capacity neither flaps the state
//! nor moves more clients than the change in demand.
//!
//! Only clients of `overflow: spill` policies are shed (`all_down` policies never
//! send a client past its ranking for capacity), and a region sheds only what the
//! others have room for ([`trim`]): moving load from one full region to another
//! helps nobody.

use super::split::{Client, Outcome, RegionIn, Share};

/// Where a shedding region brings its load, and below which (own demand) it stops.
pub const LOW_MARK: f64 = 0.9;

/// A region's own demand: the load of the clients ranking it first, by whether their
/// policy may be shed (`spill`) or not (`fixed`), plus load outside the model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Own {
    pub spill: f64,
    pub fixed: f64,
    pub other: f64,
}

impl Own {
    pub fn total(&self) -> f64 {
        self.spill + self.fixed + self.other
    }
}

/// Each region's own demand (by clients' first-ranked region).
pub fn own(regions: &[RegionIn], clients: &[Client]) -> Vec<Own> {
    let mut out: Vec<Own> = regions
        .iter()
        .map(|r| Own {
            other: r.other_load,
            ..Own::default()
        })
        .collect();
    for c in clients {
        let Some(o) = c.list.first().and_then(|&f| out.get_mut(usize::from(f))) else {
            continue;
        };
        if c.spill {
            o.spill += c.weight;
        } else {
            o.fixed += c.weight;
        }
    }
    out
}

/// The decision for one region: whether it is shedding now (`was`: at the last
/// decision) and the share of its `spill` clients it keeps. A region without a
/// capacity never sheds; one that takes no part for now (down, drained, ramping:
/// `eligible` false) sheds nothing and keeps its state until it takes part again (a
/// region going down while shedding has not stopped shedding: no event says so).
pub fn decide(capacity: Option<f64>, own: Own, was: bool, eligible: bool) -> (bool, Share) {
    let Some(cap) = capacity.filter(|c| *c > 0.0) else {
        return (false, Share::ALL);
    };
    if !eligible {
        return (was, Share::ALL);
    }
    let demand = own.total();
    let shedding = if was {
        demand > LOW_MARK * cap
    } else {
        demand > cap
    };
    if !shedding || own.spill <= 0.0 {
        return (shedding && own.spill > 0.0, Share::ALL);
    }
    let room = (LOW_MARK * cap - own.fixed - own.other).max(0.0);
    (true, Share::from_fraction(room / own.spill))
}

/// After a split with sheds: the load no region could take within capacity, handed
/// back to the shedding regions that sent it (in proportion to what each sheds), so a
/// region sheds only what the others have room for. Returns the raised shares, or
/// `None` when nothing overflowed.
pub fn trim(regions: &[RegionIn], own: &[Own], outcome: &Outcome) -> Option<Vec<Share>> {
    if outcome.overflow <= 0.0 {
        return None;
    }
    let shed_load = |r: &RegionIn, o: &Own| o.spill * (1.0 - r.shed.fraction());
    let total: f64 = regions.iter().zip(own).map(|(r, o)| shed_load(r, o)).sum();
    if total <= 0.0 {
        return None;
    }
    let back = outcome.overflow.min(total);
    Some(
        regions
            .iter()
            .zip(own)
            .map(|(r, o)| {
                let shed = shed_load(r, o);
                if shed <= 0.0 || o.spill <= 0.0 {
                    return r.shed;
                }
                let kept = o.spill - shed + back * shed / total;
                Share::from_fraction(kept / o.spill)
            })
            .collect(),
    )
}

/// The split with steady-state shedding: each region's shed decided from its own
/// demand (`was`: which regions were shedding), the split, and the sheds trimmed to
/// what found room. Sets `shed` and `accepts` on `regions`; returns the outcome and
/// which regions shed now.
pub fn split_shedding(
    regions: &mut [RegionIn],
    clients: &[Client],
    was: &[bool],
) -> (Outcome, Vec<bool>) {
    let owns = own(regions, clients);
    let mut shedding = Vec::with_capacity(regions.len());
    for (i, (r, o)) in regions.iter_mut().zip(&owns).enumerate() {
        let before = was.get(i).copied().unwrap_or(false);
        let (now, share) = decide(r.capacity, *o, before, r.keep == Share::ALL);
        r.shed = share;
        r.accepts = r.accepts && share == Share::ALL;
        shedding.push(now);
    }
    let out = super::split::split(regions, clients);
    let Some(raised) = trim(regions, &owns, &out) else {
        return (out, shedding);
    };
    for (r, share) in regions.iter_mut().zip(raised) {
        r.shed = share;
    }
    (super::split::split(regions, clients), shedding)
}

#[cfg(test)]
mod tests {
    use super::own;
    use super::*;
    use crate::traffic::split::{place, split};

    fn mk(spill: f64, fixed: f64, other: f64) -> Own {
        Own {
            spill,
            fixed,
            other,
        }
    }

    #[test]
    fn hysteresis_starts_above_capacity_and_stops_below_the_low_mark() {
        let cap = Some(1000.0);
        // (own demand, shedding before) → (shedding after, share kept)
        let cases: &[(f64, bool, bool, f64)] = &[
            (950.0, false, false, 1.0),            // under capacity: nothing moves
            (1000.0, false, false, 1.0),           // at capacity: still nothing
            (1100.0, false, true, 900.0 / 1100.0), // over: shed down to the mark
            (1100.0, true, true, 900.0 / 1100.0),
            (950.0, true, true, 900.0 / 950.0), // between the marks: still shedding
            (905.0, true, true, 900.0 / 905.0),
            (899.0, true, false, 1.0), // below the mark: stops
            (2000.0, true, true, 0.45),
        ];
        for &(demand, was, now, keep) in cases {
            let (s, share) = decide(cap, mk(demand, 0.0, 0.0), was, true);
            assert_eq!(s, now, "{demand} {was}");
            assert!(
                (share.fraction() - keep).abs() < 1e-6,
                "{demand} {was}: {} vs {keep}",
                share.fraction()
            );
        }
    }

    #[test]
    fn only_spill_clients_are_shed_and_nothing_without_a_capacity_or_a_part() {
        // 400 of 1200 are all_down clients: the 900 mark leaves 500 of the 800 others.
        let (s, share) = decide(Some(1000.0), mk(800.0, 400.0, 0.0), false, true);
        assert!(s && (share.fraction() - 500.0 / 800.0).abs() < 1e-6);
        // Load outside the model counts as fixed.
        let (_, share) = decide(Some(1000.0), mk(800.0, 0.0, 400.0), false, true);
        assert!((share.fraction() - 500.0 / 800.0).abs() < 1e-6);
        // Nothing sheddable: shedding cannot help, the share stays whole.
        assert_eq!(
            decide(Some(1000.0), mk(0.0, 2000.0, 0.0), false, true),
            (false, Share::ALL)
        );
        // Fixed load alone past the mark: every spill client goes.
        let (_, share) = decide(Some(1000.0), mk(100.0, 1000.0, 0.0), false, true);
        assert_eq!(share, Share::NONE);
        assert_eq!(
            decide(None, mk(1e9, 0.0, 0.0), true, true),
            (false, Share::ALL)
        );
        // Taking no part (down, drained): nothing shed, the state kept until it does.
        assert_eq!(
            decide(Some(10.0), mk(1e9, 0.0, 0.0), true, false),
            (true, Share::ALL)
        );
        assert_eq!(
            decide(Some(10.0), mk(1e9, 0.0, 0.0), false, false),
            (false, Share::ALL)
        );
    }

    fn clients(n: u64, weight: f64, list: &[u16], salt: u64) -> Vec<Client> {
        (0..n)
            .map(|i| Client {
                weight,
                subnet: crate::hash::splitmix64(i ^ (salt << 40)),
                list: list.to_vec(),
                spill: true,
                policy: 0,
            })
            .collect()
    }

    fn region(id: u32, capacity: f64, shed: Share) -> RegionIn {
        RegionIn {
            id,
            capacity: Some(capacity),
            keep: Share::ALL,
            shed,
            accepts: shed == Share::ALL,
            other_load: 0.0,
        }
    }

    #[test]
    fn a_shedding_region_sends_the_excess_to_its_clients_next_regions_with_room() {
        // eu: 1,500 req/s of own clients against 1,000 of capacity; half of them rank
        // us next, half ap; us has 200 of room, ap plenty.
        let mut cs = clients(750, 1.0, &[0, 1, 2], 1);
        cs.extend(clients(750, 1.0, &[0, 2, 1], 2));
        cs.extend(clients(800, 1.0, &[1, 0, 2], 3));
        let base = [
            region(1, 1000.0, Share::ALL),
            region(2, 1000.0, Share::ALL),
            region(3, 3000.0, Share::ALL),
        ];
        let owns = own(&base, &cs);
        let (shedding, share) = decide(Some(1000.0), owns[0], false, true);
        assert!(shedding);
        let regions = [region(1, 1000.0, share), base[1], base[2]];
        let out = split(&regions, &cs);
        let near = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol;
        assert!(near(out.load[0], 900.0, 40.0), "{:?}", out.load);
        assert!(
            near(out.load[1], 1000.0, 20.0),
            "us filled to capacity: {:?}",
            out.load
        );
        // ap: 300 shed its way, and the 100 us had no room for (their next is ap).
        assert!(near(out.load[2], 400.0, 40.0), "{:?}", out.load);
        assert!(
            trim(&regions, &owns, &out).is_none(),
            "everything found room"
        );
    }

    #[test]
    fn a_small_change_of_demand_moves_few_clients() {
        let cs = clients(10_000, 0.11, &[0, 1], 4); // 1,100 req/s on a 1,000 region
        let at = |scale: f64| -> Vec<Option<u16>> {
            let scaled: Vec<Client> = cs
                .iter()
                .cloned()
                .map(|c| Client {
                    weight: c.weight * scale,
                    ..c
                })
                .collect();
            let base = [region(1, 1000.0, Share::ALL), region(2, 1e9, Share::ALL)];
            let owns = own(&base, &scaled);
            let (_, share) = decide(Some(1000.0), owns[0], true, true);
            let regions = [region(1, 1000.0, share), base[1]];
            let out = split(&regions, &scaled);
            scaled
                .iter()
                .map(|c| place(&regions, &out.admit, c))
                .collect()
        };
        let (a, b) = (at(1.0), at(1.01));
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        // 1 % more demand moves about 1 % of the clients (0.9 % here), not a reshuffle.
        assert!(moved > 0 && moved < 200, "{moved} of 10,000 moved");
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x == y || (*x == Some(0) && *y == Some(1))),
            "only away from the shedding region"
        );
    }

    #[test]
    fn trimming_hands_back_what_nobody_had_room_for() {
        // Both regions full: eu sheds 600 but us has 100 of room.
        let mut cs = clients(1500, 1.0, &[0, 1], 5);
        cs.extend(clients(900, 1.0, &[1, 0], 6));
        let base = [region(1, 1000.0, Share::ALL), region(2, 1000.0, Share::ALL)];
        let owns = own(&base, &cs);
        let (_, share) = decide(Some(1000.0), owns[0], false, true);
        let regions = [region(1, 1000.0, share), base[1]];
        let out = split(&regions, &cs);
        assert!(out.overflow > 400.0, "{}", out.overflow);
        let raised = trim(&regions, &owns, &out).unwrap_or_default();
        let regions = [region(1, 1000.0, raised[0]), base[1]];
        let out = split(&regions, &cs);
        assert!(out.overflow < 30.0, "{}", out.overflow);
        assert!((out.load[0] - 1400.0).abs() < 40.0, "{:?}", out.load);
        assert!((out.load[1] - 1000.0).abs() < 40.0, "{:?}", out.load);
    }
}
