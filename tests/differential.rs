//! Differential conformance: NSD and Meridian serve the same zone files; every query of
//! `tests/data/diff/queries.txt` goes to both, and rcode, AA/TC, the answer section,
//! the SOA of negative answers and the NS + glue of referrals must be equal.
//!
//! NSD is the reference (Debian package `nsd`, installed by `.ci/run`). Without it the
//! test fails rather than passing vacuously; set MERIDIAN_SKIP_DIFFERENTIAL=1 to skip
//! on a machine that cannot have it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nsd::{Nsd, nsd_binary, nsd_server, run_nsd};
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/diff");

fn start_nsd(dir: &Path, zones: &Path, port: u16) -> Nsd {
    let mut conf = nsd_server(dir, zones, port);
    for zone in ["diff.test", "other.test"] {
        conf.push_str(&format!("zone:\n  name: {zone}\n  zonefile: {zone}\n"));
    }
    run_nsd(dir, &conf, port, "diff.test.")
}

fn rr_text(r: &Record) -> String {
    // Names compare case-insensitively; everything else exactly.
    format!(
        "{} {} {} {}",
        r.name.to_ascii().to_lowercase(),
        r.ttl,
        r.record_type(),
        r.data
    )
}

fn set(records: &[Record], filter: impl Fn(&Record) -> bool) -> BTreeSet<String> {
    records.iter().filter(|r| filter(r)).map(rr_text).collect()
}

struct Case {
    line: String,
    name: String,
    rtype: RecordType,
    edns: Option<u16>,
    tcp: bool,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(Path::new(DATA).join("queries.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let mut name = parts.next().unwrap().to_string();
            if !name.ends_with('.') {
                name.push('.');
            }
            let rtype = parts.next().unwrap();
            let rtype = match rtype.strip_prefix("TYPE") {
                Some(n) => RecordType::from(n.parse::<u16>().unwrap()),
                None => rtype.parse().unwrap(),
            };
            let mut case = Case {
                line: l.to_string(),
                name,
                rtype,
                edns: Some(1232),
                tcp: false,
            };
            for opt in parts {
                match opt {
                    "noedns" => case.edns = None,
                    "tcp" => case.tcp = true,
                    o if o.starts_with("edns=") => case.edns = Some(o[5..].parse().unwrap()),
                    o => panic!("unknown option {o}"),
                }
            }
            case
        })
        .collect()
}

fn ask(addr: SocketAddr, c: &Case) -> Message {
    let mut q = query_msg(&c.name, c.rtype, c.edns);
    q.metadata.recursion_desired = false;
    let bytes = q.to_vec().unwrap();
    if c.tcp {
        tcp(addr, &bytes)
    } else {
        udp(addr, &bytes)
    }
}

fn is_referral(m: &Message) -> bool {
    !m.metadata.authoritative
        && m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::NS)
}

/// What a user of either server would check, as comparable values.
fn compare(c: &Case, nsd_addr: SocketAddr, nsd: &Message, ours: &Message) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{}: {what}: nsd {a} / meridian {b}", c.line));
        }
    };
    check(
        "rcode",
        format!("{:?}", nsd.metadata.response_code),
        format!("{:?}", ours.metadata.response_code),
    );
    check(
        "AA",
        nsd.metadata.authoritative.to_string(),
        ours.metadata.authoritative.to_string(),
    );
    check(
        "TC",
        nsd.metadata.truncation.to_string(),
        ours.metadata.truncation.to_string(),
    );
    if nsd.metadata.truncation {
        return diffs; // what a truncated answer carries is up to the server; TCP is compared
    }
    if c.rtype == RecordType::ANY {
        // RFC 8482 lets each server pick the one RRset it returns. Ours must be exactly
        // the RRset NSD gives when asked for that type by name.
        let types: BTreeSet<RecordType> = ours.answers.iter().map(|r| r.record_type()).collect();
        let [t] = types.into_iter().collect::<Vec<_>>()[..] else {
            diffs.push(format!(
                "{}: ANY answer is not one RRset: {:?}",
                c.line, ours.answers
            ));
            return diffs;
        };
        let reference = ask(
            nsd_addr,
            &Case {
                rtype: t,
                line: c.line.clone(),
                name: c.name.clone(),
                ..*c
            },
        );
        check(
            "ANY answer",
            format!("{:?}", set(&reference.answers, |r| r.record_type() == t)),
            format!("{:?}", set(&ours.answers, |_| true)),
        );
        return diffs;
    }
    check(
        "answer",
        format!("{:?}", set(&nsd.answers, |_| true)),
        format!("{:?}", set(&ours.answers, |_| true)),
    );
    let negative = nsd.metadata.response_code == ResponseCode::NXDomain
        || (nsd.answers.is_empty() && nsd.metadata.authoritative);
    if negative
        || nsd
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    {
        let soa = |r: &Record| r.record_type() == RecordType::SOA;
        check(
            "negative SOA",
            format!("{:?}", set(&nsd.authorities, soa)),
            format!("{:?}", set(&ours.authorities, soa)),
        );
    }
    if is_referral(nsd) {
        let ns = |r: &Record| r.record_type() == RecordType::NS;
        let glue = |r: &Record| matches!(r.record_type(), RecordType::A | RecordType::AAAA);
        check(
            "referral NS",
            format!("{:?}", set(&nsd.authorities, ns)),
            format!("{:?}", set(&ours.authorities, ns)),
        );
        check(
            "referral glue",
            format!("{:?}", set(&nsd.additionals, glue)),
            format!("{:?}", set(&ours.additionals, glue)),
        );
    }
    diffs
}

#[test]
fn meridian_answers_like_nsd_for_every_rule() {
    if std::env::var_os("MERIDIAN_SKIP_DIFFERENTIAL").is_some() {
        return common::skip("MERIDIAN_SKIP_DIFFERENTIAL is set");
    }
    assert!(
        nsd_binary().is_some(),
        "NSD is not installed (apt-get install nsd; .ci/run does it)"
    );
    let work = tempfile::tempdir().unwrap();
    let zones = Path::new(DATA).join("zones");
    let nsd = start_nsd(work.path(), &zones, free_port());
    let nsd_addr: SocketAddr = {
        let conf = std::fs::read_to_string(work.path().join("nsd.conf")).unwrap();
        let port = conf.split('@').nth(1).unwrap().lines().next().unwrap();
        format!("127.0.0.1:{port}").parse().unwrap()
    };
    let config = work.path().join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nzones: {}\ndns:\n  udp_sockets_per_address: 1\n",
            zones.display()
        ),
    )
    .unwrap();
    let meridian = Meridian::start(&config);

    let cases = cases();
    assert!(cases.len() > 60, "query set lost its cases");
    let mut diffs = Vec::new();
    for c in &cases {
        let theirs = ask(nsd_addr, c);
        let ours = ask(meridian.addr, c);
        diffs.extend(compare(c, nsd_addr, &theirs, &ours));
    }
    drop(nsd);
    assert!(
        diffs.is_empty(),
        "{} of {} queries differ from NSD:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n")
    );
}

const XFR_SECRET: &str = "bWVyaWRpYW4tdHJhbnNmZXIta2V5LWZvci10ZXN0cyE=";

fn dig_axfr(server: SocketAddr, zone: &str, extra: &[&str]) -> String {
    let out = Command::new("dig")
        .args(extra)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), zone, "AXFR"])
        .output()
        .expect("dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 17: NSD as a real secondary of Meridian. It transfers both zones with TSIG,
/// answers every case of the differential set exactly as Meridian does, and takes a new
/// serial from the NOTIFY a reload sends (its refresh timer is two hours). A wrong key,
/// no key, and a source not allowed get no zone.
#[test]
fn nsd_as_secondary_transfers_with_tsig_and_answers_like_meridian() {
    if std::env::var_os("MERIDIAN_SKIP_DIFFERENTIAL").is_some() {
        return common::skip("MERIDIAN_SKIP_DIFFERENTIAL is set");
    }
    assert!(nsd_binary().is_some(), "NSD is not installed");
    let work = tempfile::tempdir().unwrap();
    let zones = work.path().join("zones");
    std::fs::create_dir_all(zones.join("includes")).unwrap();
    for f in ["diff.test", "other.test"] {
        std::fs::copy(Path::new(DATA).join("zones").join(f), zones.join(f)).unwrap();
    }
    for e in std::fs::read_dir(Path::new(DATA).join("zones/includes")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), zones.join("includes").join(e.file_name())).unwrap();
    }
    std::fs::write(work.path().join("xfr.key"), format!("{XFR_SECRET}\n")).unwrap();
    // One policy name: the secondary gets the answer of a client with no location.
    with_shipped_geoip(work.path());
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(
        work.path().join("policies/p.yaml"),
        "version: 1\nregions:\n  - { name: eu-west, location: { lat: 53.35, lon: -6.26 }, a: [198.51.100.10], aaaa: [\"2001:db8:1::10\"] }\n  - { name: us-east, location: { lat: 39.0, lon: -77.5 }, a: [203.0.113.10], aaaa: [\"2001:db8:2::10\"] }\npolicies:\n  - { name: xfr-policy.diff.test, method: nearest, ttl: 30 }\n",
    )
    .unwrap();
    let nsd_port = free_port();
    let config = work.path().join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nzones: {}\nhealth:\n  state_file: null\ndns:\n  udp_sockets_per_address: 1\ntransfer:\n  tsig_keys: {{ xfr-key: {{ algorithm: hmac-sha256, secret_file: xfr.key }} }}\n  allow: [{{ from: [\"127.0.0.1/32\"], key: xfr-key }}]\n  notify: [\"127.0.0.1:{nsd_port}\"]\n",
            zones.display()
        ),
    )
    .unwrap();
    let meridian = Meridian::start(&config);

    let secondary = work.path().join("secondary");
    std::fs::create_dir_all(&secondary).unwrap();
    let mut conf = nsd_server(&secondary, &secondary, nsd_port);
    conf.push_str(&format!(
        "key:\n  name: xfr-key\n  algorithm: hmac-sha256\n  secret: \"{XFR_SECRET}\"\n"
    ));
    for zone in ["diff.test", "other.test"] {
        conf.push_str(&format!(
            "zone:\n  name: {zone}\n  zonefile: {zone}.zone\n  request-xfr: AXFR 127.0.0.1@{p} xfr-key\n  allow-notify: 127.0.0.1 xfr-key\n",
            p = meridian.addr.port()
        ));
    }
    let nsd = run_nsd(&secondary, &conf, nsd_port, "diff.test.");
    let nsd_addr: SocketAddr = format!("127.0.0.1:{nsd_port}").parse().unwrap();
    // other.test may land a moment after diff.test.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && udp(nsd_addr, &query_bytes("other.test.", RecordType::SOA, None))
            .answers
            .is_empty()
    {
        std::thread::sleep(Duration::from_millis(100));
    }

    let cases = cases();
    let mut diffs = Vec::new();
    for c in &cases {
        let theirs = ask(nsd_addr, c);
        let ours = ask(meridian.addr, c);
        diffs.extend(compare(c, nsd_addr, &theirs, &ours));
    }
    assert!(
        diffs.is_empty(),
        "{} of {} queries differ between NSD as secondary and Meridian:\n{}\nmeridian log:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n"),
        meridian.log()
    );
    // Loopback has no location: Meridian's own answer here is the no-location one.
    for t in [RecordType::A, RecordType::AAAA] {
        let q = query_bytes("xfr-policy.diff.test.", t, Some(1232));
        let (theirs, ours) = (udp(nsd_addr, &q), udp(meridian.addr, &q));
        let rrs = |m: &Message| set(&m.answers, |_| true);
        assert!(!rrs(&ours).is_empty(), "{t}: no answer from meridian");
        assert_eq!(rrs(&theirs), rrs(&ours), "{t} at the policy name");
    }
    assert!(
        meridian.log().contains("zone transfer") && meridian.log().contains("result=\"sent\""),
        "{}",
        meridian.log()
    );

    // A new serial and record: the reload's NOTIFY brings them to NSD within seconds.
    let file = zones.join("diff.test");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("2026112201", "2026112202");
    std::fs::write(
        &file,
        format!("{text}\nnotified 300 IN TXT \"after the notify\"\n"),
    )
    .unwrap();
    let pid = meridian.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let asked = query_bytes("notified.diff.test.", RecordType::TXT, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = false;
    while Instant::now() < deadline {
        if !udp(nsd_addr, &asked).answers.is_empty() {
            got = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        got,
        "NSD did not pick up serial 2026112202 after the reload's NOTIFY\nmeridian log:\n{}\nnsd log:\n{}",
        meridian.log(),
        std::fs::read_to_string(secondary.join("nsd.log")).unwrap_or_default()
    );
    assert!(
        meridian.log().contains("notify acknowledged"),
        "{}",
        meridian.log()
    );

    // Only the right key from an allowed source gets the zone.
    let good = format!("hmac-sha256:xfr-key:{XFR_SECRET}");
    let ok = dig_axfr(meridian.addr, "diff.test", &["-y", &good]);
    assert!(ok.contains("XFR size"), "{ok}");
    assert!(ok.contains("notified.diff.test."), "{ok}");
    let wrong = "hmac-sha256:xfr-key:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for (what, args) in [
        ("wrong key", vec!["-y", wrong]),
        ("no key", vec![]),
        ("source not allowed", vec!["-b", "127.0.0.2", "-y", &good]),
    ] {
        let out = dig_axfr(meridian.addr, "diff.test", &args);
        assert!(
            out.contains("Transfer failed") && !out.contains("IN\tSOA"),
            "{what}: {out}"
        );
    }
    let (_, metrics) = http(meridian.http, "GET", "/metrics", &[], "");
    for result in ["sent", "bad_tsig", "refused"] {
        assert!(
            metrics.contains(&format!("result=\"{result}\"")),
            "meridian_transfers_total has no {result}:\n{metrics}"
        );
    }
    drop(nsd);
}
