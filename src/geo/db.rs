//! Reading a GeoIP database with `maxminddb`: MaxMind's GeoIP2/GeoLite2 Country and City
//! schema (DB-IP's files use it too) and ip-location-db's flat schema (`country_code`,
//! `latitude`, `longitude`).
//!
//! The file is read once, at load, and every network is decoded into a [`Location`]; the
//! query path never touches the database (it uses the compiled `GeoTable`), which is why
//! the file is read into memory for the duration of the load instead of memory-mapped
//! (mapping needs `unsafe` and buys nothing here). Many networks share a record, so
//! decoded records are cached by their data offset.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

use super::location::LocationKey;
use super::{Location, Networks, country, two};

#[derive(Deserialize, Default)]
struct Iso<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct Code<'a> {
    #[serde(borrow)]
    code: Option<&'a str>,
}

/// A coordinate stored as a double (MaxMind's files) or a 32-bit float (ip-location-db's
/// city files): both are accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Coord(f64);

impl<'de> Deserialize<'de> for Coord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Coord;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a coordinate (float or double)")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Coord, E> {
                Ok(Coord(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Coord, E> {
                Ok(Coord(f64::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
struct Point {
    latitude: Option<Coord>,
    longitude: Option<Coord>,
}

/// Both schemas at once; serde ignores what a record does not have.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Iso<'a>>,
    #[serde(borrow)]
    registered_country: Option<Iso<'a>>,
    #[serde(borrow)]
    continent: Option<Code<'a>>,
    location: Option<Point>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Iso<'a>>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
    latitude: Option<Coord>,
    longitude: Option<Coord>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read GeoIP database: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a valid MaxMind DB file: {0}")]
    Format(String),
    #[error(
        "database type {0:?} has no location fields this server reads (country.iso_code, location, or country_code/latitude/longitude)"
    )]
    Schema(String),
    #[error(
        "database type {0:?} has no autonomous_system_number: not an ASN database (GeoLite2-ASN schema)"
    )]
    AsnSchema(String),
}

pub struct Contents {
    /// Networks with an index into `locations` (many networks share a location).
    pub networks: Networks,
    pub locations: Vec<Location>,
    pub database_type: String,
    pub build_epoch: u64,
    /// Country codes in the file that the built-in table does not know (kept, without a point).
    pub unknown_countries: Vec<String>,
}

fn to_location(r: &Record<'_>, unknown: &mut Vec<String>) -> Option<Location> {
    let cc = r
        .country
        .as_ref()
        .and_then(|c| c.iso_code)
        .or(r.country_code)
        .or(r.registered_country.as_ref().and_then(|c| c.iso_code));
    let known = cc.and_then(country);
    if let (Some(cc), None) = (cc, known)
        && !unknown.iter().any(|u| u == cc)
        && unknown.len() < 32
    {
        unknown.push(cc.to_string());
    }
    let point = match (&r.location, r.latitude, r.longitude) {
        (
            Some(Point {
                latitude: Some(a),
                longitude: Some(b),
            }),
            ..,
        ) => Some((a.0, b.0)),
        (_, Some(a), Some(b)) => Some((a.0, b.0)),
        _ => known.map(|k| (k.2, k.3)),
    }
    .filter(|(a, b)| a.is_finite() && b.is_finite() && a.abs() <= 90.0 && b.abs() <= 180.0);
    let continent = r
        .continent
        .as_ref()
        .and_then(|c| c.code)
        .and_then(two)
        .or(known.map(|k| k.1));
    let country_code = known.map(|k| k.0).or_else(|| cc.and_then(two));
    let subdivision = match (
        country_code,
        r.subdivisions
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|s| s.iso_code),
    ) {
        (Some(c), Some(s)) => {
            Some(format!("{}-{}", String::from_utf8_lossy(&c), s.to_ascii_uppercase()).into())
        }
        _ => None,
    };
    if country_code.is_none() && point.is_none() && continent.is_none() {
        return None;
    }
    Some(Location {
        country: country_code,
        continent,
        subdivision,
        point,
    })
}

pub(super) fn to_ipnet(n: ipnetwork::IpNetwork) -> Option<IpNet> {
    let net = match n {
        ipnetwork::IpNetwork::V4(v4) => IpNet::new(IpAddr::V4(v4.network()), v4.prefix()).ok()?,
        ipnetwork::IpNetwork::V6(v6) => {
            // IPv4 lives at ::/96 in IPv6 databases.
            let addr = v6.network();
            if v6.prefix() >= 96 && u128::from(addr) >> 32 == 0 {
                let v4 = std::net::Ipv4Addr::from((u128::from(addr) & 0xffff_ffff) as u32);
                IpNet::new(IpAddr::V4(v4), v6.prefix() - 96).ok()?
            } else {
                IpNet::new(IpAddr::V6(addr), v6.prefix()).ok()?
            }
        }
    };
    Some(net)
}

pub fn read(path: &Path) -> Result<Contents, DbError> {
    read_bytes(std::fs::read(path)?)
}

/// `read` of a database already in memory.
pub fn read_bytes(bytes: Vec<u8>) -> Result<Contents, DbError> {
    let reader = Reader::from_source(bytes).map_err(|e| DbError::Format(e.to_string()))?;
    let database_type = reader.metadata().database_type.clone();
    let build_epoch = reader.metadata().build_epoch;
    // Data offset → location id; identical locations from different records share an id.
    // Keys from the file, not from the network: foldhash (5.8 M look-ups in a city file).
    let mut cache: HashMap<usize, Option<u32>, foldhash::fast::RandomState> = HashMap::default();
    let mut ids: HashMap<LocationKey, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut locations: Vec<Location> = Vec::new();
    let mut networks = Networks::default();
    let mut unknown = Vec::new();
    let mut decoded_any = false;
    let iter = reader
        .networks(WithinOptions::default())
        .map_err(|e| DbError::Format(e.to_string()))?;
    for item in iter {
        let item = item.map_err(|e| DbError::Format(e.to_string()))?;
        let net = item.network().map_err(|e| DbError::Format(e.to_string()))?;
        let location = match item.offset() {
            Some(off) if let Some(&id) = cache.get(&off) => id,
            off => {
                let rec: Record<'_> = item
                    .decode()
                    .map_err(|e| DbError::Format(e.to_string()))?
                    .unwrap_or_default();
                let id = to_location(&rec, &mut unknown).map(|loc| {
                    *ids.entry(loc.key()).or_insert_with(|| {
                        locations.push(loc);
                        (locations.len() - 1) as u32
                    })
                });
                if let Some(o) = off {
                    cache.insert(o, id);
                }
                id
            }
        };
        if let (Some(loc), Some(net)) = (location, to_ipnet(net)) {
            decoded_any = true;
            networks.push(net, loc);
        }
    }
    if !decoded_any {
        return Err(DbError::Schema(database_type));
    }
    networks.shrink_to_fit();
    Ok(Contents {
        networks,
        locations,
        database_type,
        build_epoch,
        unknown_countries: unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{Family, GeoTable, addr_bits};

    #[test]
    fn the_shipped_database_compiles_into_countries_on_every_continent() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/geo-whois-asn-country.mmdb");
        let contents = read(&path).unwrap();
        assert!(
            contents.networks.len() > 100_000,
            "{}",
            contents.networks.len()
        );
        let table = GeoTable::compile_indexed(
            contents.networks,
            contents.locations,
            vec![],
            None,
            "shipped".into(),
        );
        let country_of = |ip: &str| {
            let (fam, bits) = addr_bits(ip.parse().unwrap());
            let (c, ..) = table.classify(fam, bits).unwrap();
            let class = table.class(c).unwrap();
            class
                .location
                .and_then(|l| table.location(l))
                .and_then(|l| l.country_str().map(str::to_string))
        };
        assert_eq!(country_of("8.8.8.8").as_deref(), Some("US"));
        assert_eq!(country_of("2a00:1450:4001::1").as_deref(), Some("IE"));
        assert_eq!(
            country_of("10.1.2.3"),
            None,
            "private addresses are unknown"
        );
        assert_eq!(Family::V4, addr_bits("::ffff:8.8.8.8".parse().unwrap()).0);
    }

    /// ip-location-db's city files store coordinates as 32-bit floats, MaxMind's as
    /// doubles; a file of each, written by `mmdb-writer`, gives the same locations.
    #[test]
    fn float_and_double_coordinates_both_load() {
        use mmdb_writer::{Value, Writer};
        let dir = tempfile::tempdir().unwrap();
        let flat = dir.path().join("dbip-city.mmdb");
        let mut w = Writer::new("dbip-city-ipv4");
        let city = |cc: &str, lat: f32, lon: f32| {
            Value::map([
                ("country_code", Value::from(cc)),
                ("latitude", Value::Float(lat)),
                ("longitude", Value::Float(lon)),
            ])
        };
        w.insert_value(
            "192.0.2.0/24".parse::<IpNet>().unwrap(),
            city("IE", 53.35, -6.26),
        )
        .unwrap();
        w.insert_value(
            "198.51.100.0/24".parse::<IpNet>().unwrap(),
            city("JP", 35.68, 139.76),
        )
        .unwrap();
        std::fs::write(&flat, w.to_bytes().unwrap()).unwrap();
        let maxmind = dir.path().join("city.mmdb");
        let mut w = Writer::new("GeoIP2-City");
        w.insert_value(
            "192.0.2.0/24".parse::<IpNet>().unwrap(),
            Value::map([
                ("country", Value::map([("iso_code", Value::from("IE"))])),
                (
                    "location",
                    Value::map([
                        ("latitude", Value::Double(53.35)),
                        ("longitude", Value::Double(-6.26)),
                    ]),
                ),
            ]),
        )
        .unwrap();
        std::fs::write(&maxmind, w.to_bytes().unwrap()).unwrap();
        for path in [&flat, &maxmind] {
            let c = read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let dublin = c
                .locations
                .iter()
                .find(|l| l.country_str() == Some("IE"))
                .and_then(|l| l.point)
                .unwrap();
            assert!(
                (dublin.0 - 53.35).abs() < 1e-4 && (dublin.1 + 6.26).abs() < 1e-4,
                "{dublin:?}"
            );
        }
        assert_eq!(read(&flat).unwrap().locations.len(), 2);
    }
}
