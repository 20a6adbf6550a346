//! The real `meridian` binary on a loopback port, queried over UDP and TCP the way a
//! resolver, `dig` or an operator would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
www  A   192.0.2.80
";

fn big_zone() -> String {
    let mut z = ZONE.to_string();
    for i in 0..16 {
        z.push_str(&format!(
            "big TXT \"record {i:02} with enough padding to be large\"\n"
        ));
    }
    z
}

fn example() -> (tempfile::TempDir, Meridian) {
    let dir = deployment(&[("example.test", &big_zone())]);
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    (dir, m)
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn answers_come_over_udp_and_tcp_from_the_real_binary() {
    let (_d, m) = example();
    let r = m.udp("www.example.test.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(a_records(&r), ["192.0.2.80"]);
    let r = tcp(
        m.addr,
        &query_bytes("www.example.test.", RecordType::A, None),
    );
    assert_eq!(a_records(&r), ["192.0.2.80"]);
}

#[test]
fn a_truncated_udp_answer_is_whole_over_tcp() {
    let (_d, m) = example();
    let q = query_bytes("big.example.test.", RecordType::TXT, None);
    let raw = udp_raw(m.addr, &q);
    assert!(
        raw.len() <= 512,
        "classic UDP limit exceeded: {}",
        raw.len()
    );
    let r = Message::from_vec(&raw).unwrap();
    assert!(r.metadata.truncation, "TC must be set");
    let r = tcp(m.addr, &q);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 16);
    // With a large EDNS buffer the same answer fits in one datagram.
    let r = udp(
        m.addr,
        &query_bytes("big.example.test.", RecordType::TXT, Some(4096)),
    );
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 16);
}

#[test]
fn one_tcp_connection_serves_several_queries_and_idle_ones_are_closed() {
    let (_d, m) = example();
    let mut s = TcpStream::connect(m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for name in [
        "www.example.test.",
        "ns1.example.test.",
        "www.example.test.",
    ] {
        let r = Message::from_vec(&tcp_exchange(
            &mut s,
            &query_bytes(name, RecordType::A, None),
        ))
        .unwrap();
        assert_eq!(r.answers.len(), 1, "{name}");
    }
    // The test deployment sets tcp_idle_timeout: 2s.
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "server should close the idle connection");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn the_question_is_echoed_byte_for_byte_with_its_0x20_case() {
    let (_d, m) = example();
    let q = query_bytes("wWw.ExAmPlE.TeSt.", RecordType::A, None);
    let raw = udp_raw(m.addr, &q);
    let question_len = "wWw.ExAmPlE.TeSt.".len() + 1 + 4;
    assert_eq!(&raw[12..12 + question_len], &q[12..12 + question_len]);
    assert_eq!(a_records(&Message::from_vec(&raw).unwrap()), ["192.0.2.80"]);
}

#[test]
fn edns_queries_get_our_opt_and_unknown_versions_get_badvers() {
    let (_d, m) = example();
    let mut q = query_msg("www.example.test.", RecordType::A, Some(4096));
    q.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
    let r = udp(m.addr, &q.to_vec().unwrap());
    let edns = r.edns.clone().expect("OPT in the response");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(a_records(&r), ["192.0.2.80"], "unknown options are ignored");
    assert!(edns.option(EdnsCode::Unknown(65001)).is_none());

    let mut q = query_msg("www.example.test.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let r = udp(m.addr, &q.to_vec().unwrap());
    // BADVERS and BADSIG share code 16 (RFC 6891, RFC 8945).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.unwrap().version(), 0);
    assert!(r.answers.is_empty());

    let r = udp(
        m.addr,
        &query_bytes("www.example.test.", RecordType::A, None),
    );
    assert!(r.edns.is_none(), "no OPT for a query without one");
}

#[test]
fn bad_packets_get_formerr_or_are_dropped_and_serving_goes_on() {
    let (_d, m) = example();
    let good = query_bytes("www.example.test.", RecordType::A, None);
    // Header parses, body does not: FORMERR with the ID echoed.
    let mut cut = good[..good.len() - 3].to_vec();
    cut[0] = 0xAB;
    cut[1] = 0xCD;
    let raw = udp_raw(m.addr, &cut);
    assert_eq!(&raw[..2], &[0xAB, 0xCD]);
    assert_eq!(raw[3] & 0x0F, 1, "FORMERR");
    // Two questions: FORMERR.
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(udp_raw(m.addr, &two)[3] & 0x0F, 1);
    // Opcode NOTIFY: NOTIMP.
    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    assert_eq!(udp_raw(m.addr, &notify)[3] & 0x0F, 4);
    // Shorter than a header, or a response: no answer at all.
    assert!(try_udp(m.addr, &[1, 2, 3], Duration::from_millis(300)).is_none());
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(try_udp(m.addr, &response, Duration::from_millis(300)).is_none());
    // A flood of mutated packets over UDP and TCP, then the server still answers.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3000 {
        let mut p = good.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % p.len();
            p[i] = next() as u8;
        }
        p.truncate((next() as usize % (p.len() + 8)).max(1));
        sock.send_to(&p, m.addr).unwrap();
    }
    let mut s = TcpStream::connect(m.addr).unwrap();
    use std::io::Write;
    s.write_all(&[0, 40, 1, 2, 3]).unwrap(); // a frame that never completes
    let r = m.udp("www.example.test.", RecordType::A);
    assert_eq!(a_records(&r), ["192.0.2.80"]);
    let r = tcp(m.addr, &good);
    assert_eq!(a_records(&r), ["192.0.2.80"]);
}

#[test]
fn names_outside_our_zones_are_refused() {
    let (_d, m) = example();
    let r = m.udp("www.example.org.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
}

#[test]
fn check_reports_every_error_as_file_and_line() {
    let bad = "$TTL 300\n@ SOA ns1 hostmaster 1 2 3 4 5\n@ NS ns1\nns1 A 999.1.1.1\nwww CNAME a\nwww A 192.0.2.1\nfoo.other. A 192.0.2.2\n";
    let dir = deployment(&[("bad.test", bad), ("good.test", ZONE)]);
    let out = check(dir.path().join("meridian.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("zones/bad.test");
    let file = file.display();
    for line in [4, 5, 7] {
        assert!(
            err.contains(&format!("{file}:{line}: ")),
            "line {line} missing in:\n{err}"
        );
    }
    assert!(err.contains("CNAME and other data"), "{err}");
    assert!(err.contains("outside the zone"), "{err}");

    // `serve` refuses to start with the same messages.
    let out = Command::new(BIN)
        .args(["serve", "--dns-listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("meridian.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("{file}:4: ")), "{log}");
}

#[test]
fn check_summarises_a_good_deployment() {
    let dir = deployment(&[("example.test.zone", ZONE)]);
    let out = check(dir.path().join("meridian.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("zone example.test.: 4 records"), "{text}");
    assert!(text.contains("ok: 1 zones, 4 records"), "{text}");
}

#[test]
fn check_warns_about_an_edns_size_that_cannot_go_unfragmented() {
    let dir = deployment(&[("example.test.zone", ZONE)]);
    let config = dir.path().join("meridian.yaml");
    let warning = "dns.edns_udp_size 4096 is above 1400 (RFC 9715)";
    std::fs::write(&config, "version: 1\ndns:\n  edns_udp_size: 4096\n").unwrap();
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is not an error: {stderr}");
    assert!(
        stderr.contains(&format!("warning: {}:3:18: {warning}", config.display())),
        "{stderr}"
    );
    std::fs::write(&config, "version: 1\ndns:\n  edns_udp_size: 1400\n").unwrap();
    let out = check(&config);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("edns_udp_size"));
}

/// `meridian check --config FILE`, as an operator runs it.
fn check(config: impl AsRef<std::path::Path>) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(config.as_ref())
        .output()
        .unwrap()
}

fn signal(m: &Meridian, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &m.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn sighup_swaps_in_good_zones_and_keeps_serving_when_they_are_bad() {
    let (d, m) = example();
    let zone_file = d.path().join("zones/example.test");
    // A broken edit: the running data stays.
    std::fs::write(&zone_file, "www A 192.0.2.99\n").unwrap();
    signal(&m, "HUP");
    wait_until("reload failure logged", || {
        m.log().contains("reload failed")
    });
    assert_eq!(
        a_records(&m.udp("www.example.test.", RecordType::A)),
        ["192.0.2.80"]
    );
    // A good edit: the next answer has it.
    std::fs::write(&zone_file, ZONE.replace("192.0.2.80", "192.0.2.99")).unwrap();
    signal(&m, "HUP");
    wait_until("new answer", || {
        a_records(&m.udp("www.example.test.", RecordType::A)) == ["192.0.2.99"]
    });
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let (_d, mut m) = example();
    signal(&m, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = m.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m.log().contains("stopped"));
}

#[test]
fn dig_reads_the_shipped_example_deployment() {
    // The README's quick start: the repository's own meridian.yaml, zones/, policies/, geoip/.
    let m = Meridian::start(&example_config());
    let dig = |args: &[&str]| {
        let out = Command::new("dig")
            .arg(format!("@{}", m.addr.ip()))
            .args([
                "-p",
                &m.addr.port().to_string(),
                "+short",
                "+tries=1",
                "+time=3",
            ])
            .args(args)
            .output()
            .expect("dig (apt-get install dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        dig(&["www.example.com", "A", "+subnet=8.8.8.0/24"]),
        "192.0.2.10"
    );
    assert_eq!(
        dig(&["www.example.com", "A", "+subnet=81.2.69.0/24"]),
        "198.51.100.10"
    );
    assert_eq!(
        dig(&["www.example.com", "AAAA", "+subnet=1.1.1.0/24"]),
        "2001:db8:3::10"
    );
    assert_eq!(
        dig(&["api.example.com", "A", "+subnet=81.2.69.0/24"]),
        "www.example.com.\n198.51.100.10"
    );
    assert_eq!(dig(&["example.com", "MX"]), "10 mail.example.com.");
    assert_eq!(dig(&["anything.apps.example.com", "A"]), "192.0.2.100");
    assert_eq!(
        dig(&["+tcp", "txt.example.com", "TXT"]),
        "\"first string\" \"second string\""
    );
}

#[test]
fn check_reports_policy_mistakes_with_file_line_and_column_and_serve_refuses_them() {
    let dir = deployment(&[("example.test", ZONE)]);
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        "version: 1
regions:
  - { name: one, location: { lat: 10, lon: 10 }, a: [192.0.2.1] }
policies:
  - { name: www.example.test, method: nearest }
  - { name: other.example.org, method: nearest }
  - { name: api.example.test, method: failover, regions: [one, two] }
",
    )
    .unwrap();
    // The shipped database, so that the policy layer loads for real.
    with_shipped_geoip(dir.path());
    let out = check(dir.path().join("meridian.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("policies/web.yaml");
    assert!(
        err.contains(&format!("{}:7:64: unknown region \"two\"", file.display())),
        "{err}"
    );
    // Fix the unknown region: the zone conflict and the out-of-zone name remain.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(", two]", "]");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--dns-listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("meridian.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("already has A records at www.example.test."),
        "{log}"
    );
    assert!(
        log.contains("other.example.org. is not inside any served zone"),
        "{log}"
    );
}

#[test]
fn a_missing_or_corrupt_geoip_database_or_latency_table_is_reported_and_refused() {
    let dir = deployment(&[("example.test", ZONE)]);
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        "version: 1\nregions:\n  - { name: one, location: { lat: 10, lon: 10 }, a: [192.0.2.1] }\npolicies:\n  - { name: www.example.test, method: nearest }\n",
    )
    .unwrap();
    let check = || {
        let out = check(dir.path().join("meridian.yaml"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("geo-whois-asn-country.mmdb: cannot read GeoIP database"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("geoip")).unwrap();
    std::fs::write(
        dir.path().join("geoip/geo-whois-asn-country.mmdb"),
        b"not a database at all",
    )
    .unwrap();
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(err.contains("not a valid MaxMind DB file"), "{err}");
    with_shipped_geoip(dir.path());
    std::fs::write(
        dir.path().join("geoip/latency.yaml"),
        "version: 1\nmeasurements:\n  - { from: { country: ZZ }, rtt_ms: { one: 5 } }\n",
    )
    .unwrap();
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("latency.yaml:3:") && err.contains("unknown country code \"ZZ\""),
        "{err}"
    );
}
