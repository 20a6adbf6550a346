//! A policy: its name, method and the rules of that method (geo, weighted, failover,
//! residency), answers, TTL and demand; regions named by index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::clients::*;
use super::region::requests_per_second;
use crate::diag::Diagnostic;
use crate::geo;
use crate::name;
use crate::policy::model::*;
use crate::policy::route::Route;
use crate::policy::spec::{self, S, diag};
use crate::policy::tenants::{self, TenantMap};

pub(super) fn region_refs(
    file: &Path,
    names: &[S<String>],
    index: &HashMap<String, u16>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for n in names {
        match index.get(&n.value) {
            Some(&i) if !out.contains(&i) => out.push(i),
            Some(_) => errors.push(diag(file, n, format!("region {} is listed twice", n.value))),
            None => errors.push(diag(file, n, format!("unknown region {:?}", n.value))),
        }
    }
    out
}

/// Tenant maps loaded so far, by file: policies naming the same file share one map
/// (`None`: it had errors, already reported).
pub(super) type TenantMaps = HashMap<PathBuf, Option<std::sync::Arc<TenantMap>>>;

pub(super) fn policy(
    file: &Path,
    p: &S<spec::Policy>,
    regions: &[Region],
    index: &HashMap<String, u16>,
    seen: &mut HashMap<Box<[u8]>, (PathBuf, usize)>,
    maps: &mut TenantMaps,
    errors: &mut Vec<Diagnostic>,
) -> Option<Policy> {
    let spec = &p.value;
    let n = errors.len();
    let text = spec.name.value.trim_end_matches('.');
    let wire = match name::from_text(&format!("{text}."), name::ROOT) {
        Ok(w) => name::lowercase(&w).into_boxed_slice(),
        Err(e) => {
            errors.push(diag(file, &spec.name, format!("bad policy name: {e}")));
            return None;
        }
    };
    if name::labels(&wire).skip(1).any(|l| l == b"*") {
        errors.push(diag(
            file,
            &spec.name,
            "a wildcard may only be the leftmost label (*.name)",
        ));
    }
    if let Some((f, l)) = seen.get(&wire) {
        errors.push(diag(
            file,
            &spec.name,
            format!(
                "policy {} is already defined at {}:{l}",
                name::to_text(&wire),
                f.display()
            ),
        ));
    }
    let candidates = match &spec.regions {
        Some(list) => region_refs(file, list, index, errors),
        None => (0..regions.len() as u16).collect(),
    };
    if candidates.is_empty() && errors.len() == n {
        errors.push(diag(
            file,
            &spec.name,
            "the policy has no regions to answer with",
        ));
    }
    let answers = spec.answers.value as usize;
    if answers == 0 || answers > MAX_ANSWERS {
        errors.push(diag(
            file,
            &spec.answers,
            format!("answers must be 1..{MAX_ANSWERS}"),
        ));
    }
    if spec.ttl > 0x7fff_ffff {
        errors.push(diag(file, &spec.name, "ttl is above 2147483647"));
    }
    let asns_at = spec
        .geo
        .iter()
        .flat_map(|g| g.value.rules.iter())
        .find_map(|r| r.value.asns.first().map(spec::at))
        .unwrap_or_else(|| spec::at(p));
    let method = match (&spec.method.value, &spec.geo) {
        (spec::MethodName::Geo, Some(g)) => {
            let mut rules = Vec::new();
            for r in &g.value.rules {
                let rv = &r.value;
                let mut countries = Vec::new();
                for c in &rv.countries {
                    countries.extend(country_code(file, c, errors));
                }
                let continents = rv
                    .continents
                    .iter()
                    .filter_map(|c| continent_code(file, c, errors))
                    .collect();
                let mut subdivisions = Vec::new();
                for s in &rv.subdivisions {
                    let up = s.value.to_ascii_uppercase();
                    match up.split_once('-') {
                        Some((cc, sub)) if geo::country(cc).is_some() && !sub.is_empty() => {
                            subdivisions.push(up)
                        }
                        _ => errors.push(diag(
                            file,
                            s,
                            format!("subdivision {:?} is not CC-CODE (ISO 3166-2)", s.value),
                        )),
                    }
                }
                let cidrs = cidr_list(file, &rv.cidrs, rv.cidrs_file.as_ref(), errors);
                let mut asns = Vec::new();
                for a in &rv.asns {
                    // 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 23456 is
                    // AS_TRANS, which no network originates (RFC 6793).
                    if matches!(a.value, 0 | 23456 | u32::MAX) {
                        errors.push(diag(
                            file,
                            a,
                            format!("asns: {} is a reserved AS number", a.value),
                        ));
                    } else if asns.contains(&a.value) {
                        errors.push(diag(file, a, format!("asns: {} is listed twice", a.value)));
                    } else {
                        asns.push(a.value);
                    }
                }
                if rv.countries.is_empty()
                    && rv.continents.is_empty()
                    && rv.subdivisions.is_empty()
                    && rv.cidrs.is_empty()
                    && rv.cidrs_file.is_none()
                    && rv.asns.is_empty()
                {
                    errors.push(diag(
                        file,
                        r,
                        "a geo rule needs countries, continents, subdivisions, cidrs, a cidrs_file or asns",
                    ));
                }
                let regions = region_refs(file, &rv.regions, index, errors);
                rules.push(GeoRule {
                    countries,
                    continents,
                    subdivisions,
                    cidrs,
                    asns,
                    regions,
                });
            }
            let default = region_refs(file, &g.value.default, index, errors);
            Method::Geo { rules, default }
        }
        (spec::MethodName::Geo, None) => {
            errors.push(diag(
                file,
                &spec.method,
                "method geo needs a geo: section with rules and a default",
            ));
            Method::Failover
        }
        (_, Some(g)) => {
            errors.push(diag(file, g, "a geo: section only applies to method geo"));
            Method::Failover
        }
        (spec::MethodName::Nearest, None) => Method::Nearest,
        (spec::MethodName::Latency, None) => Method::Latency,
        (spec::MethodName::Weighted, None) => Method::Weighted,
        (spec::MethodName::Failover, None) => Method::Failover,
        (spec::MethodName::Home, None) => Method::Home,
    };
    let home = home(file, spec, &wire, &candidates, index, maps, errors);
    let mut residency = Vec::new();
    for r in &spec.residency {
        let clients = &r.value.clients.value;
        let mut countries = Vec::new();
        for c in &clients.countries {
            countries.extend(country_code(file, c, errors));
        }
        let continents = clients
            .continents
            .iter()
            .filter_map(|c| continent_code(file, c, errors))
            .collect();
        let cidrs = cidr_list(file, &clients.cidrs, clients.cidrs_file.as_ref(), errors);
        if clients.countries.is_empty()
            && clients.continents.is_empty()
            && clients.cidrs.is_empty()
            && clients.cidrs_file.is_none()
        {
            errors.push(diag(
                file,
                &r.value.clients,
                "residency clients need countries, continents, cidrs or a cidrs_file",
            ));
        }
        if r.value.regions.is_empty() {
            errors.push(diag(
                file,
                r,
                "residency needs the labels its regions must carry",
            ));
        }
        residency.push(Residency {
            countries,
            continents,
            cidrs,
            labels: r.value.regions.clone(),
        });
    }
    let all_down = match &spec.all_down {
        // Residency fails closed: a tenant's data must not be served from elsewhere.
        None if matches!(method, Method::Home) => AllDown::ServFail,
        None | Some(spec::AllDown::FailOpen) => AllDown::FailOpen,
        Some(spec::AllDown::Nodata) => AllDown::NoData,
        Some(spec::AllDown::Servfail) => AllDown::ServFail,
        Some(spec::AllDown::Static(s)) => {
            if s.a.is_empty() && s.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    &spec.name,
                    "all_down static needs a or aaaa addresses",
                ));
            }
            AllDown::Static {
                a: s.a.clone(),
                aaaa: s.aaaa.clone(),
                rdata: AddressRdata::new(&s.a, &s.aaaa),
            }
        }
    };
    let demand = requests_per_second(file, &spec.demand, "demand", errors);
    let spill_overflow = !matches!(
        spec.overflow.as_ref().map(|o| o.value),
        Some(spec::Overflow::AllDown)
    );
    let (line, _) = spec::at(p);
    seen.insert(wire.clone(), (file.to_path_buf(), line));
    (errors.len() == n).then(|| Policy {
        asns_at,
        demand,
        spill_overflow,
        display: name::to_text(&wire),
        name: wire,
        ttl: spec.ttl,
        method,
        answers,
        candidates,
        residency,
        all_down,
        route: Route::default(),
        file: file.to_path_buf(),
        line,
        home,
    })
}

/// A `home` policy's tenant map and `unknown:`; errors for `tenants:`/`unknown:` on
/// other methods.
fn home(
    file: &Path,
    spec: &spec::Policy,
    wire: &[u8],
    candidates: &[u16],
    index: &HashMap<String, u16>,
    maps: &mut TenantMaps,
    errors: &mut Vec<Diagnostic>,
) -> Option<Home> {
    if !matches!(spec.method.value, spec::MethodName::Home) {
        for (at, key) in [
            (spec.tenants.as_ref().map(spec::at), "tenants"),
            (spec.unknown.as_ref().map(spec::at), "unknown"),
        ] {
            if let Some((line, col)) = at {
                errors.push(Diagnostic::at(
                    file,
                    line,
                    col,
                    format!("{key}: only applies to method home"),
                ));
            }
        }
        return None;
    }
    if name::labels(wire).next() != Some(b"*".as_slice()) {
        errors.push(diag(
            file,
            &spec.name,
            "method home needs a wildcard name (*.tenants.example.com): the tenant is the label it matches",
        ));
    }
    let Some(t) = &spec.tenants else {
        errors.push(diag(
            file,
            &spec.method,
            "method home needs tenants: a tenant map file (tenant,home,allowed,move_to,move_at)",
        ));
        return None;
    };
    let path = file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(&t.value);
    let map = match maps.get(&path) {
        Some(m) => m.clone(),
        None => {
            let region = |n: &str| index.get(n).copied();
            let loaded = match tenants::load(&path, &region) {
                Ok(m) => Some(std::sync::Arc::new(m)),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            };
            maps.insert(path.clone(), loaded.clone());
            loaded
        }
    }?;
    // Every region a tenant may be answered with must be one of the policy's.
    let mut outside: Vec<u16> = map
        .sets
        .iter()
        .flat_map(|s| std::iter::once(s.home).chain(s.allowed.iter().copied()))
        .filter(|r| !candidates.contains(r))
        .collect();
    outside.sort_unstable();
    outside.dedup();
    if let Some(&r) = outside.first() {
        let name = index
            .iter()
            .find(|(_, i)| **i == r)
            .map_or("?", |(n, _)| n.as_str());
        errors.push(diag(
            file,
            t,
            format!(
                "tenants {}: region {name:?} is not one of the policy's regions",
                path.display()
            ),
        ));
    }
    let unknown = match spec.unknown.as_ref().map(|u| (&u.value, u)) {
        None => UnknownTenant::Nearest,
        Some((spec::UnknownTenant::Word(w), u)) => match w.as_str() {
            "nearest" => UnknownTenant::Nearest,
            "nxdomain" => UnknownTenant::NxDomain,
            other => {
                errors.push(diag(
                    file,
                    u,
                    format!("unknown: {other:?} is not nearest, nxdomain or a list of regions"),
                ));
                UnknownTenant::Nearest
            }
        },
        Some((spec::UnknownTenant::Regions(list), u)) => {
            let regions = region_refs(file, list, index, errors);
            if regions.is_empty() {
                errors.push(diag(file, u, "unknown: an empty list of regions"));
            }
            UnknownTenant::Regions(regions)
        }
    };
    Some(Home {
        map,
        file: path,
        unknown,
        depth: name::labels(wire).count(),
    })
}
