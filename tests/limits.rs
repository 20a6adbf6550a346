//! Every limit on what input controls, hit on the real binary: TCP connections, idle
//! and slow clients (a slow-loris of 300 connections delays neither UDP nor a new TCP
//! client), queries per connection, names longer than 255 octets, responses larger than
//! a TCP message, records per zone and per name, `$INCLUDE` depth, YAML size and depth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
www  A   192.0.2.80
";

fn serve(yaml: &str, zone: &str) -> (tempfile::TempDir, Meridian) {
    let dir = common::deployment(&[("example.test", zone)]);
    std::fs::write(dir.path().join("meridian.yaml"), yaml).unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    (dir, m)
}

/// Whether the server closed `s` within `within` (EOF or reset on read).
fn closed(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
        && {
            // A timeout is an error too: tell it apart from a close.
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        }
}

#[test]
fn a_slow_loris_delays_neither_udp_nor_new_tcp_clients_and_is_shed() {
    let (_d, m) = serve(
        "version: 1\ndns:\n  udp_sockets_per_address: 1\n  tcp_idle_timeout: 2s\n  tcp_max_connections: 400\n",
        ZONE,
    );
    // 150 connections that send nothing, 150 that send one byte every 300 ms.
    let mut silent: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(m.addr).unwrap())
        .collect();
    let trickle: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(m.addr).unwrap())
        .collect();
    let query = query_bytes("www.example.test.", RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let trickler = std::thread::spawn(move || {
        let mut trickle = trickle;
        // 12 bytes at 300 ms: 3.6 s, longer than the idle timeout allows a message.
        for i in 0..12 {
            for s in &mut trickle {
                let _ = s.write_all(&framed[i..=i]);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        trickle
    });
    // Meanwhile: UDP answers at once, and a new TCP client is served at once.
    let mut worst_udp = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let r = m.udp("www.example.test.", RecordType::A);
        assert_eq!(r.answers.len(), 1);
        worst_udp = worst_udp.max(t.elapsed());
    }
    let t = Instant::now();
    let r = tcp(m.addr, &query);
    let new_tcp = t.elapsed();
    assert_eq!(r.answers.len(), 1);
    eprintln!("under 300 slow connections: worst UDP {worst_udp:?}, a new TCP client {new_tcp:?}");
    assert!(worst_udp < Duration::from_millis(200), "{worst_udp:?}");
    assert!(new_tcp < Duration::from_millis(500), "{new_tcp:?}");
    // Silent ones are closed after the idle timeout (2 s); trickling ones when their
    // message has not arrived within it.
    let start = Instant::now();
    assert!(
        silent.iter_mut().all(|s| closed(s, Duration::from_secs(4))),
        "silent connections outlived the idle timeout"
    );
    let mut trickle = trickler.join().unwrap();
    assert!(
        trickle
            .iter_mut()
            .all(|s| closed(s, Duration::from_secs(4))),
        "trickling connections outlived the limit"
    );
    eprintln!("all 300 shed {:?} after the first check", start.elapsed());
}

#[test]
fn tcp_connections_and_queries_per_connection_are_capped() {
    let (_d, m) = serve(
        "version: 1\ndns:\n  udp_sockets_per_address: 1\n  tcp_idle_timeout: 5s\n  tcp_max_connections: 20\n  tcp_max_queries: 3\n",
        ZONE,
    );
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(m.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(m.addr).unwrap();
    assert!(
        closed(&mut extra, Duration::from_secs(1)),
        "the 21st connection is closed at once"
    );
    assert_eq!(m.udp("www.example.test.", RecordType::A).answers.len(), 1);
    held.clear();
    std::thread::sleep(Duration::from_millis(200));
    // Three queries on one connection, then the server closes it.
    let mut s = TcpStream::connect(m.addr).unwrap();
    let q = query_bytes("www.example.test.", RecordType::A, None);
    for _ in 0..3 {
        let r = Message::from_vec(&tcp_exchange(&mut s, &q)).unwrap();
        assert_eq!(r.answers.len(), 1);
    }
    assert!(
        closed(&mut s, Duration::from_secs(1)),
        "closed after tcp_max_queries"
    );
}

fn raw_query(labels: &[&[u8]]) -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn names_over_255_octets_are_refused_and_responses_fit_a_tcp_message() {
    let mut zone = ZONE.to_string();
    // 400 TXT records of 200 octets: ~86 KB, more than one TCP message can carry.
    for i in 0..400 {
        zone.push_str(&format!("big TXT \"{i:03}{}\"\n", "x".repeat(196)));
    }
    let (_d, m) = serve("version: 1\ndns:\n  udp_sockets_per_address: 1\n", &zone);
    let long = [&[b'a'; 63][..]; 5]; // 5 × 64 + 1 = 321 octets
    let r = Message::from_vec(&udp_raw(m.addr, &raw_query(&long))).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let many = [&b"a"[..]; 128]; // 257 octets in 128 labels
    let r = Message::from_vec(&udp_raw(m.addr, &raw_query(&many))).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let mut s = TcpStream::connect(m.addr).unwrap();
    let bytes = tcp_exchange(
        &mut s,
        &query_bytes("big.example.test.", RecordType::TXT, None),
    );
    assert!(bytes.len() <= 65_535);
    let r = Message::from_vec(&bytes).unwrap();
    assert!(
        r.metadata.truncation,
        "cut with TC rather than over the limit"
    );
    assert!(r.answers.len() < 400);
}

fn check(dir: &std::path::Path) -> String {
    check_errors(&dir.join("meridian.yaml"))
}

#[test]
fn zone_and_yaml_limits_are_errors_at_their_place() {
    let mut zone = ZONE.to_string();
    for i in 0..6 {
        zone.push_str(&format!("txt TXT \"{i}\"\n"));
    }
    let dir = common::deployment(&[("example.test", &zone)]);
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\nlimits:\n  records_per_name: 5\n",
    )
    .unwrap();
    let text = check(dir.path());
    assert!(
        text.contains("example.test:11:") && text.contains("limits.records_per_name"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\nlimits:\n  zone_records: 8\n",
    )
    .unwrap();
    let text = check(dir.path());
    assert!(
        text.contains("example.test:10:") && text.contains("limits.zone_records"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\nlimits:\n  zone_records: 0\n",
    )
    .unwrap();
    assert!(check(dir.path()).contains("meridian.yaml:3:"));

    // A chain of 20 $INCLUDEs: stopped at the depth limit.
    std::fs::create_dir_all(dir.path().join("zones/inc")).unwrap();
    for i in 0..20 {
        std::fs::write(
            dir.path().join(format!("zones/inc/{i}.inc")),
            format!("$INCLUDE inc/{}.inc\n", i + 1),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("zones/inc/20.inc"), "").unwrap();
    std::fs::write(
        dir.path().join("zones/example.test"),
        format!("{ZONE}$INCLUDE inc/0.inc\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("meridian.yaml"), "version: 1\n").unwrap();
    let text = check(dir.path());
    assert!(text.contains("$INCLUDE nested more than 16 deep"), "{text}");

    // YAML: a file over 16 MiB is refused before it is read; deep nesting is an error.
    std::fs::write(dir.path().join("zones/example.test"), ZONE).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let big = format!("version: 1\n# {}\n", "x".repeat(17 * 1024 * 1024));
    std::fs::write(dir.path().join("policies/big.yaml"), big).unwrap();
    let text = check(dir.path());
    assert!(
        text.contains("big.yaml") && text.contains("larger than the 16 MiB"),
        "{text}"
    );
    std::fs::remove_file(dir.path().join("policies/big.yaml")).unwrap();
    let deep = format!(
        "version: 1\nregions: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    std::fs::write(dir.path().join("policies/deep.yaml"), deep).unwrap();
    let text = check(dir.path());
    assert!(text.contains("deep.yaml:2:"), "{text}");
}
