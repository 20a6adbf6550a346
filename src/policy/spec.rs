//! The on-disk schema of `policies/*.yaml` (version 1). Mirrors the file; unknown keys
//! are rejected; values that other parts refer to carry their position (`Spanned`) so
//! validation can say `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub version: S<u32>,
    #[serde(default)]
    pub regions: Vec<S<Region>>,
    #[serde(default)]
    pub policies: Vec<S<Policy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub lat: S<f64>,
    pub lon: S<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: S<String>,
    pub location: S<Point>,
    #[serde(default)]
    pub a: Vec<Ipv4Addr>,
    #[serde(default)]
    pub aaaa: Vec<Ipv6Addr>,
    /// Answer with a CNAME to this target instead of addresses.
    pub cname: Option<S<String>>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub endpoints: Vec<S<Endpoint>>,
}

fn default_weight() -> u32 {
    100
}

/// What the health checker probes (the checker itself is a later milestone; the
/// endpoints are validated now so files written today keep working).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: S<String>,
    /// `http`, `https` or `tcp`.
    pub probe: S<String>,
    /// `IP:PORT` to connect to; may differ from the answered addresses.
    pub address: S<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub expect_status: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum MethodName {
    Nearest,
    Latency,
    Geo,
    Weighted,
    Failover,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// ISO 3166-1 codes; `EU` stands for the 27 member states of the European Union.
    #[serde(default)]
    pub countries: Vec<S<String>>,
    #[serde(default)]
    pub continents: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    pub clients: S<Clients>,
    /// Labels a region must carry to answer these clients, e.g. `{jurisdiction: eu}`.
    pub regions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRule {
    #[serde(default)]
    pub countries: Vec<S<String>>,
    #[serde(default)]
    pub continents: Vec<S<String>>,
    /// ISO 3166-2 codes such as `US-CA`.
    #[serde(default)]
    pub subdivisions: Vec<S<String>>,
    #[serde(default)]
    pub cidrs: Vec<S<String>>,
    pub regions: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    #[serde(default)]
    pub rules: Vec<S<GeoRule>>,
    pub default: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAnswer {
    #[serde(default)]
    pub a: Vec<Ipv4Addr>,
    #[serde(default)]
    pub aaaa: Vec<Ipv6Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AllDown {
    FailOpen,
    Nodata,
    Servfail,
    Static(StaticAnswer),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// An owner name in a served zone, or a wildcard such as `*.cdn.example.com`.
    pub name: S<String>,
    pub method: S<MethodName>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default = "default_answers")]
    pub answers: S<u32>,
    /// The regions this policy may answer with, in order (default: all, as defined).
    pub regions: Option<Vec<S<String>>>,
    #[serde(default)]
    pub residency: Vec<S<Residency>>,
    pub geo: Option<S<Geo>>,
    pub all_down: Option<AllDown>,
}

fn default_ttl() -> u32 {
    30
}

fn default_answers() -> S<u32> {
    Spanned::new(
        1,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// `latency.yaml`: measured round-trip times from client groups to regions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFile {
    pub version: S<u32>,
    #[serde(default)]
    pub measurements: Vec<S<Measurement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    pub from: S<LatencyKey>,
    pub rtt_ms: BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LatencyKey {
    Cidr(String),
    Country(String),
    Continent(String),
}
