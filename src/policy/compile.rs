//! Load-time ranking: for every policy and every client class, the ordered region list
//! the policy gives, with constraints applied. Lists are interned (for explanations), and
//! each policy gets a packed [`Route`]: its class → list mapping over the GeoIP class
//! table every policy shares, and the lists it uses. The query path does one lookup in
//! the class table and reads the ECS scope off the range it lands in, widened over
//! neighbours that get the same list.
//!
//! `rank` is also what `meridian query` prints, so the explanation and the server agree.

use std::collections::HashMap;

use super::classes::ClassView;
use super::route::{Entries, Head, Kind, NEAREST_MAX, Route};
use super::{Home, HomeRoutes, Method, Policy, PolicySet, UnknownRoute, UnknownTenant};
use crate::diag::Diagnostic;
use crate::geo::{self, Class, GeoTable, Location};
use std::sync::Arc;

/// Light in fibre covers about 200 km per millisecond.
pub const FIBRE_KM_PER_MS: f64 = 200.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub region: u16,
    pub distance_km: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// `true` when `rtt_ms` comes from the latency table, `false` when estimated.
    pub measured: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    pub order: Vec<u16>,
    pub candidates: Vec<Candidate>,
    /// What decided the order, in words (for `meridian query`).
    pub notes: Vec<String>,
}

/// The most specific measured RTT from this client class to `region`.
pub fn measured_rtt(
    set: &PolicySet,
    geo: &GeoTable,
    class: &Class,
    loc: Option<&Location>,
    region: u16,
) -> Option<f64> {
    if let Some(overlay) = class.overlay.and_then(|o| geo.overlays.get(o as usize)) {
        // CIDR keys nest: the longest one that contains the client's innermost overlay.
        let best = set
            .latency
            .by_cidr
            .iter()
            .filter(|(net, rtts)| net.contains(overlay) && rtts.contains_key(&region))
            .max_by_key(|(net, _)| net.prefix_len());
        if let Some((_, rtts)) = best {
            return rtts.get(&region).copied();
        }
    }
    let loc = loc?;
    loc.country
        .and_then(|c| set.latency.by_country.get(&c))
        .and_then(|m| m.get(&region))
        .or_else(|| {
            loc.continent
                .and_then(|c| set.latency.by_continent.get(&c))
                .and_then(|m| m.get(&region))
        })
        .copied()
}

fn geo_rule_list(
    rules: &[super::GeoRule],
    default: &[u16],
    geo: &GeoTable,
    class: &Class,
    loc: Option<&Location>,
    explain: bool,
) -> (Vec<u16>, String) {
    let why = |f: &dyn Fn() -> String| if explain { f() } else { String::new() };
    if let Some(overlay) = class.overlay.and_then(|o| geo.overlays.get(o as usize)) {
        let best = rules
            .iter()
            .flat_map(|r| r.cidrs.iter().map(move |c| (c, r)))
            .filter(|(c, _)| c.contains(overlay))
            .max_by_key(|(c, _)| c.prefix_len());
        if let Some((c, r)) = best {
            return (r.regions.clone(), why(&|| format!("geo rule for {c}")));
        }
    }
    if let Some(asn) = geo.class_asn(class)
        && let Some(r) = rules.iter().find(|r| r.asns.contains(&asn))
    {
        return (r.regions.clone(), why(&|| format!("geo rule for AS{asn}")));
    }
    if let Some(loc) = loc {
        if let Some(sub) = &loc.subdivision
            && let Some(r) = rules
                .iter()
                .find(|r| r.subdivisions.iter().any(|s| **s == **sub))
        {
            return (
                r.regions.clone(),
                why(&|| format!("geo rule for subdivision {sub}")),
            );
        }
        if let Some(cc) = loc.country
            && let Some(r) = rules.iter().find(|r| r.countries.contains(&cc))
        {
            return (
                r.regions.clone(),
                why(&|| format!("geo rule for country {}", String::from_utf8_lossy(&cc))),
            );
        }
        if let Some(ct) = loc.continent
            && let Some(r) = rules.iter().find(|r| r.continents.contains(&ct))
        {
            return (
                r.regions.clone(),
                why(&|| format!("geo rule for continent {}", String::from_utf8_lossy(&ct))),
            );
        }
    }
    (default.to_vec(), why(&|| "geo default".to_string()))
}

/// Orders the policy's regions for one client class.
pub fn rank(set: &PolicySet, geo: &GeoTable, policy: &Policy, class: &Class) -> Ranking {
    rank_with(set, geo, policy, class, true)
}

/// `rank`, without the notes when `explain` is false.
fn rank_with(
    set: &PolicySet,
    geo: &GeoTable,
    policy: &Policy,
    class: &Class,
    explain: bool,
) -> Ranking {
    let loc = geo.class_location(class);
    let point = loc.and_then(|l| l.point);
    let mut notes = Vec::new();
    let mut note = |n: &dyn Fn() -> String| {
        if explain {
            notes.push(n());
        }
    };
    let mut candidates: Vec<Candidate> = policy
        .candidates
        .iter()
        .filter_map(|&r| {
            let region = set.regions.get(usize::from(r))?;
            // Only latency ranking and explanations read distances and RTTs (nearest
            // compares unit vectors): a compile ranks 100 000 classes.
            let rtts = explain || matches!(policy.method, Method::Latency);
            let distance_km = point
                .filter(|_| rtts)
                .map(|p| geo::distance_km(p, region.point));
            let measured = if rtts {
                measured_rtt(set, geo, class, loc, r)
            } else {
                None
            };
            let rtt_ms = measured
                .or(distance_km.map(|d| 2.0 * d / FIBRE_KM_PER_MS + set.latency.overhead_ms));
            Some(Candidate {
                region: r,
                distance_km,
                rtt_ms,
                measured: measured.is_some(),
            })
        })
        .collect();
    // Nearest first by the one ordering function the query path uses as well
    // (`classes::nearest`: a dot product of unit vectors, stable), so that the load-time
    // tables, the per-query ranking and `meridian query` agree, ties included.
    let by_distance = |cands: &mut Vec<Candidate>, p: (f64, f64)| {
        let u = geo::unit(p);
        let key = |c: &Candidate| {
            set.regions
                .get(usize::from(c.region))
                .map_or(f64::NEG_INFINITY, |r| geo::closeness(&u, &r.unit))
        };
        cands.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    };
    let mut order: Vec<u16> = match &policy.method {
        Method::Nearest | Method::Home => {
            if let Some(p) = point {
                by_distance(&mut candidates, p);
                note(&|| "nearest by great-circle distance".into());
            } else {
                note(&|| "client location unknown: policy order".into());
            }
            candidates.iter().map(|c| c.region).collect()
        }
        Method::Latency => {
            if candidates.iter().any(|c| c.measured) {
                // Stable: ties keep the operator's order.
                candidates.sort_by(|a, b| {
                    a.rtt_ms
                        .unwrap_or(f64::INFINITY)
                        .partial_cmp(&b.rtt_ms.unwrap_or(f64::INFINITY))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                note(&|| {
                    "lowest round-trip time (measured where the table has it, else estimated from distance)".into()
                });
            } else if let Some(p) = point {
                // Every estimate grows with distance alone: the nearest order.
                by_distance(&mut candidates, p);
                note(&|| {
                    "lowest round-trip time, estimated from distance (no measured value for this client)".into()
                });
            } else {
                note(&|| "no latency data or location: policy order".into());
            }
            candidates.iter().map(|c| c.region).collect()
        }
        Method::Geo { rules, default } => {
            let (list, why) = geo_rule_list(rules, default, geo, class, loc, explain);
            note(&|| why.clone());
            list.into_iter()
                .filter(|r| policy.candidates.contains(r))
                .collect()
        }
        Method::Weighted => {
            note(&|| "weighted, stable per client subnet".into());
            candidates.iter().map(|c| c.region).collect()
        }
        Method::Failover => {
            note(&|| "failover in policy order".into());
            candidates.iter().map(|c| c.region).collect()
        }
    };
    let overlay = class.overlay.and_then(|o| geo.overlays.get(o as usize));
    for rule in &policy.residency {
        // The innermost overlay lies inside every overlay that holds the client.
        let applies = loc.is_some_and(|loc| {
            loc.country.is_some_and(|c| rule.countries.contains(&c))
                || loc.continent.is_some_and(|c| rule.continents.contains(&c))
        }) || overlay.is_some_and(|o| rule.cidrs.iter().any(|c| c.contains(o)));
        if applies {
            order.retain(|&r| {
                set.regions.get(usize::from(r)).is_some_and(|reg| {
                    rule.labels
                        .iter()
                        .all(|(k, v)| reg.labels.get(k) == Some(v))
                })
            });
            note(&|| {
                let labels: Vec<String> = rule
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("residency: only regions with {}", labels.join(","))
            });
        }
    }
    Ranking {
        order,
        candidates,
        notes,
    }
}

/// What compiling cost, for `meridian check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileStats {
    pub time: std::time::Duration,
    /// Distinct policy shapes, each compiled once and shared by its policies.
    pub shapes: usize,
    /// Memory of the compiled routes, their lists and the shared class view.
    pub bytes: usize,
    /// Distinct shapes by route kind.
    pub kinds: [(Kind, usize); 4],
}

impl Default for CompileStats {
    fn default() -> Self {
        CompileStats {
            time: std::time::Duration::ZERO,
            shapes: 0,
            bytes: 0,
            kinds: [Kind::Nearest, Kind::Area, Kind::One, Kind::Class].map(|k| (k, 0)),
        }
    }
}

/// How far the ECS scope may widen over neighbouring networks with the same answer (see
/// `RangeTable::widen`): a few cache lines at most on the query path.
pub const SCOPE_REACH: usize = 16;

/// A route's lists while it is built: each distinct list once, numbered in first use.
#[derive(Default)]
struct Lists {
    ids: HashMap<Vec<u16>, u32>,
    store: Vec<Vec<u16>>,
}

impl Lists {
    fn add(&mut self, order: Vec<u16>) -> u32 {
        if let Some(&id) = self.ids.get(&order) {
            return id;
        }
        self.store.push(order.clone());
        let id = (self.store.len() - 1) as u32;
        self.ids.insert(order, id);
        id
    }
}

/// Whether the latency table has a measured value for any of the policy's regions (then
/// its order depends on more than the client's point).
fn measures_any(set: &PolicySet, policy: &Policy) -> bool {
    let has = |m: &HashMap<u16, f64>| policy.candidates.iter().any(|r| m.contains_key(r));
    set.latency.by_cidr.iter().any(|(_, m)| has(m))
        || set.latency.by_country.values().any(has)
        || set.latency.by_continent.values().any(has)
}

/// The cheapest route kind that gives every client exactly `rank`'s order.
fn kind_for(set: &PolicySet, policy: &Policy) -> Kind {
    let few = policy.candidates.len() <= NEAREST_MAX;
    match &policy.method {
        Method::Nearest | Method::Home if few => Kind::Nearest,
        Method::Latency if few && !measures_any(set, policy) => Kind::Nearest,
        Method::Nearest | Method::Latency | Method::Home => Kind::Class,
        Method::Geo { .. } | Method::Weighted | Method::Failover => Kind::Area,
    }
}

/// Ranks one policy shape and packs its route.
fn build(
    set: &PolicySet,
    geo: &GeoTable,
    view: &ClassView,
    policy: &Policy,
    head: Head,
) -> Option<Route> {
    let mut lists = Lists::default();
    let unknown_class = Class {
        location: None,
        overlay: None,
    };
    let no_client = lists.add(rank(set, geo, policy, &unknown_class).order);
    let order_of = |class: &Class| rank_with(set, geo, policy, class, false).order;
    let area_classes =
        || (0..view.representatives.len() as u32).map(|a| view.representative(geo, a));
    // Each kind's entries, owned; packed with the lists once they are all added.
    enum Owned {
        Nearest(Vec<u16>),
        Area(Vec<u32>),
        One(u32),
        Class(Vec<u32>),
    }
    let owned = match kind_for(set, policy) {
        Kind::Nearest => {
            // Residency keeps a subset of the candidates per area: a mask over their slots.
            if policy.residency.is_empty() {
                Owned::Nearest(Vec::new())
            } else {
                Owned::Nearest(
                    area_classes()
                        .map(|class| {
                            let kept = class.map(order_of).unwrap_or_default();
                            policy
                                .candidates
                                .iter()
                                .enumerate()
                                .filter(|(_, r)| kept.contains(r))
                                .fold(0u16, |m, (i, _)| m | (1 << i))
                        })
                        .collect(),
                )
            }
        }
        Kind::Area | Kind::One => {
            let by_area: Vec<u32> = area_classes()
                .map(|class| lists.add(class.map(order_of).unwrap_or_default()))
                .collect();
            match by_area.split_first() {
                Some((&first, rest)) if rest.iter().all(|&x| x == first) => Owned::One(first),
                _ => Owned::Area(by_area),
            }
        }
        Kind::Class => {
            // Classes differ by overlay and location; the order by point and area only.
            let mut projection: HashMap<([u64; 3], u32), u32> = HashMap::new();
            let mut distinct: Vec<u32> = Vec::new();
            let by_class: Vec<u32> = (0..geo.classes.len() as u32)
                .map(|c| {
                    let u = view.unit(c);
                    let key = (u.map(f64::to_bits), view.area(c).unwrap_or(u32::MAX));
                    *projection.entry(key).or_insert_with(|| {
                        distinct.push(c);
                        (distinct.len() - 1) as u32
                    })
                })
                .collect();
            let orders = rank_parallel(&distinct, &|c| {
                geo.class(c).map(order_of).unwrap_or_default()
            });
            let ids: Vec<u32> = orders.into_iter().map(|o| lists.add(o)).collect();
            Owned::Class(
                by_class
                    .iter()
                    .map(|&d| ids.get(d as usize).copied().unwrap_or(no_client))
                    .collect(),
            )
        }
    };
    let entries = match &owned {
        Owned::Nearest(masks) => Entries::Nearest(masks),
        Owned::Area(by_area) => Entries::ByArea(by_area),
        Owned::One(list) => Entries::One(*list),
        Owned::Class(by_class) => Entries::ByClass(by_class),
    };
    let l: Vec<&[u16]> = lists.store.iter().map(Vec::as_slice).collect();
    Route::try_new(head, &policy.candidates, entries, no_client, &l)
}

/// `rank` over many classes on every core: a policy over a hundred regions on a
/// city-level database ranks ~100 000 locations.
fn rank_parallel(classes: &[u32], order_of: &(dyn Fn(u32) -> Vec<u16> + Sync)) -> Vec<Vec<u16>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || classes.len() < 4096 {
        return classes.iter().map(|&c| order_of(c)).collect();
    }
    let chunk = classes.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = classes
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|&c| order_of(c)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The ranked list of each of a tenant map's (home, allowed) sets for policy `p`: the
/// home, then the rest of the allowed regions (all the policy's when none are listed)
/// nearest to the home first, as (region, counter slot). Once per set, not per tenant.
fn home_routes(set: &PolicySet, p: &Policy, h: &Home) -> HomeRoutes {
    let slot = |r: u16| p.candidates.iter().position(|&c| c == r).map(|s| s as u16);
    let lists = h
        .map
        .sets
        .iter()
        .map(|s| {
            let pool: &[u16] = if s.allowed.is_empty() {
                &p.candidates
            } else {
                &s.allowed
            };
            let mut rest: Vec<u16> = pool.iter().copied().filter(|&r| r != s.home).collect();
            if let Some(home) = set.regions.get(usize::from(s.home)) {
                let key = |r: &u16| {
                    set.regions
                        .get(usize::from(*r))
                        .map_or(f64::NEG_INFINITY, |x| geo::closeness(&home.unit, &x.unit))
                };
                rest.sort_by(|a, b| {
                    key(b)
                        .partial_cmp(&key(a))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            }
            std::iter::once(s.home)
                .chain(rest)
                .filter_map(|r| Some((r, slot(r)?)))
                .collect()
        })
        .collect();
    HomeRoutes {
        map: h.map.clone(),
        lists,
        unknown: unknown_route(p, h),
        depth: h.depth,
    }
}

fn unknown_route(p: &Policy, h: &Home) -> UnknownRoute {
    match &h.unknown {
        UnknownTenant::Nearest => UnknownRoute::Nearest,
        UnknownTenant::NxDomain => UnknownRoute::NxDomain,
        UnknownTenant::Regions(list) => UnknownRoute::List(
            list.iter()
                .filter_map(|&r| {
                    let s = p.candidates.iter().position(|&c| c == r)?;
                    Some((r, s as u16))
                })
                .collect(),
        ),
    }
}

/// Ranks every policy and packs the results into one [`Route`] per policy shape, shared
/// by the policies of that shape, of the kind that keeps the least (see `route`): for
/// most policies no per-class data at all, so memory and time grow with the policies and
/// their areas, not with policies × client classes.
///
/// An error means a route could not be packed (a count past its field's width, which
/// `validate` rules out): a logic bug reported as a load error rather than a policy that
/// silently answers nothing.
pub fn compile(set: &mut PolicySet, geo: &GeoTable) -> Result<CompileStats, Diagnostic> {
    let started = std::time::Instant::now();
    let mut stats = CompileStats::default();
    let view = ClassView::build(set, geo);
    // Policies with the same shape (method, candidates, residency rules) rank every class
    // alike: the ranking and its allocation are made once per shape and shared.
    let mut shapes: HashMap<String, Route> = HashMap::new();
    let mut assigned = Vec::with_capacity(set.policies.len());
    for policy in &set.policies {
        let head = Head {
            answers: u16::try_from(policy.answers).unwrap_or(u16::MAX),
            weighted: matches!(policy.method, Method::Weighted),
            ttl: policy.ttl,
            seed: policy
                .name
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            spill: policy.spill_overflow,
        };
        let shape = format!(
            "{:?}|{:?}|{:?}",
            policy.method, policy.candidates, policy.residency
        );
        if let Some(shared) = shapes.get(&shape) {
            assigned.push(shared.with_head(head));
            continue;
        }
        let route = build(set, geo, &view, policy, head).ok_or_else(|| {
            Diagnostic::new(
                &policy.file,
                policy.line,
                "internal error: the policy's compiled route does not fit its layout",
            )
        })?;
        shapes.insert(shape, route.clone());
        assigned.push(route);
    }
    stats.shapes = shapes.len();
    stats.bytes = shapes.values().map(Route::size).sum::<usize>()
        + view.bytes()
        + assigned.len() * std::mem::size_of::<Route>();
    stats.kinds = [Kind::Nearest, Kind::Area, Kind::One, Kind::Class]
        .map(|k| (k, shapes.values().filter(|r| r.kind() == k).count()));
    set.routes = assigned.clone();
    for (p, route) in set.policies.iter_mut().zip(assigned) {
        p.route = route;
    }
    // Tenant maps shared by policies with the same regions share their routes too.
    let mut homes: HashMap<(usize, Vec<u16>), Arc<HomeRoutes>> = HashMap::new();
    set.homes = set
        .policies
        .iter()
        .map(|p| {
            let h = p.home.as_ref()?;
            let key = (Arc::as_ptr(&h.map) as usize, p.candidates.clone());
            let routes = homes
                .entry(key)
                .or_insert_with(|| Arc::new(home_routes(set, p, h)))
                .clone();
            // The unknown-tenant setting and depth are the policy's own.
            Some(Arc::new(HomeRoutes {
                unknown: unknown_route(p, h),
                depth: h.depth,
                ..(*routes).clone()
            }))
        })
        .collect();
    set.classes = view;
    set.classes_v4 = geo.v4.clone();
    set.classes_v6 = geo.v6.clone();
    stats.time = started.elapsed();
    Ok(stats)
}
