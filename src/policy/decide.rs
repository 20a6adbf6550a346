//! The per-query decision: which regions answer this client, and over which client
//! prefix (the ECS scope) that answer holds. Pure: no I/O, no clock, no locks; it reads
//! the compiled tables and a health view.

use std::net::IpAddr;

use super::compile::SCOPE_REACH;
use super::{MAX_ANSWERS, Method, Policy, PolicySet};
use crate::geo::{self, Family};
use crate::health::Effective;
pub use crate::health::HealthView;
use crate::zone::rtype;

/// Weighted answers are stable per client /24 (IPv4) or /56 (IPv6).
pub const WEIGHTED_V4_PREFIX: u8 = 24;
pub const WEIGHTED_V6_PREFIX: u8 = 56;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `regions[..n]` answer with their addresses.
    Addresses,
    /// `regions[0]` answers with its CNAME.
    Cname,
    /// No healthy region: the policy's all-down behaviour applies. With fail-open the
    /// regions are chosen as if all were healthy (`Addresses`/`Cname` data is filled).
    AllDown,
    /// No region of this policy has data of the asked type.
    NoData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub regions: [u16; MAX_ANSWERS],
    pub n: usize,
    pub outcome: Outcome,
    /// With `AllDown` + fail-open: whether the filled regions are a CNAME answer.
    pub fail_open_cname: bool,
    /// ECS SCOPE PREFIX-LENGTH for the response (RFC 7871 7.2.1).
    pub scope: u8,
    /// The ordered list the decision walked (index into `PolicySet::lists`).
    pub list: u32,
}

impl Decision {
    pub fn chosen(&self) -> &[u16] {
        self.regions.get(..self.n).unwrap_or_default()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Weighted order without replacement (Efraimidis–Spirakis keys u^(1/w)), seeded by the
/// client subnet so one subnet always sees the same order while subnets spread by weight.
fn weighted_order(set: &PolicySet, list: &[u16], seed: u64, out: &mut [u16; 64]) -> usize {
    let mut keyed = [(0f64, 0u16); 64];
    let mut n = 0;
    for &r in list.iter().take(64) {
        let w = set
            .regions
            .get(usize::from(r))
            .map(|x| x.weight)
            .unwrap_or(0);
        let u = ((splitmix(seed ^ u64::from(r).wrapping_mul(0x100_0000_01B3)) >> 11) as f64 + 1.0)
            / (1u64 << 53) as f64;
        let key = if w == 0 {
            -1.0 + u * 1e-9
        } else {
            u.powf(1.0 / f64::from(w))
        };
        if let Some(slot) = keyed.get_mut(n) {
            *slot = (key, r);
            n += 1;
        }
    }
    let slice = keyed.get_mut(..n).unwrap_or_default();
    slice.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (o, (_, r)) in out.iter_mut().zip(slice.iter()) {
        *o = *r;
    }
    n
}

fn eligible(set: &PolicySet, region: u16, qtype: u16) -> Option<bool> {
    let r = set.regions.get(usize::from(region))?;
    if r.cname.is_some() {
        return Some(true);
    }
    let has = match qtype {
        rtype::A => !r.a.is_empty(),
        rtype::AAAA => !r.aaaa.is_empty(),
        _ => false,
    };
    has.then_some(false)
}

/// Walks `order`, taking up to `answers` regions that can answer `qtype`: healthy ones
/// first, then degraded ones (slow but working), unless `ignore_health`. A CNAME region
/// answers alone and only when it comes first.
fn walk(
    set: &PolicySet,
    health: &HealthView,
    order: &[u16],
    qtype: u16,
    answers: usize,
    ignore_health: bool,
) -> (usize, [u16; MAX_ANSWERS], bool) {
    let mut out = [0u16; MAX_ANSWERS];
    let mut n = 0;
    let passes: &[Effective] = if ignore_health {
        &[Effective::Down]
    } else {
        &[Effective::Up, Effective::Degraded]
    };
    for &pass in passes {
        for &r in order {
            let Some(region) = set.regions.get(usize::from(r)) else {
                continue;
            };
            let state = health.state(region.id);
            let admitted = match pass {
                Effective::Down => true, // ignoring health: everything, in order
                p => state == p,
            };
            if !admitted {
                continue;
            }
            match eligible(set, r, qtype) {
                Some(true) if n == 0 => {
                    out[0] = r;
                    return (1, out, true);
                }
                Some(false) => {
                    if let Some(slot) = out.get_mut(n) {
                        *slot = r;
                        n += 1;
                    }
                    if n >= answers {
                        return (n, out, false);
                    }
                }
                _ => {}
            }
        }
    }
    (n, out, false)
}

/// Decides `policy` for a client. `client` is the ECS address (bits beyond the source
/// prefix zero) or the packet's source; `None` means the query carries no client
/// information (ECS SOURCE PREFIX-LENGTH 0).
pub fn decide(
    set: &PolicySet,
    health: &HealthView,
    policy: &Policy,
    qtype: u16,
    client: Option<IpAddr>,
) -> Decision {
    let (list, mut scope, bits) = match client.map(geo::addr_bits) {
        Some((fam, bits)) => {
            let found = set.mappings.get(policy.table as usize).and_then(|m| {
                let f = |class: u32| m.list(class);
                let (found, width) = match fam {
                    Family::V4 => (set.classes_v4.lookup_mapped(bits, SCOPE_REACH, f), 32),
                    Family::V6 => (set.classes_v6.lookup_mapped(bits, SCOPE_REACH, f), 128),
                };
                found.map(|(v, lo, hi)| (v, geo::scope_within(width, bits, lo, hi)))
            });
            match found {
                Some((v, s)) => (v, s, Some((fam, bits))),
                None => (policy.no_client_list, 0, None),
            }
        }
        None => (policy.no_client_list, 0, None),
    };
    let base = set.list(list);
    let mut buf = [0u16; 64];
    let order: &[u16] = match (&policy.method, bits) {
        (Method::Weighted, Some((fam, bits))) => {
            let (width, p) = match fam {
                Family::V4 => (32u8, WEIGHTED_V4_PREFIX),
                Family::V6 => (128u8, WEIGHTED_V6_PREFIX),
            };
            let subnet = if width == 128 {
                bits >> (128 - p)
            } else {
                bits >> (32 - p)
            };
            let seed =
                splitmix((subnet as u64) ^ ((subnet >> 64) as u64) ^ policy.name.len() as u64)
                    ^ policy
                        .name
                        .iter()
                        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            scope = scope.max(p);
            let n = weighted_order(set, base, seed, &mut buf);
            buf.get(..n).unwrap_or_default()
        }
        _ => base,
    };
    let (n, regions, is_cname) = walk(set, health, order, qtype, policy.answers, false);
    if n > 0 {
        return Decision {
            regions,
            n,
            outcome: if is_cname {
                Outcome::Cname
            } else {
                Outcome::Addresses
            },
            fail_open_cname: false,
            scope,
            list,
        };
    }
    // Nothing healthy. Fail-open needs the regions as if all were up; the caller applies
    // the policy's all-down behaviour.
    let (n, regions, is_cname) = walk(set, health, order, qtype, policy.answers, true);
    let serves_type = policy
        .candidates
        .iter()
        .any(|&r| eligible(set, r, qtype).is_some());
    Decision {
        regions,
        n,
        // A policy none of whose regions has this type answers NODATA: not an outage.
        outcome: if serves_type {
            Outcome::AllDown
        } else {
            Outcome::NoData
        },
        fail_open_cname: is_cname,
        scope,
        list,
    }
}
