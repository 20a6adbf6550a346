//! `geoip:` and `geo:`: the GeoIP and ASN databases, the latency table and its
//! overhead, and where a client with no location is placed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::report::{Given, Report, S, given};
use crate::geo::Location;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GeoSpec {
    database: Option<PathBuf>,
    /// An ASN database (GeoLite2-ASN schema), relative to the GeoIP folder: what geo
    /// rules' `asns:` match against. Absent: no routing by ASN.
    asn_database: Option<PathBuf>,
    /// Absent: `latency.yaml` when it exists; `null`: none; a path: that file, required.
    #[serde(default, deserialize_with = "given")]
    latency: Given<Option<S<PathBuf>>>,
    latency_overhead_ms: Option<S<f64>>,
    default_location: Option<S<DefaultLocationSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultLocationSpec {
    country: Option<S<String>>,
    lat: Option<S<f64>>,
    lon: Option<S<f64>>,
}

/// `geo:` resolved against the GeoIP folder.
#[derive(Debug, Clone)]
pub(super) struct GeoConfig {
    pub(super) geoip_dir: PathBuf,
    pub(super) database: PathBuf,
    pub(super) asn_database: Option<PathBuf>,
    pub(super) latency_table: Option<PathBuf>,
    pub(super) latency_overhead_ms: f64,
    pub(super) default_location: Option<Location>,
}

/// `geoip` (the folder, relative to `base`) and `geo:`.
pub(super) fn validate(
    geoip: Option<&Path>,
    geo: &GeoSpec,
    base: &Path,
    r: &mut Report<'_>,
) -> GeoConfig {
    let geoip_dir = base.join(geoip.unwrap_or(Path::new("geoip")));
    let default_location = geo
        .default_location
        .as_ref()
        .and_then(|d| default_location(d, r));
    let latency_table = match &geo.latency {
        Given::Absent => {
            let path = geoip_dir.join("latency.yaml");
            path.exists().then_some(path)
        }
        Given::Written(None) => None,
        Given::Written(Some(p)) => Some(geoip_dir.join(&p.value)),
    };
    let latency_overhead_ms = match &geo.latency_overhead_ms {
        None => 5.0,
        Some(s) if s.value.is_finite() && s.value >= 0.0 => s.value,
        Some(s) => {
            r.at(s, "geo.latency_overhead_ms must be a number >= 0");
            5.0
        }
    };
    GeoConfig {
        database: geoip_dir.join(
            geo.database
                .as_deref()
                .unwrap_or(Path::new("geo-whois-asn-country.mmdb")),
        ),
        asn_database: geo.asn_database.as_deref().map(|p| geoip_dir.join(p)),
        latency_table,
        latency_overhead_ms,
        default_location,
        geoip_dir,
    }
}

fn default_location(d: &S<DefaultLocationSpec>, r: &mut Report<'_>) -> Option<Location> {
    let spec = &d.value;
    let mut loc = match &spec.country {
        Some(c) => match Location::from_country(&c.value) {
            Some(l) => Some(l),
            None => {
                r.at(
                    c,
                    format!("geo.default_location: unknown country code {:?}", c.value),
                );
                return None;
            }
        },
        None => None,
    };
    match (&spec.lat, &spec.lon) {
        (Some(lat), Some(lon)) => {
            let mut ok = true;
            if !(-90.0..=90.0).contains(&lat.value) {
                r.at(lat, format!("latitude {} is outside -90..90", lat.value));
                ok = false;
            }
            if !(-180.0..=180.0).contains(&lon.value) {
                r.at(lon, format!("longitude {} is outside -180..180", lon.value));
                ok = false;
            }
            if !ok {
                return None;
            }
            let l = loc.get_or_insert(Location {
                country: None,
                continent: None,
                subdivision: None,
                point: None,
            });
            l.point = Some((lat.value, lon.value));
        }
        (None, None) => {}
        _ => {
            r.at(d, "geo.default_location needs both lat and lon");
            return None;
        }
    }
    if loc.is_none() {
        r.at(d, "geo.default_location needs a country or lat/lon");
    }
    loc
}
