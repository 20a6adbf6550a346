//! Probes: one HTTP(S) request or TCP connect against an endpoint, bounded by its
//! timeout, as a [`Sample`]. Plain HTTP goes through [`http1`], HTTPS through reqwest. Each probe opens a fresh connection: a kept-alive one would
//! hide a broken listener, accept queue or TLS setup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::http1;
pub use super::model::{Endpoint, Probe};
use super::state::Sample;

/// Most of a body read to look for `expect_body`.
const MAX_BODY: usize = 64 * 1024;

static INSTANCE: OnceLock<String> = OnceLock::new();

/// Names this instance in the probes' User-Agent (`cluster.instance`); set once at
/// startup, before the first probe. Later calls are ignored.
pub fn set_instance(name: &str) {
    let _ = INSTANCE.set(name.to_string());
}

/// This instance's name: `cluster.instance` once set, else the host name.
pub fn instance() -> String {
    INSTANCE.get().cloned().unwrap_or_else(crate::host::name)
}

/// `Meridian/<version> (<instance>)` on every HTTP(S) probe and Prometheus query, so a
/// backend's logs (and a WAF that blocks requests without one) can tell which nameserver
/// asked. The instance is `cluster.instance`, else the host name.
pub fn user_agent() -> &'static str {
    static UA: LazyLock<String> = LazyLock::new(|| {
        let instance = instance();
        format!("Meridian/{} ({instance})", env!("CARGO_PKG_VERSION"))
    });
    &UA
}

/// A client for an HTTP(S) endpoint: no proxy, no redirects, no retries, no pooling;
/// requests go to the endpoint's address whatever name is in the URL (Host and SNI kept).
///
/// Endpoints with the same settings share one client: building one loads the TLS root
/// store, which for a hundred endpoints took seconds of startup.
pub fn client(ep: &Endpoint) -> Option<reqwest::Client> {
    type Key = (bool, Duration, bool, Option<(String, SocketAddr)>);
    static CLIENTS: LazyLock<Mutex<HashMap<Key, reqwest::Client>>> =
        LazyLock::new(Default::default);
    let key: Key = match &ep.probe {
        _ if ep.is_metric() => (true, ep.timeout, true, None),
        Probe::Http {
            sni, tls_verify, ..
        } => (
            false,
            ep.timeout,
            *tls_verify,
            sni.as_ref().map(|n| (n.clone(), ep.address)),
        ),
        _ => return None,
    };
    let mut cache = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get(&key) {
        return Some(c.clone());
    }
    let built = build_client(key.0, ep.timeout, key.2, key.3.as_ref())?;
    cache.insert(key, built.clone());
    Some(built)
}

/// A client for Prometheus queries (`load:`), as the metric probe uses.
pub fn prometheus_client(timeout: Duration) -> Option<reqwest::Client> {
    build_client(true, timeout, true, None)
}

fn build_client(
    metric: bool,
    timeout: Duration,
    tls_verify: bool,
    sni: Option<&(String, SocketAddr)>,
) -> Option<reqwest::Client> {
    if metric {
        return reqwest::Client::builder()
            .no_proxy()
            .user_agent(user_agent())
            .retry(reqwest::retry::never())
            .timeout(timeout)
            .build()
            .ok();
    }
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .user_agent(user_agent())
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .connect_timeout(timeout)
        .tls_danger_accept_invalid_certs(!tls_verify);
    if let Some((name, addr)) = sni {
        b = b.resolve(name, *addr);
    }
    b.build().ok()
}

/// The Host header reqwest would send for a URL naming `host` and `port`.
fn authority(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
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

/// Reads the query's value: `None` when Prometheus cannot be asked or returns no number.
pub async fn metric_value(url: &str, query: &str, client: &reqwest::Client) -> Option<f64> {
    let endpoint =
        reqwest::Url::parse_with_params(&format!("{url}/api/v1/query"), [("query", query)]).ok()?;
    let resp = client.get(endpoint).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let result = v.get("data")?.get("result")?;
    // A vector's first sample, or a scalar.
    let value = match result.as_array() {
        Some(samples) if samples.first().is_some_and(|s| s.is_object()) => {
            samples.first()?.get("value")?.get(1)?.clone()
        }
        Some(scalar) => scalar.get(1)?.clone(),
        None => return None,
    };
    value.as_str()?.parse().ok()
}

/// Runs one probe, with `last_ok` the previous outcome: a metric inside its hysteresis
/// band keeps it, and so does a metric that cannot be read (no signal is not a failure
/// of the region; the warning says so).
pub async fn run_with(ep: &Endpoint, client: Option<&reqwest::Client>, last_ok: bool) -> Sample {
    if let (
        Probe::Metric {
            url,
            query,
            fail_above,
            recover_below,
        },
        Some(client),
    ) = (&ep.probe, client)
    {
        let start = Instant::now();
        let value = tokio::time::timeout(ep.timeout, metric_value(url, query, client))
            .await
            .ok()
            .flatten();
        let ok = match value {
            Some(v) if v >= *fail_above => false,
            Some(v) if v <= *recover_below => true,
            Some(_) => last_ok,
            None => {
                tracing::warn!(
                    url,
                    query,
                    "cannot read the region's metric; keeping its last outcome"
                );
                last_ok
            }
        };
        return Sample {
            ok,
            latency: start.elapsed().min(ep.timeout),
        };
    }
    run(ep, client).await
}

/// One UDP query to a DNS server: up when the answer carries our ID and question and
/// `expect_rcode`. Anything else arriving on the socket (another ID, a stray datagram)
/// is skipped; the caller's timeout bounds the wait.
async fn dns(server: SocketAddr, qname: &[u8], qtype: u16, expect_rcode: u8) -> bool {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x5a5a);
    let id = NEXT
        .fetch_add(0x9e37, Ordering::Relaxed)
        .wrapping_add(std::process::id() as u16);
    let mut q = Vec::with_capacity(17 + qname.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // RD clear: we ask the authority
    q.extend_from_slice(qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    if sock.connect(server).await.is_err() || sock.send(&q).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = sock.recv(&mut buf).await else {
            return false;
        };
        let Some(r) = buf.get(..n) else { return false };
        let question = q.get(12..).unwrap_or_default();
        let same_question = r
            .get(12..12 + question.len())
            .is_some_and(|got| got.eq_ignore_ascii_case(question));
        if r.get(..2) == Some(&id.to_be_bytes()[..])
            && r.get(2).is_some_and(|f| f & 0x80 != 0)
            && same_question
        {
            return r.get(3).is_some_and(|f| f & 0x0f == expect_rcode);
        }
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
        Probe::Dns {
            qname,
            qtype,
            expect_rcode,
        } => dns(ep.address, qname, *qtype, *expect_rcode).await,
        Probe::Metric { .. } => false, // handled by run_with
        Probe::Http {
            tls: false,
            method,
            path,
            host,
            sni,
            expect_status,
            expect_body,
            headers,
            ..
        } => {
            let host = match (host, sni) {
                (Some(h), _) => h.clone(),
                (None, Some(name)) => authority(name, ep.address.port()),
                (None, None) => authority(&ep.address.ip().to_string(), ep.address.port()),
            };
            let request = http1::request(method, path, &host, user_agent(), headers);
            let expect = http1::Expect {
                status: expect_status,
                body: expect_body.as_deref(),
                max_body: MAX_BODY,
                head: method.eq_ignore_ascii_case("HEAD"),
            };
            http1::exchange(ep.address, &request, &expect).await
        }
        Probe::Http {
            method,
            host,
            expect_status,
            expect_body,
            headers,
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
            for (name, value) in headers {
                req = req.header(name.as_str(), value.as_str());
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

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[tokio::test]
    async fn http_probes_say_who_is_asking() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let ep = Endpoint {
            name: "web".into(),
            address,
            probe: Probe::Http {
                tls: false,
                method: "GET".into(),
                path: "/healthz".into(),
                host: None,
                sni: None,
                tls_verify: true,
                expect_status: vec![],
                expect_body: None,
                headers: vec![("X-Probe-Token".into(), "abc".into())],
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            serves: 0,
        };
        let sample = run(&ep, client(&ep).as_ref()).await;
        let request = server.await.unwrap();
        assert!(sample.ok);
        let ua = format!("user-agent: meridian/{} (", env!("CARGO_PKG_VERSION"));
        assert!(request.contains(&ua), "{request}");
        assert!(request.contains("x-probe-token: abc"), "{request}");
    }
}
