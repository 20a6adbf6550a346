//! Every metric Meridian exports, in one registry, prefixed `meridian_`. Labels are
//! bounded: zones, regions, endpoints and policies come from the configuration, query
//! types and rcodes from fixed lists; never a client address.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub region_healthy: IntGaugeVec,
    pub endpoint_state: IntGaugeVec,
    pub endpoint_error_rate: GaugeVec,
    pub probe_duration: HistogramVec,
    pub transitions: IntCounterVec,
    pub cooldown_remaining: GaugeVec,
    pub overrides: IntGaugeVec,
    pub dns_queries: IntCounterVec,
    pub policy_answers: IntCounterVec,
    pub policy_all_down: IntCounterVec,
    pub reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    pub geoip_build_epoch: IntGauge,
    pub build_info: IntGaugeVec,
}

fn must<T>(r: Result<T, prometheus::Error>) -> T {
    match r {
        Ok(v) => v,
        // Only reachable with a malformed metric definition in this file: a logic bug.
        #[allow(clippy::panic)]
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = must($m);
                must(registry.register(Box::new(m.clone())));
                m
            }};
        }
        let m = Metrics {
            region_healthy: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_region_healthy",
                    "1 when answers may use the region (effective state up or degraded), else 0"
                ),
                &["region"]
            )),
            endpoint_state: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_endpoint_state",
                    "1 for the endpoint's current measured state"
                ),
                &["region", "endpoint", "state"]
            )),
            endpoint_error_rate: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_endpoint_error_rate",
                    "Failed fraction of the probes in the endpoint's window"
                ),
                &["region", "endpoint"]
            )),
            probe_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "meridian_probe_duration_seconds",
                    "Duration of health probes"
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
                ]),
                &["region", "endpoint"]
            )),
            transitions: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_health_transitions_total",
                    "Health state transitions"
                ),
                &["region", "endpoint", "from", "to", "reason"]
            )),
            cooldown_remaining: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_cooldown_remaining_seconds",
                    "Seconds before a down endpoint may recover"
                ),
                &["region", "endpoint"]
            )),
            overrides: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_override",
                    "1 while an operator override is set (endpoint=\"\" for the region)"
                ),
                &["region", "endpoint", "kind"]
            )),
            dns_queries: reg!(IntCounterVec::new(
                Opts::new("meridian_dns_queries_total", "DNS queries answered"),
                &["zone", "qtype", "rcode", "transport"]
            )),
            policy_answers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_policy_answers_total",
                    "Answers given by a policy, per region answered"
                ),
                &["policy", "region"]
            )),
            policy_all_down: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_policy_all_down_total",
                    "Answers given while no region of the policy was healthy"
                ),
                &["policy", "behaviour"]
            )),
            reloads: reg!(IntCounterVec::new(
                Opts::new("meridian_config_reloads_total", "Configuration reloads"),
                &["result"]
            )),
            last_reload_success: reg!(Gauge::new(
                "meridian_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load"
            )),
            geoip_build_epoch: reg!(IntGauge::new(
                "meridian_geoip_build_epoch",
                "Build time (Unix seconds) of the GeoIP database in use"
            )),
            build_info: reg!(IntGaugeVec::new(
                Opts::new("meridian_build_info", "Always 1; the version of this build"),
                &["version"]
            )),
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for r in ["success", "failure"] {
            m.reloads.with_label_values(&[r]);
        }
        m
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const QTYPES: &[(u16, &str)] = &[
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (39, "DNAME"),
    (43, "DS"),
    (44, "SSHFP"),
    (52, "TLSA"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
    (257, "CAA"),
    (251, "IXFR"),
    (252, "AXFR"),
];

fn qtype_index(t: u16) -> usize {
    QTYPES
        .iter()
        .position(|(v, _)| *v == t)
        .unwrap_or(QTYPES.len())
}

/// A bounded label for a query type.
pub fn qtype_label(t: u16) -> &'static str {
    QTYPES
        .get(qtype_index(t))
        .map(|(_, l)| *l)
        .unwrap_or("other")
}

const RCODES: usize = 8;

/// Query counter handles cached per socket thread: a label lookup (`with_label_values`)
/// hashes four strings; this hashes one short one, once per query, with no lock.
#[derive(Default)]
pub struct QueryCounters {
    by_zone: std::collections::HashMap<Box<str>, Box<[Option<prometheus::IntCounter>]>>,
}

impl QueryCounters {
    pub fn inc(&mut self, m: &Metrics, zone: &str, qtype: u16, rcode: u8, transport: &'static str) {
        let t = usize::from(transport == "tcp");
        let q = qtype_index(qtype);
        let r = usize::from(rcode).min(RCODES - 1);
        let slot_index = (q * RCODES + r) * 2 + t;
        if !self.by_zone.contains_key(zone) {
            let slots = vec![None; (QTYPES.len() + 1) * RCODES * 2];
            self.by_zone.insert(zone.into(), slots.into_boxed_slice());
        }
        let Some(slots) = self.by_zone.get_mut(zone) else {
            return;
        };
        if let Some(slot) = slots.get_mut(slot_index) {
            slot.get_or_insert_with(|| {
                m.dns_queries.with_label_values(&[
                    zone,
                    qtype_label(qtype),
                    rcode_label(rcode),
                    transport,
                ])
            })
            .inc();
        }
    }
}

pub fn rcode_label(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        _ => "other",
    }
}

/// The category of a transition's reason, as a bounded label.
pub fn reason_label(reason: &str) -> &'static str {
    if reason.contains("consecutive failures") {
        "consecutive_failures"
    } else if reason.starts_with("error rate") {
        "error_rate"
    } else if reason.contains("degraded") {
        "latency_degraded"
    } else if reason.contains("latency") && reason.contains(">=") {
        "latency"
    } else if reason.contains("cooldown holds") {
        "cooldown_held"
    } else if reason.starts_with("operator override") {
        "override"
    } else if reason.contains("endpoints serving") {
        "endpoints"
    } else if reason.contains("did not report") {
        "probe_silent"
    } else {
        "recovered"
    }
}
