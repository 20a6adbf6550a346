//! Validation: the YAML spec (`spec`) → the model, every error at once as
//! `FILE:LINE:COL`. Health settings are validated here too (thresholds, endpoints, the
//! metric veto), into the health checker's model types.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::latency::load_latency;
use super::model::*;
use super::route::Route;
use super::spec::{self, S};
use crate::diag::Diagnostic;
use crate::geo;
use crate::health::{Endpoint, MinUp, Probe, Thresholds};
use crate::name;

pub const POLICY_VERSION: u32 = 1;

fn pos<T>(s: &S<T>) -> (usize, usize) {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

pub(super) fn diag<T>(file: &Path, s: &S<T>, message: impl Into<String>) -> Diagnostic {
    let (l, c) = pos(s);
    Diagnostic::at(file, l, c, message)
}

pub use crate::diag::parse_yaml;

/// A CIDR list kept in its own file (`cidrs_file:`): one network a line, an address
/// alone meaning just it, `#` starting a comment, blank lines allowed. Every mistake at
/// its line.
pub fn cidrs_file(path: &Path) -> Result<Vec<IpNet>, Vec<Diagnostic>> {
    let text =
        crate::diag::read_yaml(path).map_err(|e| vec![Diagnostic::new(path, 0, e.message)])?;
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let parsed = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) if net.trunc() == net => nets.push(net),
            Ok(net) => errors.push(Diagnostic::new(
                path,
                i + 1,
                format!("{entry} has host bits set (the network is {})", net.trunc()),
            )),
            Err(_) => errors.push(Diagnostic::new(
                path,
                i + 1,
                format!("{entry:?} is not a CIDR or an address"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

/// `cidrs:` and `cidrs_file:` of a geo rule or a residency client set, as one list.
fn cidr_list(
    file: &Path,
    inline: &[S<String>],
    from_file: Option<&S<String>>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<IpNet> {
    let mut cidrs = Vec::new();
    for c in inline {
        match c.value.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => cidrs.push(net),
            Ok(_) => errors.push(diag(file, c, format!("{} has host bits set", c.value))),
            Err(_) => errors.push(diag(file, c, format!("{:?} is not a CIDR", c.value))),
        }
    }
    if let Some(f) = from_file {
        let path = file.parent().unwrap_or(Path::new(".")).join(&f.value);
        match cidrs_file(&path) {
            Ok(more) => cidrs.extend(more),
            Err(mut e) => {
                if e.first().is_some_and(|d| d.line == 0) {
                    // Unreadable: said where it is named, too.
                    errors.push(diag(
                        file,
                        f,
                        format!(
                            "cidrs_file {}: {}",
                            path.display(),
                            e.first().map_or("", |d| d.message.as_str())
                        ),
                    ));
                } else {
                    errors.append(&mut e);
                }
            }
        }
    }
    cidrs
}

fn country_code(file: &Path, s: &S<String>, errors: &mut Vec<Diagnostic>) -> Vec<[u8; 2]> {
    if s.value.eq_ignore_ascii_case("EU") {
        return EU.iter().filter_map(|c| geo::two(c)).collect();
    }
    match geo::country(&s.value) {
        Some((cc, ..)) => vec![cc],
        None => {
            errors.push(diag(
                file,
                s,
                format!("unknown country code {:?} (ISO 3166-1 alpha-2)", s.value),
            ));
            vec![]
        }
    }
}

fn continent_code(file: &Path, s: &S<String>, errors: &mut Vec<Diagnostic>) -> Option<[u8; 2]> {
    let up = s.value.to_ascii_uppercase();
    if geo::CONTINENTS.contains(&up.as_str()) {
        geo::two(&up)
    } else {
        errors.push(diag(
            file,
            s,
            format!(
                "unknown continent {:?} (one of {})",
                s.value,
                geo::CONTINENTS.join(", ")
            ),
        ));
        None
    }
}

/// Reads every `*.yaml`/`*.yml` in `dir` and the optional latency table, and validates
/// them together. All errors at once.
pub fn load(
    dir: &Path,
    latency_file: Option<&Path>,
    overhead_ms: f64,
) -> Result<PolicySet, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(vec![Diagnostic::new(
                dir,
                0,
                format!("cannot read policies folder: {e}"),
            )]);
        }
    };
    files.sort();
    let mut parsed = Vec::new();
    for f in files {
        let text = match crate::diag::read_yaml(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match parse_yaml::<spec::File>(&f, &text) {
            Ok(spec) => {
                if spec.version.value != POLICY_VERSION {
                    errors.push(diag(
                        &f,
                        &spec.version,
                        format!(
                            "version {} is not supported (this meridian reads {POLICY_VERSION})",
                            spec.version.value
                        ),
                    ));
                    continue;
                }
                parsed.push((f, spec));
            }
            Err(e) => errors.push(e),
        }
    }

    // Regions first: policies in any file may use regions of any file.
    let mut set = PolicySet::default();
    let mut region_at: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for (file, spec) in &parsed {
        for r in &spec.regions {
            if let Some(region) = region(file, r, &mut region_at, &mut errors) {
                set.regions.push(region);
            }
        }
    }
    for (i, r) in set.regions.iter_mut().enumerate() {
        r.id = i as u32; // the snapshot renumbers with the process-wide registry
    }
    if set.regions.len() > usize::from(u16::MAX) {
        errors.push(Diagnostic::new(dir, 0, "more than 65535 regions"));
    }
    let index: HashMap<String, u16> = set
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i as u16))
        .collect();

    let mut seen: HashMap<Box<[u8]>, (PathBuf, usize)> = HashMap::new();
    for (file, spec) in &parsed {
        for p in &spec.policies {
            if let Some(policy) = policy(file, p, &set.regions, &index, &mut seen, &mut errors) {
                set.policies.push(policy);
            }
        }
    }
    set.latency.overhead_ms = overhead_ms;
    if let Some(lf) = latency_file {
        load_latency(lf, &index, &mut set.latency, &mut errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn region(
    file: &Path,
    r: &S<spec::Region>,
    seen: &mut HashMap<String, (PathBuf, usize)>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Region> {
    let spec = &r.value;
    let n = errors.len();
    let name = spec.name.value.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        errors.push(diag(
            file,
            &spec.name,
            format!("region name {name:?} may only use letters, digits, - and _"),
        ));
    }
    if let Some((f, l)) = seen.get(&name) {
        errors.push(diag(
            file,
            &spec.name,
            format!("region {name} is already defined at {}:{l}", f.display()),
        ));
    }
    let (lat, lon) = (spec.location.value.lat.value, spec.location.value.lon.value);
    if !(-90.0..=90.0).contains(&lat) {
        errors.push(diag(
            file,
            &spec.location.value.lat,
            format!("latitude {lat} is outside -90..90"),
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        errors.push(diag(
            file,
            &spec.location.value.lon,
            format!("longitude {lon} is outside -180..180"),
        ));
    }
    let cname = match &spec.cname {
        Some(c) => {
            if !spec.a.is_empty() || !spec.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    c,
                    "a region answers with addresses or a CNAME, not both",
                ));
            }
            match name::from_text(&c.value, name::ROOT) {
                Ok(w) => Some(w.into_boxed_slice()),
                Err(e) => {
                    errors.push(diag(file, c, format!("bad CNAME target: {e}")));
                    None
                }
            }
        }
        None => {
            if spec.a.is_empty() && spec.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    &spec.name,
                    format!("region {name} has no a, aaaa or cname answer"),
                ));
            }
            None
        }
    };
    let a: Vec<Ipv4Addr> = spec.a.iter().map(|x| x.value).collect();
    let aaaa: Vec<Ipv6Addr> = spec.aaaa.iter().map(|x| x.value).collect();
    // Positions in this order are what `serves` masks and the health view's live bits
    // count (`AddressRdata`).
    let addresses: Vec<(IpAddr, (usize, usize))> = spec
        .a
        .iter()
        .map(|x| (IpAddr::V4(x.value), pos(x)))
        .chain(spec.aaaa.iter().map(|x| (IpAddr::V6(x.value), pos(x))))
        .collect();
    for (i, (ip, (l, c))) in addresses.iter().enumerate() {
        if addresses.iter().take(i).any(|(other, _)| other == ip) {
            errors.push(Diagnostic::at(
                file,
                *l,
                *c,
                format!("address {ip} is listed twice in region {name}"),
            ));
        }
    }
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for e in &spec.endpoints {
        match endpoint_from_spec(&e.value) {
            Ok(mut ep) => {
                ep.serves = served_mask(file, &name, &e.value.serves, &addresses, errors);
                if ep.serves != 0 && spec.cname.is_some() {
                    errors.push(diag(
                        file,
                        &e.value.name,
                        "serves: a CNAME region has no addresses to serve",
                    ));
                }
                if endpoints.iter().any(|x| x.name == ep.name) {
                    errors.push(diag(
                        file,
                        &e.value.name,
                        format!("endpoint {} is defined twice", ep.name),
                    ));
                }
                endpoints.push(ep);
            }
            Err((at, msg)) => errors.push(Diagnostic::at(file, at.0, at.1, msg)),
        }
    }
    if let Some(m) = &spec.metric {
        match metric_from_spec(&m.value) {
            Ok(ep) => endpoints.push(ep),
            Err((at, msg)) => {
                let (l, c) = if at.0 == 0 { pos(m) } else { at };
                errors.push(Diagnostic::at(file, l, c, msg));
            }
        }
    }
    let (thresholds, min_up) = match thresholds_from_spec(&spec.health, spec.endpoints.len()) {
        Ok(t) => t,
        Err((at, msg)) => {
            let (l, c) = if at.0 == 0 { pos(r) } else { at };
            errors.push(Diagnostic::at(file, l, c, msg));
            (Thresholds::default_preset(), MinUp::Count(1))
        }
    };
    let capacity = requests_per_second(file, &spec.capacity, "capacity", errors);
    let load = match &spec.load {
        None => None,
        Some(l) => match load_from_spec(&l.value) {
            Ok(q) => Some(q),
            Err((at, msg)) => {
                let (ln, c) = if at.0 == 0 { pos(l) } else { at };
                errors.push(Diagnostic::at(file, ln, c, msg));
                None
            }
        },
    };
    let failback = match &spec.health.failback {
        None => None,
        Some(f) => match failback_from_spec(&f.value) {
            Ok(f) => Some(f),
            Err((at, msg)) => {
                errors.push(Diagnostic::at(file, at.0, at.1, msg));
                None
            }
        },
    };
    let (line, _) = pos(r);
    seen.insert(name.clone(), (file.to_path_buf(), line));
    (errors.len() == n).then(|| Region {
        name,
        capacity,
        failback,
        load,
        point: (lat, lon),
        unit: crate::geo::unit((lat, lon)),
        rdata: AddressRdata::new(&a, &aaaa),
        order: match spec.order {
            None | Some(spec::Order::Fixed) => AddressOrder::Fixed,
            Some(spec::Order::Rotate) => AddressOrder::Rotate,
            Some(spec::Order::Shuffle) => AddressOrder::Shuffle,
        },
        a,
        aaaa,
        cname,
        weight: spec.weight,
        labels: spec.labels.clone(),
        endpoints,
        thresholds,
        min_up,
        id: 0,
        file: file.to_path_buf(),
        line,
    })
}

/// An endpoint's `serves:` as a mask over the region's `addresses` (in their order).
fn served_mask(
    file: &Path,
    region: &str,
    serves: &[S<String>],
    addresses: &[(IpAddr, (usize, usize))],
    errors: &mut Vec<Diagnostic>,
) -> u64 {
    let mut mask = 0u64;
    for s in serves {
        let Ok(ip) = s.value.trim().parse::<IpAddr>() else {
            errors.push(diag(
                file,
                s,
                format!("serves: {:?} is not an IP address", s.value),
            ));
            continue;
        };
        match addresses.iter().position(|(a, _)| *a == ip) {
            None => errors.push(diag(
                file,
                s,
                format!("serves: {ip} is not one of region {region}'s addresses (a, aaaa)"),
            )),
            Some(i) if i >= MAX_SERVED => errors.push(diag(
                file,
                s,
                format!(
                    "serves: {ip} is address {} of the region; only the first {MAX_SERVED} can be served by an endpoint",
                    i + 1
                ),
            )),
            Some(i) if mask & (1 << i) != 0 => errors.push(diag(
                file,
                s,
                format!("serves: {ip} is listed twice"),
            )),
            Some(i) => mask |= 1 << i,
        }
    }
    mask
}

fn region_refs(
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

fn policy(
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
        .find_map(|r| r.value.asns.first().map(pos))
        .unwrap_or_else(|| pos(p));
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
    let (line, _) = pos(p);
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

type At = (usize, usize);

fn at<T>(s: &spec::S<T>) -> At {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

fn dur(v: &Option<spec::S<String>>, into: &mut Duration) -> Result<(), (At, String)> {
    if let Some(s) = v {
        *into = humantime::parse_duration(&s.value)
            .map_err(|e| (at(s), format!("{:?}: {e}", s.value)))?;
    }
    Ok(())
}

/// A region's thresholds: the preset, then every field given. `(0, 0)` in an error
/// means "the region itself".
pub fn thresholds_from_spec(
    h: &spec::Health,
    endpoints: usize,
) -> Result<(Thresholds, MinUp), (At, String)> {
    let mut t = match &h.preset {
        Some(p) => Thresholds::preset(&p.value).ok_or_else(|| {
            (
                at(p),
                format!(
                    "unknown preset {:?} (default, aggressive, conservative)",
                    p.value
                ),
            )
        })?,
        None => Thresholds::default_preset(),
    };
    if let Some(w) = h.window {
        t.window = w.clamp(1, 1000);
        t.min_samples = t.min_samples.min(t.window);
    }
    for (v, into) in [
        (h.fail_error_rate, &mut t.fail_error_rate),
        (h.recover_error_rate, &mut t.recover_error_rate),
    ] {
        if let Some(x) = v {
            if !(0.0..=1.0).contains(&x) {
                return Err(((0, 0), format!("error rates are fractions 0..1, not {x}")));
            }
            *into = x;
        }
    }
    if let Some(c) = h.fail_consecutive {
        t.fail_consecutive = c.max(1);
    }
    if let Some(c) = h.recover_consecutive {
        t.recover_consecutive = c.max(1);
    }
    if let Some(p) = h.latency_percentile {
        t.latency_percentile = p.clamp(1, 100);
    }
    dur(&h.fail_latency, &mut t.fail_latency)?;
    dur(&h.recover_latency, &mut t.recover_latency)?;
    dur(&h.cooldown, &mut t.cooldown)?;
    if h.degraded_latency.is_some() {
        let mut d = Duration::ZERO;
        dur(&h.degraded_latency, &mut d)?;
        t.degraded_latency = Some(d);
    }
    if t.recover_error_rate > t.fail_error_rate {
        return Err((
            (0, 0),
            "recover_error_rate must not exceed fail_error_rate (hysteresis)".into(),
        ));
    }
    if t.recover_latency > t.fail_latency {
        return Err((
            (0, 0),
            "recover_latency must not exceed fail_latency (hysteresis)".into(),
        ));
    }
    let min_up = match (h.min_up, h.min_up_fraction) {
        (Some(_), Some(_)) => {
            return Err(((0, 0), "give min_up or min_up_fraction, not both".into()));
        }
        (_, Some(f)) if !(0.0..=1.0).contains(&f) || f == 0.0 => {
            return Err((
                (0, 0),
                format!("min_up_fraction must be in (0, 1], not {f}"),
            ));
        }
        (_, Some(f)) => MinUp::Fraction(f),
        (Some(k), None) if endpoints > 0 && (k == 0 || k > endpoints) => {
            return Err((
                (0, 0),
                format!("min_up {k} must be 1..{endpoints} (the number of endpoints)"),
            ));
        }
        (Some(k), None) => MinUp::Count(k),
        (None, None) => MinUp::Count(1),
    };
    Ok((t, min_up))
}

/// A requests/s figure (`capacity`, `demand`): a finite number above 0, else an error
/// at its position and `None`.
fn requests_per_second(
    file: &Path,
    v: &Option<spec::S<f64>>,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<f64> {
    let v = v.as_ref()?;
    if v.value.is_finite() && v.value > 0.0 {
        Some(v.value)
    } else {
        errors.push(diag(
            file,
            v,
            format!("{what} {} must be a number of requests/s above 0", v.value),
        ));
        None
    }
}

/// A Prometheus base URL (`metric:`, `load:`): http or https, without a trailing `/`.
fn prometheus_url(u: &spec::S<String>) -> Result<(String, reqwest::Url), (At, String)> {
    let url = u.value.trim_end_matches('/').to_string();
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| (at(u), format!("prometheus URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((at(u), "the prometheus URL must be http or https".into()));
    }
    Ok((url, parsed))
}

fn load_from_spec(l: &spec::Load) -> Result<crate::health::LoadQuery, (At, String)> {
    let (url, _) = prometheus_url(&l.prometheus)?;
    if l.query.trim().is_empty() {
        return Err(((0, 0), "load: the query is empty".into()));
    }
    let interval = duration(&l.interval, Duration::from_secs(15), "interval")?;
    let timeout = duration(&l.timeout, Duration::from_secs(2), "timeout")?;
    if interval < Duration::from_secs(1) || timeout.is_zero() || timeout > interval {
        return Err((
            l.interval.as_ref().map(at).unwrap_or((0, 0)),
            "load: interval must be at least 1s and the timeout within it".into(),
        ));
    }
    Ok(crate::health::LoadQuery {
        url,
        query: l.query.clone(),
        interval,
        timeout,
    })
}

fn failback_from_spec(f: &spec::Failback) -> Result<crate::traffic::Failback, (At, String)> {
    let ramp = humantime::parse_duration(&f.ramp.value)
        .map_err(|e| (at(&f.ramp), format!("ramp {:?}: {e}", f.ramp.value)))?;
    let steps = f.steps.value;
    if steps == 0 || steps > 1000 {
        return Err((at(&f.steps), format!("steps {steps} must be 1..1000")));
    }
    if ramp.is_zero() || ramp / steps < Duration::from_secs(1) {
        return Err((
            at(&f.ramp),
            format!(
                "ramp {:?} is shorter than its {steps} steps of at least 1s each",
                f.ramp.value
            ),
        ));
    }
    Ok(crate::traffic::Failback { ramp, steps })
}

fn duration(
    s: &Option<spec::S<String>>,
    default: Duration,
    what: &str,
) -> Result<Duration, (At, String)> {
    match s {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v.value)
            .map_err(|e| (at(v), format!("{what} {:?}: {e}", v.value))),
    }
}

pub fn endpoint_from_spec(e: &spec::Endpoint) -> Result<Endpoint, (At, String)> {
    let address: SocketAddr = e.address.value.parse().map_err(|_| {
        (
            at(&e.address),
            format!("address {:?} is not IP:PORT", e.address.value),
        )
    })?;
    let interval = duration(&e.interval, Duration::from_secs(2), "interval")?;
    let timeout = duration(&e.timeout, Duration::from_secs(1), "timeout")?;
    if interval < Duration::from_millis(100) {
        return Err((
            e.interval.as_ref().map(at).unwrap_or((0, 0)),
            "interval must be at least 100ms".into(),
        ));
    }
    if timeout.is_zero() || timeout > interval {
        return Err((
            e.timeout.as_ref().map(at).unwrap_or(at(&e.name)),
            "timeout must be above 0 and at most the interval".into(),
        ));
    }
    let http_only = [
        ("method", e.method.is_some()),
        ("path", e.path.is_some()),
        ("host", e.host.is_some()),
        ("expect_body", e.expect_body.is_some()),
        ("headers", !e.headers.is_empty()),
    ];
    let dns_only = [
        ("qname", e.qname.is_some()),
        ("qtype", e.qtype.is_some()),
        ("expect_rcode", e.expect_rcode.is_some()),
    ];
    let kind = e.probe.value.as_str();
    let misplaced = match kind {
        "dns" => http_only.iter().find(|(_, set)| *set),
        "http" | "https" => dns_only.iter().find(|(_, set)| *set),
        _ => http_only.iter().chain(&dns_only).find(|(_, set)| *set),
    };
    if let Some((key, _)) = misplaced {
        return Err((
            at(&e.probe),
            format!("{key} does not apply to a {kind} probe"),
        ));
    }
    let probe = match kind {
        "tcp" => Probe::Tcp,
        "dns" => {
            let Some(qname) = &e.qname else {
                return Err((at(&e.probe), "a dns probe needs a qname".into()));
            };
            let qname = crate::name::from_text(qname, crate::name::ROOT)
                .map_err(|err| (at(&e.probe), format!("qname {qname:?}: {err}")))?;
            let qtype = match &e.qtype {
                None => 1,
                Some(t) => crate::iana::rtype_from_str(t)
                    .map(|t| t.to_int())
                    .ok_or_else(|| (at(&e.probe), format!("qtype {t:?} is not a record type")))?,
            };
            let expect_rcode = match e
                .expect_rcode
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("NOERROR") => 0,
                Some("FORMERR") => 1,
                Some("SERVFAIL") => 2,
                Some("NXDOMAIN") => 3,
                Some("NOTIMP") => 4,
                Some("REFUSED") => 5,
                Some(other) => {
                    return Err((
                        at(&e.probe),
                        format!(
                            "expect_rcode {other:?}: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP or REFUSED"
                        ),
                    ));
                }
            };
            Probe::Dns {
                qname,
                qtype,
                expect_rcode,
            }
        }
        kind @ ("http" | "https") => {
            let method = e
                .method
                .clone()
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase();
            // Probes must not change what they probe: only the safe methods.
            if method != "GET" && method != "HEAD" {
                return Err((at(&e.probe), format!("method {method:?}: GET or HEAD")));
            }
            if method == "HEAD" && e.expect_body.is_some() {
                return Err((
                    at(&e.probe),
                    "expect_body needs GET: a HEAD answer has no body".into(),
                ));
            }
            let path = e.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err((at(&e.probe), format!("path {path:?} must start with /")));
            }
            for (name, value) in &e.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(value).is_err()
                {
                    return Err((
                        at(&e.probe),
                        format!("header {name:?}: {value:?} is not a valid HTTP header"),
                    ));
                }
            }
            Probe::Http {
                tls: kind == "https",
                method,
                path,
                host: e.host.clone(),
                sni: e.sni.clone().or_else(|| e.host.clone()),
                tls_verify: e.tls_verify.unwrap_or(true),
                expect_status: e.expect_status.clone(),
                expect_body: e.expect_body.clone(),
                headers: e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        }
        other => {
            return Err((
                at(&e.probe),
                format!("probe {other:?} is not http, https, tcp or dns"),
            ));
        }
    };
    Ok(Endpoint {
        name: e.name.value.clone(),
        address,
        probe,
        interval,
        timeout,
        serves: 0,
    })
}

/// The region's `metric:` as a pseudo-endpoint named `metric`.
pub fn metric_from_spec(m: &spec::Metric) -> Result<Endpoint, (At, String)> {
    let (url, parsed) = prometheus_url(&m.prometheus)?;
    let address = parsed
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.first().copied())
        .ok_or_else(|| {
            (
                at(&m.prometheus),
                format!("prometheus URL {url:?} has no reachable address"),
            )
        })?;
    let ordered =
        m.fail_above.is_finite() && m.recover_below.is_finite() && m.recover_below <= m.fail_above;
    if !ordered {
        return Err((
            (0, 0),
            "metric: recover_below must be a number at or below fail_above".into(),
        ));
    }
    let interval = duration(&m.interval, Duration::from_secs(15), "interval")?;
    let timeout = duration(&m.timeout, Duration::from_secs(2), "timeout")?;
    if timeout.is_zero() || timeout > interval {
        return Err((
            (0, 0),
            "metric: timeout must be above 0 and at most the interval".into(),
        ));
    }
    Ok(Endpoint {
        name: "metric".into(),
        address,
        probe: Probe::Metric {
            url,
            query: m.query.clone(),
            fail_above: m.fail_above,
            recover_below: m.recover_below,
        },
        interval,
        timeout,
        serves: 0,
    })
}
