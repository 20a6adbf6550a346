//! The per-query decision: which regions answer this client, and over which client
//! prefix (the ECS scope) that answer holds. Pure: no I/O, no clock, no locks; it reads
//! the compiled tables and a health view.

use std::net::IpAddr;

use super::classes;
use super::compile::SCOPE_REACH;
use super::route::{Kind, List, NEAREST_MAX};
use super::{HomeRoutes, MAX_ANSWERS, Policy, PolicySet, Route, UnknownRoute};
use crate::geo::{self, Family};
use crate::hash::splitmix64 as splitmix;
use crate::health::Effective;
pub use crate::health::HealthView;
use crate::iana::Rtype;
use crate::traffic::{self, Share};

/// `Decision::first` of a route that lists no region for the client.
pub const NO_SLOT: u16 = u16::MAX;

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
    /// A `home` policy's tenant the map does not list, with `unknown: nxdomain`.
    NxDomain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub regions: [u16; MAX_ANSWERS],
    /// The chosen regions' positions in the policy's candidates (its counter slots).
    pub slots: [u16; MAX_ANSWERS],
    pub n: usize,
    /// The slot of the region this client ranks first, health aside ([`NO_SLOT`]
    /// when the route lists none): where its demand is, which the load estimate
    /// counts (`traffic::demand`).
    pub first: u16,
    pub outcome: Outcome,
    /// With `AllDown` + fail-open: whether the filled regions are a CNAME answer.
    pub fail_open_cname: bool,
    /// ECS SCOPE PREFIX-LENGTH for the response (RFC 7871 7.2.1).
    pub scope: u8,
}

impl Decision {
    pub fn chosen(&self) -> &[u16] {
        self.regions.get(..self.n).unwrap_or_default()
    }
}

/// Weighted order without replacement (Efraimidis–Spirakis keys u^(1/w)), seeded by the
/// client subnet so one subnet always sees the same order while subnets spread by weight.
/// Written to `out` as interleaved (region, counter slot) words, the layout of a
/// [`List`]; returns how many pairs.
fn weighted_order(
    set: &PolicySet,
    list: impl Iterator<Item = (u16, u16)>,
    seed: u64,
    out: &mut [u16; 128],
) -> usize {
    let mut keyed = [(0f64, (0u16, 0u16)); 64];
    let mut n = 0;
    for (r, slot) in list.take(64) {
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
        if let Some(k) = keyed.get_mut(n) {
            *k = (key, (r, slot));
            n += 1;
        }
    }
    let slice = keyed.get_mut(..n).unwrap_or_default();
    slice.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (pair, (_, (r, slot))) in out.chunks_exact_mut(2).zip(slice.iter()) {
        pair.copy_from_slice(&[*r, *slot]);
    }
    n
}

/// Whether `region` can answer `qtype` with the addresses in `live` (`Some(true)`: with
/// its CNAME, `Some(false)`: with addresses, `None`: not at all).
fn eligible(set: &PolicySet, region: u16, qtype: Rtype, live: u64) -> Option<bool> {
    let r = set.regions.get(usize::from(region))?;
    if r.cname.is_some() {
        return Some(true);
    }
    let has = matches!(qtype, Rtype::A | Rtype::AAAA) && r.rdata.any_live(qtype, live);
    has.then_some(false)
}

/// The regions a walk took, with their slots (positions in the policy's candidates,
/// which index its answer counters).
#[derive(Debug, Clone, Copy, Default)]
struct Taken {
    regions: [u16; MAX_ANSWERS],
    slots: [u16; MAX_ANSWERS],
    n: usize,
    cname: bool,
}

impl Taken {
    fn push(&mut self, region: u16, slot: u16) {
        if let (Some(r), Some(s)) = (self.regions.get_mut(self.n), self.slots.get_mut(self.n)) {
            *r = region;
            *s = slot;
            self.n += 1;
        }
    }
}

impl Taken {
    /// The decision when the walk found regions that serve.
    fn served(self, first: u16, scope: u8) -> Decision {
        Decision {
            regions: self.regions,
            slots: self.slots,
            n: self.n,
            first,
            outcome: if self.cname {
                Outcome::Cname
            } else {
                Outcome::Addresses
            },
            fail_open_cname: false,
            scope,
        }
    }

    /// The decision when nothing healthy serves: `self` is the walk ignoring health
    /// (fail-open answers it). A policy none of whose regions has this type answers
    /// NODATA: not an outage.
    fn all_down(self, first: u16, scope: u8, serves_type: bool) -> Decision {
        Decision {
            regions: self.regions,
            slots: self.slots,
            n: self.n,
            first,
            outcome: if serves_type {
                Outcome::AllDown
            } else {
                Outcome::NoData
            },
            fail_open_cname: self.cname,
            scope,
        }
    }
}

/// Walks `order` ((region, counter slot), best first), taking up to `answers` regions
/// that can answer `qtype`: healthy ones first, then degraded ones (slow but working),
/// unless `ignore_health`. A CNAME region answers alone and only when it comes first.
fn walk(
    set: &PolicySet,
    health: &HealthView,
    order: impl Iterator<Item = (u16, u16)> + Clone,
    qtype: Rtype,
    answers: usize,
    ignore_health: bool,
) -> Taken {
    let mut out = Taken::default();
    let passes: &[Effective] = if ignore_health {
        &[Effective::Down]
    } else {
        &[Effective::Up, Effective::Degraded]
    };
    for &pass in passes {
        for (r, slot) in order.clone() {
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
            // A region whose every server of this type is down cannot answer it.
            let live = if ignore_health {
                u64::MAX
            } else {
                health.live(region.id)
            };
            match eligible(set, r, qtype, live) {
                Some(true) if out.n == 0 => {
                    out.push(r, slot);
                    out.cname = true;
                    return out;
                }
                Some(false) => {
                    out.push(r, slot);
                    if out.n >= answers {
                        return out;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Decides `policy` for a client. `client` is the ECS address (bits beyond the source
/// prefix zero) or the packet's source; `None` means the query carries no client
/// information (ECS SOURCE PREFIX-LENGTH 0).
pub fn decide(
    set: &PolicySet,
    health: &HealthView,
    policy: &Policy,
    qtype: Rtype,
    client: Option<IpAddr>,
) -> Decision {
    decide_route(set, health, &policy.route, qtype, client)
}

/// `decide` for a policy's route (all a decision reads of the policy).
pub fn decide_route(
    set: &PolicySet,
    health: &HealthView,
    route: &Route,
    qtype: Rtype,
    client: Option<IpAddr>,
) -> Decision {
    let mut computed = [0u16; 2 * NEAREST_MAX];
    let (base, mut scope, bits) = resolve(set, route, client, &mut computed);
    let mut weighted = [0u16; 128];
    let weighted_n = match (route.weighted(), bits) {
        (true, Some((fam, bits))) => {
            let (width, p) = match fam {
                Family::V4 => (32u8, WEIGHTED_V4_PREFIX),
                Family::V6 => (128u8, WEIGHTED_V6_PREFIX),
            };
            let subnet = if width == 128 {
                bits >> (128 - p)
            } else {
                bits >> (32 - p)
            };
            let seed = splitmix((subnet as u64) ^ ((subnet >> 64) as u64) ^ route.seed());
            scope = scope.max(p);
            Some(weighted_order(set, base.iter(), seed, &mut weighted))
        }
        _ => None,
    };
    // The order this client walks: the weighted one for a weighted policy.
    let order = match weighted_n {
        Some(n) => List::from_pairs(weighted.get(..2 * n).unwrap_or_default()),
        None => base,
    };
    let first = order.iter().next().map_or(NO_SLOT, |(_, slot)| slot);
    // Traffic shifting: a client its first region does not keep goes where the split
    // admits it (`traffic::split` made the same walk over the modelled clients).
    let shifted = match (health.shifting, client) {
        (true, Some(ip)) if bits.is_some() => shift(set, health, order, ip, qtype, route.spill()),
        _ => Shift::Normal { hashed: false },
    };
    let hashed = match shifted {
        Shift::Normal { hashed } | Shift::To { hashed, .. } | Shift::Unserved { hashed } => hashed,
    };
    // The share that decided holds for the client's subnet, not beyond.
    if let (true, Some(ip)) = (hashed, client) {
        scope = scope.max(traffic::subnet_of(ip).1);
    }
    let mut moved = [(0u16, 0u16); 64];
    let moved_n = match shifted {
        Shift::To { region, slot, .. } => {
            let mut n = 0;
            for (o, e) in moved.iter_mut().zip(
                std::iter::once((region, slot)).chain(order.iter().filter(|&(r, _)| r != region)),
            ) {
                *o = e;
                n += 1;
            }
            Some(n)
        }
        _ => None,
    };
    let unserved = matches!(shifted, Shift::Unserved { .. });
    let pick = |ignore_health: bool| match moved_n {
        Some(n) if !ignore_health => walk(
            set,
            health,
            moved.iter().take(n).copied(),
            qtype,
            route.answers(),
            false,
        ),
        _ => walk(
            set,
            health,
            order.iter(),
            qtype,
            route.answers(),
            ignore_health,
        ),
    };
    let taken = if unserved {
        Taken::default()
    } else {
        pick(false)
    };
    if taken.n > 0 {
        return taken.served(first, scope);
    }
    // Nothing healthy. Fail-open needs the regions as if all were up; the caller applies
    // the policy's all-down behaviour.
    let taken = pick(true);
    let serves_type = route
        .candidates()
        .iter()
        .any(|&r| eligible(set, r, qtype, u64::MAX).is_some());
    taken.all_down(first, scope, serves_type)
}

/// The ordered list `route` gives `client`, with the ECS scope over which every client
/// gets that same list, and the client's address bits. `computed` holds the list when the
/// route ranks per query (`Kind::Nearest`).
fn resolve<'a>(
    set: &PolicySet,
    route: &'a Route,
    client: Option<IpAddr>,
    computed: &'a mut [u16; 2 * NEAREST_MAX],
) -> (List<'a>, u8, Option<(Family, u128)>) {
    let no_client = (route.list(route.no_client()), 0, None);
    let Some((fam, bits)) = client.map(geo::addr_bits) else {
        return no_client;
    };
    let found = match fam {
        Family::V4 => set.classes_v4.find(bits),
        Family::V6 => set.classes_v6.find(bits),
    };
    let Some(found) = found else {
        return no_client;
    };
    let scope = |same: &dyn Fn(u32) -> bool| match fam {
        Family::V4 => set.classes_v4.scope(found, bits, SCOPE_REACH, same),
        Family::V6 => set.classes_v6.scope(found, bits, SCOPE_REACH, same),
    };
    let view = &set.classes;
    let class = found.value;
    // Neighbours are compared by what decides their list (an entry, an area's entry, or
    // the order of the candidates), never by reading their lists.
    let by_entry = |entry: &dyn Fn(u32) -> Option<u32>| match entry(class) {
        Some(at) => (
            route.list(at),
            scope(&|n| entry(n) == Some(at)),
            Some((fam, bits)),
        ),
        None => (route.list(route.no_client()), 0, None),
    };
    match route.kind() {
        // Every client the same list: valid for all of them.
        Kind::One => (route.list(route.one()), 0, Some((fam, bits))),
        Kind::Class => by_entry(&|c| route.entry(c)),
        Kind::Area => by_entry(&|c| view.area(c).and_then(|a| route.entry(a))),
        Kind::Nearest => {
            // Without residency there are no entries: every candidate.
            let mask_of = |c: u32| {
                view.area(c)
                    .and_then(|a| route.entry(a))
                    .unwrap_or(u32::MAX)
            };
            let mask = mask_of(class);
            let mut items = [(0u16, 0u16); NEAREST_MAX];
            let mut n = 0;
            for (slot, &r) in route.candidates().iter().enumerate().take(NEAREST_MAX) {
                if mask & (1 << slot) != 0
                    && let Some(item) = items.get_mut(n)
                {
                    *item = (r, slot as u16);
                    n += 1;
                }
            }
            let items = items.get_mut(..n).unwrap_or_default();
            classes::nearest(view, view.unit(class), items);
            let items = &*items;
            let scope = scope(&|c| {
                mask_of(c) == mask && classes::is_nearest_order(view, view.unit(c), items)
            });
            for (pair, &(r, slot)) in computed.chunks_exact_mut(2).zip(items) {
                pair.copy_from_slice(&[r, slot]);
            }
            let pairs = computed.get(..2 * n).unwrap_or_default();
            (List::from_pairs(pairs), scope, Some((fam, bits)))
        }
    }
}

/// What a `home` policy decided, besides the regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeCase {
    /// A tenant of the map: the set in force, and whether it is answered away from its
    /// home (the home is out).
    Tenant { set: u32, away: bool },
    /// A label the map does not list: `unknown:` applied.
    Unknown,
}

/// The tenant label of `qname` (lowercase wire form) under a `home` policy whose
/// wildcard owner has `depth` labels: the label in the wildcard's place.
pub fn tenant_label(qname: &[u8], depth: usize) -> Option<&[u8]> {
    let n = crate::name::labels(qname).count();
    crate::name::labels(qname).nth(n.checked_sub(depth)?)
}

/// Decides a `home` policy: the tenant's set in force at `now()` (Unix seconds, read only
/// for a tenant with a planned move) walked in
/// its order with health (the home, then the allowed regions nearest to it), never a
/// region outside the set. The answer does not depend on the client: scope 0. An
/// unknown tenant gets `unknown:` (nearest from the client, a fixed list, or NXDOMAIN).
#[allow(clippy::too_many_arguments)] // `decide_route`'s, plus the map and the clock
pub fn decide_home(
    set: &PolicySet,
    health: &HealthView,
    route: &Route,
    home: &HomeRoutes,
    label: Option<&[u8]>,
    qtype: Rtype,
    client: Option<IpAddr>,
    now: &dyn Fn() -> i64,
) -> (Decision, HomeCase) {
    let found = label.and_then(|l| home.map.find(l, now));
    let Some(found) = found else {
        let d = match &home.unknown {
            UnknownRoute::Nearest => decide_route(set, health, route, qtype, client),
            UnknownRoute::List(list) => decide_list(set, health, route, list, qtype),
            UnknownRoute::NxDomain => Decision {
                regions: [0; MAX_ANSWERS],
                slots: [0; MAX_ANSWERS],
                n: 0,
                first: NO_SLOT,
                outcome: Outcome::NxDomain,
                fail_open_cname: false,
                scope: 0,
            },
        };
        return (d, HomeCase::Unknown);
    };
    let list = home
        .lists
        .get(found.set as usize)
        .map_or(&[][..], |l| &l[..]);
    let d = decide_list(set, health, route, list, qtype);
    let away = d.outcome != Outcome::AllDown
        && list
            .first()
            .is_some_and(|&(h, _)| d.chosen().first() != Some(&h));
    (
        d,
        HomeCase::Tenant {
            set: found.set,
            away,
        },
    )
}

/// Walks a fixed list of (region, slot) with health; scope 0 (it holds for everyone).
fn decide_list(
    set: &PolicySet,
    health: &HealthView,
    route: &Route,
    list: &[(u16, u16)],
    qtype: Rtype,
) -> Decision {
    let first = list.first().map_or(NO_SLOT, |&(_, s)| s);
    let taken = walk(
        set,
        health,
        list.iter().copied(),
        qtype,
        route.answers(),
        false,
    );
    if taken.n > 0 {
        return taken.served(first, 0);
    }
    let taken = walk(
        set,
        health,
        list.iter().copied(),
        qtype,
        route.answers(),
        true,
    );
    let serves_type = list
        .iter()
        .any(|&(r, _)| eligible(set, r, qtype, u64::MAX).is_some());
    taken.all_down(first, 0, serves_type)
}

/// The ordered regions `route` gives `client` and the ECS scope: what a decision walks
/// (for explanations and tests; the query path uses `decide`).
pub fn order(set: &PolicySet, route: &Route, client: Option<IpAddr>) -> (Vec<u16>, u8) {
    let mut computed = [0u16; 2 * NEAREST_MAX];
    let (list, scope, _) = resolve(set, route, client, &mut computed);
    (list.regions(), scope)
}

/// What the traffic split does with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// The usual walk (its first region keeps it, or nothing is shifting for it).
    Normal { hashed: bool },
    /// Displaced: answered by `region` (then the rest of the list for more answers).
    To {
        region: u16,
        slot: u16,
        hashed: bool,
    },
    /// Displaced, no region has room, and the policy's overflow is `all_down`.
    Unserved { hashed: bool },
}

/// The split's walk for one client: kept by its first region (by its share and the
/// client's bucket), else the next regions that take displaced clients, each admitting
/// its share. `hashed` says whether a share that is not all-or-nothing decided, which
/// narrows the ECS scope to the client subnet. Mirrors `traffic::split::place`.
fn shift(
    set: &PolicySet,
    health: &HealthView,
    list: List<'_>,
    ip: IpAddr,
    qtype: Rtype,
    spill: bool,
) -> Shift {
    let (subnet, _) = traffic::subnet_of(ip);
    let mut it = list.iter();
    let Some((first, _)) = it.next() else {
        return Shift::Normal { hashed: false };
    };
    let Some(r0) = set.regions.get(usize::from(first)) else {
        return Shift::Normal { hashed: false };
    };
    let h0 = health.region(r0.id);
    let mut hashed = false;
    if h0.state != Effective::Down {
        let keep = h0.keeps(spill);
        if keep == Share::ALL {
            return Shift::Normal { hashed: false };
        }
        hashed = keep != Share::NONE;
        if keep.admits(traffic::bucket(subnet, r0.id)) {
            return Shift::Normal { hashed };
        }
    }
    let takes = |r: u16| {
        set.regions
            .get(usize::from(r))
            .filter(|reg| eligible(set, r, qtype, health.live(reg.id)).is_some())
            .map(|reg| (reg.id, health.region(reg.id)))
            .filter(|(_, h)| h.accepts())
    };
    for (r, slot) in it.clone() {
        let Some((id, h)) = takes(r) else { continue };
        hashed |= h.admit != Share::ALL;
        if h.admit.admits(traffic::bucket(subnet, id)) {
            return Shift::To {
                region: r,
                slot,
                hashed,
            };
        }
    }
    if !spill {
        return Shift::Unserved { hashed };
    }
    match it.find(|&(r, _)| takes(r).is_some()) {
        Some((region, slot)) => Shift::To {
            region,
            slot,
            hashed,
        },
        None => Shift::Normal { hashed },
    }
}
