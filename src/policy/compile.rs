//! Load-time ranking: for every policy and every client class, the ordered region list
//! the policy gives, with constraints applied. Lists are interned (for explanations), and
//! each policy gets a packed [`Route`]: its class → list mapping over the GeoIP class
//! table every policy shares, and the lists it uses. The query path does one lookup in
//! the class table and reads the ECS scope off the range it lands in, widened over
//! neighbours that get the same list.
//!
//! `rank` is also what `meridian query` prints, so the explanation and the server agree.

use std::collections::HashMap;

use super::route::{Head, Route};
use super::{Method, Policy, PolicySet};
use crate::diag::Diagnostic;
use crate::geo::{self, Class, GeoTable, Location};

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
    let point = geo.class_location(class).and_then(|l| l.point);
    let distance = |r: u16| {
        let region = set.regions.get(usize::from(r))?;
        point.map(|p| geo::distance_km(p, region.point))
    };
    rank_with(set, geo, policy, class, &distance, true)
}

/// `rank` with distances from `distance` (a table at compile time) and, when `explain`
/// is false, without the notes.
fn rank_with(
    set: &PolicySet,
    geo: &GeoTable,
    policy: &Policy,
    class: &Class,
    distance: &dyn Fn(u16) -> Option<f64>,
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
            set.regions.get(usize::from(r))?;
            let distance_km = distance(r);
            // Only latency ranking and explanations read the RTT.
            let measured = if explain || matches!(policy.method, Method::Latency) {
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
    let by = |key: fn(&Candidate) -> Option<f64>, cands: &mut Vec<Candidate>| {
        // Stable: ties keep the operator's order.
        cands.sort_by(|a, b| {
            key(a)
                .unwrap_or(f64::INFINITY)
                .partial_cmp(&key(b).unwrap_or(f64::INFINITY))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    };
    let mut order: Vec<u16> = match &policy.method {
        Method::Nearest => {
            if point.is_some() {
                by(|c| c.distance_km, &mut candidates);
                note(&|| "nearest by great-circle distance".into());
            } else {
                note(&|| "client location unknown: policy order".into());
            }
            candidates.iter().map(|c| c.region).collect()
        }
        Method::Latency => {
            if candidates.iter().any(|c| c.rtt_ms.is_some()) {
                by(|c| c.rtt_ms, &mut candidates);
                note(&|| {
                    "lowest round-trip time (measured where the table has it, else estimated from distance)".into()
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
    if let Some(loc) = loc {
        for rule in &policy.residency {
            let applies = loc.country.is_some_and(|c| rule.countries.contains(&c))
                || loc.continent.is_some_and(|c| rule.continents.contains(&c));
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
    }
    Ranking {
        order,
        candidates,
        notes,
    }
}

/// What compiling cost, for `meridian check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    pub time: std::time::Duration,
    /// Distinct policy shapes, each compiled once and shared by its policies.
    pub shapes: usize,
    /// Memory of the compiled routes and lists.
    pub bytes: usize,
}

/// How far the ECS scope may widen over neighbouring networks with the same answer (see
/// `RangeTable::lookup_mapped`): a few cache lines at most on the query path.
pub const SCOPE_REACH: usize = 16;

fn intern(ids: &mut HashMap<Box<[u16]>, u32>, store: &mut Vec<Box<[u16]>>, order: Vec<u16>) -> u32 {
    if let Some(&id) = ids.get(order.as_slice()) {
        return id;
    }
    let order = order.into_boxed_slice();
    store.push(order.clone());
    let id = (store.len() - 1) as u32;
    ids.insert(order, id);
    id
}

/// Ranks every policy for every client class and packs the results into one [`Route`]
/// per policy (identical routes shared). Every policy shares the one class table of the
/// GeoIP data, so the memory is one small array per policy (a byte per class, plus its
/// lists) rather than a range table per policy, and 10 000 policies compile in well
/// under a second.
///
/// An error means a route could not be packed (a count past its field's width, which
/// `validate` rules out): a logic bug reported as a load error rather than a policy that
/// silently answers nothing.
pub fn compile(set: &mut PolicySet, geo: &GeoTable) -> Result<CompileStats, Diagnostic> {
    let started = std::time::Instant::now();
    let mut stats = CompileStats::default();
    // Distances from every class to every region, once: the rankings read them.
    let distances: Vec<Option<Box<[f64]>>> = geo
        .classes
        .iter()
        .map(|class| {
            let point = geo.class_location(class)?.point?;
            Some(
                set.regions
                    .iter()
                    .map(|r| geo::distance_km(point, r.point))
                    .collect(),
            )
        })
        .collect();
    let unknown_class = Class {
        location: None,
        overlay: None,
    };
    let mut lists: HashMap<Box<[u16]>, u32> = HashMap::new();
    let mut list_store: Vec<Box<[u16]>> = Vec::new();
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
        };
        let shape = format!(
            "{:?}|{:?}|{:?}",
            policy.method, policy.candidates, policy.residency
        );
        if let Some(shared) = shapes.get(&shape) {
            assigned.push(shared.with_head(head));
            continue;
        }
        // The route holds the lists this policy uses, numbered locally (first use first).
        let mut ids: Vec<u32> = Vec::new();
        let mut local_of: HashMap<u32, u32> = HashMap::new();
        let mut local = |id: u32| {
            *local_of.entry(id).or_insert_with(|| {
                ids.push(id);
                (ids.len() - 1) as u32
            })
        };
        let classes: Vec<u32> = geo
            .classes
            .iter()
            .zip(&distances)
            .map(|(class, dist)| {
                let distance = |r: u16| dist.as_ref()?.get(usize::from(r)).copied();
                local(intern(
                    &mut lists,
                    &mut list_store,
                    rank_with(set, geo, policy, class, &distance, false).order,
                ))
            })
            .collect();
        let no_client = local(intern(
            &mut lists,
            &mut list_store,
            rank(set, geo, policy, &unknown_class).order,
        ));
        let lists: Vec<&[u16]> = ids
            .iter()
            .map(|&id| list_store.get(id as usize).map_or(&[][..], |l| &l[..]))
            .collect();
        let route = Route::try_new(head, &policy.candidates, &classes, no_client, &lists, &ids)
            .ok_or_else(|| {
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
        + list_store.iter().map(|l| l.len() * 2).sum::<usize>()
        + assigned.len() * std::mem::size_of::<Route>();
    set.routes = assigned.clone();
    for (p, route) in set.policies.iter_mut().zip(assigned) {
        p.route = route;
    }
    set.lists = list_store;
    set.classes_v4 = geo.v4.clone();
    set.classes_v6 = geo.v6.clone();
    stats.time = started.elapsed();
    Ok(stats)
}
