//! DNSSEC end to end: keys made with `meridian keygen`, the real server signing the
//! example deployment, and Unbound as a validating resolver in front of it (the key as
//! its trust anchor, ECS forwarded) checking that every kind of answer validates: static
//! data, a policy name from three continents, a CNAME to a policy name, a wildcard,
//! a name that does not exist, a type that does not, and a policy answer after a region
//! is forced down. Then a key rollover, bad key files, the DO bit and truncation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nsd::{nsd_binary, nsd_server, run_nsd};
use common::unbound::Unbound;
use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

const TOKEN: &str = "dnssec-test-token";

fn keygen(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["keygen", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DNSKEY line of the `.key` file keygen printed first.
fn dnskey_line(keygen_out: &str) -> String {
    let key_file = keygen_out.lines().next().unwrap();
    std::fs::read_to_string(key_file)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with(';') && l.contains("DNSKEY"))
        .unwrap()
        .to_string()
}

/// Unbound validating with `anchor` (a DNSKEY line), example.com stubbed to `server`,
/// client subnets forwarded to it.
fn unbound(dir: &Path, anchor: &str, server: SocketAddr) -> Unbound {
    common::unbound::start(dir, server, Some(anchor))
}

/// A query with DO set (and ECS when `client` is given), sent to `addr`.
fn ask(addr: SocketAddr, name: &str, rtype: RecordType, client: Option<&str>) -> Message {
    let mut q = query_msg(name, rtype, None);
    q.metadata.recursion_desired = true;
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.flags_mut().dnssec_ok = true;
    if let Some(c) = client {
        let (ip, len) = c.split_once('/').unwrap();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            ip.parse().unwrap(),
            len.parse().unwrap(),
            0,
        )));
    }
    q.set_edns(e);
    udp(addr, &q.to_vec().unwrap())
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect()
}

/// Asks the resolver and requires a validated (AD) answer.
fn validated(u: &Unbound, name: &str, rtype: RecordType, client: Option<&str>) -> Message {
    let m = ask(u.addr, name, rtype, client);
    assert!(
        m.metadata.authentic_data,
        "{name} {rtype} ({client:?}) did not validate: {:?}\n{m}\nunbound log:\n{}",
        m.metadata.response_code,
        std::fs::read_to_string(&u.log).unwrap_or_default()
    );
    m
}

fn rrsig_tags(m: &Message, covered: RecordType) -> Vec<u16> {
    // Read from the RDATA (RFC 4034 3.1): type covered, then the key tag at octet 16.
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::Unknown { code, rdata } if *code == RecordType::RRSIG => {
                let b = &rdata.anything;
                (u16::from_be_bytes([b[0], b[1]]) == u16::from(covered))
                    .then(|| u16::from_be_bytes([b[16], b[17]]))
            }
            _ => None,
        })
        .collect()
}

fn admin(m: &Meridian, path: &str) -> (u16, String) {
    http(
        m.http,
        "POST",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "{}",
    )
}

fn serve(dir: &Path) -> Meridian {
    Meridian::start_with(
        &dir.join("meridian.yaml"),
        &[],
        &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
    )
}

#[test]
fn a_validating_resolver_validates_static_dynamic_and_negative_answers() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    let out = keygen(&config, &["example.com"]);
    assert!(out.contains("example.com. IN DS "), "{out}");
    // An insecure delegation beside the shipped secure one (lab has a DS).
    let zone = dir.path().join("zones/example.com");
    let text = std::fs::read_to_string(&zone).unwrap();
    std::fs::write(&zone, text + "lab2 IN NS ns.other.net.\n").unwrap();
    let m = serve(dir.path());
    let u = unbound(dir.path(), &dnskey_line(&out), m.addr);

    // Static data, the apex's keys, a delegation's DS.
    let mx = validated(&u, "example.com.", RecordType::MX, None);
    assert_eq!(mx.answers[0].data.to_string(), "10 mail.example.com.");
    validated(&u, "example.com.", RecordType::DNSKEY, None);
    validated(&u, "lab.example.com.", RecordType::DS, None);
    // No DS at lab2: the NSEC at the cut proves it (NS only), and it validates.
    let no_ds = validated(&u, "lab2.example.com.", RecordType::DS, None);
    assert!(no_ds.answers.is_empty(), "{no_ds}");

    // A policy name from three continents: each gets its nearest region, signed.
    let eu = validated(&u, "www.example.com.", RecordType::A, Some("81.2.69.0/24"));
    assert_eq!(addresses(&eu), ["198.51.100.10"]);
    let asia = validated(&u, "www.example.com.", RecordType::A, Some("1.0.16.0/24"));
    assert_eq!(addresses(&asia), ["203.0.113.10"]);
    let us = validated(&u, "www.example.com.", RecordType::AAAA, Some("8.8.8.0/24"));
    assert_eq!(addresses(&us), ["2001:db8:1::10"]);

    // A CNAME to a policy name, and a wildcard.
    let api = validated(&u, "api.example.com.", RecordType::A, Some("81.2.69.0/24"));
    assert!(
        api.answers
            .iter()
            .any(|r| r.record_type() == RecordType::CNAME),
        "{api}"
    );
    assert_eq!(addresses(&api), ["198.51.100.10"]);
    let wild = validated(&u, "anything.apps.example.com.", RecordType::A, None);
    assert_eq!(addresses(&wild), ["192.0.2.100"]);

    // Denial: a name that does not exist, a type that does not (static and policy
    // names), and a wildcard's missing type.
    for (name, t) in [
        ("nope.example.com.", RecordType::A),
        ("mail.example.com.", RecordType::TXT),
        ("www.example.com.", RecordType::TXT),
        ("other.apps.example.com.", RecordType::MX),
    ] {
        let neg = validated(&u, name, t, None);
        assert!(addresses(&neg).is_empty(), "{neg}");
    }

    // eu-west forced down: Europe moves to another region, and that answer validates.
    let (code, body) = admin(&m, "/api/v1/regions/eu-west/force-down");
    assert_eq!(code, 200, "{body}");
    let after = validated(&u, "www.example.com.", RecordType::A, Some("85.214.0.0/24"));
    let a = addresses(&after);
    assert!(
        a == ["192.0.2.10"] || a == ["203.0.113.10"],
        "eu-west is down, got {a:?}"
    );
    // Every policy answer came pre-signed: none was signed while a query waited.
    assert!(
        m.metric("meridian_dnssec_presigned_answers_total")
            .unwrap_or(0.0)
            >= 5.0
    );
    assert_eq!(
        m.metric("meridian_dnssec_inline_signatures_total"),
        Some(0.0)
    );
    let left = m
        .metric("meridian_dnssec_signature_expiry_seconds{zone=\"example.com.\"}")
        .expect("expiry gauge");
    assert!(
        (10.0 * 86_400.0..14.0 * 86_400.0).contains(&left),
        "expiry in {left} s"
    );
}

#[test]
fn a_new_zone_signing_key_takes_over_while_the_resolver_keeps_validating() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    let first = keygen(&config, &["example.com"]);
    let m = serve(dir.path());
    let u = unbound(dir.path(), &dnskey_line(&first), m.addr);
    let tag_of = |out: &str| -> u16 {
        let f = out.lines().next().unwrap();
        f.rsplit('+')
            .next()
            .unwrap()
            .trim_end_matches(".key")
            .parse()
            .unwrap()
    };
    let ksk = tag_of(&first);
    let direct = |name: &str| ask(m.addr, name, RecordType::A, None);
    assert_eq!(
        rrsig_tags(&direct("r0.apps.example.com."), RecordType::A),
        [ksk]
    );

    // A ZSK published now, active in 8 s: the reload publishes it (DNSKEY), the
    // server's own timer switches the signing to it when it activates.
    let second = keygen(
        &config,
        &[
            "example.com",
            "--zsk",
            "--publish",
            "now",
            "--activate",
            "+8s",
        ],
    );
    let zsk = tag_of(&second);
    let (code, body) = admin(&m, "/api/v1/reload");
    assert_eq!(code, 200, "{body}");
    let keys = validated(&u, "example.com.", RecordType::DNSKEY, None);
    assert_eq!(
        keys.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .count(),
        2
    );
    validated(&u, "r1.apps.example.com.", RecordType::A, None);
    assert_eq!(
        rrsig_tags(&direct("r1.apps.example.com."), RecordType::A),
        [ksk]
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tags = rrsig_tags(&direct("r2.apps.example.com."), RecordType::A);
        if tags == [zsk] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ZSK never took over: {tags:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Data now signed by the ZSK only, the DNSKEY RRset still by the KSK the resolver
    // trusts: it validates through the chain.
    let after = validated(&u, "r3.apps.example.com.", RecordType::A, None);
    assert_eq!(rrsig_tags(&after, RecordType::A), [zsk]);
    let eu = validated(&u, "www.example.com.", RecordType::A, Some("81.2.69.0/24"));
    assert_eq!(rrsig_tags(&eu, RecordType::A), [zsk]);
    let keys = ask(m.addr, "example.com.", RecordType::DNSKEY, None);
    assert_eq!(rrsig_tags(&keys, RecordType::DNSKEY), [ksk]);
    assert!(m.log().contains("re-signing"), "{}", m.log());
}

#[test]
fn bad_key_files_are_errors_naming_the_file_and_a_bad_reload_keeps_the_signed_zone() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    let out = keygen(&config, &["example.com"]);
    let keys = dir.path().join("keys");

    // A key for a zone that is not served.
    keygen(&config, &["example.org"]);
    let errors = check_errors(&config);
    assert!(
        errors.contains("Kexample.org.+013+") && errors.contains("not served"),
        "{errors}"
    );
    for f in std::fs::read_dir(&keys).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("Kexample.org") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }

    // An unknown algorithm (RSASHA256, 8) and a key file that does not parse.
    std::fs::write(
        keys.join("Kexample.com.+008+12345.key"),
        "example.com. IN DNSKEY 257 3 8 AwEAAb==\n",
    )
    .unwrap();
    std::fs::write(keys.join("Kexample.com.+008+12345.private"), "x\n").unwrap();
    let errors = check_errors(&config);
    assert!(errors.contains("Kexample.com.+008+12345"), "{errors}");
    assert!(errors.to_lowercase().contains("algorithm"), "{errors}");
    std::fs::remove_file(keys.join("Kexample.com.+008+12345.key")).unwrap();
    std::fs::remove_file(keys.join("Kexample.com.+008+12345.private")).unwrap();

    let m = serve(dir.path());
    let signed = ask(m.addr, "example.com.", RecordType::SOA, None);
    assert_eq!(rrsig_tags(&signed, RecordType::SOA).len(), 1);

    // The running key's file is broken on disk: the reload fails, naming it, and the
    // server keeps answering signed.
    let key_file = out.lines().next().unwrap();
    std::fs::write(key_file, "example.com. IN DNSKEY 257 3 13 not-base64!\n").unwrap();
    let (code, body) = admin(&m, "/api/v1/reload");
    assert_ne!(code, 200, "{body}");
    let name = Path::new(key_file).file_name().unwrap().to_string_lossy();
    assert!(body.contains(&*name), "{body}");
    let still = ask(
        m.addr,
        "www.example.com.",
        RecordType::A,
        Some("81.2.69.0/24"),
    );
    assert_eq!(rrsig_tags(&still, RecordType::A).len(), 1, "{still}");
}

#[test]
fn signatures_go_only_to_do_queries_and_a_large_signed_answer_is_truncated() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    keygen(&config, &["example.com"]);
    let zone = dir.path().join("zones/example.com");
    let mut text = std::fs::read_to_string(&zone).unwrap();
    text.push_str(&format!(
        "big IN TXT \"{}\" \"{}\"\n",
        "a".repeat(200),
        "b".repeat(200)
    ));
    std::fs::write(&zone, text).unwrap();
    let m = serve(dir.path());

    // Without DO: no RRSIG, no DO in the response's OPT.
    let plain = udp(
        m.addr,
        &query_bytes("www.example.com.", RecordType::A, Some(1232)),
    );
    assert!(rrsig_tags(&plain, RecordType::A).is_empty(), "{plain}");
    assert!(!plain.edns.as_ref().unwrap().flags().dnssec_ok);
    let signed = ask(m.addr, "www.example.com.", RecordType::A, None);
    assert_eq!(rrsig_tags(&signed, RecordType::A).len(), 1);
    assert!(signed.edns.as_ref().unwrap().flags().dnssec_ok);

    // Additional data from the signed zone comes with its RRSIGs (RFC 4035 3.1.1).
    let mx = ask(m.addr, "example.com.", RecordType::MX, None);
    let extra: Vec<(String, RecordType)> = mx
        .additionals
        .iter()
        .map(|r| (r.name.to_string(), r.record_type()))
        .collect();
    assert!(
        extra.contains(&("mail.example.com.".into(), RecordType::A))
            && extra.contains(&("mail.example.com.".into(), RecordType::RRSIG)),
        "{mx}"
    );

    // The TXT fits 512 octets unsigned, not with its RRSIG: TC over UDP, whole over TCP.
    let small = |dnssec: bool| {
        let mut q = query_msg("big.example.com.", RecordType::TXT, None);
        let mut e = Edns::new();
        e.set_max_payload(512);
        e.flags_mut().dnssec_ok = dnssec;
        q.set_edns(e);
        q.to_vec().unwrap()
    };
    let unsigned = udp(m.addr, &small(false));
    assert!(!unsigned.metadata.truncation);
    let cut = udp(m.addr, &small(true));
    assert!(cut.metadata.truncation, "{cut}");
    assert!(cut.answers.is_empty());
    let whole = tcp(m.addr, &small(true));
    assert!(!whole.metadata.truncation);
    assert_eq!(rrsig_tags(&whole, RecordType::TXT).len(), 1);

    // A name that does not exist: NOERROR with the NXNAME proof (RFC 9824), NXDOMAIN
    // for a client that sets the CO flag.
    let none = ask(m.addr, "nope.example.com.", RecordType::A, None);
    assert_eq!(
        none.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError
    );
    let nsec = none
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::NSEC)
        .expect("NSEC proof");
    assert_eq!(nsec.name.to_string(), "nope.example.com.");
    // Next name \000.nope.example.com.: the NSEC covers the name and nothing else.
    match &nsec.data {
        RData::Unknown { rdata, .. } => assert!(
            rdata
                .anything
                .starts_with(b"\x01\x00\x04nope\x07example\x03com\x00"),
            "{nsec}"
        ),
        other => panic!("{other:?}"),
    }
    let mut q = query_msg("nope.example.com.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.flags_mut().dnssec_ok = true;
    e.flags_mut().z = 0x4000;
    q.set_edns(e);
    let co = udp(m.addr, &q.to_vec().unwrap());
    assert_eq!(
        co.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
}

/// The serial of the SOA `server` answers for example.com.
fn soa_serial(server: SocketAddr) -> u32 {
    let m = udp(
        server,
        &query_bytes("example.com.", RecordType::SOA, Some(1232)),
    );
    let soa = m
        .answers
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap_or_else(|| panic!("no SOA from {server}: {m}"));
    // "mname rname serial refresh retry expire minimum"
    soa.data
        .to_string()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// The RRSIG RDATAs `server` gives with example.com's SOA (DO query).
fn soa_rrsigs(server: SocketAddr) -> Vec<Vec<u8>> {
    ask(server, "example.com.", RecordType::SOA, None)
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::Unknown { code, rdata } if *code == RecordType::RRSIG => {
                Some(rdata.anything.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every kind of answer, asked through `u`, validates: static data, a policy name's
/// no-location answer, NXDOMAIN, and NODATA at a static, a policy and a wildcard name.
fn everything_validates(u: &Unbound) {
    let mx = validated(u, "example.com.", RecordType::MX, None);
    assert_eq!(mx.answers[0].data.to_string(), "10 mail.example.com.");
    let www = validated(u, "www.example.com.", RecordType::A, None);
    assert_eq!(addresses(&www).len(), 1, "{www}");
    let wild = validated(u, "anything.apps.example.com.", RecordType::A, None);
    assert_eq!(addresses(&wild), ["192.0.2.100"]);
    let nx = validated(u, "nope.example.com.", RecordType::A, None);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx}");
    for (name, t) in [
        ("mail.example.com.", RecordType::TXT),
        ("www.example.com.", RecordType::TXT),
        ("other.apps.example.com.", RecordType::MX),
    ] {
        let neg = validated(u, name, t, None);
        assert_eq!(neg.metadata.response_code, ResponseCode::NoError, "{neg}");
        assert!(neg.answers.is_empty(), "{neg}");
    }
}

/// Issue 29 §3: NSD as a secondary of a signed zone, and Unbound validating through NSD
/// alone (Meridian out of its path). The transfer carries the NSEC chain NSD serves its
/// denials from; a re-sign raises the serial and its NOTIFY brings NSD the new
/// signatures, which validate too.
#[test]
fn a_secondary_of_a_signed_zone_serves_answers_that_validate_before_and_after_a_re_sign() {
    assert!(
        nsd_binary().is_some(),
        "NSD is not installed (apt-get install nsd; .ci/run does it)"
    );
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    let out = keygen(&config, &["example.com"]);
    let nsd_port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "transfer:\n  allow: [{{ from: [\"127.0.0.1/32\"] }}]\n  notify: [\"127.0.0.1:{nsd_port}\"]\ndnssec:\n  signature_validity: 2h\n  refresh: 1h\n"
    ));
    std::fs::write(&config, text).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("dnssec example.com.: a secondary gets serial")
            && report.contains("an NSEC chain over"),
        "{report}"
    );
    let m = serve(dir.path());
    let file_serial = 2026112201u32;
    let served = soa_serial(m.addr);
    assert_ne!(
        served, file_serial,
        "a signed zone serves its signing serial"
    );

    let secondary = dir.path().join("secondary");
    std::fs::create_dir_all(&secondary).unwrap();
    let mut conf = nsd_server(&secondary, &secondary, nsd_port);
    conf.push_str(&format!(
        "zone:\n  name: example.com\n  zonefile: example.com.zone\n  request-xfr: AXFR 127.0.0.1@{p} NOKEY\n  allow-notify: 127.0.0.1 NOKEY\n",
        p = m.addr.port()
    ));
    let _nsd = run_nsd(&secondary, &conf, nsd_port, "example.com.");
    let nsd_addr: SocketAddr = format!("127.0.0.1:{nsd_port}").parse().unwrap();
    assert_eq!(soa_serial(nsd_addr), served);
    let nsec = ask(nsd_addr, "nope.example.com.", RecordType::A, None);
    assert!(
        nsec.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::NSEC),
        "NSD's NXDOMAIN carries an NSEC from the transferred chain: {nsec}"
    );

    let resolver = dir.path().join("resolver");
    std::fs::create_dir_all(&resolver).unwrap();
    let u = unbound(&resolver, &dnskey_line(&out), nsd_addr);
    everything_validates(&u);
    drop(u);

    // A re-sign (SIGHUP rebuilds and re-signs, as the refresh timer does): a higher
    // serial, a NOTIFY, and NSD serves the new signatures.
    let before = soa_rrsigs(nsd_addr);
    std::thread::sleep(Duration::from_millis(1100));
    let pid = m.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while soa_serial(nsd_addr) == served && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let resigned = soa_serial(m.addr);
    assert!(
        resigned > served,
        "re-signing raised the serial: {served} → {resigned}"
    );
    assert_eq!(
        soa_serial(nsd_addr),
        resigned,
        "NSD took the re-signed zone after the NOTIFY\n{}",
        std::fs::read_to_string(secondary.join("nsd.log")).unwrap_or_default()
    );
    let after = soa_rrsigs(nsd_addr);
    assert!(
        !after.is_empty() && after != before,
        "new signatures on NSD"
    );
    // The short validity is what NSD serves: expiry (RFC 4034 3.1, octets 8..12) within 2 h.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for sig in &after {
        let expiry = u64::from(u32::from_be_bytes([sig[8], sig[9], sig[10], sig[11]]));
        assert!(
            expiry > now && expiry <= now + 7200,
            "expiry {expiry}, now {now}"
        );
    }
    let resolver2 = dir.path().join("resolver2");
    std::fs::create_dir_all(&resolver2).unwrap();
    let u2 = unbound(&resolver2, &dnskey_line(&out), nsd_addr);
    everything_validates(&u2);
}
