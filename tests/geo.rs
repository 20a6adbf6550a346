//! Traffic policies end to end: the shipped example deployment (real GeoIP database)
//! queried with EDNS Client Subnet from real-world networks on several continents, over
//! IPv4 and IPv6, and `meridian query` asked the same questions: both must agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::IpAddr;
use std::process::Command;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};

fn ecs_query(name: &str, rtype: RecordType, client: IpAddr, prefix: u8) -> Vec<u8> {
    let mut m = query_msg(name, rtype, None);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(client, prefix, 0)));
    m.set_edns(e);
    m.to_vec().unwrap()
}

fn scope_of(m: &Message) -> Option<(u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn explain(name: &str, qtype: &str, client: &str, down: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["query", "--config"])
        .arg(example_config())
        .args([name, "--type", qtype, "--client", client, "--json"]);
    for d in down {
        cmd.args(["--down", d]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (client network, expected region address for www A, region name)
const CLIENTS: &[(&str, u8, &str, &str)] = &[
    ("8.8.8.0", 24, "192.0.2.10", "us-east"), // United States
    ("200.160.0.0", 24, "192.0.2.10", "us-east"), // Brazil
    ("81.2.69.0", 24, "198.51.100.10", "eu-west"), // United Kingdom
    ("2a00:1450:4001::", 48, "198.51.100.10", "eu-west"), // Ireland, IPv6
    ("1.1.1.0", 24, "203.0.113.10", "ap-south"), // Australia
    ("196.25.1.0", 24, "203.0.113.10", "ap-south"), // South Africa
    ("2001:200::", 32, "203.0.113.10", "ap-south"), // Japan, IPv6
];

#[test]
fn clients_on_every_continent_get_the_nearest_region_and_a_scope_meridian_query_agrees_with() {
    let m = Meridian::start(&example_config());
    for &(net, prefix, address, region) in CLIENTS {
        let ip: IpAddr = net.parse().unwrap();
        let r = udp(
            m.addr,
            &ecs_query("www.example.com.", RecordType::A, ip, prefix),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{net}");
        assert_eq!(answers(&r), [address], "{net}/{prefix}");
        let (source, scope) = scope_of(&r).expect("ECS echoed");
        assert_eq!(source, prefix, "source prefix echoed");
        assert!(scope > 0, "{net}: the answer depends on the client");

        let e = explain("www.example.com", "A", &format!("{net}/{prefix}"), &[]);
        assert_eq!(e["chosen"][0], region, "{net}");
        assert_eq!(
            e["ecs_scope"].as_u64(),
            Some(u64::from(scope)),
            "{net}: server and query disagree"
        );
        assert_eq!(
            e["answer"][0].as_str().unwrap().rsplit(' ').next(),
            Some(address)
        );
    }
}

#[test]
fn aaaa_multi_answer_geo_residency_and_all_down_answers_match_the_readme() {
    let m = Meridian::start(&example_config());
    let ask = |name: &str, t: RecordType, net: &str, p: u8| {
        udp(m.addr, &ecs_query(name, t, net.parse().unwrap(), p))
    };
    assert_eq!(
        answers(&ask("www.example.com.", RecordType::AAAA, "2001:200::", 32)),
        ["2001:db8:3::10"]
    );
    assert_eq!(
        answers(&ask("multi.example.com.", RecordType::A, "81.2.69.0", 24)),
        ["198.51.100.10", "192.0.2.10"]
    );
    // A Mumbai client of the latency name: India has no measurement, estimated by distance.
    assert_eq!(
        answers(&ask("fast.example.com.", RecordType::A, "49.44.0.0", 16)),
        ["203.0.113.10"]
    );
    // The measured /24 in geoip/latency.yaml sends that network to us-east.
    assert_eq!(
        answers(&ask("fast.example.com.", RecordType::A, "203.0.113.0", 24)),
        ["192.0.2.10"]
    );
    // The geo name: a German client (EU) stays in eu-west.
    assert_eq!(
        answers(&ask("eu.example.com.", RecordType::A, "85.214.0.0", 16)),
        ["198.51.100.10"]
    );
    let e = explain("eu.example.com", "A", "85.214.0.0/16", &["eu-west"]);
    assert_eq!(
        e["rcode"], "SERVFAIL",
        "EU residency: all-down behaviour, never another jurisdiction"
    );
    let e = explain(
        "backup.example.com",
        "A",
        "8.8.8.0/24",
        &["eu-west", "us-east"],
    );
    assert_eq!(
        e["answer"][0].as_str().unwrap().rsplit(' ').next(),
        Some("192.0.2.200")
    );
}

#[test]
fn no_client_information_and_static_names_carry_scope_zero() {
    let m = Meridian::start(&example_config());
    // SOURCE PREFIX-LENGTH 0: the resolver says "do not use client information".
    let r = udp(
        m.addr,
        &ecs_query(
            "www.example.com.",
            RecordType::A,
            "0.0.0.0".parse().unwrap(),
            0,
        ),
    );
    assert_eq!(scope_of(&r), Some((0, 0)));
    assert_eq!(answers(&r), ["192.0.2.10"], "policy order");
    // Static zone data does not depend on the client.
    let r = udp(
        m.addr,
        &ecs_query(
            "example.com.",
            RecordType::MX,
            "81.2.69.0".parse().unwrap(),
            24,
        ),
    );
    assert_eq!(scope_of(&r), Some((24, 0)));
    // Without ECS the source address (127.0.0.1, unknown) decides: policy order.
    let r = udp(
        m.addr,
        &query_bytes("www.example.com.", RecordType::A, Some(1232)),
    );
    assert_eq!(answers(&r), ["192.0.2.10"]);
    assert!(scope_of(&r).is_none(), "no ECS in, no ECS out");
}

#[test]
fn malformed_client_subnet_options_get_formerr() {
    let m = Meridian::start(&example_config());
    let good = ecs_query(
        "www.example.com.",
        RecordType::A,
        "81.2.69.0".parse().unwrap(),
        24,
    );
    // Locate the ECS option: code 8 right after the OPT header.
    let at = good
        .windows(4)
        .rposition(|w| w == [0, 8, 0, 7])
        .expect("ECS option")
        + 4;
    let mut bits_beyond_prefix = good.clone();
    bits_beyond_prefix[at + 2] = 23; // 81.2.69 has a bit set beyond /23
    let mut bad_family = good.clone();
    bad_family[at + 1] = 9;
    for (what, packet) in [
        ("address bits beyond the prefix", bits_beyond_prefix),
        ("unknown family", bad_family),
    ] {
        let raw = udp_raw(m.addr, &packet);
        assert_eq!(raw[3] & 0x0F, 1, "{what}: FORMERR");
    }
}
