//! Failover as a client sees it: Unbound (ECS on) caches in front of Meridian, a client
//! in Great Britain re-resolves through it four times a second, and eu-west's health
//! endpoint starts answering 503. The client must be moved to us-east no later than the
//! worst case `meridian check` prints for the policy, and the failover event Meridian
//! records must have its phases in order, each within its bound, with a cache bound
//! equal to the TTL the client was given. Then the endpoint recovers and the return is
//! recorded too. Needs Unbound (CI has it); elsewhere it says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::httpd::{Httpd, Mode};
use common::unbound::Unbound;
use common::*;
use hickory_proto::rr::RecordType;

const EU: &str = "198.51.100.10";
const US: &str = "192.0.2.10";
const TTL: u32 = 5;

fn deployment(backend: SocketAddr) -> tempfile::TempDir {
    let dir = common::deployment(&[(
        "example.com",
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n",
    )]);
    common::with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1
regions:
  - name: eu-west
    location: {{ lat: 53.35, lon: -6.26 }}
    a: [{EU}]
    endpoints: [{{ name: web, probe: http, address: \"{backend}\", path: /healthz, interval: 1s, timeout: 500ms }}]
    health: {{ preset: aggressive, cooldown: 2s, recover_consecutive: 2, failover_target: 20s }}
  - name: us-east
    location: {{ lat: 39.04, lon: -77.49 }}
    a: [{US}]
policies:
  - {{ name: www.example.com, method: nearest, ttl: {TTL} }}
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 1\nhealth:\n  state_file: null\n",
    )
    .unwrap();
    dir
}

/// What the client in Great Britain is answered through the resolver, and the TTL.
fn client(u: &Unbound) -> (String, u32) {
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let mut q = query_msg("www.example.com.", RecordType::A, None);
    q.metadata.recursion_desired = true;
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        UK.parse().unwrap(),
        24,
        0,
    )));
    q.set_edns(e);
    let Some(bytes) = try_udp(u.addr, &q.to_vec().unwrap(), Duration::from_secs(2)) else {
        return (String::new(), 0);
    };
    let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
    let ttl = m.answers.first().map_or(0, |r| r.ttl);
    (first_rdata(&m), ttl)
}

/// The policy's worst case as `meridian check` prints it, in seconds.
fn printed_worst_case(config: &Path) -> f64 {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("failover www.example.com.: worst case "))
        .unwrap_or_else(|| panic!("no worst case printed:\n{text}"));
    line.trim_start_matches("failover www.example.com.: worst case ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn failovers(m: &Meridian) -> Vec<serde_json::Value> {
    let (code, body) = http(m.http, "GET", "/api/v1/failovers?region=eu-west", &[], "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["failovers"].as_array().cloned().unwrap_or_default()
}

/// Asks every 250 ms until the client is answered `want`; the time it took.
fn until_client_gets(u: &Unbound, want: &str, limit: Duration, m: &Meridian) -> (Duration, u32) {
    let start = Instant::now();
    let mut max_ttl = 0;
    loop {
        let (got, ttl) = client(u);
        if got == want {
            return (start.elapsed(), max_ttl);
        }
        max_ttl = max_ttl.max(ttl);
        assert!(
            start.elapsed() < limit,
            "the client still gets {got}, not {want}, after {limit:?}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_client_moves_within_the_printed_worst_case_and_the_event_says_when() {
    if Command::new("unbound")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return skip("unbound is not installed");
    }
    let backend = Httpd::start();
    let dir = deployment(backend.addr);
    let config = dir.path().join("meridian.yaml");
    let worst = printed_worst_case(&config);
    // interval 1 s + timeout 0.5 s + TTL 5 s + publish 0.2 s.
    assert!((worst - 6.7).abs() < 1e-9, "{worst}");
    let m = Meridian::start(&config);
    let u = common::unbound::start(dir.path(), m.addr, None);
    let (warm, _) = until_client_gets(&u, EU, Duration::from_secs(10), &m);
    eprintln!("client answered eu-west after {warm:?}");
    // The resolver's cache holds it: ask for a while so an answer is cached mid-life.
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(client(&u).0, EU);

    backend.set(Mode::Unavailable);
    let (moved, held_ttl) = until_client_gets(&u, US, Duration::from_secs(30), &m);
    eprintln!(
        "client moved to us-east {moved:?} after the backend failed (worst case printed: {worst} s; TTL it held: {held_ttl} s)"
    );
    // A quarter second of polling granularity on top.
    assert!(
        moved.as_secs_f64() <= worst + 0.25 + 0.1,
        "moved after {moved:?}, worst case {worst} s\n{}",
        m.log()
    );

    let events = failovers(&m);
    let leave = events
        .iter()
        .find(|e| e["direction"] == "leave")
        .unwrap_or_else(|| panic!("no leave event: {events:?}"));
    let p = &leave["phases"];
    let (detect, publish, bound) = (
        p["detect"].as_f64().unwrap(),
        p["publish"].as_f64().unwrap(),
        p["cache_bound"].as_f64().unwrap(),
    );
    eprintln!("event: detect {detect:.3} s, publish {publish:.3} s, cache bound {bound:.3} s");
    assert!(detect <= publish && publish <= bound, "{leave}");
    // The aggressive preset leaves at 10 % errors: the first failing sample can take
    // it down; two failures in a row at most (one interval, plus a timeout).
    assert!((0.0..=1.6).contains(&detect), "{leave}");
    assert!(publish - detect < 0.2, "{leave}");
    // The client was given TTL 5: the last answer naming eu-west (given at the latest
    // at the publication, with the full TTL if no failure had capped it yet) expires
    // one TTL later.
    assert!(
        (bound - f64::from(TTL)).abs() <= publish.max(1.0) + 0.01,
        "{leave}"
    );
    assert!(held_ttl <= TTL);
    // The region left because its endpoint count fell below min_up.
    assert_eq!(leave["cause"], "endpoints", "{leave}");
    assert_eq!(leave["over_target"], false, "{leave}");
    assert!(
        m.metric("meridian_failover_phase_seconds_count{phase=\"cache_bound\"}")
            .unwrap()
            >= 1.0
    );
    // The first answer without eu-west went to Unbound when its cached one expired: after
    // the publication, and before the client could see it (the checker reads the time
    // within a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let answer = loop {
        let events = failovers(&m);
        let leave = events.iter().find(|e| e["direction"] == "leave").unwrap();
        if let Some(a) = leave["phases"]["answer"].as_f64() {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer phase: {leave}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("event: first answer without eu-west {answer:.3} s");
    assert!(
        publish <= answer,
        "{answer} before the publication at {publish}"
    );
    assert!(
        answer <= moved.as_secs_f64() + 0.05,
        "the first answer ({answer} s) came after the client moved ({moved:?})"
    );
    assert!(
        m.metric("meridian_failover_phase_seconds_count{phase=\"answer\"}")
            .unwrap()
            >= 1.0
    );

    // Back: after the cooldown and two passing probes, and the client with it.
    backend.set(Mode::Ok);
    let (back, _) = until_client_gets(&u, EU, Duration::from_secs(30), &m);
    eprintln!("client back on eu-west {back:?} after the backend recovered");
    let events = failovers(&m);
    let ret = events
        .iter()
        .find(|e| e["direction"] == "return")
        .unwrap_or_else(|| panic!("no return event: {events:?}"));
    let rp = &ret["phases"];
    assert!(
        rp["detect"].as_f64().unwrap() >= 2.0,
        "the cooldown holds it: {ret}"
    );
    assert!(rp["detect"].as_f64().unwrap() <= rp["publish"].as_f64().unwrap());
    assert_eq!(
        events.first().unwrap()["direction"],
        "return",
        "newest first"
    );
}
