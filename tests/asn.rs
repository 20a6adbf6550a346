//! Routing by ASN (`geo.asn_database` + geo rules with `asns:`) with the shipped ASN
//! database, residency client sets from a CIDR file, and `meridian query` naming the
//! client's AS and the rule that matched. Bad databases and rules are errors naming the
//! file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use common::*;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";

const POLICIES: &str = "version: 1
regions:
  - { name: us-east, location: { lat: 39.04, lon: -77.49 }, a: [192.0.2.10], labels: { jurisdiction: us } }
  - { name: eu-west, location: { lat: 53.35, lon: -6.26 }, a: [198.51.100.10], labels: { jurisdiction: eu } }
  - { name: cf-edge, location: { lat: 37.77, lon: -122.42 }, a: [203.0.113.13] }
  - { name: goog, location: { lat: 37.42, lon: -122.08 }, a: [203.0.113.15] }
  - { name: office, location: { lat: 52.52, lon: 13.40 }, a: [203.0.113.99] }
policies:
  - name: www.example.test
    method: geo
    geo:
      rules:
        - { cidrs: [1.1.1.0/24], regions: [office] }
        - { asns: [13335], regions: [cf-edge] }
        - { asns: [15169, 36040], regions: [goog] }
        - { countries: [GB], regions: [eu-west] }
      default: [us-east]
  - name: app.example.test
    method: nearest
    regions: [us-east, eu-west]
    residency:
      - { clients: { cidrs_file: nets/eu-staff.txt }, regions: { jurisdiction: eu } }
";

fn deployment(config_geo: &str) -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/asn.mmdb"),
        dir.path().join("geoip/asn.mmdb"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("policies/nets")).unwrap();
    std::fs::write(dir.path().join("policies/web.yaml"), POLICIES).unwrap();
    std::fs::write(
        dir.path().join("policies/nets/eu-staff.txt"),
        "# staff VPN egress in the US whose data must stay in the EU\n8.8.4.0/24\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        format!(
            "version: 1\ndns:\n  udp_sockets_per_address: 1\nhealth:\n  state_file: null\n{config_geo}"
        ),
    )
    .unwrap();
    dir
}

/// (first address, ECS scope) for a client subnet.
fn answer(m: &Meridian, name: &str, client: &str, len: u8) -> (String, u8) {
    let r = ecs_ask(m.addr, name, RecordType::A, client, len);
    (first_rdata(&r), ecs_scope(&r))
}

#[test]
fn geo_rules_route_by_asn_after_cidrs_and_before_countries() {
    let dir = deployment("geo:\n  asn_database: asn.mmdb\n");
    let config = dir.path().join("meridian.yaml");
    let m = Meridian::start(&config);
    let www = "www.example.test.";
    // 1.0.0.0/24 is Cloudflare's (AS13335), 1.1.1.0/24 too, but a CIDR rule is more
    // specific than an ASN rule.
    let (a, scope) = answer(&m, www, "1.0.0.0", 24);
    assert_eq!(a, "203.0.113.13");
    assert!(scope <= 24, "scope /{scope}");
    assert_eq!(answer(&m, www, "1.1.1.0", 24).0, "203.0.113.99");
    // Google (AS15169) over IPv4 and IPv6.
    assert_eq!(answer(&m, www, "8.8.8.0", 24).0, "203.0.113.15");
    assert_eq!(answer(&m, www, "2001:4860:4860::", 48).0, "203.0.113.15");
    // A British ISP (no rule for its AS): the country rule; elsewhere the default.
    assert_eq!(answer(&m, www, "81.2.69.0", 24).0, "198.51.100.10");
    assert_eq!(answer(&m, www, "9.9.9.0", 24).0, "192.0.2.10");

    // Residency from a CIDR file: a US network kept in the EU.
    let app = "app.example.test.";
    assert_eq!(answer(&m, app, "8.8.4.0", 24).0, "198.51.100.10");
    assert_eq!(answer(&m, app, "9.9.9.0", 24).0, "192.0.2.10");

    // `meridian query` names the AS and the rule, and agrees with the server.
    let out = Command::new(BIN)
        .args(["query", "--config"])
        .arg(&config)
        .args([www, "--client", "1.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("asn:       AS13335 Cloudflare"), "{text}");
    assert!(text.contains("geo rule for AS13335"), "{text}");
    assert!(text.contains("203.0.113.13"), "{text}");
    // Any client's AS is shown, also one no rule names.
    let out = Command::new(BIN)
        .args(["query", "--config"])
        .arg(&config)
        .args([www, "--client", "9.9.9.9", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["asn"]["number"], 19281, "{v}");
    assert!(
        v["reasons"].to_string().contains("geo default"),
        "{}",
        v["reasons"]
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("asn database") && text.contains("3 ASNs named by geo rules"),
        "{text}"
    );
}

#[test]
fn an_asn_rule_without_an_asn_database_or_with_the_wrong_one_is_an_error() {
    let dir = deployment("");
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("web.yaml:14:20: asns: AS13335 needs an ASN database (geo.asn_database"),
        "{text}"
    );

    let dir = deployment("geo:\n  asn_database: geo-whois-asn-country.mmdb\n");
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("geo-whois-asn-country.mmdb")
            && text.contains("not an ASN database (GeoLite2-ASN schema)"),
        "{text}"
    );

    let dir = deployment("geo:\n  asn_database: missing.mmdb\n");
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(text.contains("missing.mmdb"), "{text}");

    let dir = deployment("geo:\n  asn_database: asn.mmdb\n");
    let path = dir.path().join("policies/web.yaml");
    let bad = POLICIES.replace("asns: [13335]", "asns: [0]");
    std::fs::write(&path, bad).unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("web.yaml:14:20: asns: 0 is a reserved AS number"),
        "{text}"
    );
    std::fs::write(&path, POLICIES).unwrap();
    std::fs::write(
        dir.path().join("policies/nets/eu-staff.txt"),
        "8.8.4.0/33\n",
    )
    .unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(text.contains("eu-staff.txt:1:"), "{text}");
    std::fs::remove_file(dir.path().join("policies/nets/eu-staff.txt")).unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("web.yaml:") && text.contains("cidrs_file") && text.contains("eu-staff.txt"),
        "{text}"
    );
}
