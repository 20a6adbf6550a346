//! Where a client is: a [`Location`] (country, continent, subdivision, point), the
//! built-in country table, and great-circle distance.

use super::countries;

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub country: Option<[u8; 2]>,
    pub continent: Option<[u8; 2]>,
    /// `CC-SUB` as in ISO 3166-2, e.g. `US-CA`.
    pub subdivision: Option<Box<str>>,
    /// Degrees; from the database, else the country's representative point.
    pub point: Option<(f64, f64)>,
}

pub(crate) type LocationKey = (
    Option<[u8; 2]>,
    Option<[u8; 2]>,
    Option<Box<str>>,
    Option<(u64, u64)>,
);

impl Location {
    /// A location with only a country, completed from the built-in table.
    pub fn from_country(code: &str) -> Option<Location> {
        let (cc, continent, lat, lon) = country(code)?;
        Some(Location {
            country: Some(cc),
            continent: Some(continent),
            subdivision: None,
            point: Some((lat, lon)),
        })
    }

    pub fn country_str(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    pub fn continent_str(&self) -> Option<&str> {
        self.continent
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    /// Identity for interning (f64 is not Hash).
    pub(super) fn key(&self) -> LocationKey {
        (
            self.country,
            self.continent,
            self.subdivision.clone(),
            self.point.map(|(a, b)| (a.to_bits(), b.to_bits())),
        )
    }
}

/// The built-in table entry for an ISO 3166-1 alpha-2 code (case-insensitive).
pub fn country(code: &str) -> Option<([u8; 2], [u8; 2], f64, f64)> {
    let upper = code.to_ascii_uppercase();
    let i = countries::COUNTRIES
        .binary_search_by(|(c, ..)| (*c).cmp(upper.as_str()))
        .ok()?;
    let (c, cont, lat, lon) = countries::COUNTRIES.get(i)?;
    Some((two(c)?, two(cont)?, *lat, *lon))
}

pub fn two(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    match b {
        [a, b] => Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
        _ => None,
    }
}

pub const CONTINENTS: &[&str] = &["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// A point as a vector on the unit sphere. Ordering regions by `closeness` to a client's
/// vector is ordering them by great-circle distance (the dot product is the cosine of the
/// central angle), without a trigonometric call per comparison: the query path ranks a
/// policy's few regions this way, and load-time ranking uses the same function so that
/// both give the same order, ties included.
pub type Unit = [f64; 3];

pub fn unit(point: (f64, f64)) -> Unit {
    let (lat, lon) = (point.0.to_radians(), point.1.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Larger is nearer (see [`Unit`]).
#[inline]
pub fn closeness(a: &Unit, b: &Unit) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
