//! `meridian.yaml`: the on-disk spec (serde, unknown keys rejected, versioned, values
//! carrying their position) → the validated [`Config`] the server runs with. Every
//! problem comes back at once as `FILE:LINE:COL`. Paths in the file are relative to the
//! file's own folder; command-line flags override the file.
//!
//! Settings are of two kinds. [`Startup`] ones (sockets, the admin token, the state
//! file, the startup wait) are read once when the server starts; a reload that changes
//! one says "restart required" instead of ignoring it ([`Startup::changed`]). The rest
//! (zones, policies, GeoIP, overrides, EDNS size) take effect on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::diag::Diagnostic;
use crate::geo::Location;
use crate::health::OverrideKind;
use crate::health::peers::Quorum;

pub const CONFIG_VERSION: u32 = 1;

type S<T> = Spanned<T>;

/// A key that was written, as opposed to left out (`null` is written).
#[derive(Debug, Default)]
enum Given<T> {
    #[default]
    Absent,
    Written(T),
}

fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Given<T>, D::Error> {
    T::deserialize(d).map(Given::Written)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    version: S<u32>,
    #[serde(default)]
    dns: DnsSpec,
    #[serde(default)]
    http: HttpSpec,
    zones: Option<PathBuf>,
    policies: Option<PathBuf>,
    geoip: Option<PathBuf>,
    #[serde(default)]
    geo: GeoSpec,
    #[serde(default)]
    overrides: Vec<S<OverrideSpec>>,
    #[serde(default)]
    health: HealthSpec,
    cluster: Option<S<ClusterSpec>>,
    rrl: Option<S<RrlSpec>>,
    transfer: Option<S<TransferSpec>>,
    dnssec: Option<S<DnssecSpec>>,
    #[serde(default)]
    limits: LimitsSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnssecSpec {
    keys: Option<PathBuf>,
    signature_validity: Option<S<String>>,
    refresh: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferSpec {
    #[serde(default)]
    tsig_keys: std::collections::BTreeMap<String, S<TsigKeySpec>>,
    #[serde(default)]
    allow: Vec<S<TransferAllowSpec>>,
    #[serde(default)]
    notify: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TsigKeySpec {
    algorithm: S<String>,
    secret_file: S<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferAllowSpec {
    from: Vec<S<String>>,
    key: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSpec {
    zone_records: Option<S<usize>>,
    records_per_name: Option<S<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RrlSpec {
    responses_per_second: Option<S<u32>>,
    window: Option<S<String>>,
    slip: Option<S<u32>>,
    ipv4_prefix: Option<S<u8>>,
    ipv6_prefix: Option<S<u8>>,
    exempt: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    instance: Option<S<String>>,
    listen: S<String>,
    /// The address peers reach this one at; default: `listen`.
    advertise: Option<S<String>>,
    #[serde(default)]
    peers: Vec<S<String>>,
    secret_file: S<PathBuf>,
    quorum: Option<S<QuorumSpec>>,
    isolation_timeout: Option<S<String>>,
    gossip_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum QuorumSpec {
    Count(usize),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSpec {
    listen: Option<S<Vec<S<String>>>>,
    edns_udp_size: Option<S<u16>>,
    tcp_idle_timeout: Option<S<String>>,
    tcp_max_connections: Option<usize>,
    tcp_max_queries: Option<S<u32>>,
    udp_sockets_per_address: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    listen: Option<S<String>>,
    /// Bearer token for the admin API's writes; MERIDIAN_ADMIN_TOKEN overrides it.
    admin_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeoSpec {
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
struct DefaultLocationSpec {
    country: Option<S<String>>,
    lat: Option<S<f64>>,
    lon: Option<S<f64>>,
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
    pub fn kind(self) -> OverrideKind {
        match self {
            OverrideState::Down | OverrideState::ForceDown => OverrideKind::ForceDown,
            OverrideState::Up | OverrideState::ForceUp => OverrideKind::ForceUp,
            OverrideState::Drain => OverrideKind::Drain,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSpec {
    /// Absent: `meridian.state.json`; `null`: no state file.
    #[serde(default, deserialize_with = "given")]
    state_file: Given<Option<PathBuf>>,
    startup_wait: Option<S<String>>,
}

/// An operator's override of a region's state, from the configuration.
#[derive(Debug, Clone)]
pub struct RegionOverride {
    pub region: String,
    pub state: OverrideState,
    pub reason: Option<String>,
    pub line: usize,
    pub column: usize,
}

/// The DNS listeners' settings (all read at startup).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    /// Queries answered on one TCP connection before it is closed (RFC 7766 6.2.3
    /// lets a server close); 0: no limit.
    pub tcp_max_queries: u32,
    /// SO_REUSEPORT sockets per UDP address; 0 means one per CPU.
    pub udp_sockets_per_address: usize,
}

/// Settings read once when the server starts. `Debug` leaves the admin token out.
#[derive(Clone, PartialEq)]
pub struct Startup {
    pub dns: DnsConfig,
    pub http_listen: SocketAddr,
    /// `None`: admin writes are disabled.
    pub admin_token: Option<String>,
    /// Last known health states and operator overrides, restored on restart.
    pub state_file: Option<PathBuf>,
    /// Longest wait for the first full probe round before serving.
    pub startup_wait: Duration,
    /// `None`: a single instance, deciding from its own probes.
    pub cluster: Option<ClusterConfig>,
    /// Response rate limiting on UDP; `None`: off.
    pub rrl: Option<RrlConfig>,
}

/// `transfer:`: who may copy the zones (AXFR, IXFR answered as AXFR) and whom to tell
/// when a zone's serial changes (NOTIFY). Applied on reload.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// By the name the configuration gives them (also the TSIG key name on the wire).
    pub keys: Vec<(String, domain::tsig::Key)>,
    pub allow: Vec<TransferAllow>,
    pub notify: Vec<SocketAddr>,
}

/// Sources that may transfer, and the TSIG key they must sign with (`None`: the
/// source address alone admits them).
#[derive(Debug, Clone)]
pub struct TransferAllow {
    pub from: Vec<ipnet::IpNet>,
    pub key: Option<String>,
}

impl TransferConfig {
    /// The rules admitting `peer`.
    pub fn rules_for(&self, peer: std::net::IpAddr) -> impl Iterator<Item = &TransferAllow> {
        self.allow
            .iter()
            .filter(move |a| a.from.iter().any(|n| n.contains(&peer)))
    }

    pub fn key(&self, name: &str) -> Option<&domain::tsig::Key> {
        self.keys.iter().find(|(n, _)| n == name).map(|(_, k)| k)
    }
}

/// `cluster:`: the instances of the NS set share health through gossip.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    pub instance: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    /// Seed addresses (`IP:PORT` or `HOST:PORT`); more are learnt from them.
    pub peers: Vec<String>,
    /// The shared key every gossip datagram is authenticated with.
    pub secret: Vec<u8>,
    pub quorum: Quorum,
    pub isolation_timeout: Duration,
    pub gossip_interval: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("instance", &self.instance)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .field("quorum", &self.quorum)
            .field("isolation_timeout", &self.isolation_timeout)
            .field("gossip_interval", &self.gossip_interval)
            .finish_non_exhaustive()
    }
}

/// `rrl:` in `meridian.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct RrlConfig {
    pub responses_per_second: u32,
    pub window_seconds: u32,
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt: Vec<ipnet::IpNet>,
}

/// Shortest shared key accepted: 128 bits.
const MIN_SECRET: usize = 16;

impl std::fmt::Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("dns", &self.dns)
            .field("http_listen", &self.http_listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "(set)"))
            .field("state_file", &self.state_file)
            .field("startup_wait", &self.startup_wait)
            .field("cluster", &self.cluster)
            .field("rrl", &self.rrl)
            .finish()
    }
}

impl Startup {
    /// The keys whose values differ from `other`'s: what a reload cannot apply.
    pub fn changed(&self, other: &Startup) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |differs: bool, key: &'static str| {
            if differs {
                out.push(key);
            }
        };
        check(self.dns.listen != other.dns.listen, "dns.listen");
        check(
            self.dns.tcp_idle_timeout != other.dns.tcp_idle_timeout,
            "dns.tcp_idle_timeout",
        );
        check(
            self.dns.tcp_max_connections != other.dns.tcp_max_connections,
            "dns.tcp_max_connections",
        );
        check(
            self.dns.tcp_max_queries != other.dns.tcp_max_queries,
            "dns.tcp_max_queries",
        );
        check(
            self.dns.udp_sockets_per_address != other.dns.udp_sockets_per_address,
            "dns.udp_sockets_per_address",
        );
        check(self.http_listen != other.http_listen, "http.listen");
        check(self.admin_token != other.admin_token, "http.admin_token");
        check(self.state_file != other.state_file, "health.state_file");
        check(
            self.startup_wait != other.startup_wait,
            "health.startup_wait",
        );
        check(self.cluster != other.cluster, "cluster");
        check(self.rrl != other.rrl, "rrl");
        out
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub startup: Startup,
    /// Our EDNS UDP payload size, advertised in every OPT we send.
    pub edns_udp_size: u16,
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
    pub dnssec: crate::dnssec::Settings,
    /// Settings that load but deserve a second look; reported with the snapshot's.
    pub warnings: Vec<Diagnostic>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub dns_listen: Vec<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

/// The largest DNS payload over UDP that RFC 9715 recommends.
const MAX_UNFRAGMENTED_UDP: u16 = 1400;

/// Collects diagnostics for one file.
struct Report<'a> {
    file: &'a Path,
    errors: Vec<Diagnostic>,
}

impl Report<'_> {
    fn at<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.errors.push(Diagnostic::at(
            self.file,
            s.referenced.line() as usize,
            s.referenced.column() as usize,
            message,
        ));
    }

    fn duration(&mut self, key: &str, s: Option<&S<String>>, default: Duration) -> Duration {
        let Some(s) = s else { return default };
        match humantime::parse_duration(&s.value) {
            Ok(d) => d,
            Err(e) => {
                self.at(s, format!("{key} {:?}: {e}", s.value));
                default
            }
        }
    }
}

impl Config {
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, Vec<Diagnostic>> {
        let text = crate::diag::read_yaml(file).map_err(|e| vec![e])?;
        let spec: Spec = crate::diag::parse_yaml(file, &text).map_err(|e| vec![e])?;
        let mut r = Report {
            file,
            errors: Vec::new(),
        };
        if spec.version.value != CONFIG_VERSION {
            r.at(
                &spec.version,
                format!(
                    "version {} is not supported (this meridian reads version {CONFIG_VERSION})",
                    spec.version.value
                ),
            );
        }
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut warnings = Vec::new();

        // dns
        let dns = &spec.dns;
        let tcp_idle_timeout = r.duration(
            "dns.tcp_idle_timeout",
            dns.tcp_idle_timeout.as_ref(),
            Duration::from_secs(10),
        );
        // DNS flag day 2020: fits the common path MTU without fragmentation.
        let edns_udp_size = dns.edns_udp_size.as_ref().map_or(1232, |s| s.value);
        if let Some(s) = &dns.edns_udp_size {
            if s.value < 512 {
                r.at(s, "dns.edns_udp_size must be at least 512");
            } else if s.value > MAX_UNFRAGMENTED_UDP {
                // UDP answers are sent with DF and never fragmented (dns::server).
                warnings.push(Diagnostic::at(
                    file,
                    s.referenced.line() as usize,
                    s.referenced.column() as usize,
                    format!(
                        "dns.edns_udp_size {} is above {MAX_UNFRAGMENTED_UDP} (RFC 9715): UDP \
                         answers are never fragmented, so one that does not fit a path's MTU \
                         is lost there, and one that does not fit our interface's goes out \
                         truncated for a TCP retry",
                        s.value
                    ),
                ));
            }
        }
        let mut listen = Vec::new();
        match &dns.listen {
            None => listen.push(SocketAddr::from(([127, 0, 0, 1], 5353))),
            Some(list) => {
                for a in &list.value {
                    match a.value.parse::<SocketAddr>() {
                        Ok(addr) => listen.push(addr),
                        Err(_) => r.at(a, format!("dns.listen: {:?} is not IP:PORT", a.value)),
                    }
                }
                if list.value.is_empty() && overrides.dns_listen.is_empty() {
                    r.at(list, "dns.listen names no address");
                }
            }
        }
        if !overrides.dns_listen.is_empty() {
            listen = overrides.dns_listen.clone();
        }

        // http
        let http_listen = match &spec.http.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9153)),
            Some(s) => s.value.parse().unwrap_or_else(|_| {
                r.at(s, format!("http.listen: {:?} is not IP:PORT", s.value));
                SocketAddr::from(([127, 0, 0, 1], 9153))
            }),
        };
        let http_listen = overrides.http_listen.unwrap_or(http_listen);

        // geo
        let geoip_dir = base.join(spec.geoip.as_deref().unwrap_or(Path::new("geoip")));
        let geo = &spec.geo;
        let default_location = geo
            .default_location
            .as_ref()
            .and_then(|d| default_location(d, &mut r));
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

        // health
        let startup_wait = r.duration(
            "health.startup_wait",
            spec.health.startup_wait.as_ref(),
            Duration::from_secs(10),
        );
        let state_file = match &spec.health.state_file {
            Given::Absent => Some(base.join("meridian.state.json")),
            Given::Written(p) => p.as_ref().map(|p| base.join(p)),
        };

        let cluster = spec
            .cluster
            .as_ref()
            .and_then(|c| cluster(c, &base, &mut r));
        let rrl = spec.rrl.as_ref().and_then(|c| rrl(c, &mut r));
        let transfer = spec
            .transfer
            .as_ref()
            .and_then(|t| transfer(t, &base, &mut r, &mut warnings));
        let dnssec = dnssec(spec.dnssec.as_ref(), &base, &mut r);
        let defaults = crate::zone::ZoneLimits::default();
        let mut at_least_one = |s: Option<&S<usize>>, default: usize, key: &str| match s {
            Some(v) if v.value == 0 => {
                r.at(v, format!("{key} must be at least 1"));
                default
            }
            Some(v) => v.value,
            None => default,
        };
        let zone_limits = crate::zone::ZoneLimits {
            records: at_least_one(
                spec.limits.zone_records.as_ref(),
                defaults.records,
                "limits.zone_records",
            ),
            records_per_name: at_least_one(
                spec.limits.records_per_name.as_ref(),
                defaults.records_per_name,
                "limits.records_per_name",
            ),
        };

        let overrides_list = spec
            .overrides
            .iter()
            .map(|o| RegionOverride {
                region: o.value.region.clone(),
                state: o.value.state,
                reason: o.value.reason.clone(),
                line: o.referenced.line() as usize,
                column: o.referenced.column() as usize,
            })
            .collect();
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        Ok(Config {
            file: file.to_path_buf(),
            startup: Startup {
                dns: DnsConfig {
                    listen,
                    tcp_idle_timeout,
                    tcp_max_connections: dns.tcp_max_connections.unwrap_or(1024).max(1),
                    tcp_max_queries: dns.tcp_max_queries.as_ref().map_or(10_000, |s| s.value),
                    udp_sockets_per_address: dns.udp_sockets_per_address.unwrap_or(0),
                },
                http_listen,
                admin_token: std::env::var("MERIDIAN_ADMIN_TOKEN")
                    .ok()
                    .or_else(|| spec.http.admin_token.clone())
                    .filter(|t| !t.is_empty()),
                state_file,
                startup_wait,
                cluster,
                rrl,
            },
            edns_udp_size,
            geo_database: geoip_dir.join(
                geo.database
                    .as_deref()
                    .unwrap_or(Path::new("geo-whois-asn-country.mmdb")),
            ),
            asn_database: geo.asn_database.as_deref().map(|p| geoip_dir.join(p)),
            latency_table,
            latency_overhead_ms,
            default_location,
            overrides: overrides_list,
            zone_limits,
            transfer,
            dnssec,
            zones_dir: base.join(spec.zones.as_deref().unwrap_or(Path::new("zones"))),
            policies_dir: base.join(spec.policies.as_deref().unwrap_or(Path::new("policies"))),
            geoip_dir,
            warnings,
        })
    }
}

fn dnssec(d: Option<&S<DnssecSpec>>, base: &Path, r: &mut Report<'_>) -> crate::dnssec::Settings {
    let spec = d.map(|d| &d.value);
    let validity = r.duration(
        "dnssec.signature_validity",
        spec.and_then(|s| s.signature_validity.as_ref()),
        Duration::from_secs(14 * 86_400),
    );
    let refresh = r.duration(
        "dnssec.refresh",
        spec.and_then(|s| s.refresh.as_ref()),
        Duration::from_secs(7 * 86_400),
    );
    if let Some(d) = d
        && refresh >= validity
    {
        r.at(
            d,
            format!(
                "dnssec.refresh ({}) must be shorter than dnssec.signature_validity ({}): signatures would expire before they are renewed",
                humantime::format_duration(refresh),
                humantime::format_duration(validity)
            ),
        );
    }
    if let Some(d) = d
        && refresh < Duration::from_secs(3600)
    {
        r.at(
            d,
            "dnssec.refresh must be at least 1h: every refresh re-signs every zone",
        );
    }
    crate::dnssec::Settings {
        keys_dir: base.join(
            spec.and_then(|s| s.keys.as_deref())
                .unwrap_or(Path::new("keys")),
        ),
        signature_validity: validity,
        refresh,
    }
}

fn rrl(c: &S<RrlSpec>, r: &mut Report<'_>) -> Option<RrlConfig> {
    let spec = &c.value;
    let errors = r.errors.len();
    let rate = spec.responses_per_second.as_ref().map_or(0, |s| s.value);
    if let Some(s) = &spec.responses_per_second
        && s.value > 100_000
    {
        r.at(
            s,
            "rrl.responses_per_second must be at most 100000 (0 turns limiting off)",
        );
    }
    let window = r.duration("rrl.window", spec.window.as_ref(), Duration::from_secs(15));
    if let Some(w) = &spec.window
        && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&window)
    {
        r.at(w, "rrl.window must be between 1s and 1h");
    }
    let slip = spec.slip.as_ref().map_or(2, |s| s.value);
    if let Some(s) = &spec.slip
        && s.value > 10
    {
        r.at(s, "rrl.slip must be 0 (drop every limited response) to 10");
    }
    let prefix = |r: &mut Report<'_>, s: Option<&S<u8>>, default: u8, max: u8, key: &str| match s {
        None => default,
        Some(p) if p.value >= 1 && p.value <= max => p.value,
        Some(p) => {
            r.at(p, format!("{key} must be 1 to {max}"));
            default
        }
    };
    let ipv4_prefix = prefix(r, spec.ipv4_prefix.as_ref(), 24, 32, "rrl.ipv4_prefix");
    let ipv6_prefix = prefix(r, spec.ipv6_prefix.as_ref(), 56, 128, "rrl.ipv6_prefix");
    let exempt = match &spec.exempt {
        // Loopback: the local resolver and monitoring.
        None => ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .collect(),
        Some(list) => list
            .iter()
            .filter_map(|e| match e.value.parse::<ipnet::IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => match e.value.parse::<std::net::IpAddr>() {
                    Ok(a) => Some(ipnet::IpNet::from(a)),
                    Err(_) => {
                        r.at(
                            e,
                            format!("rrl.exempt: {:?} is not an address or CIDR", e.value),
                        );
                        None
                    }
                },
            })
            .collect(),
    };
    if r.errors.len() > errors {
        return None;
    }
    Some(RrlConfig {
        responses_per_second: rate,
        window_seconds: window.as_secs() as u32,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt,
    })
}

fn transfer(
    t: &S<TransferSpec>,
    base: &Path,
    r: &mut Report<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<TransferConfig> {
    let spec = &t.value;
    let errors = r.errors.len();
    let mut keys = Vec::new();
    for (name, k) in &spec.tsig_keys {
        let key_name = match domain::tsig::KeyName::from_str(name) {
            Ok(n) => Some(n),
            Err(e) => {
                r.at(
                    k,
                    format!("transfer.tsig_keys {name:?}: not a key name ({e})"),
                );
                None
            }
        };
        let algorithm = match domain::tsig::Algorithm::from_str(&k.value.algorithm.value) {
            Ok(a) => Some(a),
            Err(_) => {
                r.at(
                    &k.value.algorithm,
                    format!(
                        "transfer.tsig_keys.{name}.algorithm {:?}: hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1",
                        k.value.algorithm.value
                    ),
                );
                None
            }
        };
        let path = base.join(&k.value.secret_file.value);
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => {
                // The secret as BIND's `secret "..."` and `tsig-keygen` write it: base64.
                let text = text.trim();
                let text = text
                    .strip_prefix("secret")
                    .map(|t| t.trim().trim_end_matches(';').trim().trim_matches('"'))
                    .unwrap_or(text);
                match domain::utils::base64::decode::<Vec<u8>>(text) {
                    Ok(b) if b.is_empty() => {
                        r.at(
                            &k.value.secret_file,
                            format!(
                                "transfer.tsig_keys.{name}.secret_file {}: the secret is empty",
                                path.display()
                            ),
                        );
                        None
                    }
                    Ok(b) => Some(b),
                    Err(e) => {
                        r.at(&k.value.secret_file, format!("transfer.tsig_keys.{name}.secret_file {}: the secret is not base64 ({e}); make one with `head -c 32 /dev/urandom | base64`", path.display()));
                        None
                    }
                }
            }
            Err(e) => {
                r.at(
                    &k.value.secret_file,
                    format!(
                        "transfer.tsig_keys.{name}.secret_file {}: {e}",
                        path.display()
                    ),
                );
                None
            }
        };
        if let (Some(n), Some(a), Some(s)) = (key_name, algorithm, secret) {
            match domain::tsig::Key::new(a, &s, n, None, None) {
                Ok(key) => keys.push((name.clone(), key)),
                Err(e) => r.at(k, format!("transfer.tsig_keys.{name}: {e}")),
            }
        }
    }
    let mut allow = Vec::new();
    for a in &spec.allow {
        let mut from = Vec::new();
        for f in &a.value.from {
            let net = f.value.parse::<ipnet::IpNet>().ok().or_else(|| {
                f.value
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            match net {
                Some(n) if n.trunc() == n => from.push(n),
                Some(_) => r.at(
                    f,
                    format!("transfer.allow.from: {} has host bits set", f.value),
                ),
                None => r.at(
                    f,
                    format!(
                        "transfer.allow.from: {:?} is not an address or CIDR",
                        f.value
                    ),
                ),
            }
        }
        if from.is_empty() && a.value.from.is_empty() {
            r.at(a, "transfer.allow: `from` lists no source");
        }
        if let Some(k) = &a.value.key
            && !spec.tsig_keys.contains_key(&k.value)
        {
            r.at(
                k,
                format!(
                    "transfer.allow.key {:?} is not in transfer.tsig_keys",
                    k.value
                ),
            );
        }
        if a.value.key.is_none() {
            warnings.push(Diagnostic::at(
                r.file,
                a.referenced.line() as usize,
                a.referenced.column() as usize,
                "transfer.allow without `key`: these sources transfer on their address alone (no TSIG)",
            ));
        }
        allow.push(TransferAllow {
            from,
            key: a.value.key.as_ref().map(|k| k.value.clone()),
        });
    }
    let mut notify = Vec::new();
    for n in &spec.notify {
        match n.value.parse::<SocketAddr>() {
            Ok(a) => notify.push(a),
            Err(_) => match n.value.parse::<std::net::IpAddr>() {
                Ok(ip) => notify.push(SocketAddr::new(ip, 53)),
                Err(_) => r.at(
                    n,
                    format!("transfer.notify: {:?} is not IP or IP:PORT", n.value),
                ),
            },
        }
    }
    if r.errors.len() > errors {
        return None;
    }
    Some(TransferConfig {
        keys,
        allow,
        notify,
    })
}

fn cluster(c: &S<ClusterSpec>, base: &Path, r: &mut Report<'_>) -> Option<ClusterConfig> {
    let spec = &c.value;
    let errors = r.errors.len();
    let instance = match &spec.instance {
        Some(i)
            if i.value.is_empty()
                || i.value.len() > 63
                || !i
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            r.at(
                i,
                format!(
                    "cluster.instance {:?}: 1 to 63 letters, digits, '-', '_' or '.'",
                    i.value
                ),
            );
            String::new()
        }
        Some(i) => i.value.clone(),
        None => crate::health::probe::host_name(),
    };
    let addr = |r: &mut Report<'_>, s: &S<String>, key: &str| match s.value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.at(s, format!("{key}: {:?} is not IP:PORT", s.value));
            None
        }
    };
    let listen = addr(r, &spec.listen, "cluster.listen");
    let advertise = match &spec.advertise {
        Some(a) => addr(r, a, "cluster.advertise"),
        None => listen,
    };
    if let (Some(a), None) = (advertise, &spec.advertise)
        && a.ip().is_unspecified()
    {
        r.at(&spec.listen, "cluster.listen is a wildcard address: set cluster.advertise to the address peers reach this instance at");
    }
    let mut peers = Vec::new();
    for p in &spec.peers {
        let ok = p.value.parse::<SocketAddr>().is_ok()
            || p.value
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if ok {
            peers.push(p.value.clone());
        } else {
            r.at(
                p,
                format!("cluster.peers: {:?} is not IP:PORT or HOST:PORT", p.value),
            );
        }
    }
    let secret_path = base.join(&spec.secret_file.value);
    let secret = match std::fs::read(&secret_path) {
        Ok(bytes) => {
            let key = bytes.trim_ascii().to_vec();
            if key.len() < MIN_SECRET {
                r.at(&spec.secret_file, format!("cluster.secret_file {}: the key is {} bytes, at least {MIN_SECRET} are needed (e.g. `head -c 32 /dev/urandom | base64 > {}`)", secret_path.display(), key.len(), spec.secret_file.value.display()));
            }
            key
        }
        Err(e) => {
            r.at(
                &spec.secret_file,
                format!("cluster.secret_file {}: {e}", secret_path.display()),
            );
            Vec::new()
        }
    };
    let quorum = match &spec.quorum {
        None => Quorum::Majority,
        Some(q) => match &q.value {
            QuorumSpec::Count(0) => {
                r.at(
                    q,
                    "cluster.quorum: a number of vantage points must be at least 1",
                );
                Quorum::Majority
            }
            QuorumSpec::Count(n) => Quorum::Count(*n),
            QuorumSpec::Word(w) => match w.as_str() {
                "majority" => Quorum::Majority,
                "all" => Quorum::All,
                "any" => Quorum::Any,
                other => {
                    r.at(
                        q,
                        format!("cluster.quorum {other:?}: majority, all, any or a number"),
                    );
                    Quorum::Majority
                }
            },
        },
    };
    let isolation_timeout = r.duration(
        "cluster.isolation_timeout",
        spec.isolation_timeout.as_ref(),
        Duration::from_secs(30),
    );
    let gossip_interval = r.duration(
        "cluster.gossip_interval",
        spec.gossip_interval.as_ref(),
        Duration::from_secs(1),
    );
    if let Some(g) = &spec.gossip_interval
        && !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&gossip_interval)
    {
        r.at(g, "cluster.gossip_interval must be between 10ms and 60s");
    }
    if let Some(t) = &spec.isolation_timeout
        && isolation_timeout < gossip_interval * 3
    {
        r.at(
            t,
            "cluster.isolation_timeout must be at least three gossip intervals",
        );
    }
    if r.errors.len() > errors {
        return None;
    }
    Some(ClusterConfig {
        instance,
        listen: listen?,
        advertise: advertise?,
        peers,
        secret,
        quorum,
        isolation_timeout,
        gossip_interval,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_in(dir: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let file = dir.join("meridian.yaml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file, &Overrides::default())
    }

    fn load(text: &str) -> Result<Config, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        load_in(dir.path(), text)
    }

    /// (line, column, message) of each error.
    fn errors(text: &str) -> Vec<(usize, Option<usize>, String)> {
        load(text)
            .unwrap_err()
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(
            c.startup.dns.listen,
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
        assert_eq!(c.startup.http_listen, "127.0.0.1:9153".parse().unwrap());
        assert_eq!(c.startup.dns.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.edns_udp_size, 1232);
        assert!(c.zones_dir.ends_with("zones"));
        assert!(
            c.startup
                .state_file
                .as_ref()
                .is_some_and(|p| p.ends_with("meridian.state.json"))
        );
    }

    #[test]
    fn the_shipped_configuration_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = Config::load(&root.join("meridian.yaml"), &Overrides::default()).unwrap();
        assert!(c.geo_database.exists(), "{}", c.geo_database.display());
        assert!(c.latency_table.is_some());
    }

    #[test]
    fn three_mistakes_are_reported_together_with_line_and_column() {
        let got = errors(
            "version: 1\ndns:\n  tcp_idle_timeout: soon\n  edns_udp_size: 100\n  listen: [\"127.0.0.1:53\", \"nope\"]\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (3, Some(21)), "{got:?}");
        assert!(got[0].2.contains("tcp_idle_timeout"), "{got:?}");
        assert_eq!((got[1].0, got[1].1), (4, Some(18)), "{got:?}");
        assert_eq!(got[2].0, 5, "{got:?}");
        assert!(got[2].2.contains("nope"), "{got:?}");
    }

    #[test]
    fn an_unknown_key_in_each_table_is_reported_at_its_line() {
        let tables = [
            ("", 1),
            ("dns:\n  ", 1),
            ("http:\n  ", 1),
            ("geo:\n  ", 1),
            ("health:\n  ", 1),
            ("geo:\n  default_location:\n    ", 2),
            ("overrides:\n  - region: x\n    state: drain\n    ", 3),
        ];
        for (prefix, depth) in tables {
            let text = format!("version: 1\n{prefix}colour: blue\n");
            let got = errors(&text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert_eq!(
                got[0].0,
                2 + depth - usize::from(prefix.is_empty()),
                "{text}: {got:?}"
            );
            assert!(got[0].2.contains("colour"), "{text}: {got:?}");
        }
    }

    #[test]
    fn a_comment_mentioning_latency_does_not_make_the_table_required() {
        let c = load("version: 1\n# latency: see geoip/latency.yaml\ngeo: {}\n").unwrap();
        assert_eq!(c.latency_table, None, "absent and no file: no table");
        let c = load("version: 1\ngeo:\n  latency: null\n").unwrap();
        assert_eq!(c.latency_table, None);
        let c = load("version: 1\ngeo:\n  latency: rtt.yaml\n").unwrap();
        assert!(c.latency_table.is_some_and(|p| p.ends_with("rtt.yaml")));
    }

    #[test]
    fn bad_values_name_the_key_and_the_version_is_checked() {
        let got = errors("version: 2\n");
        assert_eq!((got[0].0, got[0].1), (1, Some(10)), "{got:?}");
        let got = errors("version: 1\ngeo:\n  default_location: { country: XX }\n");
        assert!(got[0].2.contains("XX"), "{got:?}");
        assert_eq!(got[0].0, 3);
    }

    #[test]
    fn startup_settings_that_changed_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_in(dir.path(), "version: 1\n").unwrap();
        let b = load_in(
            dir.path(),
            "version: 1\ndns:\n  listen: [\"127.0.0.1:5454\"]\n  edns_udp_size: 1400\nhttp:\n  listen: \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        assert_eq!(a.startup.changed(&b.startup), ["dns.listen", "http.listen"]);
        assert!(a.startup.changed(&a.startup.clone()).is_empty());
    }

    #[test]
    fn transfer_settings_are_checked_at_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.key"), "not base64 at all!\n").unwrap();
        std::fs::write(
            dir.path().join("good.key"),
            "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
        )
        .unwrap();
        let got: Vec<(usize, String)> = load_in(
            dir.path(),
            "version: 1\ntransfer:\n  tsig_keys:\n    k1: { algorithm: hmac-md5, secret_file: good.key }\n    k2: { algorithm: hmac-sha256, secret_file: bad.key }\n  allow:\n    - { from: [\"192.0.2.1/24\", \"nowhere\"], key: k3 }\n  notify: [\"192.0.2.53:53\", \"ns2\"]\n",
        )
        .unwrap_err()
        .into_iter()
        .map(|d| (d.line, d.message))
        .collect();
        let lines: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, [4, 5, 7, 7, 7, 8], "{got:?}");
        assert!(got[0].1.contains("hmac-md5"), "{got:?}");
        assert!(got[1].1.contains("not base64"), "{got:?}");
        assert!(got[2].1.contains("host bits"), "{got:?}");
        assert!(got[3].1.contains("\"nowhere\""), "{got:?}");
        assert!(
            got[4].1.contains("\"k3\" is not in transfer.tsig_keys"),
            "{got:?}"
        );
        assert!(got[5].1.contains("\"ns2\""), "{got:?}");
        let c = load_in(
            dir.path(),
            "version: 1\ntransfer:\n  tsig_keys: { xfr: { algorithm: hmac-sha256, secret_file: good.key } }\n  allow: [{ from: [\"127.0.0.1\"], key: xfr }, { from: [\"10.0.0.0/8\"] }]\n  notify: [\"127.0.0.1\"]\n",
        )
        .unwrap();
        let t = c.transfer.unwrap();
        assert_eq!(t.notify, ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(t.rules_for(ip("127.0.0.1")).count(), 1);
        assert_eq!(t.rules_for(ip("127.0.0.2")).count(), 0);
        assert!(t.rules_for(ip("10.1.2.3")).all(|r| r.key.is_none()));
        assert!(c.warnings.iter().any(|w| w.message.contains("no TSIG")));
    }

    #[test]
    fn cluster_settings_are_checked_at_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.key"), "tooshort\n").unwrap();
        std::fs::write(dir.path().join("good.key"), "0123456789abcdef0123\n").unwrap();
        let got: Vec<(usize, String)> = load_in(
            dir.path(),
            "version: 1\ncluster:\n  instance: \"ns 1\"\n  listen: nowhere\n  peers: [\"127.0.0.2:7946\", \"bad\"]\n  secret_file: short.key\n  quorum: most\n  isolation_timeout: 10ms\n",
        )
        .unwrap_err()
        .into_iter()
        .map(|d| (d.line, d.message))
        .collect();
        let lines: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{got:?}");
        assert!(got[3].1.contains("at least 16"), "{got:?}");
        assert!(
            load_in(
                dir.path(),
                "version: 1\ncluster:\n  listen: \"127.0.0.1:7946\"\n  secret_file: missing.key\n"
            )
            .unwrap_err()[0]
                .message
                .contains("missing.key")
        );
        let c = load_in(
            dir.path(),
            "version: 1\ncluster:\n  instance: ns1\n  listen: \"127.0.0.1:7946\"\n  peers: [\"ns2.example.net:7946\"]\n  secret_file: good.key\n  quorum: 2\n",
        )
        .unwrap();
        let cl = c.startup.cluster.unwrap();
        assert_eq!(cl.quorum, Quorum::Count(2));
        assert_eq!(cl.isolation_timeout, Duration::from_secs(30));
        assert_eq!(cl.secret, b"0123456789abcdef0123");
        assert!(
            !format!("{cl:?}").contains("0123456789"),
            "the key stays out of logs"
        );
    }
}
