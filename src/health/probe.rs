//! Probes: one HTTP(S) request or TCP connect against an endpoint, bounded by its
//! timeout, as a [`Sample`]. Each probe opens a fresh connection: a kept-alive one would
//! hide a broken listener, accept queue or TLS setup.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::state::Sample;
use crate::policy::spec;

/// Most of a body read to look for `expect_body`.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Http {
        tls: bool,
        method: String,
        path: String,
        host: Option<String>,
        sni: Option<String>,
        tls_verify: bool,
        expect_status: Vec<u16>,
        expect_body: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub address: SocketAddr,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Endpoint {
    pub fn kind(&self) -> &'static str {
        match &self.probe {
            Probe::Tcp => "tcp",
            Probe::Http { tls: false, .. } => "http",
            Probe::Http { tls: true, .. } => "https",
        }
    }
}

type At = (usize, usize);

fn at<T>(s: &spec::S<T>) -> At {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

fn duration(
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
    let probe = match e.probe.value.as_str() {
        "tcp" => Probe::Tcp,
        kind @ ("http" | "https") => {
            let method = e
                .method
                .clone()
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase();
            if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
                return Err((at(&e.probe), format!("bad HTTP method {method:?}")));
            }
            let path = e.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err((at(&e.probe), format!("path {path:?} must start with /")));
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
            }
        }
        other => {
            return Err((
                at(&e.probe),
                format!("probe {other:?} is not http, https or tcp"),
            ));
        }
    };
    Ok(Endpoint {
        name: e.name.value.clone(),
        address,
        probe,
        interval,
        timeout,
    })
}

/// A client for an HTTP(S) endpoint: no proxy, no redirects, no retries, no pooling;
/// requests go to the endpoint's address whatever name is in the URL (Host and SNI kept).
pub fn client(ep: &Endpoint) -> Option<reqwest::Client> {
    let Probe::Http {
        sni, tls_verify, ..
    } = &ep.probe
    else {
        return None;
    };
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(0)
        .timeout(ep.timeout)
        .connect_timeout(ep.timeout)
        .tls_danger_accept_invalid_certs(!tls_verify);
    if let Some(name) = sni {
        b = b.resolve(name, ep.address);
    }
    b.build().ok()
}

fn url(ep: &Endpoint) -> String {
    let Probe::Http { tls, path, sni, .. } = &ep.probe else {
        return String::new();
    };
    let scheme = if *tls { "https" } else { "http" };
    match sni {
        Some(name) => format!("{scheme}://{name}:{}{path}", ep.address.port()),
        None => format!("{scheme}://{}{path}", ep.address),
    }
}

/// Runs one probe. A timeout is a failure with the timeout as its latency.
pub async fn run(ep: &Endpoint, client: Option<&reqwest::Client>) -> Sample {
    let start = Instant::now();
    let ok = tokio::time::timeout(ep.timeout, attempt(ep, client))
        .await
        .unwrap_or(false);
    Sample {
        ok,
        latency: start.elapsed().min(ep.timeout),
    }
}

async fn attempt(ep: &Endpoint, client: Option<&reqwest::Client>) -> bool {
    match &ep.probe {
        Probe::Tcp => tokio::net::TcpStream::connect(ep.address).await.is_ok(),
        Probe::Http {
            method,
            host,
            expect_status,
            expect_body,
            ..
        } => {
            let Some(client) = client else { return false };
            let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
                return false;
            };
            let mut req = client.request(method, url(ep));
            if let Some(h) = host {
                req = req.header(reqwest::header::HOST, h);
            }
            let Ok(mut resp) = req.send().await else {
                return false;
            };
            let status = resp.status().as_u16();
            let status_ok = if expect_status.is_empty() {
                (200..400).contains(&status)
            } else {
                expect_status.contains(&status)
            };
            if !status_ok {
                return false;
            }
            let Some(needle) = expect_body else {
                return true;
            };
            let mut body = Vec::new();
            while body.len() < MAX_BODY {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    Ok(None) => break,
                    Err(_) => return false,
                }
            }
            body.truncate(MAX_BODY);
            body.windows(needle.len().max(1))
                .any(|w| w == needle.as_bytes())
        }
    }
}
