//! Routing by where a tenant's data lives (`method: home`), on the real binary with a
//! map of 100 000 tenants across three jurisdictions: every tenant answered with its
//! home; eu-west forced down moves EU tenants to eu-central and never to a US region; a
//! US tenant whose allowed regions are all down gets SERVFAIL; the map edited and
//! reloaded under dnsperf loses no query; `meridian admin tenant set` persists across a
//! restart; a signed tenant answer validates through Unbound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;

const TOKEN: &str = "tenants-test-token";

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n";

const POLICIES: &str = r#"version: 1
regions:
  - { name: us-east, location: { lat: 39.04, lon: -77.49 }, a: [192.0.2.10] }
  - { name: us-west, location: { lat: 45.60, lon: -121.18 }, a: [192.0.2.20] }
  - { name: eu-west, location: { lat: 53.35, lon: -6.26 }, a: [198.51.100.10] }
  - { name: eu-central, location: { lat: 50.11, lon: 8.68 }, a: [198.51.100.20] }
  - { name: ap-south, location: { lat: 19.08, lon: 72.88 }, a: [203.0.113.10] }
policies:
  - name: "*.tenants.example.com"
    method: home
    tenants: tenants.csv
    ttl: 60
"#;

fn address(region: &str) -> &'static str {
    match region {
        "us-east" => "192.0.2.10",
        "us-west" => "192.0.2.20",
        "eu-west" => "198.51.100.10",
        "eu-central" => "198.51.100.20",
        "ap-south" => "203.0.113.10",
        _ => "?",
    }
}

/// Tenant i: EU (home eu-west or eu-central, allowed both), US (us-east or us-west,
/// allowed both) or IN (ap-south, allowed only there), a third each.
fn tenant(i: usize) -> (String, &'static str, &'static str) {
    let name = format!("t{i:06}");
    match i % 6 {
        0 => (name, "eu-west", "eu-west eu-central"),
        1 => (name, "eu-central", "eu-west eu-central"),
        2 => (name, "us-east", "us-east us-west"),
        3 => (name, "us-west", "us-east us-west"),
        _ => (name, "ap-south", "ap-south"),
    }
}

const TENANTS: usize = 100_000;

fn write_map(dir: &Path) {
    let mut csv = String::from("tenant,home,allowed,move_to,move_at\n");
    for i in 0..TENANTS {
        let (n, home, allowed) = tenant(i);
        csv.push_str(&format!("{n},{home},{allowed},,\n"));
    }
    std::fs::write(dir.join("policies/tenants.csv"), csv).unwrap();
}

fn setup() -> tempfile::TempDir {
    let dir = deployment(&[("example.com", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/tenants.yaml"), POLICIES).unwrap();
    write_map(dir.path());
    dir
}

fn serve(dir: &Path) -> Meridian {
    Meridian::start_with(
        &dir.join("meridian.yaml"),
        &[],
        &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
    )
}

fn name(t: &str) -> String {
    format!("{t}.tenants.example.com.")
}

/// Every one of `names` asked over UDP, many in flight at once (each reply matched by
/// its ID): (rcode, first address) per name.
fn ask_all(server: SocketAddr, names: &[String]) -> Vec<(ResponseCode, String)> {
    let mut out = vec![(ResponseCode::ServFail, String::from("(no reply)")); names.len()];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut pending: Vec<usize> = (0..names.len()).collect();
    for _round in 0..5 {
        for chunk in pending.chunks(200) {
            for &i in chunk {
                let mut q = query_msg(&names[i], RecordType::A, None);
                q.metadata.id = (i % 65_536) as u16;
                let mut e = Edns::new();
                e.set_max_payload(1232);
                q.set_edns(e);
                sock.send_to(&q.to_vec().unwrap(), server).unwrap();
            }
            let mut buf = [0u8; 1500];
            let mut got = 0;
            while got < chunk.len() {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    break;
                };
                let Ok(m) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(&i) = chunk
                    .iter()
                    .find(|&&i| (i % 65_536) as u16 == m.metadata.id)
                else {
                    continue;
                };
                let a = m
                    .answers
                    .first()
                    .map(|r| r.data.to_string())
                    .unwrap_or_default();
                out[i] = (m.metadata.response_code, a);
                got += 1;
            }
        }
        pending.retain(|&i| out[i].1 == "(no reply)");
        if pending.is_empty() {
            break;
        }
    }
    assert!(
        pending.is_empty(),
        "{} queries never answered",
        pending.len()
    );
    out
}

fn admin(m: &Meridian, method: &str, path: &str, body: &str) -> (u16, String) {
    http(
        m.http,
        method,
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        body,
    )
}

#[test]
fn every_tenant_gets_its_home_and_never_crosses_its_residency() {
    let dir = setup();
    let m = serve(dir.path());
    let names: Vec<String> = (0..TENANTS).map(|i| name(&tenant(i).0)).collect();
    let t = Instant::now();
    let got = ask_all(m.addr, &names);
    eprintln!("{TENANTS} tenants asked in {:?}", t.elapsed());
    for (i, (rcode, a)) in got.iter().enumerate() {
        let (n, home, _) = tenant(i);
        assert_eq!(
            (*rcode, a.as_str()),
            (ResponseCode::NoError, address(home)),
            "{n}"
        );
    }
    // The answer holds for every client: scope 0 whatever the client subnet.
    let r = ecs_ask(m.addr, &name("t000000"), RecordType::A, UK, 24);
    assert_eq!(
        (first_rdata(&r), ecs_scope(&r)),
        (address("eu-west").to_string(), 0)
    );

    // eu-west out: its tenants go to eu-central, never to a US region.
    let (code, body) = admin(&m, "POST", "/api/v1/regions/eu-west/force-down", "{}");
    assert_eq!(code, 200, "{body}");
    let eu: Vec<usize> = (0..TENANTS).filter(|i| i % 6 < 2).collect();
    let eu_names: Vec<String> = eu.iter().map(|&i| names[i].clone()).collect();
    for (k, (rcode, a)) in ask_all(m.addr, &eu_names).iter().enumerate() {
        assert_eq!(
            (*rcode, a.as_str()),
            (ResponseCode::NoError, address("eu-central")),
            "{}",
            eu_names[k]
        );
    }
    assert_eq!(
        m.metric("meridian_tenant_away_from_home"),
        Some(TENANTS.div_ceil(6) as f64),
        "the eu-west tenants are away from home"
    );
    assert!(
        m.metric("meridian_tenant_answers_total{region=\"eu-central\"}")
            .unwrap()
            > 0.0
    );
    // The API lists the maps and the tenants away from home, paged.
    let (_, body) = http(m.http, "GET", "/api/v1/tenants?limit=3", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["maps"][0]["tenants"], TENANTS);
    assert_eq!(
        v["away"],
        serde_json::json!(["t000000", "t000006", "t000012"]),
        "{v}"
    );
    let (_, body) = http(
        m.http,
        "GET",
        "/api/v1/tenants?limit=3&after=t000012",
        &[],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["away"][0], "t000018", "{v}");
    let (_, body) = http(m.http, "GET", "/api/v1/status", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["tenants"][0]["away_from_home"],
        TENANTS.div_ceil(6),
        "{}",
        v["tenants"]
    );
    let (_, page) = http(m.http, "GET", "/status", &[], "");
    assert!(
        page.contains("<h2>Tenants</h2>") && page.contains("<b>16667</b>"),
        "{page}"
    );
    // Both EU regions out: SERVFAIL (residency fails closed), not a US answer.
    admin(&m, "POST", "/api/v1/regions/eu-central/force-down", "{}");
    let r = m.udp(&name("t000001"), RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // A US tenant whose allowed regions are both out: SERVFAIL too.
    admin(&m, "POST", "/api/v1/regions/us-east/force-down", "{}");
    admin(&m, "POST", "/api/v1/regions/us-west/force-down", "{}");
    let r = m.udp(&name("t000002"), RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // The IN tenants never saw any of it.
    let r = m.udp(&name("t000004"), RecordType::A);
    assert_eq!(first_rdata(&r), address("ap-south"));
    // Unknown tenants follow `unknown: nearest` (the default), from the client's place.
    let r = ecs_ask(m.addr, &name("nobody"), RecordType::A, "1.1.1.0", 24);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn the_map_changes_under_load_without_losing_a_query_and_an_api_change_persists() {
    let dir = setup();
    let m = serve(dir.path());
    let queries = dir.path().join("queries.txt");
    let mut q = String::new();
    for i in (0..TENANTS).step_by(97) {
        q.push_str(&format!("{} A\n", name(&tenant(i).0)));
    }
    std::fs::write(&queries, q).unwrap();
    let perf = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &m.addr.port().to_string(),
            "-l",
            "8",
            "-Q",
            "2000",
            "-c",
            "4",
            "-d",
        ])
        .arg(&queries)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsperf (Debian package dnsperf)");
    std::thread::sleep(Duration::from_secs(1));
    // One home changed in the file; the server notices the file changed and reloads.
    let csv = dir.path().join("policies/tenants.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace(
            "t000000,eu-west,eu-west eu-central,,",
            "t000000,eu-central,eu-west eu-central,,",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    while first_rdata(&m.udp(&name("t000000"), RecordType::A)) != address("eu-central") {
        assert!(
            Instant::now() < deadline,
            "the change never showed:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = perf.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    dnsperf_every_answer_noerror(&text, 5_000);
    assert!(
        m.log().contains("a tenant map changed on disk: reloading"),
        "{}",
        m.log()
    );

    // A bad line: the reload is refused naming the line, the running map is kept.
    let good = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, format!("{good}bad_tenant,eu-west,,,\n")).unwrap();
    let (code, body) = admin(&m, "POST", "/api/v1/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(&format!(
            "tenants.csv:{}: tenant \\\"bad_tenant\\\" is not a DNS label",
            TENANTS + 2
        )),
        "{body}"
    );
    assert_eq!(
        first_rdata(&m.udp(&name("t000000"), RecordType::A)),
        address("eu-central")
    );
    std::fs::write(&csv, &good).unwrap();

    // `meridian admin tenant set`: the file is rewritten, and a restart keeps it.
    let out = Command::new(BIN)
        .args([
            "admin", "tenant", "set", "t000002", "--home", "us-west", "--config",
        ])
        .arg(dir.path().join("meridian.yaml"))
        .args(["--http-listen", &m.http.to_string()])
        .env("MERIDIAN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        first_rdata(&m.udp(&name("t000002"), RecordType::A)),
        address("us-west")
    );
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .contains("\nt000002,us-west,us-east us-west,,\n")
    );
    drop(m);
    let m = serve(dir.path());
    assert_eq!(
        first_rdata(&m.udp(&name("t000002"), RecordType::A)),
        address("us-west")
    );
    // A change the map refuses (an unknown region) is an error and leaves the file.
    let before = std::fs::read_to_string(&csv).unwrap();
    let (code, body) = admin(&m, "PUT", "/api/v1/tenants/t000003", r#"{"home": "mars"}"#);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown region \\\"mars\\\""), "{body}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before);
    // A value that would end the CSV field or line is refused before the file is touched.
    let (code, body) = admin(
        &m,
        "PUT",
        "/api/v1/tenants/t000003",
        r#"{"home": "us-east\nevil,us-east,,,"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before);
    // A planned move, and a delete.
    let (code, body) = admin(
        &m,
        "PUT",
        "/api/v1/tenants/t000003",
        r#"{"home": "us-east", "at": "2099-01-01T00:00:00Z"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"move_to\":\"us-east\""), "{body}");
    assert_eq!(
        first_rdata(&m.udp(&name("t000003"), RecordType::A)),
        address("us-west"),
        "not yet"
    );
    let (code, _) = admin(&m, "DELETE", "/api/v1/tenants/t000003", "");
    assert_eq!(code, 200);
    let (code, _) = http(m.http, "GET", "/api/v1/tenants/t000003", &[], "");
    assert_eq!(code, 404);
}

#[test]
fn a_signed_tenant_answer_validates_through_unbound() {
    let dir = setup();
    let config = dir.path().join("meridian.yaml");
    let out = Command::new(BIN)
        .args(["keygen", "--config"])
        .arg(&config)
        .arg("example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_file = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let anchor = std::fs::read_to_string(key_file)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with(';') && l.contains("DNSKEY"))
        .unwrap()
        .to_string();
    let m = serve(dir.path());
    let u = common::unbound::start(dir.path(), m.addr, Some(&anchor));
    for (t, home) in [
        ("t000000", "eu-west"),
        ("t000003", "us-west"),
        ("t000004", "ap-south"),
    ] {
        let mut q = query_msg(&name(t), RecordType::A, None);
        q.metadata.recursion_desired = true;
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.flags_mut().dnssec_ok = true;
        q.set_edns(e);
        let r = udp(u.addr, &q.to_vec().unwrap());
        assert!(
            r.metadata.authentic_data,
            "{t} did not validate: {r}\n{}",
            std::fs::read_to_string(&u.log).unwrap_or_default()
        );
        assert_eq!(first_rdata(&r), address(home));
    }
    // One signature per distinct answer set, not per tenant: the signing tables stay
    // small with 100 000 tenants.
    assert_eq!(
        m.metric("meridian_dnssec_inline_signatures_total"),
        Some(0.0)
    );
}
