//! Every metric Meridian exports, in one registry, prefixed `meridian_`. Labels are
//! bounded: zones, regions, endpoints and policies come from the configuration, query
//! types and rcodes from fixed lists; never a client address.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::iana::{OptRcode, Rtype, Transport};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// RRSIGs made since start (all zones; `meridian_dnssec_signatures_total`). Atomics
/// here, not registry counters, so the signing and query paths touch no registry.
pub static SIGNATURES: AtomicU64 = AtomicU64::new(0);

/// UDP answers sent truncated because a denial proof needed a new signature past
/// `dnssec.max_online_signatures_per_second` (`meridian_dnssec_signing_deferred_total`).
pub static SIGNING_DEFERRED: AtomicU64 = AtomicU64::new(0);
/// Dynamic answers served with a pre-signed RRSIG.
pub static PRESIGNED_SERVED: AtomicU64 = AtomicU64::new(0);
/// Dynamic answers the tables did not have, signed on the query path (kept at 0 by
/// the design).
pub static INLINE_SIGNED: AtomicU64 = AtomicU64::new(0);

pub struct Metrics {
    pub registry: Registry,
    pub region_healthy: IntGaugeVec,
    pub endpoint_state: IntGaugeVec,
    pub endpoint_error_rate: GaugeVec,
    pub probe_duration: HistogramVec,
    pub transitions: IntCounterVec,
    pub cooldown_remaining: GaugeVec,
    pub overrides: IntGaugeVec,
    pub region_capacity: GaugeVec,
    pub region_load: GaugeVec,
    pub region_keep: GaugeVec,
    pub region_spill: GaugeVec,
    pub region_failback: GaugeVec,
    pub dns_queries: IntCounterVec,
    pub policies: PolicyCounterStore,
    pub reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    pub geoip_build_epoch: IntGauge,
    pub build_info: IntGaugeVec,
    pub cluster_peers: IntGaugeVec,
    pub cluster_isolated: IntGauge,
    pub cluster_auth_failures: IntCounterVec,
    pub cluster_records_ignored: IntCounter,
    pub health_checker_restarts: IntCounter,
    pub anycast_announced: IntGaugeVec,
    pub failover_phase: HistogramVec,
    pub failover_slo_breaches: IntCounterVec,
    pub failovers: IntCounterVec,
    pub state_file_write_failures: IntCounter,
    /// Tenants of `home` policies answered away from their home now (set at scrape).
    pub tenant_away: IntGauge,
    pub anycast_transitions: IntCounterVec,
    pub anycast_driver_errors: IntCounter,
    pub health_queue_overflow: IntCounterVec,
    pub cluster_gossip_bytes: IntCounterVec,
    pub endpoint_votes: IntGaugeVec,
    pub rrl_limited: IntCounterVec,
    pub transfers: IntCounterVec,
    pub notifies: IntCounterVec,
    dnssec_signatures: IntCounter,
    dnssec_signing_deferred: IntCounter,
    dnssec_presigned: IntCounter,
    dnssec_inline: IntCounter,
    dnssec_expiry: GaugeVec,
    /// Per signed zone, the earliest signature expiry (Unix seconds) of the snapshot
    /// being served; the gauge is the time left at scrape.
    dnssec_expiry_at: Mutex<BTreeMap<String, u64>>,
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
            region_capacity: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_region_capacity",
                    "Requests/s a region can serve (regions with a capacity only)"
                ),
                &["region"]
            )),
            region_load: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_region_load",
                    "Requests/s the traffic split sends a region; source=\"demand\": modelled from the policies' demand over the GeoIP population"
                ),
                &["region", "source"]
            )),
            region_keep: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_region_keep_fraction",
                    "Share of the clients ranking a region first that it keeps (1 - drain fraction, ramp step, 0 when down)"
                ),
                &["region"]
            )),
            region_spill: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_region_spill_fraction",
                    "Share of the load of clients ranking `from` first that the split sends to `to`"
                ),
                &["from", "to"]
            )),
            region_failback: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_region_failback_progress",
                    "Gradual failback: share of its clients a recovered region has taken back (1 when not ramping)"
                ),
                &["region"]
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
            policies: {
                let store = PolicyCounterStore::default();
                must(registry.register(Box::new(store.clone())));
                store
            },
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
            cluster_peers: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_cluster_peers",
                    "Other instances of the cluster, by gossip liveness"
                ),
                &["state"]
            )),
            cluster_isolated: reg!(IntGauge::new(
                "meridian_cluster_isolated",
                "1 while this instance has heard no peer for cluster.isolation_timeout and decides from its own probes"
            )),
            cluster_auth_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_cluster_auth_failures_total",
                    "Gossip datagrams dropped unapplied: malformed, bad_mac (another key) or replayed"
                ),
                &["reason"]
            )),
            cluster_records_ignored: reg!(IntCounter::new(
                "meridian_cluster_peer_records_ignored_total",
                "Override records from peers ignored as impossible (a fraction not on a drain, a deadline or stamp out of bounds, an over-long reason)"
            )),
            failover_phase: reg!(HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "meridian_failover_phase_seconds",
                    "Seconds from the first sample that led to a region leaving or returning to the end of each phase: detect (state change), publish (new view in place), answer (first answer given from it), cache_bound (the last old answer expired from every cache), traffic (with a load query: the measured load fell below 10 % of its level, or rose back to 90 %)"
                )
                .buckets(vec![
                    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0,
                    300.0, 600.0
                ]),
                &["phase"]
            )),
            tenant_away: reg!(IntGauge::new(
                "meridian_tenant_away_from_home",
                "Tenants of method home policies answered away from their home now (the home is out, another allowed region serves)"
            )),
            state_file_write_failures: reg!(IntCounter::new(
                "meridian_state_file_write_failures_total",
                "Writes of the health state file (states, overrides, failover events) that failed; serving goes on, the next write tries again"
            )),
            failovers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_failovers_total",
                    "Regions leaving the answers (direction=leave) or returning (direction=return)"
                ),
                &["region", "direction"]
            )),
            failover_slo_breaches: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_failover_slo_breaches_total",
                    "Regions leaving the answers whose cache bound passed their failover_target"
                ),
                &["region"]
            )),
            anycast_announced: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_anycast_announced",
                    "1 while this instance announces the anycast prefix (announced or de-preferred), 0 while withdrawn"
                ),
                &["prefix"]
            )),
            anycast_transitions: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_anycast_transitions_total",
                    "Route changes of an anycast prefix, by the reason of the new route"
                ),
                &["prefix", "reason"]
            )),
            anycast_driver_errors: reg!(IntCounter::new(
                "meridian_anycast_driver_errors_total",
                "Commands the anycast driver (BIRD's control socket) failed; retried every interval"
            )),
            health_checker_restarts: reg!(IntCounter::new(
                "meridian_health_checker_restarts_total",
                "Times the health checker stopped (a panic) and was restarted from the state file"
            )),
            health_queue_overflow: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_health_queue_overflow_total",
                    "Messages the health checker's bounded queues turned away because it was behind: probe samples (queue=samples) or reloads (queue=commands)"
                ),
                &["queue"]
            )),
            cluster_gossip_bytes: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_cluster_gossip_bytes_total",
                    "Gossip bytes on the wire (authenticated framing included)"
                ),
                &["direction"]
            )),
            rrl_limited: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_rrl_limited_total",
                    "UDP responses over the rate limit, by response kind and what was done (dropped, or slipped: sent truncated)"
                ),
                &["kind", "action"]
            )),
            transfers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_transfers_total",
                    "Zone transfer requests (AXFR, IXFR) by zone and result: sent, up_to_date, refused, bad_tsig, not_authoritative"
                ),
                &["zone", "result"]
            )),
            notifies: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_notifies_total",
                    "NOTIFY messages to secondaries by zone and result: acked, failed (no answer after every retry, or an error answer)"
                ),
                &["zone", "result"]
            )),
            endpoint_votes: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_endpoint_votes",
                    "Vantage points (this instance included) whose verdict on the endpoint is this state"
                ),
                &["region", "endpoint", "state"]
            )),
            dnssec_signing_deferred: reg!(IntCounter::new(
                "meridian_dnssec_signing_deferred_total",
                "UDP answers sent truncated (for a retry over TCP) because a denial proof needed a new signature past dnssec.max_online_signatures_per_second"
            )),
            dnssec_signatures: reg!(IntCounter::new(
                "meridian_dnssec_signatures_total",
                "RRSIGs made (zone data at load and re-sign, policy answers, denial proofs)"
            )),
            dnssec_presigned: reg!(IntCounter::new(
                "meridian_dnssec_presigned_answers_total",
                "Policy answers to DO queries served with RRSIGs signed before the query"
            )),
            dnssec_inline: reg!(IntCounter::new(
                "meridian_dnssec_inline_signatures_total",
                "Policy answers the pre-signed tables lacked, signed on the query path (then cached); 0 by design"
            )),
            dnssec_expiry: reg!(GaugeVec::new(
                Opts::new(
                    "meridian_dnssec_signature_expiry_seconds",
                    "Seconds until the earliest RRSIG of the zone expires"
                ),
                &["zone"]
            )),
            dnssec_expiry_at: Mutex::new(BTreeMap::new()),
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

    /// The signed zones' earliest signature expiries, from the snapshot now serving.
    pub fn set_dnssec_expiry(&self, expiry: &BTreeMap<String, u64>) {
        let mut at = self
            .dnssec_expiry_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *at = expiry.clone();
        self.dnssec_expiry.reset();
    }

    /// The DNSSEC counters live as atomics on the signing and query paths (no registry
    /// lookup there); they are carried into the registry at scrape.
    fn refresh_dnssec(&self) {
        let sync = |c: &IntCounter, v: u64| {
            if v > c.get() {
                c.inc_by(v - c.get());
            }
        };
        sync(&self.dnssec_signatures, SIGNATURES.load(Ordering::Relaxed));
        sync(
            &self.dnssec_signing_deferred,
            SIGNING_DEFERRED.load(Ordering::Relaxed),
        );
        sync(
            &self.dnssec_presigned,
            PRESIGNED_SERVED.load(Ordering::Relaxed),
        );
        sync(&self.dnssec_inline, INLINE_SIGNED.load(Ordering::Relaxed));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let at = self
            .dnssec_expiry_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (zone, &t) in at.iter() {
            self.dnssec_expiry
                .with_label_values(&[zone.as_str()])
                .set(t as f64 - now);
        }
    }

    pub fn render(&self) -> String {
        self.refresh_dnssec();
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

/// The query types with a label of their own; the rest count as `other`.
const QTYPES: &[Rtype] = &[
    Rtype::A,
    Rtype::NS,
    Rtype::CNAME,
    Rtype::SOA,
    Rtype::PTR,
    Rtype::MX,
    Rtype::TXT,
    Rtype::AAAA,
    Rtype::SRV,
    Rtype::NAPTR,
    Rtype::DNAME,
    Rtype::DS,
    Rtype::SSHFP,
    Rtype::TLSA,
    Rtype::SVCB,
    Rtype::HTTPS,
    Rtype::ANY,
    Rtype::CAA,
    Rtype::IXFR,
    Rtype::AXFR,
];

fn qtype_index(t: Rtype) -> usize {
    QTYPES.iter().position(|v| *v == t).unwrap_or(QTYPES.len())
}

/// A bounded label for a query type.
pub fn qtype_label(t: Rtype) -> &'static str {
    QTYPES
        .get(qtype_index(t))
        .and_then(|t| t.to_mnemonic_str())
        .unwrap_or("other")
}

/// The response codes with a label of their own; the rest count as `other`.
const RCODE_LABELS: [OptRcode; 8] = [
    OptRcode::NOERROR,
    OptRcode::FORMERR,
    OptRcode::SERVFAIL,
    OptRcode::NXDOMAIN,
    OptRcode::NOTIMP,
    OptRcode::REFUSED,
    OptRcode::YXDOMAIN,
    OptRcode::BADVERS,
];

fn rcode_index(r: OptRcode) -> usize {
    RCODE_LABELS
        .iter()
        .position(|v| *v == r)
        .unwrap_or(RCODE_LABELS.len())
}

/// A bounded label for a response code: its mnemonic, or `other`.
pub fn rcode_label(r: OptRcode) -> &'static str {
    RCODE_LABELS
        .get(rcode_index(r))
        .and_then(|r| r.to_mnemonic_str())
        .unwrap_or("other")
}

const RCODES: usize = RCODE_LABELS.len() + 1;

/// Query counters of one socket thread: handles cached per zone, and increments summed
/// locally and added to the shared counter when the key changes or at `flush` (the end
/// of a receive batch). Both threads adding to one shared atomic for every query would
/// bounce its cache line between the cores.
#[derive(Default)]
pub struct QueryCounters {
    by_zone: HashMap<Box<str>, Box<[Option<prometheus::IntCounter>]>, foldhash::fast::RandomState>,
    pending: Option<Pending>,
}

struct Pending {
    zone: Box<str>,
    slot: usize,
    counter: prometheus::IntCounter,
    count: u64,
}

impl QueryCounters {
    pub fn inc(
        &mut self,
        m: &Metrics,
        zone: &str,
        qtype: Rtype,
        rcode: OptRcode,
        transport: Transport,
    ) {
        let t = usize::from(transport == Transport::Tcp);
        let q = qtype_index(qtype);
        let r = rcode_index(rcode);
        let slot_index = (q * RCODES + r) * 2 + t;
        if let Some(p) = &mut self.pending
            && p.slot == slot_index
            && *p.zone == *zone
        {
            p.count += 1;
            return;
        }
        self.flush();
        if !self.by_zone.contains_key(zone) {
            let slots = vec![None; (QTYPES.len() + 1) * RCODES * 2];
            self.by_zone.insert(zone.into(), slots.into_boxed_slice());
        }
        let Some(slot) = self
            .by_zone
            .get_mut(zone)
            .and_then(|s| s.get_mut(slot_index))
        else {
            return;
        };
        let counter = slot.get_or_insert_with(|| {
            m.dns_queries.with_label_values(&[
                zone,
                qtype_label(qtype),
                rcode_label(rcode),
                transport.name(),
            ])
        });
        self.pending = Some(Pending {
            zone: zone.into(),
            slot: slot_index,
            counter: counter.clone(),
            count: 1,
        });
    }

    /// Adds what was counted locally to the exported counters.
    pub fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            p.counter.inc_by(p.count);
        }
    }
}

/// The per-policy counters (`meridian_policy_answers_total{policy,region}` and
/// `meridian_policy_all_down_total{policy,behaviour}`), kept as plain atomics.
///
/// A labelled prometheus counter costs most of a kilobyte; 10 000 policies over a
/// hundred regions made that 100 MB and 150 000 series. Here a policy's counters are one
/// array aligned with its candidates (8 bytes each), shared with the snapshot's query
/// path, carried over reloads by name so they never go backwards, and exposed at scrape
/// time for the series that have counted something.
#[derive(Clone, Default)]
pub struct PolicyCounterStore {
    inner: Arc<Mutex<HashMap<Box<str>, PolicySlots>>>,
    /// Per region, the answers of policies (or of a policy's regions) a reload removed:
    /// `meridian_region_answers_total` includes them, so it never goes backwards.
    retired: Arc<Mutex<BTreeMap<Box<str>, u64>>>,
}

struct PolicySlots {
    /// A `home` policy: its answers also count in `meridian_tenant_answers_total`.
    tenant: bool,
    regions: Box<[Box<str>]>,
    answers: Arc<[AtomicU64]>,
    /// Queries by the region the client ranks first (health aside), aligned with
    /// `regions`: the load estimate's input (`traffic::demand`).
    first: Arc<[AtomicU64]>,
    /// `answers` at the last two `mark`s (older first): the answer-share window.
    marks: [Box<[u64]>; 2],
    behaviour: &'static str,
    all_down: Arc<AtomicU64>,
}

/// What one policy of a snapshot increments.
#[derive(Debug, Clone, Default)]
pub struct PolicyCounters {
    /// Aligned with the policy's candidates.
    pub answers: Option<Arc<[AtomicU64]>>,
    /// Aligned with the policy's candidates: queries by the client's first-ranked one.
    pub first: Option<Arc<[AtomicU64]>>,
    pub all_down: Option<Arc<AtomicU64>>,
}

impl PolicyCounters {
    pub fn answered(&self, candidate: usize, n: u64) {
        if let Some(c) = self.answers.as_ref().and_then(|a| a.get(candidate)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn ranked_first(&self, candidate: usize, n: u64) {
        if let Some(c) = self.first.as_ref().and_then(|a| a.get(candidate)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn all_down(&self, n: u64) {
        if let Some(c) = &self.all_down {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl PolicyCounterStore {
    /// The counters for a new configuration's policies, given as (name, region names,
    /// all-down behaviour); counts of policies and regions that remain carry over.
    pub fn attach<'a>(
        &self,
        policies: impl Iterator<Item = (&'a str, Vec<&'a str>, &'static str)>,
    ) -> Vec<PolicyCounters> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut old = std::mem::take(&mut *map);
        let mut out = Vec::new();
        for (name, regions, behaviour) in policies {
            let prev = old.remove(name);
            let slots = match prev {
                Some(p) if p.regions.iter().map(|r| &**r).eq(regions.iter().copied()) => {
                    let all_down = if p.behaviour == behaviour {
                        p.all_down
                    } else {
                        Arc::new(AtomicU64::new(0))
                    };
                    PolicySlots {
                        tenant: false,
                        behaviour,
                        all_down,
                        ..p
                    }
                }
                prev => {
                    if let Some(p) = &prev {
                        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
                        for (r, c) in p.regions.iter().zip(p.answers.iter()) {
                            if !regions.contains(&&**r) {
                                *retired.entry(r.clone()).or_default() += c.load(Ordering::Relaxed);
                            }
                        }
                    }
                    let slot = |r: &str| {
                        let p = prev.as_ref()?;
                        Some((p, p.regions.iter().position(|x| &**x == r)?))
                    };
                    let count = |r: &str| {
                        slot(r)
                            .and_then(|(p, i)| p.answers.get(i))
                            .map_or(0, |c| c.load(Ordering::Relaxed))
                    };
                    let firsts = |r: &str| {
                        slot(r)
                            .and_then(|(p, i)| p.first.get(i))
                            .map_or(0, |c| c.load(Ordering::Relaxed))
                    };
                    let mark = |m: usize| -> Box<[u64]> {
                        regions
                            .iter()
                            .map(|r| {
                                slot(r)
                                    .and_then(|(p, i)| p.marks.get(m)?.get(i).copied())
                                    .unwrap_or(0)
                            })
                            .collect()
                    };
                    let all_down = prev
                        .as_ref()
                        .filter(|p| p.behaviour == behaviour)
                        .map_or(0, |p| p.all_down.load(Ordering::Relaxed));
                    PolicySlots {
                        tenant: false,
                        answers: regions.iter().map(|r| AtomicU64::new(count(r))).collect(),
                        first: regions.iter().map(|r| AtomicU64::new(firsts(r))).collect(),
                        marks: [mark(0), mark(1)],
                        regions: regions.iter().map(|r| Box::from(*r)).collect(),
                        behaviour,
                        all_down: Arc::new(AtomicU64::new(all_down)),
                    }
                }
            };
            out.push(PolicyCounters {
                answers: Some(slots.answers.clone()),
                first: Some(slots.first.clone()),
                all_down: Some(slots.all_down.clone()),
            });
            map.insert(name.into(), slots);
        }
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for gone in old.into_values() {
            for (r, c) in gone.regions.iter().zip(gone.answers.iter()) {
                *retired.entry(r.clone()).or_default() += c.load(Ordering::Relaxed);
            }
        }
        out
    }
}

impl PolicyCounterStore {
    /// Marks which policies are `home` policies (after `attach`).
    pub fn set_tenant_policies(&self, names: &[&str]) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (name, p) in map.iter_mut() {
            p.tenant = names.contains(&&**name);
        }
    }

    /// Moves the answer-share window on: the newer mark becomes the older one.
    pub fn mark(&self) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for p in map.values_mut() {
            let now: Box<[u64]> = p
                .answers
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let [older, newer] = &mut p.marks;
            *older = std::mem::replace(newer, now);
        }
    }

    /// The policy's queries by first-ranked region (cumulative), aligned with
    /// `regions`: `None` when the counters do not hold the policy with those regions
    /// (a reload in between).
    pub fn ranked_first(&self, policy: &str, regions: &[&str]) -> Option<Vec<u64>> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.get(policy)?;
        if !p.regions.iter().map(|r| &**r).eq(regions.iter().copied()) {
            return None;
        }
        Some(p.first.iter().map(|c| c.load(Ordering::Relaxed)).collect())
    }

    /// policy → region → share of the policy's answers since the older mark, for the
    /// policies that answered in that window.
    pub fn shares(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for (name, p) in map.iter() {
            let since: Vec<u64> = p
                .answers
                .iter()
                .zip(p.marks[0].iter().chain(std::iter::repeat(&0)))
                .map(|(c, m)| c.load(Ordering::Relaxed).saturating_sub(*m))
                .collect();
            let total: u64 = since.iter().sum();
            if total == 0 {
                continue;
            }
            let shares = p
                .regions
                .iter()
                .zip(&since)
                .map(|(r, n)| (r.to_string(), *n as f64 / total as f64))
                .collect();
            out.insert(name.to_string(), shares);
        }
        out
    }
}

fn counter_family(name: &str, help: &str) -> prometheus::proto::MetricFamily {
    let mut f = prometheus::proto::MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(prometheus::proto::MetricType::COUNTER);
    f
}

fn counter_metric(labels: [(&str, &str); 2], value: u64) -> prometheus::proto::Metric {
    let mut m = prometheus::proto::Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = prometheus::proto::LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    );
    let mut c = prometheus::proto::Counter::default();
    c.set_value(value as f64);
    m.set_counter(c);
    m
}

const ANSWERS: (&str, &str) = (
    "meridian_policy_answers_total",
    "Answers given by a policy, per region answered",
);
const TENANT_ANSWERS: (&str, &str) = (
    "meridian_tenant_answers_total",
    "Answers of method home policies naming the region (by region, never by tenant)",
);
const REGION_ANSWERS: (&str, &str) = (
    "meridian_region_answers_total",
    "Answers naming the region, over every policy (regions only: per-policy shares are in the status API)",
);
const ALL_DOWN: (&str, &str) = (
    "meridian_policy_all_down_total",
    "Answers given while no region of the policy was healthy",
);

impl prometheus::core::Collector for PolicyCounterStore {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        static DESCS: LazyLock<Vec<prometheus::core::Desc>> = LazyLock::new(|| {
            [
                (ANSWERS, &["policy", "region"][..]),
                (ALL_DOWN, &["policy", "behaviour"][..]),
                (REGION_ANSWERS, &["region"][..]),
                (TENANT_ANSWERS, &["region"][..]),
            ]
            .into_iter()
            .filter_map(|((name, help), labels)| {
                prometheus::core::Desc::new(
                    name.into(),
                    help.into(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
                .ok()
            })
            .collect()
        });
        DESCS.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&Box<str>> = map.keys().collect();
        names.sort();
        let mut answers = counter_family(ANSWERS.0, ANSWERS.1);
        let mut all_down = counter_family(ALL_DOWN.0, ALL_DOWN.1);
        let mut by_region: BTreeMap<Box<str>, u64> = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut by_tenant_region: BTreeMap<Box<str>, u64> = BTreeMap::new();
        for name in names {
            let Some(p) = map.get(name) else { continue };
            for (region, c) in p.regions.iter().zip(p.answers.iter()) {
                let v = c.load(Ordering::Relaxed);
                *by_region.entry(region.clone()).or_default() += v;
                if p.tenant {
                    *by_tenant_region.entry(region.clone()).or_default() += v;
                }
                if v > 0 {
                    answers
                        .mut_metric()
                        .push(counter_metric([("policy", name), ("region", region)], v));
                }
            }
            let v = p.all_down.load(Ordering::Relaxed);
            if v > 0 {
                all_down.mut_metric().push(counter_metric(
                    [("policy", name), ("behaviour", p.behaviour)],
                    v,
                ));
            }
        }
        let by_region_family = |(name, help): (&str, &str), values: BTreeMap<Box<str>, u64>| {
            let mut f = counter_family(name, help);
            for (region, v) in values.into_iter().filter(|(_, v)| *v > 0) {
                let mut m = prometheus::proto::Metric::default();
                let mut l = prometheus::proto::LabelPair::default();
                l.set_name("region".into());
                l.set_value(region.to_string());
                m.set_label(vec![l]);
                let mut c = prometheus::proto::Counter::default();
                c.set_value(v as f64);
                m.set_counter(c);
                f.mut_metric().push(m);
            }
            f
        };
        let regions = by_region_family(REGION_ANSWERS, by_region);
        let tenants = by_region_family(TENANT_ANSWERS, by_tenant_region);
        // An empty family is not valid exposition.
        [answers, all_down, regions, tenants]
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(store: &PolicyCounterStore) -> String {
        let registry = Registry::new();
        registry.register(Box::new(store.clone())).unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn policy_counters_carry_over_reloads_and_list_only_what_counted() {
        let store = PolicyCounterStore::default();
        let c = store.attach(
            [
                ("www.", vec!["us", "eu"], "fail_open"),
                ("api.", vec!["us"], "servfail"),
            ]
            .into_iter(),
        );
        c[0].answered(1, 1);
        c[0].answered(1, 1);
        c[1].all_down(1);
        let text = exposition(&store);
        assert!(text.contains("meridian_policy_answers_total{policy=\"www.\",region=\"eu\"} 2"));
        assert!(
            !text.contains("region=\"us\""),
            "zero series are left out:\n{text}"
        );
        assert!(
            text.contains(
                "meridian_policy_all_down_total{policy=\"api.\",behaviour=\"servfail\"} 1"
            ),
            "{text}"
        );
        // A reload: www. gains a region (its counts carry over by name), api. goes away.
        let c2 = store.attach([("www.", vec!["ap", "eu", "us"], "fail_open")].into_iter());
        c2[0].answered(1, 1);
        let text = exposition(&store);
        assert!(text.contains("policy=\"www.\",region=\"eu\"} 3"), "{text}");
        assert!(
            !text.contains("api."),
            "a removed policy's series go:\n{text}"
        );
        // Unchanged regions share the live array: the old snapshot's counts still land.
        let c3 = store.attach([("www.", vec!["ap", "eu", "us"], "fail_open")].into_iter());
        c2[0].answered(1, 1);
        c3[0].answered(1, 1);
        assert!(exposition(&store).contains("region=\"eu\"} 5"));
    }

    #[test]
    fn region_answers_sum_the_policies_and_never_go_backwards_on_a_reload() {
        let store = PolicyCounterStore::default();
        let c = store.attach(
            [
                ("www.", vec!["us", "eu"], "fail_open"),
                ("api.", vec!["eu"], "servfail"),
            ]
            .into_iter(),
        );
        c[0].answered(1, 1);
        c[0].answered(0, 1);
        c[1].answered(0, 1);
        c[1].answered(0, 1);
        let text = exposition(&store);
        assert!(
            text.contains("meridian_region_answers_total{region=\"eu\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("meridian_region_answers_total{region=\"us\"} 1"),
            "{text}"
        );
        // api. is removed and www. drops us: the region totals keep what they counted.
        let c2 = store.attach([("www.", vec!["eu"], "fail_open")].into_iter());
        c2[0].answered(0, 1);
        let text = exposition(&store);
        assert!(
            text.contains("meridian_region_answers_total{region=\"eu\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("meridian_region_answers_total{region=\"us\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn answer_shares_count_from_the_older_mark() {
        let store = PolicyCounterStore::default();
        let c = store.attach([("www.", vec!["us", "eu"], "fail_open")].into_iter());
        for _ in 0..3 {
            c[0].answered(0, 1);
        }
        store.mark(); // older mark: 0, 0; newer: 3, 0
        c[0].answered(1, 1);
        let shares = store.shares();
        assert_eq!(shares["www."]["us"], 0.75);
        store.mark(); // older: 3, 0; newer: 3, 1
        let shares = store.shares();
        assert_eq!(shares["www."]["us"], 0.0);
        assert_eq!(shares["www."]["eu"], 1.0);
        store.mark(); // nothing since the older mark
        assert!(store.shares().is_empty());
    }
}
