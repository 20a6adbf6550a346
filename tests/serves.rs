//! Health per answered address: a region with several servers answers the addresses of
//! the ones that are up (`serves:`), stays up while `min_up` endpoints are, and orders
//! its addresses as `order:` says. Real backends that fail, real queries over UDP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::httpd::{Httpd, Mode};
use common::*;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";

fn deployment(regions: &str) -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1\nregions:\n{regions}  - name: us-east\n    location: {{ lat: 39.04, lon: -77.49 }}\n    a: [192.0.2.10]\npolicies:\n  - {{ name: www.example.test, method: nearest, ttl: 30 }}\n  - {{ name: all.example.test, method: nearest, ttl: 30, all_down: fail_open, regions: [eu-west] }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 1\nhealth:\n  state_file: null\n  startup_wait: 5s\nhttp:\n  admin_token: t0ken\n",
    )
    .unwrap();
    dir
}

/// The A records a client in the UK gets, in the order answered.
fn uk(m: &Meridian, name: &str) -> Vec<String> {
    rdatas(&ecs_ask(m.addr, name, RecordType::A, UK, 24))
}

fn set_of(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn wait(m: &Meridian, name: &str, want: &[&str]) -> Duration {
    let start = Instant::now();
    let want = set_of(want);
    loop {
        let got: BTreeSet<String> = uk(m, name).into_iter().collect();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name}: {got:?}, not {want:?}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_dead_server_leaves_the_answers_while_its_region_keeps_answering_the_others() {
    let (web1, web2) = (Httpd::start(), Httpd::start());
    let health =
        "{ window: 4, fail_consecutive: 2, recover_consecutive: 2, cooldown: 1s, min_up: 1 }";
    let dir = deployment(&format!(
        "  - name: eu-west\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [198.51.100.10, 198.51.100.11, 198.51.100.12]\n    endpoints:\n      - {{ name: web1, probe: http, address: \"{}\", path: /healthz, interval: 200ms, timeout: 150ms, serves: [198.51.100.10] }}\n      - {{ name: web2, probe: http, address: \"{}\", path: /healthz, interval: 200ms, timeout: 150ms, serves: [198.51.100.11] }}\n    health: {health}\n",
        web1.addr, web2.addr
    ));
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let every = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
    wait(&m, "www.example.test.", &every);

    // web1 fails: its address leaves, the region keeps answering the rest.
    web1.set(Mode::Unavailable);
    let took = wait(&m, "www.example.test.", &["198.51.100.11", "198.51.100.12"]);
    println!("web1 down: 198.51.100.10 left the answers in {took:?}");
    let (_, status) = http(m.http, "GET", "/api/v1/status?region=eu-west", &[], "");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let region = &v["regions"][0];
    assert_eq!(region["effective"], "up", "{status}");
    let addresses = region["addresses"].as_array().unwrap();
    let answered: Vec<(String, bool, String)> = addresses
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_string(),
                a["answered"].as_bool().unwrap(),
                a["served_by"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            ("198.51.100.10".into(), false, "[\"web1\"]".into()),
            ("198.51.100.11".into(), true, "[\"web2\"]".into()),
            ("198.51.100.12".into(), true, "null".into()),
        ],
        "{status}"
    );
    let (_, page) = http(m.http, "GET", "/status", &[], "");
    assert!(page.contains("not answered: 198.51.100.10"), "{page}");

    // Both fail: with min_up 1 the region is down, the answer moves to us-east.
    web2.set(Mode::Refuse);
    wait(&m, "www.example.test.", &["192.0.2.10"]);
    // Fail-open answers every address, as if all servers were up.
    wait(&m, "all.example.test.", &every);

    // web1 comes back (after the 1 s cooldown): the region returns with its address.
    web1.set(Mode::Ok);
    wait(&m, "www.example.test.", &["198.51.100.10", "198.51.100.12"]);
    web2.set(Mode::Ok);
    wait(&m, "www.example.test.", &every);

    // Draining one server through the API takes only its address out.
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/regions/eu-west/endpoints/web2/drain",
        &[("Authorization", "Bearer t0ken")],
        "{\"reason\": \"replace disk\"}",
    );
    assert_eq!(code, 200, "{body}");
    wait(&m, "www.example.test.", &["198.51.100.10", "198.51.100.12"]);
}

/// The orders a hundred answers came in.
fn orders(m: &Meridian, name: &str) -> Vec<Vec<String>> {
    (0..100).map(|_| uk(m, name)).collect()
}

#[test]
fn order_fixed_rotate_and_shuffle_set_the_order_of_a_regions_addresses() {
    let region = |name: &str, order: &str, net: u8| {
        format!(
            "  - name: {name}\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [198.51.{net}.1, 198.51.{net}.2, 198.51.{net}.3, 198.51.{net}.4]\n    order: {order}\n"
        )
    };
    let dir = deployment(&format!(
        "{}{}{}",
        region("eu-west", "fixed", 100),
        region("eu-rot", "rotate", 101),
        region("eu-shuf", "shuffle", 102)
    ));
    let policies = "  - { name: rot.example.test, method: failover, regions: [eu-rot] }\n  - { name: shuf.example.test, method: failover, regions: [eu-shuf] }\n";
    let path = dir.path().join("policies/web.yaml");
    let text = std::fs::read_to_string(&path).unwrap() + policies;
    std::fs::write(&path, text).unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let listed =
        |net: u8| -> Vec<String> { (1..=4).map(|i| format!("198.51.{net}.{i}")).collect() };
    let rotations = |l: Vec<String>| -> BTreeSet<Vec<String>> {
        (0..l.len())
            .map(|k| {
                let mut r = l.clone();
                r.rotate_left(k);
                r
            })
            .collect()
    };

    let fixed: BTreeSet<Vec<String>> = orders(&m, "www.example.test.").into_iter().collect();
    assert_eq!(fixed, BTreeSet::from([listed(100)]));

    let rotated = orders(&m, "rot.example.test.");
    let seen: BTreeSet<Vec<String>> = rotated.iter().cloned().collect();
    assert_eq!(
        seen,
        rotations(listed(101)),
        "every rotation and nothing else"
    );
    // Consecutive answers (one serving thread) start one address further on.
    for pair in rotated.windows(2) {
        let mut next = pair[0].clone();
        next.rotate_left(1);
        assert_eq!(pair[1], next, "{rotated:?}");
    }

    let shuffled: BTreeSet<Vec<String>> = orders(&m, "shuf.example.test.").into_iter().collect();
    let everyone: BTreeSet<String> = listed(102).into_iter().collect();
    assert!(
        shuffled
            .iter()
            .all(|o| o.iter().cloned().collect::<BTreeSet<_>>() == everyone),
        "{shuffled:?}"
    );
    assert!(
        shuffled.difference(&rotations(listed(102))).count() > 0 && shuffled.len() > 8,
        "shuffle gives orders rotation cannot: {shuffled:?}"
    );
}

#[test]
fn bad_serves_and_duplicate_addresses_are_errors_at_their_position() {
    for (region, says) in [
        (
            "  - name: eu-west\n    location: { lat: 53.35, lon: -6.26 }\n    a: [198.51.100.10]\n    endpoints:\n      - { name: web1, probe: tcp, address: \"127.0.0.1:9\", serves: [198.51.100.99] }\n",
            "web.yaml:7:68: serves: 198.51.100.99 is not one of region eu-west's addresses",
        ),
        (
            "  - name: eu-west\n    location: { lat: 53.35, lon: -6.26 }\n    a: [198.51.100.10]\n    endpoints:\n      - { name: web1, probe: tcp, address: \"127.0.0.1:9\", serves: [web-1] }\n",
            "web.yaml:7:68: serves: \"web-1\" is not an IP address",
        ),
        (
            "  - name: eu-west\n    location: { lat: 53.35, lon: -6.26 }\n    a: [198.51.100.10, 198.51.100.11, 198.51.100.10]\n",
            "web.yaml:5:39: address 198.51.100.10 is listed twice in region eu-west",
        ),
        (
            "  - name: eu-west\n    location: { lat: 53.35, lon: -6.26 }\n    cname: eu.cdn.example.net.\n    endpoints:\n      - { name: web1, probe: tcp, address: \"127.0.0.1:9\", serves: [198.51.100.10] }\n",
            "serves: 198.51.100.10 is not one of region eu-west's addresses",
        ),
        (
            "  - name: eu-west\n    location: { lat: 53.35, lon: -6.26 }\n    a: [198.51.100.10]\n    order: random\n",
            "web.yaml:6:12",
        ),
    ] {
        let dir = deployment(region);
        let text = check_errors(&dir.path().join("meridian.yaml"));
        assert!(text.contains(says), "{region}\n{text}");
    }
}
