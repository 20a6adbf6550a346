//! Where the demand is: the load estimate the split works on. A policy's `demand` is
//! spread over its clients by where its queries really come from, measured as the
//! share of its queries whose client ranks each region first (health aside, so an
//! outage or a shed does not move the measure), over a decaying window of
//! [`WINDOW`]. Until a policy has [`MIN_ANSWERS`] queries in that window its
//! demand is spread over the address space the GeoIP database locates (the prior,
//! `policy::population`).
//!
//! The prior's clients keep their ranked lists; what the answers change is how much
//! each block of them weighs (the clients of one policy ranking one region first), so
//! the prior still says where inside a block the demand sits and which region it
//! falls to next. Pure: counts in, weights out; the health checker samples the
//! counters every [`SAMPLE_EVERY`] and feeds them here.

use std::time::Duration;

use super::split::Client;

/// Time constant of the decaying window: a count weighs `e^(-age / WINDOW)`.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Queries (decayed) a policy needs in the window before its answers replace the prior.
pub const MIN_ANSWERS: f64 = 1_000.0;

/// How often the checker reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// A block's weight moving by more than this share of its policy's demand moves the
/// population the split works on (smaller moves are noise, and cost a recomputation).
pub const MOVE_FRACTION: f64 = 0.02;

/// A policy with a `demand`, as the estimate sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDemand {
    pub name: String,
    /// Requests/s at peak.
    pub demand: f64,
    /// Its candidates (region indexes, as clients' lists), in counter-slot order.
    pub candidates: Vec<u16>,
}

/// Which estimate a policy's load comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Fewer than [`MIN_ANSWERS`] queries in the window: demand spread by address space.
    AddressSpace,
    /// The answers' first-ranked shares.
    Answers,
}

/// One policy's decayed query counts by first-ranked candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    last: Vec<u64>,
    decayed: Vec<f64>,
}

impl Counts {
    /// Takes a reading of the policy's cumulative counters, `dt` after the last. The
    /// first reading is the baseline: what was counted before it has no age.
    pub fn observe(&mut self, reading: &[u64], dt: Duration) {
        if self.last.len() != reading.len() {
            self.last = reading.to_vec();
            self.decayed = vec![0.0; reading.len()];
            return;
        }
        let decay = (-dt.as_secs_f64() / WINDOW.as_secs_f64()).exp();
        for ((d, last), &now) in self.decayed.iter_mut().zip(&mut self.last).zip(reading) {
            // A counter that went backwards was replaced (the policy left and came
            // back): everything on it is new.
            let delta = if now >= *last { now - *last } else { now };
            *d = *d * decay + delta as f64;
            *last = now;
        }
    }

    /// Decayed queries in the window.
    pub fn total(&self) -> f64 {
        self.decayed.iter().sum()
    }

    /// The share of each candidate, once the window holds enough queries.
    pub fn shares(&self) -> Option<Vec<f64>> {
        let total = self.total();
        (total >= MIN_ANSWERS).then(|| self.decayed.iter().map(|d| d / total).collect())
    }
}

/// Clients stand in for a region's block when the prior has none there: enough that the
/// split's admission shares stay fine-grained over them.
const STAND_INS: u64 = 16;

/// The prior reweighted: for each policy with `shares` (aligned with its candidates),
/// the clients ranking candidate `i` first weigh `shares[i] × demand` together, split
/// among them as the prior split it. Policies without shares keep the prior's weights.
/// A candidate the prior never ranks first but the answers do gets stand-in clients
/// with the list of the prior client ranking it highest, moved to the front.
pub fn reweight(
    prior: &[Client],
    policies: &[PolicyDemand],
    shares: &[Option<Vec<f64>>],
) -> Vec<Client> {
    let mut out: Vec<Client> = prior.to_vec();
    for (p, (policy, shares)) in policies.iter().zip(shares).enumerate() {
        let Some(shares) = shares else { continue };
        let p = p as u32;
        for (&region, &share) in policy.candidates.iter().zip(shares) {
            let target = share * policy.demand;
            let in_block = |c: &Client| c.policy == p && c.list.first() == Some(&region);
            let (count, prior_sum) = out
                .iter()
                .filter(|c| in_block(c))
                .fold((0usize, 0.0), |(n, w), c| (n + 1, w + c.weight));
            if prior_sum > 0.0 {
                let scale = target / prior_sum;
                for c in out.iter_mut().filter(|c| in_block(c)) {
                    c.weight *= scale;
                }
                continue;
            }
            if count > 0 {
                let each = target / count as f64;
                for c in out.iter_mut().filter(|c| in_block(c)) {
                    c.weight = each;
                }
                continue;
            }
            if target <= 0.0 {
                continue;
            }
            let nearest = prior
                .iter()
                .filter(|c| c.policy == p)
                .filter_map(|c| Some((c.list.iter().position(|&r| r == region)?, c)))
                .min_by_key(|(at, _)| *at);
            let (list, spill) = match nearest {
                Some((_, c)) => {
                    let mut list = vec![region];
                    list.extend(c.list.iter().copied().filter(|&r| r != region));
                    (list, c.spill)
                }
                None => (vec![region], true),
            };
            for k in 0..STAND_INS {
                out.push(Client {
                    weight: target / STAND_INS as f64,
                    subnet: crate::hash::splitmix64(
                        (u64::from(p) << 32) ^ (u64::from(region) << 8) ^ k,
                    ),
                    list: list.clone(),
                    spill,
                    policy: p,
                });
            }
        }
    }
    out
}

/// Whether `next` moves some block by more than [`MOVE_FRACTION`] of its policy's
/// demand from `current` (both reweightings of the same prior, same order).
pub fn moved(current: &[Client], next: &[Client], policies: &[PolicyDemand]) -> bool {
    if current.len() != next.len() {
        return true;
    }
    let mut by_block: std::collections::HashMap<(u32, u16), f64> = Default::default();
    for (a, b) in current.iter().zip(next) {
        let first = b.list.first().copied().unwrap_or(u16::MAX);
        *by_block.entry((b.policy, first)).or_default() += b.weight - a.weight;
    }
    by_block.into_iter().any(|((p, _), d)| {
        let demand = policies.get(p as usize).map_or(0.0, |x| x.demand);
        d.abs() > MOVE_FRACTION * demand
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(policy: u32, subnet: u64, list: &[u16], weight: f64) -> Client {
        Client {
            weight,
            subnet,
            list: list.to_vec(),
            spill: true,
            policy,
        }
    }

    fn demand(name: &str, demand: f64, candidates: &[u16]) -> PolicyDemand {
        PolicyDemand {
            name: name.into(),
            demand,
            candidates: candidates.to_vec(),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_reading_is_a_baseline_and_later_ones_count_what_was_added() {
        let mut c = Counts::default();
        c.observe(&[5_000, 0], MINUTE);
        assert_eq!(
            c.total(),
            0.0,
            "counts before the first reading have no age"
        );
        c.observe(&[5_900, 100], Duration::ZERO);
        assert_eq!(c.total(), 1_000.0);
        assert_eq!(c.shares(), Some(vec![0.9, 0.1]));
    }

    #[test]
    fn shares_need_enough_queries_in_the_window() {
        let cases: &[(&[u64], bool)] = &[
            (&[0, 0], false),
            (&[998, 1], false),
            (&[999, 1], true),
            (&[0, 50_000], true),
        ];
        for &(reading, estimated) in cases {
            let mut c = Counts::default();
            c.observe(&[0, 0], Duration::ZERO);
            c.observe(reading, Duration::ZERO);
            assert_eq!(c.shares().is_some(), estimated, "{reading:?}");
        }
    }

    #[test]
    fn old_queries_decay_so_a_move_of_demand_shows_within_the_window() {
        let mut c = Counts::default();
        c.observe(&[0, 0], Duration::ZERO);
        // Ten minutes all first-ranking region 0 …
        let mut reading = [0u64, 0];
        for _ in 0..60 {
            reading[0] += 1_000;
            c.observe(&reading, Duration::from_secs(10));
        }
        assert!(c.shares().is_some_and(|s| s[0] > 0.99));
        // … then all region 1: after one window most of the weight has moved.
        for _ in 0..30 {
            reading[1] += 1_000;
            c.observe(&reading, Duration::from_secs(10));
        }
        let s = c.shares().unwrap_or_default();
        // After one time constant the new demand holds 1 - 1/e of a full window and
        // the old (two time constants' worth) is down to 1/e of what it was.
        let e = std::f64::consts::E;
        let new = 1.0 - 1.0 / e;
        let expected = new / (new + (1.0 - 1.0 / (e * e)) / e);
        assert!((s[1] - expected).abs() < 0.03, "{s:?} vs {expected}");
        // Decay alone, with no queries, lets the window empty: back to the prior.
        for _ in 0..300 {
            c.observe(&reading, Duration::from_secs(10));
        }
        assert_eq!(c.shares(), None);
    }

    #[test]
    fn a_counter_that_went_backwards_was_replaced_and_counts_from_zero() {
        let mut c = Counts::default();
        c.observe(&[10_000, 10_000], Duration::ZERO);
        c.observe(&[600, 10_400], Duration::ZERO);
        assert_eq!(c.total(), 1_000.0);
    }

    #[test]
    fn blocks_take_the_answers_shares_of_demand_and_keep_the_prior_within() {
        // Address space: region 0 (think us-east) holds most of it.
        let prior = vec![
            client(0, 1, &[0, 1, 2], 60.0),
            client(0, 2, &[0, 2, 1], 20.0),
            client(0, 3, &[1, 0, 2], 10.0),
            client(0, 4, &[1, 2, 0], 10.0),
            client(0, 5, &[2, 1, 0], 0.0),
        ];
        let policies = [demand("www", 100.0, &[0, 1, 2])];
        // The answers say: 5 % ranks region 0 first, 90 % region 1, 5 % region 2.
        let out = reweight(&prior, &policies, &[Some(vec![0.05, 0.90, 0.05])]);
        let w: Vec<f64> = out.iter().map(|c| c.weight).collect();
        assert!(
            (w[0] - 3.75).abs() < 1e-9 && (w[1] - 1.25).abs() < 1e-9,
            "{w:?}"
        );
        assert!(
            (w[2] - 45.0).abs() < 1e-9 && (w[3] - 45.0).abs() < 1e-9,
            "{w:?}"
        );
        // Region 2's block weighed nothing in the prior: its clients share its part.
        assert_eq!(
            out.len(),
            prior.len(),
            "client 5 is region 2's block: no stand-ins"
        );
        assert!((w[4] - 5.0).abs() < 1e-9, "{w:?}");
        let total: f64 = out.iter().map(|c| c.weight).sum();
        assert!((total - 100.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_region_the_prior_never_ranks_first_gets_stand_ins() {
        let prior = vec![
            client(0, 1, &[0, 1, 2], 50.0),
            client(0, 2, &[1, 2, 0], 50.0),
        ];
        let policies = [demand("www", 100.0, &[0, 1, 2])];
        let out = reweight(&prior, &policies, &[Some(vec![0.5, 0.3, 0.2])]);
        let stand_ins: Vec<&Client> = out.iter().skip(prior.len()).collect();
        assert_eq!(stand_ins.len(), STAND_INS as usize);
        let sum: f64 = stand_ins.iter().map(|c| c.weight).sum();
        assert!((sum - 20.0).abs() < 1e-9);
        // Client 2 ranks region 2 second: its list with region 2 moved to the front.
        assert!(
            stand_ins
                .iter()
                .all(|c| c.list == [2, 1, 0] && c.policy == 0)
        );
        let subnets: std::collections::HashSet<u64> = stand_ins.iter().map(|c| c.subnet).collect();
        assert_eq!(subnets.len(), STAND_INS as usize, "distinct buckets");
    }

    #[test]
    fn policies_without_enough_answers_keep_the_prior() {
        let prior = vec![client(0, 1, &[0, 1], 70.0), client(1, 1, &[0, 1], 30.0)];
        let policies = [demand("a", 70.0, &[0, 1]), demand("b", 30.0, &[0, 1])];
        let out = reweight(&prior, &policies, &[None, Some(vec![0.0, 1.0])]);
        assert_eq!(out[0].weight, 70.0, "policy a: prior");
        assert_eq!(
            out[1].weight, 0.0,
            "policy b: no query ranks region 0 first"
        );
        // Region 1's share has no prior client ranking it first in policy b, so stand-ins.
        assert!(
            out.iter()
                .skip(2)
                .all(|c| c.policy == 1 && c.list == [1, 0])
        );
    }

    #[test]
    fn only_a_move_beyond_the_noise_moves_the_population() {
        let policies = [demand("www", 1_000.0, &[0, 1])];
        let a = vec![client(0, 1, &[0, 1], 500.0), client(0, 2, &[1, 0], 500.0)];
        let small = vec![client(0, 1, &[0, 1], 510.0), client(0, 2, &[1, 0], 490.0)];
        let large = vec![client(0, 1, &[0, 1], 530.0), client(0, 2, &[1, 0], 470.0)];
        assert!(!moved(&a, &small, &policies));
        assert!(moved(&a, &large, &policies));
        assert!(moved(&a, &large[..1], &policies), "stand-ins came or went");
    }
}
