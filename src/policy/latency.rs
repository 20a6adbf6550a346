//! The latency table (`geoip/latency.yaml`): measured round-trip times from client
//! groups (CIDR, country, continent) to regions, which `method: latency` ranks by.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::spec::{self, POLICY_VERSION, diag};
use crate::diag::{Diagnostic, parse_yaml};
use crate::geo;

/// Measured RTTs, by the most specific client key; see `geoip/latency.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub by_cidr: Vec<(IpNet, HashMap<u16, f64>)>,
    pub by_country: HashMap<[u8; 2], HashMap<u16, f64>>,
    pub by_continent: HashMap<[u8; 2], HashMap<u16, f64>>,
    /// Added to distance-based estimates (processing, last mile).
    pub overhead_ms: f64,
    pub file: Option<PathBuf>,
}

pub(super) fn load_latency(
    file: &Path,
    index: &HashMap<String, u16>,
    out: &mut Latency,
    errors: &mut Vec<Diagnostic>,
) {
    out.file = Some(file.to_path_buf());
    let text = match crate::diag::read_yaml(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(Diagnostic::new(
                file,
                0,
                format!("cannot read latency table: {}", e.message),
            ));
            return;
        }
    };
    let spec: spec::LatencyFile = match parse_yaml(file, &text) {
        Ok(s) => s,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    if spec.version.value != POLICY_VERSION {
        errors.push(diag(
            file,
            &spec.version,
            format!("version {} is not supported", spec.version.value),
        ));
        return;
    }
    for m in &spec.measurements {
        let mut rtts = HashMap::new();
        for (region, ms) in &m.value.rtt_ms {
            match index.get(region) {
                Some(&i) if ms.is_finite() && *ms >= 0.0 => {
                    rtts.insert(i, *ms);
                }
                Some(_) => errors.push(diag(
                    file,
                    m,
                    format!("rtt for {region} must be a non-negative number"),
                )),
                None => errors.push(diag(file, m, format!("unknown region {region:?}"))),
            }
        }
        match &m.value.from.value {
            spec::LatencyKey::Cidr(c) => match c.parse::<IpNet>() {
                Ok(net) => out.by_cidr.push((net.trunc(), rtts)),
                Err(_) => errors.push(diag(file, &m.value.from, format!("{c:?} is not a CIDR"))),
            },
            spec::LatencyKey::Country(c) => match geo::country(c) {
                Some((cc, ..)) => {
                    out.by_country.insert(cc, rtts);
                }
                None => errors.push(diag(
                    file,
                    &m.value.from,
                    format!("unknown country code {c:?}"),
                )),
            },
            spec::LatencyKey::Continent(c) => {
                let up = c.to_ascii_uppercase();
                match geo::two(&up).filter(|_| geo::CONTINENTS.contains(&up.as_str())) {
                    Some(cc) => {
                        out.by_continent.insert(cc, rtts);
                    }
                    None => errors.push(diag(
                        file,
                        &m.value.from,
                        format!("unknown continent {c:?}"),
                    )),
                }
            }
        }
    }
}
