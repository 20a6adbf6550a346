//! A region's health settings into the health checker's model: thresholds from a
//! preset and the fields given, probes (HTTP, HTTPS, TCP), the metric veto, the load
//! query and failback. Errors carry the position in the spec (`At`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::health::{Endpoint, MinUp, Probe, Thresholds};
use crate::policy::spec::{self, At, at};

pub(super) fn dur(v: &Option<spec::S<String>>, into: &mut Duration) -> Result<(), (At, String)> {
    if let Some(s) = v {
        *into = humantime::parse_duration(&s.value)
            .map_err(|e| (at(s), format!("{:?}: {e}", s.value)))?;
    }
    Ok(())
}

/// A region's thresholds: the preset, then every field given. `(0, 0)` in an error
/// means "the region itself".
pub fn thresholds_from_spec(
    h: &spec::Health,
    endpoints: usize,
) -> Result<(Thresholds, MinUp), (At, String)> {
    let mut t = match &h.preset {
        Some(p) => Thresholds::preset(&p.value).ok_or_else(|| {
            (
                at(p),
                format!(
                    "unknown preset {:?} (default, aggressive, conservative)",
                    p.value
                ),
            )
        })?,
        None => Thresholds::default_preset(),
    };
    if let Some(w) = h.window {
        t.window = w.clamp(1, 1000);
        t.min_samples = t.min_samples.min(t.window);
    }
    for (v, into) in [
        (h.fail_error_rate, &mut t.fail_error_rate),
        (h.recover_error_rate, &mut t.recover_error_rate),
    ] {
        if let Some(x) = v {
            if !(0.0..=1.0).contains(&x) {
                return Err(((0, 0), format!("error rates are fractions 0..1, not {x}")));
            }
            *into = x;
        }
    }
    if let Some(c) = h.fail_consecutive {
        t.fail_consecutive = c.max(1);
    }
    if let Some(c) = h.recover_consecutive {
        t.recover_consecutive = c.max(1);
    }
    if let Some(p) = h.latency_percentile {
        t.latency_percentile = p.clamp(1, 100);
    }
    dur(&h.fail_latency, &mut t.fail_latency)?;
    dur(&h.recover_latency, &mut t.recover_latency)?;
    dur(&h.cooldown, &mut t.cooldown)?;
    dur(&h.failover_target, &mut t.failover_target)?;
    if h.degraded_latency.is_some() {
        let mut d = Duration::ZERO;
        dur(&h.degraded_latency, &mut d)?;
        t.degraded_latency = Some(d);
    }
    if t.recover_error_rate > t.fail_error_rate {
        return Err((
            (0, 0),
            "recover_error_rate must not exceed fail_error_rate (hysteresis)".into(),
        ));
    }
    if t.recover_latency > t.fail_latency {
        return Err((
            (0, 0),
            "recover_latency must not exceed fail_latency (hysteresis)".into(),
        ));
    }
    let min_up = match (h.min_up, h.min_up_fraction) {
        (Some(_), Some(_)) => {
            return Err(((0, 0), "give min_up or min_up_fraction, not both".into()));
        }
        (_, Some(f)) if !(0.0..=1.0).contains(&f) || f == 0.0 => {
            return Err((
                (0, 0),
                format!("min_up_fraction must be in (0, 1], not {f}"),
            ));
        }
        (_, Some(f)) => MinUp::Fraction(f),
        (Some(k), None) if endpoints > 0 && (k == 0 || k > endpoints) => {
            return Err((
                (0, 0),
                format!("min_up {k} must be 1..{endpoints} (the number of endpoints)"),
            ));
        }
        (Some(k), None) => MinUp::Count(k),
        (None, None) => MinUp::Count(1),
    };
    Ok((t, min_up))
}
/// A Prometheus base URL (`metric:`, `load:`): http or https, without a trailing `/`.
pub(super) fn prometheus_url(u: &spec::S<String>) -> Result<(String, reqwest::Url), (At, String)> {
    let url = u.value.trim_end_matches('/').to_string();
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| (at(u), format!("prometheus URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((at(u), "the prometheus URL must be http or https".into()));
    }
    Ok((url, parsed))
}

pub(super) fn load_from_spec(l: &spec::Load) -> Result<crate::health::LoadQuery, (At, String)> {
    let (url, _) = prometheus_url(&l.prometheus)?;
    if l.query.trim().is_empty() {
        return Err(((0, 0), "load: the query is empty".into()));
    }
    let interval = duration(&l.interval, Duration::from_secs(15), "interval")?;
    let timeout = duration(&l.timeout, Duration::from_secs(2), "timeout")?;
    if interval < Duration::from_secs(1) || timeout.is_zero() || timeout > interval {
        return Err((
            l.interval.as_ref().map(at).unwrap_or((0, 0)),
            "load: interval must be at least 1s and the timeout within it".into(),
        ));
    }
    Ok(crate::health::LoadQuery {
        url,
        query: l.query.clone(),
        interval,
        timeout,
    })
}

pub(super) fn failback_from_spec(
    f: &spec::Failback,
) -> Result<crate::traffic::Failback, (At, String)> {
    let ramp = humantime::parse_duration(&f.ramp.value)
        .map_err(|e| (at(&f.ramp), format!("ramp {:?}: {e}", f.ramp.value)))?;
    let steps = f.steps.value;
    if steps == 0 || steps > 1000 {
        return Err((at(&f.steps), format!("steps {steps} must be 1..1000")));
    }
    if ramp.is_zero() || ramp / steps < Duration::from_secs(1) {
        return Err((
            at(&f.ramp),
            format!(
                "ramp {:?} is shorter than its {steps} steps of at least 1s each",
                f.ramp.value
            ),
        ));
    }
    Ok(crate::traffic::Failback { ramp, steps })
}

pub(super) fn duration(
    s: &Option<spec::S<String>>,
    default: Duration,
    what: &str,
) -> Result<Duration, (At, String)> {
    match s {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v.value)
            .map_err(|e| (at(v), format!("{what} {:?}: {e}", v.value))),
    }
}

pub fn endpoint_from_spec(e: &spec::Endpoint) -> Result<Endpoint, (At, String)> {
    let address: SocketAddr = e.address.value.parse().map_err(|_| {
        (
            at(&e.address),
            format!("address {:?} is not IP:PORT", e.address.value),
        )
    })?;
    let interval = duration(&e.interval, Duration::from_secs(2), "interval")?;
    let timeout = duration(&e.timeout, Duration::from_secs(1), "timeout")?;
    if interval < Duration::from_millis(100) {
        return Err((
            e.interval.as_ref().map(at).unwrap_or((0, 0)),
            "interval must be at least 100ms".into(),
        ));
    }
    if timeout.is_zero() || timeout > interval {
        return Err((
            e.timeout.as_ref().map(at).unwrap_or(at(&e.name)),
            "timeout must be above 0 and at most the interval".into(),
        ));
    }
    let http_only = [
        ("method", e.method.is_some()),
        ("path", e.path.is_some()),
        ("host", e.host.is_some()),
        ("expect_body", e.expect_body.is_some()),
        ("headers", !e.headers.is_empty()),
    ];
    let dns_only = [
        ("qname", e.qname.is_some()),
        ("qtype", e.qtype.is_some()),
        ("expect_rcode", e.expect_rcode.is_some()),
    ];
    let kind = e.probe.value.as_str();
    let misplaced = match kind {
        "dns" => http_only.iter().find(|(_, set)| *set),
        "http" | "https" => dns_only.iter().find(|(_, set)| *set),
        _ => http_only.iter().chain(&dns_only).find(|(_, set)| *set),
    };
    if let Some((key, _)) = misplaced {
        return Err((
            at(&e.probe),
            format!("{key} does not apply to a {kind} probe"),
        ));
    }
    let probe = match kind {
        "tcp" => Probe::Tcp,
        "dns" => {
            let Some(qname) = &e.qname else {
                return Err((at(&e.probe), "a dns probe needs a qname".into()));
            };
            let qname = crate::name::from_text(qname, crate::name::ROOT)
                .map_err(|err| (at(&e.probe), format!("qname {qname:?}: {err}")))?;
            let qtype = match &e.qtype {
                None => 1,
                Some(t) => crate::iana::rtype_from_str(t)
                    .map(|t| t.to_int())
                    .ok_or_else(|| (at(&e.probe), format!("qtype {t:?} is not a record type")))?,
            };
            let expect_rcode = match e
                .expect_rcode
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("NOERROR") => 0,
                Some("FORMERR") => 1,
                Some("SERVFAIL") => 2,
                Some("NXDOMAIN") => 3,
                Some("NOTIMP") => 4,
                Some("REFUSED") => 5,
                Some(other) => {
                    return Err((
                        at(&e.probe),
                        format!(
                            "expect_rcode {other:?}: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP or REFUSED"
                        ),
                    ));
                }
            };
            Probe::Dns {
                qname,
                qtype,
                expect_rcode,
            }
        }
        kind @ ("http" | "https") => {
            let method = e
                .method
                .clone()
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase();
            // Probes must not change what they probe: only the safe methods.
            if method != "GET" && method != "HEAD" {
                return Err((at(&e.probe), format!("method {method:?}: GET or HEAD")));
            }
            if method == "HEAD" && e.expect_body.is_some() {
                return Err((
                    at(&e.probe),
                    "expect_body needs GET: a HEAD answer has no body".into(),
                ));
            }
            let path = e.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err((at(&e.probe), format!("path {path:?} must start with /")));
            }
            for (name, value) in &e.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(value).is_err()
                {
                    return Err((
                        at(&e.probe),
                        format!("header {name:?}: {value:?} is not a valid HTTP header"),
                    ));
                }
            }
            Probe::Http {
                tls: kind == "https",
                method,
                path,
                host: e.host.clone(),
                sni: e.sni.clone().or_else(|| e.host.clone()),
                tls_verify: e.tls_verify.unwrap_or(true),
                expect_status: e.expect_status.clone(),
                expect_body: e.expect_body.clone(),
                headers: e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        }
        other => {
            return Err((
                at(&e.probe),
                format!("probe {other:?} is not http, https, tcp or dns"),
            ));
        }
    };
    Ok(Endpoint {
        name: e.name.value.clone(),
        address,
        probe,
        interval,
        timeout,
        serves: 0,
    })
}

/// The region's `metric:` as a pseudo-endpoint named `metric`.
pub fn metric_from_spec(m: &spec::Metric) -> Result<Endpoint, (At, String)> {
    let (url, parsed) = prometheus_url(&m.prometheus)?;
    let address = parsed
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.first().copied())
        .ok_or_else(|| {
            (
                at(&m.prometheus),
                format!("prometheus URL {url:?} has no reachable address"),
            )
        })?;
    let ordered =
        m.fail_above.is_finite() && m.recover_below.is_finite() && m.recover_below <= m.fail_above;
    if !ordered {
        return Err((
            (0, 0),
            "metric: recover_below must be a number at or below fail_above".into(),
        ));
    }
    let interval = duration(&m.interval, Duration::from_secs(15), "interval")?;
    let timeout = duration(&m.timeout, Duration::from_secs(2), "timeout")?;
    if timeout.is_zero() || timeout > interval {
        return Err((
            (0, 0),
            "metric: timeout must be above 0 and at most the interval".into(),
        ));
    }
    Ok(Endpoint {
        name: "metric".into(),
        address,
        probe: Probe::Metric {
            url,
            query: m.query.clone(),
            fail_above: m.fail_above,
            recover_below: m.recover_below,
        },
        interval,
        timeout,
        serves: 0,
    })
}
