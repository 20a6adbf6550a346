//! The security review's findings, as tests on the real binary: admin writes need the
//! token (missing or wrong: 401, nothing changes), request bodies are bounded, neither
//! the admin token nor the cluster key appears in the status, the metrics or the log;
//! ANY gets one RRset (RFC 8482), and a zone not served gets REFUSED with nothing in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
@    MX  10 mail
@    TXT \"v=spf1 -all\"
ns1  A   192.0.2.53
mail A   192.0.2.25
";
const TOKEN: &str = "review-admin-token-7f3a9c";
const KEY: &str = "review-cluster-key-5e1d0b2a";

#[test]
fn secrets_stay_secret_writes_need_the_token_and_bodies_are_bounded() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        "version: 1\nregions:\n  - { name: eu-west, location: { lat: 53.35, lon: -6.26 }, a: [198.51.100.10] }\npolicies:\n  - { name: www.example.test, method: nearest }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("cluster.key"), KEY).unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        format!(
            "version: 1\ndns:\n  udp_sockets_per_address: 1\nhttp:\n  admin_token: {TOKEN}\nhealth:\n  startup_wait: 1s\ncluster:\n  instance: review\n  listen: \"127.0.0.1:{}\"\n  secret_file: cluster.key\n",
            free_port()
        ),
    )
    .unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let drain = "/api/v1/regions/eu-west/drain";
    assert_eq!(http(m.http, "POST", drain, &[], "").0, 401);
    assert_eq!(
        http(
            m.http,
            "POST",
            drain,
            &[("Authorization", "Bearer wrong")],
            ""
        )
        .0,
        401
    );
    let auth = format!("Bearer {TOKEN}");
    let huge = format!("{{\"reason\":\"{}\"}}", "x".repeat(1024 * 1024));
    let (code, _) = http(m.http, "POST", drain, &[("Authorization", &auth)], &huge);
    assert_eq!(code, 413, "a 1 MB body is refused");
    let (_, status) = http(m.http, "GET", "/api/v1/status", &[], "");
    assert!(
        status.contains("\"override\":null"),
        "the refused request changed nothing: {status}"
    );
    let (code, _) = http(
        m.http,
        "POST",
        drain,
        &[("Authorization", &auth)],
        "{\"reason\":\"review\"}",
    );
    assert_eq!(code, 200);
    for path in ["/api/v1/status", "/status", "/metrics"] {
        let body = http(m.http, "GET", path, &[], "").1;
        assert!(
            !body.contains(TOKEN) && !body.contains(KEY),
            "{path} shows a secret"
        );
    }
    let log = m.log();
    assert!(
        !log.contains(TOKEN) && !log.contains(KEY),
        "the log shows a secret:\n{log}"
    );
}

#[test]
fn any_gets_one_rrset_and_zones_not_served_get_refused() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let r = m.udp("example.test.", RecordType::ANY);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let types: std::collections::BTreeSet<RecordType> =
        r.answers.iter().map(|a| a.record_type()).collect();
    assert_eq!(
        types.len(),
        1,
        "one RRset for ANY (RFC 8482): {:?}",
        r.answers
    );
    for name in ["example.org.", "www.example.org.", "test.", "."] {
        let r = m.udp(name, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(
            r.answers.is_empty() && r.authorities.is_empty(),
            "{name}: nothing answered for a zone not served"
        );
    }
}
