//! The on-disk schema of `policies/*.yaml` (version 1). Mirrors the file; unknown keys
//! are rejected; values that other parts refer to carry their position (`Spanned`) so
//! validation can say `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostic;

pub type S<T> = Spanned<T>;

/// The schema version this build reads.
pub const POLICY_VERSION: u32 = 1;

/// A position in a policy file: (line, column).
pub type At = (usize, usize);

/// Where a spanned value was written.
pub fn at<T>(s: &S<T>) -> At {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

/// A diagnostic at a spanned value.
pub fn diag<T>(file: &Path, s: &S<T>, message: impl Into<String>) -> Diagnostic {
    let (l, c) = at(s);
    Diagnostic::at(file, l, c, message)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Optional to serde so a file without it still has its other mistakes read.
    pub version: Option<S<u32>>,
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
    pub a: Vec<S<Ipv4Addr>>,
    #[serde(default)]
    pub aaaa: Vec<S<Ipv6Addr>>,
    /// The order of the addresses in an answer (default `fixed`).
    pub order: Option<Order>,
    /// Answer with a CNAME to this target instead of addresses.
    pub cname: Option<S<String>>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub endpoints: Vec<S<Endpoint>>,
    #[serde(default)]
    pub health: Health,
    /// Real-traffic signal: a Prometheus instant query that takes the region out when
    /// its value rises above `fail_above`, whatever the probes say.
    pub metric: Option<S<Metric>>,
    /// Requests/s the region can serve (absent: unlimited): displaced clients fill it up
    /// to this and no further while another region has room.
    pub capacity: Option<S<f64>>,
    /// The region's current load (requests/s) from Prometheus; absent: modelled from
    /// the names' demand.
    pub load: Option<S<Load>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub prometheus: S<String>,
    /// An instant query returning the region's requests/s.
    pub query: String,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Base URL of the Prometheus HTTP API, e.g. `http://127.0.0.1:9090`.
    pub prometheus: S<String>,
    /// An instant query returning one number, e.g. an error ratio.
    pub query: String,
    /// At or above this the sample counts as failed...
    pub fail_above: f64,
    /// ...at or below this as passed; in between the previous outcome holds (hysteresis).
    pub recover_below: f64,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Order {
    Fixed,
    Rotate,
    Shuffle,
}

fn default_weight() -> u32 {
    100
}

/// One thing the health checker probes for a region.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: S<String>,
    /// `http`, `https`, `tcp` or `dns`.
    pub probe: S<String>,
    /// `IP:PORT` to connect to; may differ from the answered addresses.
    pub address: S<String>,
    /// HTTP(S): request path (default `/`).
    pub path: Option<String>,
    /// HTTP(S): `GET` (default) or `HEAD`.
    pub method: Option<String>,
    /// DNS: the name asked, its type (default `A`) and the rcode that means up
    /// (default `NOERROR`).
    pub qname: Option<String>,
    pub qtype: Option<String>,
    pub expect_rcode: Option<String>,
    /// HTTP(S): Host header (default: the address).
    pub host: Option<String>,
    /// HTTPS: server name sent in SNI and verified (default: `host`, else none).
    pub sni: Option<String>,
    /// HTTPS: verify the certificate (default true).
    pub tls_verify: Option<bool>,
    /// HTTP(S): statuses that count as success (default 200-399).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// HTTP(S): the body must contain this (the first 64 KiB are read).
    pub expect_body: Option<String>,
    /// HTTP(S): extra request headers, e.g. `{ X-Probe-Token: abc }` (a `User-Agent`
    /// here replaces Meridian's own).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How often to probe (default 2s) and how long one probe may take (default 1s).
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    /// The region's addresses this endpoint stands for: each is answered only while an
    /// endpoint serving it is up (default: none in particular).
    #[serde(default)]
    pub serves: Vec<S<String>>,
}

/// Thresholds of a region's endpoints: a preset, any field overridden.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `default`, `aggressive` or `conservative`.
    pub preset: Option<S<String>>,
    pub window: Option<usize>,
    pub fail_error_rate: Option<f64>,
    pub fail_latency: Option<S<String>>,
    pub fail_consecutive: Option<u32>,
    pub recover_error_rate: Option<f64>,
    pub recover_latency: Option<S<String>>,
    pub recover_consecutive: Option<u32>,
    pub cooldown: Option<S<String>>,
    pub latency_percentile: Option<u8>,
    pub degraded_latency: Option<S<String>>,
    /// The region is up while at least this many endpoints are (default 1)...
    pub min_up: Option<usize>,
    /// ...or this fraction of them (0..1), if given.
    pub min_up_fraction: Option<f64>,
    /// After a recovery (and the cooldown) clients come back in steps.
    pub failback: Option<S<Failback>>,
    /// Every client gone from the region this soon after its endpoints fail.
    pub failover_target: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failback {
    pub ramp: S<String>,
    pub steps: S<u32>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Overflow {
    /// Past every region's capacity, keep spilling by rank (someone serves them).
    Spill,
    /// Past every region's capacity, apply `all_down`.
    AllDown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum MethodName {
    Nearest,
    Latency,
    Geo,
    Weighted,
    Failover,
    /// Each tenant's home region (`tenants:`), the label the wildcard matches.
    Home,
}

/// `unknown:` of a `home` policy: a tenant the map does not list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UnknownTenant {
    /// `nearest` or `nxdomain`.
    Word(String),
    /// These regions, in order.
    Regions(Vec<S<String>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// ISO 3166-1 codes; `EU` stands for the 27 member states of the European Union.
    #[serde(default)]
    pub countries: Vec<S<String>>,
    #[serde(default)]
    pub continents: Vec<S<String>>,
    /// Client networks, inline and from a file (one CIDR a line).
    #[serde(default)]
    pub cidrs: Vec<S<String>>,
    pub cidrs_file: Option<S<String>>,
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
    /// A file of CIDRs, one a line (`#` comments), relative to the policy file.
    pub cidrs_file: Option<S<String>>,
    /// Autonomous system numbers (needs `geo.asn_database`).
    #[serde(default)]
    pub asns: Vec<S<u32>>,
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
    /// Requests/s the name brings at peak: how much load its clients carry when the
    /// split moves them.
    pub demand: Option<S<f64>>,
    pub overflow: Option<S<Overflow>>,
    /// `method: home`: the tenant map (CSV), relative to the policy file.
    pub tenants: Option<S<String>>,
    /// `method: home`: what a tenant the map does not list gets (default `nearest`).
    pub unknown: Option<S<UnknownTenant>>,
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
