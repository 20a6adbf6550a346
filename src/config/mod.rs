//! `meridian.yaml`: the on-disk spec (serde, unknown keys rejected, versioned, values
//! carrying their position) → the validated [`Config`] the server runs with. Every
//! problem comes back at once as `FILE:LINE:COL`: an unknown key or a value of the
//! wrong type is reported and left out, and validation goes on with the rest
//! (`diag::parse_yaml_all`). Paths in the file are relative to the file's own folder;
//! command-line flags override the file.
//!
//! One file per section, each with its spec, its validated type and its validator:
//! `dns`, `http`, `geo`, `health` (with `overrides:`), `cluster`, `rrl`, `transfer`,
//! `dnssec`, `limits`, `anycast`. Settings are of two kinds. [`Startup`] ones (sockets, the admin
//! token, the state file, the startup wait, cluster, RRL, anycast) are read once when the
//! server starts; a reload that changes one says "restart required" instead of
//! ignoring it ([`Startup::changed`]). The rest (zones, policies, GeoIP, overrides,
//! EDNS size, transfer, DNSSEC) take effect on reload.

pub mod anycast;
mod cluster;
mod dns;
mod dnssec;
mod geo;
mod health;
mod http;
mod limits;
mod report;
mod rrl;
mod startup;
#[cfg(test)]
mod tests;
mod transfer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diag::Diagnostic;
use crate::geo::Location;
use report::{Report, S};

pub use anycast::AnycastConfig;
pub use cluster::ClusterConfig;
pub use dns::DnsConfig;
pub use dnssec::{
    DEFAULT_ONLINE_SIGNATURES_PER_SECOND as DNSSEC_ONLINE_SIGNATURES_PER_SECOND, DnssecSettings,
};
pub use health::{OverrideState, RegionOverride};
pub use rrl::RrlConfig;
pub use startup::Startup;
pub use transfer::{TransferAllow, TransferConfig};

pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// Optional to serde so a file without it still has its other mistakes read.
    version: Option<S<u32>>,
    #[serde(default)]
    dns: dns::DnsSpec,
    #[serde(default)]
    http: http::HttpSpec,
    zones: Option<PathBuf>,
    policies: Option<PathBuf>,
    geoip: Option<PathBuf>,
    #[serde(default)]
    geo: geo::GeoSpec,
    #[serde(default)]
    overrides: Vec<S<health::OverrideSpec>>,
    #[serde(default)]
    health: health::HealthSpec,
    cluster: Option<S<cluster::ClusterSpec>>,
    anycast: Option<S<anycast::AnycastSpec>>,
    rrl: Option<S<rrl::RrlSpec>>,
    transfer: Option<S<transfer::TransferSpec>>,
    dnssec: Option<S<dnssec::DnssecSpec>>,
    #[serde(default)]
    limits: limits::LimitsSpec,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub startup: Startup,
    /// Our EDNS UDP payload size, advertised in every OPT we send.
    pub edns_udp_size: u16,
    /// `dns.nsid`: the payload of the NSID option (RFC 5001) answered to a query that
    /// carries one; `None`: not answered.
    pub nsid: Option<Box<[u8]>>,
    pub zones_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub geoip_dir: PathBuf,
    pub geo_database: PathBuf,
    /// `geo.asn_database`, resolved.
    pub asn_database: Option<PathBuf>,
    /// `None` when the configured table does not exist and was not asked for explicitly.
    pub latency_table: Option<PathBuf>,
    pub latency_overhead_ms: f64,
    pub default_location: Option<Location>,
    pub overrides: Vec<RegionOverride>,
    /// What one zone may hold.
    pub zone_limits: crate::zone::ZoneLimits,
    /// `transfer:`; `None`: no transfers, no NOTIFY.
    pub transfer: Option<TransferConfig>,
    /// `dnssec:`: where the keys are and how long signatures last. Without the
    /// section, `keys/` beside the configuration with the defaults.
    pub dnssec: DnssecSettings,
    /// Settings that load but deserve a second look; reported with the snapshot's.
    pub warnings: Vec<Diagnostic>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub dns_listen: Vec<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

impl Config {
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, Vec<Diagnostic>> {
        let text = crate::diag::read_yaml(file).map_err(|e| vec![e])?;
        let (spec, errors) = crate::diag::parse_yaml_all::<Spec>(file, &text)?;
        let mut r = Report {
            file,
            errors,
            warnings: Vec::new(),
        };
        match &spec.version {
            None => r.errors.push(Diagnostic::at(
                file,
                1,
                1,
                format!("missing field `version` (this meridian reads version {CONFIG_VERSION})"),
            )),
            Some(v) if v.value != CONFIG_VERSION => r.at(
                v,
                format!(
                    "version {} is not supported (this meridian reads version {CONFIG_VERSION})",
                    v.value
                ),
            ),
            Some(_) => {}
        }
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (dns, edns_udp_size) = dns::validate(&spec.dns, &overrides.dns_listen, &mut r);
        let (http_listen, admin_token) = http::validate(&spec.http, overrides.http_listen, &mut r);
        let geo = geo::validate(spec.geoip.as_deref(), &spec.geo, &base, &mut r);
        let (state_file, startup_wait) = health::validate(&spec.health, &base, &mut r);
        let cluster = spec
            .cluster
            .as_ref()
            .and_then(|c| cluster::cluster(c, &base, &mut r));
        let rrl = spec.rrl.as_ref().and_then(|c| rrl::rrl(c, &mut r));
        let nsid = dns::nsid(
            &spec.dns,
            cluster.as_ref().map(|c| c.instance.as_str()),
            &mut r,
        );
        let anycast = spec
            .anycast
            .as_ref()
            .and_then(|a| anycast::anycast(a, &base, &mut r));
        let transfer = spec
            .transfer
            .as_ref()
            .and_then(|t| transfer::transfer(t, &base, &mut r));
        let dnssec = dnssec::dnssec(spec.dnssec.as_ref(), &base, &mut r);
        let zone_limits = limits::validate(&spec.limits, &mut r);
        if !r.errors.is_empty() {
            r.errors.sort_by_key(|d| (d.line, d.column));
            return Err(r.errors);
        }
        Ok(Config {
            file: file.to_path_buf(),
            startup: Startup {
                dns,
                http_listen,
                admin_token,
                state_file,
                startup_wait,
                cluster,
                rrl,
                anycast,
            },
            edns_udp_size,
            nsid,
            geo_database: geo.database,
            asn_database: geo.asn_database,
            latency_table: geo.latency_table,
            latency_overhead_ms: geo.latency_overhead_ms,
            default_location: geo.default_location,
            overrides: health::overrides(&spec.overrides),
            zone_limits,
            transfer,
            dnssec,
            zones_dir: base.join(spec.zones.as_deref().unwrap_or(Path::new("zones"))),
            policies_dir: base.join(spec.policies.as_deref().unwrap_or(Path::new("policies"))),
            geoip_dir: geo.geoip_dir,
            warnings: r.warnings,
        })
    }
}
