//! The settings read once when the server starts, and the diff a reload reports as
//! "restart required" instead of ignoring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::anycast::AnycastConfig;
use super::cluster::ClusterConfig;
use super::dns::DnsConfig;
use super::rrl::RrlConfig;

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
    /// BGP announcements by health; `None`: off.
    pub anycast: Option<AnycastConfig>,
}

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
            .field("anycast", &self.anycast)
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
        check(self.anycast != other.anycast, "anycast");
        out
    }
}
