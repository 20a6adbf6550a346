//! `meridian.yaml`: the on-disk spec (serde, unknown keys rejected, versioned) → the
//! validated [`Config`] the server runs with. Paths in the file are relative to the
//! file's own folder; command-line flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::diag::Diagnostic;

pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    version: u32,
    #[serde(default)]
    dns: DnsSpec,
    #[serde(default)]
    http: HttpSpec,
    #[serde(default = "default_zones")]
    zones: PathBuf,
    #[serde(default = "default_policies")]
    policies: PathBuf,
    #[serde(default = "default_geoip")]
    geoip: PathBuf,
    #[serde(default)]
    geo: GeoSpec,
    #[serde(default)]
    overrides: Vec<OverrideSpec>,
    #[serde(default)]
    health: HealthSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GeoSpec {
    database: PathBuf,
    latency: Option<PathBuf>,
    latency_overhead_ms: f64,
    default_location: Option<DefaultLocationSpec>,
}

impl Default for GeoSpec {
    fn default() -> Self {
        GeoSpec {
            database: "geo-whois-asn-country.mmdb".into(),
            latency: Some("latency.yaml".into()),
            latency_overhead_ms: 5.0,
            default_location: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultLocationSpec {
    country: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    region: String,
    state: OverrideState,
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideState {
    Down,
    Up,
    Drain,
    ForceDown,
    ForceUp,
}

impl OverrideState {
    pub fn kind(self) -> crate::health::OverrideKind {
        use crate::health::OverrideKind;
        match self {
            OverrideState::Down | OverrideState::ForceDown => OverrideKind::ForceDown,
            OverrideState::Up | OverrideState::ForceUp => OverrideKind::ForceUp,
            OverrideState::Drain => OverrideKind::Drain,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HealthSpec {
    state_file: Option<PathBuf>,
    startup_wait: String,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            state_file: Some("meridian.state.json".into()),
            startup_wait: "10s".into(),
        }
    }
}

/// An operator's override of a region's state, from the configuration.
#[derive(Debug, Clone)]
pub struct RegionOverride {
    pub region: String,
    pub state: OverrideState,
    pub reason: Option<String>,
    pub line: u64,
}

fn default_zones() -> PathBuf {
    "zones".into()
}
fn default_policies() -> PathBuf {
    "policies".into()
}
fn default_geoip() -> PathBuf {
    "geoip".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DnsSpec {
    listen: Vec<SocketAddr>,
    edns_udp_size: u16,
    tcp_idle_timeout: String,
    tcp_max_connections: usize,
    udp_sockets_per_address: usize,
}

impl Default for DnsSpec {
    fn default() -> Self {
        DnsSpec {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            // DNS flag day 2020: fits the common path MTU without fragmentation.
            edns_udp_size: 1232,
            tcp_idle_timeout: "10s".into(),
            tcp_max_connections: 1024,
            udp_sockets_per_address: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpSpec {
    listen: SocketAddr,
    /// Bearer token for the admin API's writes; MERIDIAN_ADMIN_TOKEN overrides it.
    admin_token: Option<String>,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 9153)),
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub edns_udp_size: u16,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    /// SO_REUSEPORT sockets per UDP address; 0 means one per CPU.
    pub udp_sockets_per_address: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub dns: DnsConfig,
    pub http_listen: SocketAddr,
    /// `None`: admin writes are disabled.
    pub admin_token: Option<String>,
    pub zones_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub geoip_dir: PathBuf,
    pub geo_database: PathBuf,
    /// `None` when the configured table does not exist and was not asked for explicitly.
    pub latency_table: Option<PathBuf>,
    pub latency_overhead_ms: f64,
    pub default_location: Option<crate::geo::Location>,
    pub overrides: Vec<RegionOverride>,
    /// Last known health states and operator overrides, restored on restart.
    pub state_file: Option<PathBuf>,
    /// Longest wait for the first full probe round before serving.
    pub startup_wait: Duration,
    /// Settings that load but deserve a second look; reported with the snapshot's.
    pub warnings: Vec<Diagnostic>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub dns_listen: Vec<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u64,
    pub message: String,
}

impl Config {
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let err = |line: u64, message: String| ConfigError {
            file: file.to_path_buf(),
            line,
            message,
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| err(0, format!("cannot read: {e}")))?;
        let spec: Spec = serde_saphyr::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let message = e.to_string();
            // saphyr renders a snippet after the first line; the first line says what is wrong.
            let first = message.lines().next().unwrap_or("invalid YAML").to_string();
            err(line, first)
        })?;
        if spec.version != CONFIG_VERSION {
            return Err(err(
                1,
                format!(
                    "version {} is not supported (this meridian reads version {CONFIG_VERSION})",
                    spec.version
                ),
            ));
        }
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let tcp_idle_timeout =
            humantime::parse_duration(&spec.dns.tcp_idle_timeout).map_err(|e| {
                err(
                    line_of(&text, "tcp_idle_timeout"),
                    format!("dns.tcp_idle_timeout {:?}: {e}", spec.dns.tcp_idle_timeout),
                )
            })?;
        if spec.dns.edns_udp_size < 512 {
            return Err(err(
                line_of(&text, "edns_udp_size"),
                "dns.edns_udp_size must be at least 512".into(),
            ));
        }
        let mut warnings = Vec::new();
        if spec.dns.edns_udp_size > MAX_UNFRAGMENTED_UDP {
            // UDP answers are sent with DF and never fragmented (dns::server).
            warnings.push(Diagnostic::new(
                file,
                line_of(&text, "edns_udp_size") as usize,
                format!(
                    "dns.edns_udp_size {} is above {MAX_UNFRAGMENTED_UDP} (RFC 9715): UDP answers \
                     are never fragmented, so one that does not fit a path's MTU is lost there, \
                     and one that does not fit our interface's goes out truncated for a TCP retry",
                    spec.dns.edns_udp_size
                ),
            ));
        }
        let listen = if overrides.dns_listen.is_empty() {
            spec.dns.listen
        } else {
            overrides.dns_listen.clone()
        };
        if listen.is_empty() {
            return Err(err(
                line_of(&text, "listen"),
                "dns.listen names no address".into(),
            ));
        }
        let geoip_dir = base.join(&spec.geoip);
        let default_location = match &spec.geo.default_location {
            None => None,
            Some(d) => {
                let at = line_of(&text, "default_location");
                let mut loc = match &d.country {
                    Some(c) => Some(crate::geo::Location::from_country(c).ok_or_else(|| {
                        err(
                            at,
                            format!("geo.default_location: unknown country code {c:?}"),
                        )
                    })?),
                    None => None,
                };
                match (d.lat, d.lon) {
                    (Some(lat), Some(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => {
                        let l = loc.get_or_insert(crate::geo::Location {
                            country: None,
                            continent: None,
                            subdivision: None,
                            point: None,
                        });
                        l.point = Some((lat, lon));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(err(
                            at,
                            "geo.default_location needs both lat (-90..90) and lon (-180..180)"
                                .into(),
                        ));
                    }
                }
                if loc.is_none() {
                    return Err(err(
                        at,
                        "geo.default_location needs a country or lat/lon".into(),
                    ));
                }
                loc
            }
        };
        let latency_table = match &spec.geo.latency {
            Some(p) => {
                let path = geoip_dir.join(p);
                let explicit = text.contains("latency:");
                (explicit || path.exists()).then_some(path)
            }
            None => None,
        };
        let region_overrides = spec
            .overrides
            .iter()
            .map(|o| RegionOverride {
                region: o.region.clone(),
                state: o.state,
                reason: o.reason.clone(),
                line: line_of(&text, "overrides"),
            })
            .collect();
        let startup_wait = humantime::parse_duration(&spec.health.startup_wait).map_err(|e| {
            err(
                line_of(&text, "startup_wait"),
                format!("health.startup_wait {:?}: {e}", spec.health.startup_wait),
            )
        })?;
        Ok(Config {
            warnings,
            state_file: spec.health.state_file.as_ref().map(|p| base.join(p)),
            startup_wait,
            geo_database: geoip_dir.join(&spec.geo.database),
            latency_table,
            latency_overhead_ms: spec.geo.latency_overhead_ms,
            default_location,
            overrides: region_overrides,
            file: file.to_path_buf(),
            dns: DnsConfig {
                listen,
                edns_udp_size: spec.dns.edns_udp_size,
                tcp_idle_timeout,
                tcp_max_connections: spec.dns.tcp_max_connections.max(1),
                udp_sockets_per_address: spec.dns.udp_sockets_per_address,
            },
            http_listen: overrides.http_listen.unwrap_or(spec.http.listen),
            admin_token: std::env::var("MERIDIAN_ADMIN_TOKEN")
                .ok()
                .or(spec.http.admin_token)
                .filter(|t| !t.is_empty()),
            zones_dir: base.join(spec.zones),
            policies_dir: base.join(spec.policies),
            geoip_dir,
        })
    }
}

/// The largest DNS payload over UDP that RFC 9715 recommends.
const MAX_UNFRAGMENTED_UDP: u16 = 1400;

/// The first line mentioning `key`, for errors found after deserialisation.
fn line_of(text: &str, key: &str) -> u64 {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i as u64 + 1)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meridian.yaml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file, &Overrides::default())
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(c.dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.http_listen, "127.0.0.1:9153".parse().unwrap());
        assert_eq!(c.dns.tcp_idle_timeout, Duration::from_secs(10));
        assert!(c.zones_dir.ends_with("zones"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let e = load("version: 1\ndns:\n  listen: [\"127.0.0.1:53\"]\n  lisen: 1\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("lisen"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load("version: 1\ndns:\n  tcp_idle_timeout: soon\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(load("version: 2\n").is_err());
        assert!(load("version: 1\ndns:\n  listen: [\"nope\"]\n").is_err());
    }
}
