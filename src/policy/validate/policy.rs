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

pub(super) fn policy(
    file: &Path,
    p: &S<spec::Policy>,
    regions: &[Region],
    index: &HashMap<String, u16>,
    seen: &mut HashMap<Box<[u8]>, (PathBuf, usize)>,
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
    };
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
    })
}
