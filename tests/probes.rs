//! Richer probes against local servers that check what they receive: an HTTP probe with
//! `method: HEAD` sends HEAD (and GET by default), with Meridian's User-Agent; a `dns`
//! probe asks a local DNS server the configured question and is up only while it gets
//! the expected rcode. Bad probe settings are errors at their line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::httpd::Httpd;
use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";

/// A DNS server on 127.0.0.1 that records each question and answers with `rcode`.
struct FakeDns {
    addr: std::net::SocketAddr,
    rcode: Arc<AtomicU8>,
    asked: Arc<Mutex<Vec<(String, RecordType, bool)>>>,
}

impl FakeDns {
    fn start() -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let rcode = Arc::new(AtomicU8::new(0));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (rc, log) = (rcode.clone(), asked.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(question) = q.queries.first() else {
                    continue;
                };
                log.lock().unwrap().push((
                    question.name().to_string(),
                    question.query_type(),
                    q.metadata.recursion_desired,
                ));
                let mut r = Message::response(q.metadata.id, q.metadata.op_code);
                r.metadata.message_type = MessageType::Response;
                r.metadata.response_code = ResponseCode::from(0, rc.load(Ordering::SeqCst));
                r.add_query(question.clone());
                let _ = sock.send_to(&r.to_vec().unwrap(), from);
            }
        });
        FakeDns { addr, rcode, asked }
    }
}

fn deployment(eu_endpoint: &str, us_endpoint: &str) -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let health = "{ window: 4, fail_consecutive: 2, recover_consecutive: 2, cooldown: 1s }";
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1\nregions:\n  - name: eu-west\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [198.51.100.10]\n    endpoints:\n      - {eu_endpoint}\n    health: {health}\n  - name: us-east\n    location: {{ lat: 39.04, lon: -77.49 }}\n    a: [192.0.2.10]\n    endpoints:\n      - {us_endpoint}\n    health: {health}\npolicies:\n  - {{ name: www.example.test, method: nearest, ttl: 30 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 1\nhealth:\n  state_file: null\n  startup_wait: 5s\n",
    )
    .unwrap();
    dir
}

fn uk(m: &Meridian) -> String {
    first_rdata(&ecs_ask(m.addr, "www.example.test.", RecordType::A, UK, 24))
}

fn wait(m: &Meridian, want: &str) {
    let start = Instant::now();
    while uk(m) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not {want}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn head_and_dns_probes_send_what_they_are_configured_to_and_judge_the_answer() {
    let (head, get) = (Httpd::start(), Httpd::start());
    let dns = FakeDns::start();
    let dir = deployment(
        &format!(
            "{{ name: dns, probe: dns, address: \"{}\", qname: health.example.net, qtype: AAAA, expect_rcode: NOERROR, interval: 200ms, timeout: 150ms }}",
            dns.addr
        ),
        &format!(
            "{{ name: web, probe: http, method: HEAD, address: \"{}\", path: /ping, interval: 200ms, timeout: 150ms }}",
            head.addr
        ),
    );
    // A third endpoint on us-east with the default method.
    let text = std::fs::read_to_string(dir.path().join("policies/web.yaml")).unwrap().replace(
        "      - { name: web, probe: http, method: HEAD",
        &format!("      - {{ name: get, probe: http, address: \"{}\", path: /ping, interval: 200ms, timeout: 150ms }}\n      - {{ name: web, probe: http, method: HEAD", get.addr),
    );
    std::fs::write(dir.path().join("policies/web.yaml"), text).unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    wait(&m, "198.51.100.10");
    let seen = head.requests_seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| l.starts_with("HEAD /ping ")),
        "{seen:?}"
    );
    let seen = get.requests_seen.lock().unwrap().clone();
    assert!(seen.iter().all(|l| l.starts_with("GET /ping ")), "{seen:?}");
    let ua = format!("Meridian/{} (", env!("CARGO_PKG_VERSION"));
    assert!(
        head.agents
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.starts_with(&ua))
    );
    {
        let asked = dns.asked.lock().unwrap();
        assert!(!asked.is_empty());
        assert!(
            asked
                .iter()
                .all(|(n, t, rd)| n == "health.example.net." && *t == RecordType::AAAA && !rd),
            "{asked:?}"
        );
    }
    // The DNS service starts failing: eu-west leaves the answers; back when it recovers.
    dns.rcode.store(2, Ordering::SeqCst); // SERVFAIL
    wait(&m, "192.0.2.10");
    dns.rcode.store(0, Ordering::SeqCst);
    wait(&m, "198.51.100.10");
    let (_, status) = http(m.http, "GET", "/api/v1/status", &[], "");
    assert!(status.contains("\"probe\":\"dns\""), "{status}");
}

#[test]
fn bad_probe_settings_are_errors_at_their_line() {
    for (endpoint, says) in [
        (
            "{ name: w, probe: http, method: POST, address: \"127.0.0.1:1\" }",
            "GET or HEAD",
        ),
        (
            "{ name: w, probe: http, method: HEAD, expect_body: ok, address: \"127.0.0.1:1\" }",
            "expect_body needs GET",
        ),
        (
            "{ name: w, probe: dns, address: \"127.0.0.1:53\" }",
            "needs a qname",
        ),
        (
            "{ name: w, probe: dns, qname: x.example, qtype: NOPE, address: \"127.0.0.1:53\" }",
            "not a record type",
        ),
        (
            "{ name: w, probe: dns, qname: x.example, expect_rcode: FINE, address: \"127.0.0.1:53\" }",
            "expect_rcode",
        ),
        (
            "{ name: w, probe: dns, qname: x.example, path: /, address: \"127.0.0.1:53\" }",
            "path does not apply to a dns probe",
        ),
        (
            "{ name: w, probe: tcp, qname: x.example, address: \"127.0.0.1:53\" }",
            "qname does not apply to a tcp probe",
        ),
    ] {
        let dir = deployment(
            endpoint,
            "{ name: t, probe: tcp, address: \"127.0.0.1:9\" }",
        );
        let text = check_errors(&dir.path().join("meridian.yaml"));
        assert!(
            text.contains("web.yaml:7:") && text.contains(says),
            "{endpoint}: {text}"
        );
    }
}
