//! The split: which share of the clients a region keeps and admits when some region is
//! wholly or partly out of the answers, so that displaced clients fill the next-best
//! regions up to their spare capacity, in each client's own rank order, before any
//! region is pushed past its capacity.
//!
//! Pure: clients (a weight, a stable hash and a ranked list each), capacities and how
//! much of its own clients each region keeps in; per-region admission fractions and the
//! loads they give out. The same function runs in the server (on the population
//! modelled from the GeoIP database, whenever health changes) and in `meridian
//! simulate`, and the query path applies its result with [`Share::admits`] on the
//! client's own hash, so the model and the answers agree client by client.

use crate::hash::splitmix64 as splitmix;

/// A fraction of clients as a threshold on a 32-bit hash bucket: `ALL` admits every
/// client, `NONE` none. Kept as an integer so the query path compares, never divides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(pub u32);

impl Share {
    pub const ALL: Share = Share(u32::MAX);
    pub const NONE: Share = Share(0);

    pub fn from_fraction(f: f64) -> Share {
        if f.is_nan() || f <= 0.0 {
            Share::NONE
        } else if f >= 1.0 {
            Share::ALL
        } else {
            Share((f * f64::from(u32::MAX)) as u32)
        }
    }

    pub fn fraction(self) -> f64 {
        if self == Share::ALL {
            1.0
        } else {
            f64::from(self.0) / f64::from(u32::MAX)
        }
    }

    /// Whether a client in `bucket` (see [`bucket`]) is inside this share.
    #[inline]
    pub fn admits(self, bucket: u32) -> bool {
        self == Share::ALL || bucket < self.0
    }
}

/// A client subnet's bucket at one region: independent per region (a client turned away
/// by one region is not thereby turned away by the next) and stable, so a client keeps
/// its region while the shares hold and a small change of a share moves few clients.
#[inline]
pub fn bucket(subnet: u64, region_id: u32) -> u32 {
    (splitmix(subnet ^ u64::from(region_id).wrapping_mul(0x9FB2_1C65_1E98_DF25)) >> 32) as u32
}

/// A region as the split sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionIn {
    /// Stable id (the health view's), which the buckets are drawn for.
    pub id: u32,
    /// Requests/s it can serve; `None`: unlimited.
    pub capacity: Option<f64>,
    /// The share of the clients ranking it first that it keeps: `NONE` when down or
    /// wholly drained, less than `ALL` when partly drained or ramping back.
    pub keep: Share,
    /// The share of its clients of `overflow: spill` policies it keeps while shedding
    /// load past its capacity (`shed`): `ALL` when not shedding.
    pub shed: Share,
    /// Whether it takes displaced clients (up, and neither drained, ramping nor
    /// shedding).
    pub accepts: bool,
    /// Load not carried by the modelled clients (requests/s), e.g. a measured load above
    /// what the model accounts for.
    pub other_load: f64,
}

impl RegionIn {
    /// The share of its own clients like `c` it keeps: a shed applies to the clients of
    /// `overflow: spill` policies only (`all_down` ones are never shed).
    #[inline]
    pub fn keeps(&self, c: &Client) -> Share {
        if c.spill {
            self.keep.min(self.shed)
        } else {
            self.keep
        }
    }
}

/// A modelled client: its requests/s, its subnet hash, and its ranked regions (indexes
/// into the regions given to [`split`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub weight: f64,
    pub subnet: u64,
    pub list: Vec<u16>,
    /// Its policy's `overflow`: past every capacity keep spilling by rank (`true`), or
    /// go unserved (`all_down`).
    pub spill: bool,
    /// Its policy (an index the caller gives meaning to: `demand::PolicyDemand`s).
    pub policy: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// By region: the share of displaced clients reaching it that it admits.
    pub admit: Vec<Share>,
    /// By region: the load it gets (requests/s), overflow included.
    pub load: Vec<f64>,
    /// (from, to, requests/s): displaced clients' load by the region they rank first and
    /// the one that took them.
    pub flows: Vec<(u16, u16, f64)>,
    /// Load no region could take within capacity (requests/s).
    pub overflow: f64,
    /// By region: displaced load it admitted, and overflow load sent to it past its
    /// capacity (`overflow: spill`).
    pub admitted_in: Vec<f64>,
    pub overflow_in: Vec<f64>,
}

/// Where a client goes under `admit`: `Some(region)`, or `None` when every region on its
/// list is out or full (overflow). The query path makes the same walk.
pub fn place(regions: &[RegionIn], admit: &[Share], c: &Client) -> Option<u16> {
    let first = *c.list.first()?;
    let r = regions.get(usize::from(first))?;
    if r.keeps(c).admits(bucket(c.subnet, r.id)) {
        return Some(first);
    }
    c.list.iter().skip(1).copied().find(|&i| {
        regions.get(usize::from(i)).is_some_and(|r| {
            r.accepts
                && admit
                    .get(usize::from(i))
                    .is_some_and(|a| a.admits(bucket(c.subnet, r.id)))
        })
    })
}

/// The first region on a client's list that takes displaced clients, capacity aside:
/// where an overflowing client goes with `overflow: spill`.
pub fn fallback(regions: &[RegionIn], c: &Client) -> Option<u16> {
    c.list
        .iter()
        .skip(1)
        .copied()
        .find(|&i| regions.get(usize::from(i)).is_some_and(|r| r.accepts))
}

/// Computes the admission shares: start admitting everyone, and while a region's load
/// with displaced clients exceeds its capacity, lower its share to what its spare
/// capacity takes, which sends the rest on down their lists. Shares only fall, so this
/// ends; a few rounds settle real inputs.
pub fn split(regions: &[RegionIn], clients: &[Client]) -> Outcome {
    let n = regions.len();
    let mut admit = vec![Share::ALL; n];
    let mut out = Outcome::default();
    let mut changed = true;
    for _ in 0..32 {
        out = evaluate(regions, &admit, clients);
        changed = false;
        for (i, r) in regions.iter().enumerate() {
            let (Some(cap), Some(&load), Some(&over)) =
                (r.capacity, out.load.get(i), out.overflow_in.get(i))
            else {
                continue;
            };
            // Overflow sent here past capacity is not admitted: it does not count.
            let inflow = out.admitted_in.get(i).copied().unwrap_or(0.0);
            let within = load - over;
            if inflow <= 0.0 || within <= cap * (1.0 + 1e-9) {
                continue;
            }
            let own = within - inflow;
            let room = (cap - own).max(0.0);
            if let Some(a) = admit.get_mut(i) {
                let next = Share::from_fraction(a.fraction() * room / inflow);
                if next < *a {
                    *a = next;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Out of rounds while still settling: the loads must be those of the final shares.
    if changed {
        out = evaluate(regions, &admit, clients);
    }
    out.admit = admit;
    out
}

/// Loads, flows and overflow under given shares.
pub fn evaluate(regions: &[RegionIn], admit: &[Share], clients: &[Client]) -> Outcome {
    let mut load: Vec<f64> = regions.iter().map(|r| r.other_load).collect();
    let mut admitted_in = vec![0.0; regions.len()];
    let mut overflow_in = vec![0.0; regions.len()];
    let mut flows: Vec<(u16, u16, f64)> = Vec::new();
    let mut overflow = 0.0;
    for c in clients {
        let Some(&first) = c.list.first() else {
            continue;
        };
        let (to, over) = match place(regions, admit, c) {
            Some(to) => (Some(to), false),
            None => {
                overflow += c.weight;
                if c.spill {
                    (fallback(regions, c), true)
                } else {
                    (None, true)
                }
            }
        };
        let Some(to) = to else { continue };
        if let Some(l) = load.get_mut(usize::from(to)) {
            *l += c.weight;
        }
        let into = if over {
            &mut overflow_in
        } else {
            &mut admitted_in
        };
        if to != first
            && let Some(l) = into.get_mut(usize::from(to))
        {
            *l += c.weight;
        }
        if to != first {
            match flows.iter_mut().find(|f| f.0 == first && f.1 == to) {
                Some(f) => f.2 += c.weight,
                None => flows.push((first, to, c.weight)),
            }
        }
    }
    flows.sort_by_key(|f| (f.0, f.1));
    Outcome {
        admit: admit.to_vec(),
        load,
        flows,
        overflow,
        admitted_in,
        overflow_in,
    }
}

/// The client subnet a share is drawn for: /24 for IPv4, /56 for IPv6 (as weighted
/// answers), so the ECS scope of a split answer is never wider than that.
pub fn subnet_of(ip: std::net::IpAddr) -> (u64, u8) {
    match ip {
        std::net::IpAddr::V4(v4) => (u64::from(u32::from(v4) >> 8), 24),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u64::from(u32::from(v4) >> 8), 24),
            None => (((u128::from(v6) >> 72) as u64) | (1 << 63), 56),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u32, capacity: Option<f64>, keep: Share, accepts: bool) -> RegionIn {
        RegionIn {
            id,
            capacity,
            keep,
            shed: Share::ALL,
            accepts,
            other_load: 0.0,
        }
    }

    /// `n` clients of `weight` each ranking `list`.
    fn clients(n: u64, weight: f64, list: &[u16], salt: u64) -> Vec<Client> {
        (0..n)
            .map(|i| Client {
                weight,
                subnet: splitmix(i ^ (salt << 40)),
                list: list.to_vec(),
                spill: true,
                policy: 0,
            })
            .collect()
    }

    fn near(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn a_down_region_spills_to_the_next_by_rank_up_to_their_spare_capacity() {
        // eu (0) down with 3000 req/s of clients ranking eu, us, ap; us has 1000 spare,
        // ap 5000: us takes 1000, ap the other 2000, nothing overflows.
        let regions = [
            region(10, Some(4000.0), Share::NONE, false),
            region(11, Some(4000.0), Share::ALL, true),
            region(12, Some(8000.0), Share::ALL, true),
        ];
        let mut cs = clients(3000, 1.0, &[0, 1, 2], 1);
        cs.extend(clients(3000, 1.0, &[1, 0, 2], 2));
        cs.extend(clients(3000, 1.0, &[2, 1, 0], 3));
        let out = split(&regions, &cs);
        assert!(near(out.load[0], 0.0, 0.0));
        assert!(
            out.load[1] <= 4000.0 && out.load[1] > 3900.0,
            "{:?}",
            out.load
        );
        assert!(near(out.load[2], 3000.0 + (6000.0 - out.load[1]), 1e-6));
        assert!(near(out.overflow, 0.0, 0.0), "{}", out.overflow);
        let us_share = out.admit[1].fraction();
        assert!(near(us_share, 1000.0 / 3000.0, 0.05), "{us_share}");
        assert_eq!(out.admit[2], Share::ALL);
    }

    #[test]
    fn without_capacities_it_is_plain_failover_to_the_next() {
        let regions = [
            region(1, None, Share::NONE, false),
            region(2, None, Share::ALL, true),
            region(3, None, Share::ALL, true),
        ];
        let out = split(&regions, &clients(500, 2.0, &[0, 1, 2], 4));
        assert_eq!(out.load, vec![0.0, 1000.0, 0.0]);
        assert_eq!(out.flows, vec![(0, 1, 1000.0)]);
    }

    #[test]
    fn overflow_spills_past_capacity_or_is_counted_unserved() {
        // Both neighbours full already: the displaced load has nowhere within capacity.
        let regions = [
            region(1, Some(1000.0), Share::NONE, false),
            region(2, Some(1000.0), Share::ALL, true),
        ];
        let mut cs = clients(1000, 1.0, &[0, 1], 5);
        cs.extend(clients(1000, 1.0, &[1, 0], 6));
        let spill = split(&regions, &cs);
        assert!(near(spill.overflow, 1000.0, 0.0));
        assert!(
            near(spill.load[1], 2000.0, 0.0),
            "spill: past capacity by rank"
        );
        assert_eq!(spill.admit[1], Share::NONE);
        let strict: Vec<Client> = cs
            .iter()
            .cloned()
            .map(|c| Client { spill: false, ..c })
            .collect();
        let unserved = split(&regions, &strict);
        assert!(
            near(unserved.load[1], 1000.0, 0.0),
            "all_down: not over capacity"
        );
        assert!(near(unserved.overflow, 1000.0, 0.0));
    }

    #[test]
    fn a_partial_drain_moves_its_share_and_the_same_clients_keep_their_region() {
        let keep = Share::from_fraction(0.7);
        let regions = [
            region(1, None, keep, false),
            region(2, None, Share::ALL, true),
        ];
        let cs = clients(10_000, 1.0, &[0, 1], 7);
        let out = split(&regions, &cs);
        assert!(near(out.load[1], 3000.0, 150.0), "{:?}", out.load);
        // Stability: the same inputs place every client the same way, and a slightly
        // larger drain moves only clients that were in region 0.
        let wider = [
            region(1, None, Share::from_fraction(0.65), false),
            regions[1],
        ];
        for c in &cs {
            let a = place(&regions, &out.admit, c);
            assert_eq!(a, place(&regions, &out.admit, c));
            let b = place(&wider, &out.admit, c);
            if a == Some(1) {
                assert_eq!(b, Some(1), "a client in the moved share stays moved");
            }
        }
    }

    #[test]
    fn ramping_back_keeps_the_same_clients_first() {
        let cs = clients(5000, 1.0, &[0, 1], 8);
        let at = |f: f64| -> Vec<bool> {
            let regions = [
                region(1, None, Share::from_fraction(f), false),
                region(2, None, Share::ALL, true),
            ];
            cs.iter()
                .map(|c| place(&regions, &[Share::ALL; 2], c) == Some(0))
                .collect()
        };
        let (a, b) = (at(0.2), at(0.6));
        assert!(
            a.iter().zip(&b).all(|(x, y)| !x || *y),
            "back at 20 % stays back at 60 %"
        );
        let count = |v: &[bool]| v.iter().filter(|x| **x).count() as f64;
        assert!(near(count(&a) / 5000.0, 0.2, 0.03) && near(count(&b) / 5000.0, 0.6, 0.03));
    }

    #[test]
    fn shares_round_trip_and_admit_by_bucket() {
        assert_eq!(Share::from_fraction(1.0), Share::ALL);
        assert_eq!(Share::from_fraction(-1.0), Share::NONE);
        assert_eq!(Share::from_fraction(f64::NAN), Share::NONE);
        assert!(near(Share::from_fraction(0.25).fraction(), 0.25, 1e-9));
        assert!(Share::ALL.admits(u32::MAX) && !Share::NONE.admits(0));
        assert_ne!(bucket(1, 1), bucket(1, 2), "independent per region");
    }
}
