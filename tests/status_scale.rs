//! The status API and page with 10 000 policies: summary counts first, policies paged
//! (`?limit=`, `?after=`, `next`), filtered by `?policy=` and `?region=`, answer shares
//! only for the page's policies, and transition records naming a few policies and a
//! count rather than all 10 000, so both stay small.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";

#[test]
fn ten_thousand_policies_keep_the_status_small_and_navigable() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let closed = free_port(); // nothing listens: ap-south goes down, with a transition
    let mut text = format!(
        "version: 1\nregions:\n  - {{ name: us-east, location: {{ lat: 39.04, lon: -77.49 }}, a: [192.0.2.10] }}\n  - {{ name: eu-west, location: {{ lat: 53.35, lon: -6.26 }}, a: [198.51.100.10] }}\n  - name: ap-south\n    location: {{ lat: 19.08, lon: 72.88 }}\n    a: [203.0.113.10]\n    endpoints: [{{ name: web, probe: tcp, address: \"127.0.0.1:{closed}\", interval: 200ms, timeout: 100ms }}]\n    health: {{ fail_consecutive: 1 }}\npolicies:\n"
    );
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{ name: p{i:05}.example.test, method: nearest }}\n"
        ));
    }
    std::fs::write(dir.path().join("policies/many.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 1\nhealth:\n  state_file: null\n  startup_wait: 3s\n",
    )
    .unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    // Every policy answers once, so each has answer shares.
    for i in 0..10_000 {
        let q = query_bytes(&format!("p{i:05}.example.test."), RecordType::A, None);
        let _ = try_udp(m.addr, &q, Duration::from_millis(500));
    }
    let get = |path: &str| {
        let (code, body) = http(m.http, "GET", path, &[], "");
        assert_eq!(code, 200, "{path}: {body}");
        body
    };
    let json = get("/api/v1/status");
    let page = get("/status");
    eprintln!(
        "10 000 policies: /api/v1/status {} bytes, /status {} bytes",
        json.len(),
        page.len()
    );
    assert!(
        json.len() < 100_000,
        "/api/v1/status is {} bytes",
        json.len()
    );
    assert!(page.len() < 150_000, "/status is {} bytes", page.len());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary"]["policies"], 10_000);
    assert_eq!(v["summary"]["regions"], 3);
    assert_eq!(v["summary"]["regions_down"], 1, "{}", v["summary"]);
    assert_eq!(v["policies"].as_array().unwrap().len(), 100);
    assert_eq!(v["policies"][0], "p00000.example.test");
    assert_eq!(v["next"], "p00099.example.test");
    assert_eq!(v["answer_shares"].as_object().unwrap().len(), 100);
    // The transition of ap-south names a few of its 10 000 policies and a count.
    let t = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "ap-south")
        .expect("ap-south's transition");
    let policies = t["policies"].as_str().unwrap();
    assert!(
        policies.len() < 200 && policies.ends_with("and 9995 more"),
        "{policies}"
    );
    assert!(
        page.contains("10000 policies") && page.contains("<details>"),
        "summary and collapsed policies"
    );

    let v: serde_json::Value =
        serde_json::from_str(&get("/api/v1/status?after=p00099.example.test&limit=50")).unwrap();
    let names = v["policies"].as_array().unwrap();
    assert_eq!(
        (names.len(), names[0].as_str()),
        (50, Some("p00100.example.test"))
    );
    assert_eq!(v["next"], "p00149.example.test");
    let v: serde_json::Value =
        serde_json::from_str(&get("/api/v1/status?policy=p05000.example.test")).unwrap();
    assert_eq!(v["policies"], serde_json::json!(["p05000.example.test"]));
    assert_eq!(v["answer_shares"].as_object().unwrap().len(), 1);
    assert!(v.get("next").is_none());
    let v: serde_json::Value =
        serde_json::from_str(&get("/api/v1/status?region=ap-south")).unwrap();
    assert_eq!(v["regions"].as_array().unwrap().len(), 1);
    assert!(
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["region"] == "ap-south")
    );
    assert!(get("/status?region=eu-west").contains("eu-west"));
    // The last page has no `next`.
    let v: serde_json::Value =
        serde_json::from_str(&get("/api/v1/status?after=p09990.example.test")).unwrap();
    assert_eq!(v["policies"].as_array().unwrap().len(), 9);
    assert!(v.get("next").is_none());
}
