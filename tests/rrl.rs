//! Response rate limiting on the real binary: a flood of identical queries from one /24
//! (sourced from 127.0.5.5) gets the configured rate in full answers and every second
//! limited response truncated (the slip), while another /24 (127.0.9.9) asking at the
//! same time is answered in full, and TCP from the flooding prefix is never limited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
www  A   192.0.2.80
";

#[derive(Default, Debug)]
struct Tally {
    full: usize,
    truncated: usize,
}

/// Sends `count` queries for www.example.test from `source` at `per_second`, and
/// tallies the replies.
fn ask(server: std::net::SocketAddr, source: &str, count: usize, per_second: u32) -> Tally {
    ask_names(server, source, &["www.example.test."], count, per_second)
}

/// Sends `count` queries from `source` at `per_second`, cycling through `names`.
fn ask_names(
    server: std::net::SocketAddr,
    source: &str,
    names: &[&str],
    count: usize,
    per_second: u32,
) -> Tally {
    let sock = UdpSocket::bind(format!("{source}:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let reader = sock.try_clone().unwrap();
    let collect = std::thread::spawn(move || {
        let mut t = Tally::default();
        let mut buf = [0u8; 2048];
        while let Ok(n) = reader.recv(&mut buf) {
            let m = Message::from_vec(&buf[..n]).unwrap();
            if m.metadata.truncation {
                assert!(m.answers.is_empty(), "a slipped response carries no answer");
                t.truncated += 1;
            } else {
                assert_eq!(m.answers.len(), 1);
                t.full += 1;
            }
        }
        t
    });
    let queries: Vec<Vec<u8>> = names
        .iter()
        .map(|n| query_bytes(n, RecordType::A, Some(1232)))
        .collect();
    let gap = Duration::from_secs(1) / per_second;
    let start = Instant::now();
    for i in 0..count {
        sock.send_to(&queries[i % queries.len()], server).unwrap();
        let due = start + gap * (i as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    collect.join().unwrap()
}

#[test]
fn a_flood_from_one_prefix_is_limited_and_slipped_while_another_is_answered() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 2\nrrl:\n  responses_per_second: 20\n  window: 2s\n  slip: 2\n  exempt: []\n",
    )
    .unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    assert!(m.log().contains("response rate limiting on UDP"));
    let server = m.addr;
    // 3 s of flood at 200 queries/s; the other prefix asks 15/s meanwhile.
    let flood = std::thread::spawn(move || ask(server, "127.0.5.5", 600, 200));
    let other = std::thread::spawn(move || ask(server, "127.0.9.9", 45, 15));
    std::thread::sleep(Duration::from_millis(500));
    // TCP from the flooding prefix, in the middle of it: answered in full.
    let tcp = std::net::TcpStream::connect(server).unwrap();
    let mut tcp = tcp;
    let reply = tcp_exchange(
        &mut tcp,
        &query_bytes("www.example.test.", RecordType::A, None),
    );
    let reply = Message::from_vec(&reply).unwrap();
    assert!(
        !reply.metadata.truncation && reply.answers.len() == 1,
        "TCP is not limited"
    );
    let (flood, other) = (flood.join().unwrap(), other.join().unwrap());
    eprintln!("flood: {flood:?}, other: {other:?}");
    assert_eq!(
        other.full, 45,
        "the other /24 is answered in full: {other:?}"
    );
    // 20/s over about 3 s (the first second's worth, then 20 a second).
    assert!(
        (20..=90).contains(&flood.full),
        "full answers to the flood: {flood:?}"
    );
    let limited = 600 - flood.full;
    let expected_slips = limited / 2;
    assert!(
        // Which responses fall in which second moves the split a little; half of them
        // give or take a tenth, plus a few.
        flood.truncated.abs_diff(expected_slips) <= limited / 10 + 10,
        "every second limited response slips: {flood:?}"
    );
    let metrics = http(m.http, "GET", "/metrics", &[], "").1;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let slipped = value("meridian_rrl_limited_total{action=\"slipped\",kind=\"answer\"}");
    let dropped = value("meridian_rrl_limited_total{action=\"dropped\",kind=\"answer\"}");
    assert_eq!(slipped as usize, flood.truncated, "{metrics}");
    assert!(
        (dropped as usize).abs_diff(limited - flood.truncated) <= 2,
        "{metrics}"
    );
}

#[test]
fn rate_limiting_is_off_unless_configured_and_bad_settings_are_named() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let server = m.addr;
    let t = ask(server, "127.0.5.6", 200, 400);
    assert_eq!(t.full, 200, "{t:?}");
    drop(m);
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\nrrl:\n  responses_per_second: 20\n  slip: 11\n  ipv4_prefix: 33\n  exempt: [\"nope\"]\n",
    )
    .unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    for (line, what) in [(4, "rrl.slip"), (5, "rrl.ipv4_prefix"), (6, "rrl.exempt")] {
        assert!(
            text.contains(&format!("meridian.yaml:{line}:")) && text.contains(what),
            "{what} at line {line}: {text}"
        );
    }
}

/// Keyed by name, as BIND, Knot and NSD key it: a /24 of resolvers asking 50 different
/// names 10 times a second each (500 a second in all) is not limited at 20 a second,
/// while one name asked 200 times a second from another /24 is.
#[test]
fn many_names_from_one_prefix_stay_unlimited_while_one_name_is_limited() {
    let mut zone = ZONE.to_string();
    let names: Vec<String> = (0..50).map(|i| format!("n{i}.example.test.")).collect();
    for i in 0..50 {
        zone.push_str(&format!("n{i} A 192.0.2.{}\n", i + 1));
    }
    let dir = common::deployment(&[("example.test", &zone)]);
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\nrrl:\n  responses_per_second: 20\n  window: 2s\n  slip: 2\n  exempt: []\n",
    )
    .unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let server = m.addr;
    let many = std::thread::spawn(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ask_names(server, "127.0.6.6", &refs, 1000, 500)
    });
    let one = ask(server, "127.0.7.7", 400, 200);
    let many = many.join().unwrap();
    assert_eq!(many.full, 1000, "50 names at 10/s each: {many:?}");
    assert!(one.full <= 90, "one name at 200/s is limited: {one:?}");
    assert!(one.truncated > 50, "and slipped: {one:?}");
}

/// The test zone signed with a key from `meridian keygen`, served with `yaml`.
fn signed(yaml: &str) -> (tempfile::TempDir, Meridian) {
    let dir = common::deployment(&[("example.test", ZONE)]);
    let config = dir.path().join("meridian.yaml");
    std::fs::write(&config, yaml).unwrap();
    let keygen = std::process::Command::new(BIN)
        .args(["keygen", "--config"])
        .arg(&config)
        .arg("example.test")
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let m = Meridian::start(&config);
    (dir, m)
}

/// A query for `name` A with EDNS and DO set.
fn with_do(name: &str) -> Vec<u8> {
    let mut q = query_msg(name, RecordType::A, None);
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(1232);
    e.flags_mut().dnssec_ok = true;
    q.set_edns(e);
    q.to_vec().unwrap()
}

/// A random-subdomain flood with DO against a signed zone: every query is a new name, so
/// each answer needs a freshly signed denial proof. The limit is decided before the
/// proof is composed, so the answers RRL drops or slips cost no signature.
#[test]
fn a_random_subdomain_flood_with_do_signs_only_what_it_sends_in_full() {
    let (_dir, m) = signed(
        "version: 1\nrrl:\n  responses_per_second: 20\n  window: 2s\n  slip: 2\n  exempt: []\n",
    );
    let signatures = |m: &Meridian| m.metric("meridian_dnssec_signatures_total").unwrap();
    let before = signatures(&m);
    let sock = UdpSocket::bind("127.0.8.8:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let reader = sock.try_clone().unwrap();
    let collect = std::thread::spawn(move || {
        let (mut full, mut truncated) = (0, 0);
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.recv(&mut buf) {
            let r = Message::from_vec(&buf[..n]).unwrap();
            if r.metadata.truncation {
                truncated += 1;
            } else {
                full += 1;
            }
        }
        (full, truncated)
    });
    for i in 0..300 {
        let q = with_do(&format!("r{i}x{}.example.test.", i * 7919));
        sock.send_to(&q, m.addr).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    let (full, truncated) = collect.join().unwrap();
    let made = signatures(&m) - before;
    assert!(full <= 60, "limited: {full} full, {truncated} truncated");
    assert!(
        truncated > 50,
        "slipped: {full} full, {truncated} truncated"
    );
    assert!(
        made <= full as f64 + 5.0,
        "{made} signatures for {full} full answers ({truncated} slipped, the rest dropped)"
    );
}

/// Past `dnssec.max_online_signatures_per_second`, a UDP answer that needs a new
/// denial signature is sent truncated, and the retry over TCP is signed.
#[test]
fn past_the_signing_rate_udp_answers_are_truncated_and_tcp_is_signed() {
    let (_dir, m) = signed("version: 1\ndnssec:\n  max_online_signatures_per_second: 10\n");
    let query = with_do;
    let (mut full, mut truncated) = (0, 0);
    for i in 0..60 {
        let r = udp(m.addr, &query(&format!("new{i}.example.test.")));
        if r.metadata.truncation {
            assert!(
                r.authorities.is_empty(),
                "a truncated answer carries nothing"
            );
            truncated += 1;
        } else {
            assert!(!r.authorities.is_empty(), "a full answer carries its proof");
            full += 1;
        }
    }
    assert!(
        (10..=25).contains(&full),
        "about the rate in full: {full} full, {truncated} truncated"
    );
    assert!(truncated >= 35, "{full} full, {truncated} truncated");
    assert!(m.metric("meridian_dnssec_signing_deferred_total").unwrap() >= 35.0);
    // The retry over TCP: signed whatever the rate.
    let r = tcp(m.addr, &query("new59.example.test."));
    assert!(!r.metadata.truncation);
    assert!(
        r.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::NSEC),
        "{r:?}"
    );
}
