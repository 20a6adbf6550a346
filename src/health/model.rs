//! What the health checker is asked to watch: endpoints and their probes, the thresholds
//! their state machines use, and when a region counts as up. Built from the policy files
//! by `policy::validate`; this module imports nothing else of the crate.

use std::net::SocketAddr;
use std::time::Duration;

/// When a region counts as up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinUp {
    Count(usize),
    Fraction(f64),
}

impl MinUp {
    pub fn needed(&self, endpoints: usize) -> usize {
        match *self {
            MinUp::Count(k) => k.min(endpoints).max(1),
            MinUp::Fraction(f) => {
                ((f * endpoints as f64).ceil() as usize).clamp(1, endpoints.max(1))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Probes the window keeps.
    pub window: usize,
    /// The error-rate rule needs at least this many samples.
    pub min_samples: usize,
    pub fail_error_rate: f64,
    pub fail_latency: Duration,
    pub fail_consecutive: u32,
    pub recover_error_rate: f64,
    pub recover_latency: Duration,
    pub recover_consecutive: u32,
    pub cooldown: Duration,
    /// Latency percentile the latency rules look at (e.g. 90).
    pub latency_percentile: u8,
    /// Slow-but-working: at or above this the endpoint is Degraded.
    pub degraded_latency: Option<Duration>,
    /// How soon after its endpoints fail every client must have left the region,
    /// resolver caches included (`meridian check` holds each policy against it).
    pub failover_target: Duration,
}

impl Thresholds {
    /// Meridian's default: fail at 50 % errors, recover at 10 %, cooldown 5 min.
    pub fn default_preset() -> Self {
        Thresholds {
            window: 10,
            min_samples: 4,
            fail_error_rate: 0.5,
            fail_latency: Duration::from_secs(5),
            fail_consecutive: 3,
            recover_error_rate: 0.1,
            recover_latency: Duration::from_millis(2500),
            recover_consecutive: 3,
            cooldown: Duration::from_secs(300),
            latency_percentile: 90,
            degraded_latency: None,
            failover_target: Duration::from_secs(120),
        }
    }

    /// Leave early: 10 % errors, 2 s latency, 2 consecutive failures.
    pub fn aggressive() -> Self {
        Thresholds {
            fail_error_rate: 0.1,
            fail_latency: Duration::from_secs(2),
            fail_consecutive: 2,
            recover_error_rate: 0.0,
            recover_latency: Duration::from_secs(1),
            recover_consecutive: 5,
            failover_target: Duration::from_secs(60),
            ..Self::default_preset()
        }
    }

    /// Leave late: 50 % errors, 10 s latency, 5 consecutive failures.
    pub fn conservative() -> Self {
        Thresholds {
            fail_error_rate: 0.5,
            fail_latency: Duration::from_secs(10),
            fail_consecutive: 5,
            recover_error_rate: 0.1,
            recover_latency: Duration::from_secs(5),
            recover_consecutive: 3,
            failover_target: Duration::from_secs(300),
            ..Self::default_preset()
        }
    }

    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::default_preset()),
            "aggressive" => Some(Self::aggressive()),
            "conservative" => Some(Self::conservative()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Tcp,
    /// A Prometheus instant query; the region's veto rather than one of its endpoints.
    Metric {
        url: String,
        query: String,
        fail_above: f64,
        recover_below: f64,
    },
    /// A query to a DNS server; up when it answers with `expect_rcode`.
    Dns {
        /// Wire form.
        qname: Vec<u8>,
        qtype: u16,
        expect_rcode: u8,
    },
    Http {
        tls: bool,
        method: String,
        path: String,
        host: Option<String>,
        sni: Option<String>,
        tls_verify: bool,
        expect_status: Vec<u16>,
        expect_body: Option<String>,
        /// Extra request headers (validated names and values).
        headers: Vec<(String, String)>,
    },
}

/// A region's current load in requests/s, read from Prometheus (`load:`): where given,
/// the traffic split uses it instead of the load modelled from the names' demand.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadQuery {
    pub url: String,
    pub query: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub address: SocketAddr,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// The region's answered addresses this endpoint stands for (`serves:`), as a mask
    /// over their positions (A first, then AAAA); 0: it stands for the region as a
    /// whole. An address some endpoint serves is answered only while one of them is.
    pub serves: u64,
}

impl Endpoint {
    pub fn is_metric(&self) -> bool {
        matches!(self.probe, Probe::Metric { .. })
    }

    pub fn kind(&self) -> &'static str {
        match &self.probe {
            Probe::Tcp => "tcp",
            Probe::Dns { .. } => "dns",
            Probe::Metric { .. } => "prometheus",
            Probe::Http { tls: false, .. } => "http",
            Probe::Http { tls: true, .. } => "https",
        }
    }
}
