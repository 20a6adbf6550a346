//! A region: its addresses, endpoints (with the addresses each serves), health
//! thresholds, capacity, load query and failback, every mistake at its position.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::health::*;
use crate::diag::Diagnostic;
use crate::health::{Endpoint, MinUp, Thresholds};
use crate::name;
use crate::policy::model::*;
use crate::policy::spec::{self, S, diag};

pub(super) fn region(
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
        .map(|x| (IpAddr::V4(x.value), spec::at(x)))
        .chain(spec.aaaa.iter().map(|x| (IpAddr::V6(x.value), spec::at(x))))
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
                let (l, c) = if at.0 == 0 { spec::at(m) } else { at };
                errors.push(Diagnostic::at(file, l, c, msg));
            }
        }
    }
    let (thresholds, min_up) = match thresholds_from_spec(&spec.health, spec.endpoints.len()) {
        Ok(t) => t,
        Err((at, msg)) => {
            let (l, c) = if at.0 == 0 { spec::at(r) } else { at };
            errors.push(Diagnostic::at(file, l, c, msg));
            (Thresholds::default_preset(), MinUp::Count(1))
        }
    };
    if let (Some(target), Some(w)) = (
        &spec.health.failover_target,
        crate::policy::failover::detection(&endpoints, &thresholds),
    ) && thresholds.failover_target < w.detect
    {
        errors.push(diag(
            file,
            target,
            format!(
                "failover_target {:?} can never be met: detecting the failure alone takes {:.1} s (interval × fail_consecutive + timeout of the slowest endpoint)",
                target.value,
                w.detect.as_secs_f64()
            ),
        ));
    }
    let capacity = requests_per_second(file, &spec.capacity, "capacity", errors);
    let load = match &spec.load {
        None => None,
        Some(l) => match load_from_spec(&l.value) {
            Ok(q) => Some(q),
            Err((at, msg)) => {
                let (ln, c) = if at.0 == 0 { spec::at(l) } else { at };
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
    let (line, _) = spec::at(r);
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
pub(super) fn served_mask(
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

/// A requests/s figure (`capacity`, `demand`): a finite number above 0, else an error
/// at its position and `None`.
pub(super) fn requests_per_second(
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
