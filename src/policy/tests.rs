//! Table-driven specifications of the routing methods, constraints and all-down
//! behaviours: client address → ordered regions → ECS scope, on a small synthetic GeoIP
//! table (no database file needed).

use std::net::IpAddr;

use ipnet::IpNet;

use super::decide::{HealthView, Outcome, decide};
use super::*;
use crate::geo::{GeoTable, Location};
use crate::iana::Rtype;

const REGIONS: &str = r#"
regions:
  - name: us-east
    location: { lat: 39.04, lon: -77.49 }
    a: [192.0.2.10]
    aaaa: ["2001:db8:1::10"]
    weight: 50
    labels: { jurisdiction: us }
  - name: eu-west
    location: { lat: 53.35, lon: -6.26 }
    a: [198.51.100.10]
    weight: 30
    labels: { jurisdiction: eu }
  - name: ap-south
    location: { lat: 19.08, lon: 72.88 }
    a: [203.0.113.10]
    aaaa: ["2001:db8:3::10"]
    weight: 20
    labels: { jurisdiction: in }
  - name: edge
    location: { lat: 40.0, lon: -75.0 }
    cname: edge.cdn.example.net.
"#;

fn loc(cc: &str) -> Location {
    Location::from_country(cc).unwrap()
}

fn networks() -> Vec<(IpNet, Location)> {
    let mut ca = loc("US");
    ca.subdivision = Some("US-CA".into());
    ca.point = Some((37.4, -122.1));
    vec![
        ("10.1.0.0/16".parse().unwrap(), loc("US")),
        ("10.2.0.0/17".parse().unwrap(), loc("IE")),
        ("10.2.128.0/17".parse().unwrap(), loc("IE")),
        ("10.3.0.0/16".parse().unwrap(), loc("DE")),
        ("10.4.0.0/16".parse().unwrap(), loc("IN")),
        ("10.5.0.0/16".parse().unwrap(), loc("GB")),
        ("10.6.0.0/16".parse().unwrap(), ca),
        ("10.7.0.0/16".parse().unwrap(), loc("AE")),
        ("10.8.0.0/16".parse().unwrap(), loc("FR")),
        ("2001:db8:100::/40".parse().unwrap(), loc("JP")),
    ]
}

struct World {
    set: PolicySet,
    _dir: tempfile::TempDir,
}

fn world(policies: &str, latency: Option<&str>) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!("version: 1\n{REGIONS}\npolicies:\n{policies}"),
    )
    .unwrap();
    let lat = latency.map(|l| {
        std::fs::create_dir(dir.path().join("geoip")).unwrap();
        let p = dir.path().join("geoip/latency.yaml");
        std::fs::write(&p, format!("version: 1\nmeasurements:\n{l}")).unwrap();
        p
    });
    let mut set = load(dir.path(), lat.as_deref(), 5.0).unwrap_or_else(|e| panic!("{e:?}"));
    let geo = GeoTable::compile(networks(), set.overlays(), None, "test".into());
    compile::compile(&mut set, &geo).unwrap();
    World { set, _dir: dir }
}

fn names(set: &PolicySet, regions: &[u16]) -> Vec<String> {
    regions
        .iter()
        .map(|&r| set.regions[usize::from(r)].name.clone())
        .collect()
}

/// (ordered list walked, chosen regions, scope) for `client`.
fn ask(
    w: &World,
    policy: usize,
    client: &str,
    qtype: Rtype,
    down: &[&str],
) -> (Vec<String>, Vec<String>, u8, Outcome) {
    let mut health = HealthView::default();
    for d in down {
        let r = &w.set.regions[usize::from(w.set.region_index(d).unwrap())];
        health.set(r.id, crate::health::Effective::Down);
    }
    let client: Option<IpAddr> = (!client.is_empty()).then(|| client.parse().unwrap());
    let d = decide(&w.set, &health, &w.set.policies[policy], qtype, client);
    let (list, scope) = crate::policy::decide::order(&w.set, &w.set.policies[policy].route, client);
    if !w.set.policies[policy].route.weighted() {
        assert_eq!(scope, d.scope, "order and decide agree on the scope");
    }
    (
        names(&w.set, &list),
        names(&w.set, d.chosen()),
        d.scope,
        d.outcome,
    )
}

const A: Rtype = Rtype::A;
const AAAA: Rtype = Rtype::AAAA;

#[test]
fn nearest_ranks_by_great_circle_distance_with_the_merged_network_as_scope() {
    let w = world(
        "  - { name: www.example.com, method: nearest, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    let table: &[(&str, &[&str], u8)] = &[
        // The US order is also the policy order that unknown 10.0.0.0/16 gets: one /15.
        ("10.1.2.3", &["us-east", "eu-west", "ap-south"], 15),
        // Two adjacent IE /17s give the same order: merged into one /16.
        ("10.2.200.1", &["eu-west", "us-east", "ap-south"], 16),
        ("10.3.0.1", &["eu-west", "ap-south", "us-east"], 16),
        ("10.4.9.9", &["ap-south", "eu-west", "us-east"], 16),
        ("10.6.1.1", &["us-east", "eu-west", "ap-south"], 16),
        // Japan: Mumbai, then Dublin (~9600 km) before Ashburn (~10900 km).
        ("2001:db8:100:1::1", &["ap-south", "eu-west", "us-east"], 40),
    ];
    for (client, order, scope) in table {
        let (list, chosen, s, _) = ask(&w, 0, client, A, &[]);
        assert_eq!(list, *order, "{client}");
        assert_eq!(chosen, [order[0]], "{client}");
        assert_eq!(s, *scope, "{client}");
    }
}

#[test]
fn warming_a_batch_reads_ahead_without_changing_any_decision() {
    let w = world(
        "  - { name: a.example.com, method: nearest, regions: [us-east, eu-west, ap-south] }\n\
         \x20 - { name: b.example.com, method: failover, regions: [ap-south, us-east] }\n",
        None,
    );
    let clients = [
        "10.1.2.3",
        "10.3.0.1",
        "2001:db8:100:1::1",
        "192.0.2.1",
        "::ffff:10.4.9.9",
    ];
    let before: Vec<_> = (0..2)
        .flat_map(|p| clients.iter().map(move |c| (p, *c)))
        .map(|(p, c)| ask(&w, p, c, A, &[]))
        .collect();
    // Two routes, one route, an unknown policy index, nothing at all.
    let ip = |c: &str| c.parse::<IpAddr>().unwrap();
    let mixed: Vec<(u32, IpAddr)> = clients
        .iter()
        .map(|c| (0, ip(c)))
        .chain([(1, ip("10.1.2.3")), (9999, ip("::1"))])
        .collect();
    w.set.warm(&mixed);
    w.set.warm(&mixed[..2]);
    w.set.warm(&[]);
    let after: Vec<_> = (0..2)
        .flat_map(|p| clients.iter().map(move |c| (p, *c)))
        .map(|(p, c)| ask(&w, p, c, A, &[]))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_down_region_is_skipped_and_the_next_nearest_answers() {
    let w = world(
        "  - { name: www.example.com, method: nearest, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    let (_, chosen, ..) = ask(&w, 0, "10.2.0.1", A, &["eu-west"]);
    assert_eq!(chosen, ["us-east"]);
    let (_, chosen, ..) = ask(&w, 0, "10.2.0.1", A, &["eu-west", "us-east"]);
    assert_eq!(chosen, ["ap-south"]);
}

#[test]
fn answers_n_returns_the_n_best_healthy_regions_in_order() {
    let w = world(
        "  - { name: m.example.com, method: nearest, answers: 2, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    assert_eq!(ask(&w, 0, "10.3.0.1", A, &[]).1, ["eu-west", "ap-south"]);
    assert_eq!(
        ask(&w, 0, "10.3.0.1", A, &["ap-south"]).1,
        ["eu-west", "us-east"]
    );
    // AAAA: eu-west has no IPv6 address, so it is not a candidate for AAAA.
    assert_eq!(ask(&w, 0, "10.3.0.1", AAAA, &[]).1, ["ap-south", "us-east"]);
}

#[test]
fn a_region_whose_servers_of_a_type_are_all_down_is_skipped_for_that_type() {
    let w = world(
        "  - { name: m.example.com, method: nearest, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    let ap = &w.set.regions[usize::from(w.set.region_index("ap-south").unwrap())];
    let n_a = ap.a.len();
    assert!(n_a > 0 && !ap.aaaa.is_empty());
    let mut health = HealthView::default();
    // Up, but every A address withheld (their servers down): AAAA still answers.
    health.put(
        ap.id,
        crate::health::RegionHealth {
            live: !((1u64 << n_a) - 1),
            ..crate::health::RegionHealth::new(crate::health::Effective::Up, None)
        },
    );
    let client = Some("10.3.0.1".parse().unwrap());
    let policy = &w.set.policies[0];
    let d = decide(&w.set, &health, policy, A, client);
    assert_eq!(names(&w.set, d.chosen()), ["eu-west"]);
    let d = decide(&w.set, &health, policy, AAAA, client);
    assert_eq!(names(&w.set, d.chosen()), ["ap-south"]);
}

#[test]
fn address_order_fixed_rotate_and_shuffle() {
    use crate::policy::{AddressOrder, AddressRdata};
    let a: Vec<std::net::Ipv4Addr> = (1..=4).map(|i| [192, 0, 2, i].into()).collect();
    let rd = AddressRdata::new(&a, &[]);
    let first = |order, turn, live| {
        let mut out = smallvec::SmallVec::new();
        rd.push_to(A, live, order, turn, &mut out);
        out.iter().map(|x: &&[u8]| x[3]).collect::<Vec<u8>>()
    };
    assert_eq!(first(AddressOrder::Fixed, 7, u64::MAX), [1, 2, 3, 4]);
    assert_eq!(first(AddressOrder::Rotate, 1, u64::MAX), [2, 3, 4, 1]);
    assert_eq!(first(AddressOrder::Rotate, 6, u64::MAX), [3, 4, 1, 2]);
    // Rotation over the live ones only.
    assert_eq!(first(AddressOrder::Rotate, 1, 0b1011), [2, 4, 1]);
    assert_eq!(first(AddressOrder::Fixed, 0, 0b0100), [3]);
    assert!(!rd.any_live(A, 0) && rd.any_live(A, 0b1000) && !rd.any_live(AAAA, u64::MAX));
    let shuffles: std::collections::BTreeSet<Vec<u8>> = (0..200)
        .map(|t| first(AddressOrder::Shuffle, t, u64::MAX))
        .collect();
    assert_eq!(shuffles.len(), 24, "every permutation of four turns up");
}

#[test]
fn unknown_and_absent_clients_get_the_policy_order_and_scope_zero_when_absent() {
    let w = world(
        "  - { name: www.example.com, method: nearest, regions: [ap-south, us-east] }\n",
        None,
    );
    let (list, _, scope, _) = ask(&w, 0, "", A, &[]);
    assert_eq!(
        (list, scope),
        (vec!["ap-south".to_string(), "us-east".into()], 0)
    );
    // A private address is unknown: policy order, scoped to the gap it lies in.
    let (list, ..) = ask(&w, 0, "192.168.1.1", A, &[]);
    assert_eq!(list, ["ap-south", "us-east"]);
}

#[test]
fn latency_uses_the_most_specific_measurement_else_a_distance_estimate() {
    let latency = "  - { from: { continent: EU }, rtt_ms: { eu-west: 90, us-east: 20 } }\n  - { from: { country: FR }, rtt_ms: { eu-west: 10 } }\n  - { from: { cidr: 10.8.1.0/24 }, rtt_ms: { ap-south: 1 } }\n";
    let w = world(
        "  - { name: fast.example.com, method: latency, regions: [us-east, eu-west, ap-south] }\n",
        Some(latency),
    );
    // Germany: continent EU measurements (us-east 20, eu-west 90); ap-south estimated
    // from ~6300 km as 2 x 6300 / 200 + 5 = ~68 ms.
    assert_eq!(
        ask(&w, 0, "10.3.0.1", A, &[]).0,
        ["us-east", "ap-south", "eu-west"]
    );
    // France: country beats continent for eu-west (10); us-east still from EU (20).
    assert_eq!(
        ask(&w, 0, "10.8.0.1", A, &[]).0,
        ["eu-west", "us-east", "ap-south"]
    );
    // Inside the measured /24: the CIDR key wins for ap-south, and the scope is that /24.
    let (list, _, scope, _) = ask(&w, 0, "10.8.1.7", A, &[]);
    assert_eq!((list[0].as_str(), scope), ("ap-south", 24));
    // India has no measurement: estimate from distance (nearest first).
    assert_eq!(
        ask(&w, 0, "10.4.0.1", A, &[]).0,
        ["ap-south", "eu-west", "us-east"]
    );
    let p = &w.set.policies[0];
    let geo = GeoTable::compile(networks(), w.set.overlays(), None, "t".into());
    let (c, ..) = geo
        .classify(
            crate::geo::Family::V4,
            u128::from(u32::from(std::net::Ipv4Addr::new(10, 4, 0, 1))),
        )
        .unwrap();
    let r = compile::rank(&w.set, &geo, p, geo.class(c).unwrap());
    let ap = r.candidates.iter().find(|c| c.region == 2).unwrap();
    assert!(!ap.measured);
    let expected = 2.0 * ap.distance_km.unwrap() / 200.0 + 5.0;
    assert!((ap.rtt_ms.unwrap() - expected).abs() < 1e-9);
}

#[test]
fn geo_rules_match_cidr_then_subdivision_then_country_then_continent_then_default() {
    let w = world(
        r#"  - name: g.example.com
    method: geo
    geo:
      rules:
        - { continents: [EU], regions: [eu-west, us-east] }
        - { countries: [DE], regions: [ap-south] }
        - { subdivisions: [US-CA], regions: [ap-south, us-east] }
        - { cidrs: [10.3.7.0/24], regions: [us-east] }
      default: [us-east, eu-west]
"#,
        None,
    );
    let table: &[(&str, &[&str], u8)] = &[
        ("10.3.7.1", &["us-east"], 24),             // CIDR inside Germany
        ("10.3.8.1", &["ap-south"], 21),            // Germany, beside the /24
        ("10.2.0.1", &["eu-west", "us-east"], 16),  // Ireland: continent EU
        ("10.6.0.1", &["ap-south", "us-east"], 16), // California
        ("10.1.0.1", &["us-east", "eu-west"], 15),  // rest of the US: default, like 10.0/16
    ];
    for (client, order, scope) in table {
        let (list, _, s, _) = ask(&w, 0, client, A, &[]);
        assert_eq!(list, *order, "{client}");
        assert_eq!(s, *scope, "{client}");
    }
}

#[test]
fn residency_keeps_eu_clients_in_eu_regions_even_when_those_are_down() {
    let w = world(
        r#"  - name: eu.example.com
    method: nearest
    regions: [us-east, eu-west, ap-south]
    residency:
      - { clients: { countries: [EU] }, regions: { jurisdiction: eu } }
    all_down: nodata
"#,
        None,
    );
    // Germany is in the EU: only eu-west.
    assert_eq!(ask(&w, 0, "10.3.0.1", A, &[]).0, ["eu-west"]);
    // eu-west down: all-down behaviour, never us-east.
    let (_, chosen, _, outcome) = ask(&w, 0, "10.3.0.1", A, &["eu-west"]);
    assert_eq!(outcome, Outcome::AllDown);
    assert!(!chosen.contains(&"us-east".to_string()));
    // Great Britain is not in the EU: unconstrained.
    assert_eq!(
        ask(&w, 0, "10.5.0.1", A, &[]).0,
        ["eu-west", "us-east", "ap-south"]
    );
}

#[test]
fn weighted_is_stable_per_subnet_and_spreads_by_weight() {
    let w = world(
        "  - { name: c.example.com, method: weighted, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    let (_, a, scope, _) = ask(&w, 0, "10.1.7.1", A, &[]);
    let (_, b, ..) = ask(&w, 0, "10.1.7.250", A, &[]);
    assert_eq!(a, b, "same /24, same answer");
    assert_eq!(scope, 24);
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for i in 0..3000u32 {
        let ip = std::net::Ipv4Addr::from(0x0A01_0000 + (i << 8));
        let (_, c, ..) = ask(&w, 0, &ip.to_string(), A, &[]);
        *counts.entry(c[0].clone()).or_default() += 1;
    }
    for (region, weight) in [("us-east", 0.5), ("eu-west", 0.3), ("ap-south", 0.2)] {
        let share = counts[region] as f64 / 3000.0;
        assert!((share - weight).abs() < 0.04, "{region}: {share}");
    }
}

#[test]
fn failover_walks_a_fixed_order_with_scope_zero() {
    let w = world(
        "  - { name: f.example.com, method: failover, regions: [eu-west, us-east] }\n",
        None,
    );
    assert_eq!(ask(&w, 0, "10.4.0.1", A, &[]).1, ["eu-west"]);
    assert_eq!(ask(&w, 0, "10.4.0.1", A, &[]).2, 0);
    assert_eq!(ask(&w, 0, "10.4.0.1", A, &["eu-west"]).1, ["us-east"]);
}

#[test]
fn all_down_fails_open_to_the_ranking_as_if_healthy() {
    let w = world(
        "  - { name: www.example.com, method: nearest, regions: [us-east, eu-west, ap-south] }\n",
        None,
    );
    let (_, chosen, _, outcome) = ask(&w, 0, "10.4.0.1", A, &["us-east", "eu-west", "ap-south"]);
    assert_eq!(
        (outcome, chosen),
        (Outcome::AllDown, vec!["ap-south".to_string()])
    );
}

#[test]
fn a_cname_region_answers_alone() {
    let w = world(
        "  - { name: e.example.com, method: failover, answers: 3, regions: [edge, us-east] }\n",
        None,
    );
    let (_, chosen, _, outcome) = ask(&w, 0, "10.1.0.1", A, &[]);
    assert_eq!(
        (outcome, chosen),
        (Outcome::Cname, vec!["edge".to_string()])
    );
    let (_, chosen, _, outcome) = ask(&w, 0, "10.1.0.1", A, &["edge"]);
    assert_eq!(
        (outcome, chosen),
        (Outcome::Addresses, vec!["us-east".to_string()])
    );
}

fn load_errors(policies: &str) -> Vec<String> {
    file_errors(&format!("version: 1\n{REGIONS}{policies}"))
}

/// The diagnostics of loading one policy file, `bad.yaml`, with this whole text.
fn file_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), text).unwrap();
    load(dir.path(), None, 5.0)
        .unwrap_err()
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn every_mistake_in_a_policy_file_is_reported_with_file_line_and_column() {
    let errors = load_errors(
        r#"  - name: bad-coords
    location: { lat: 95.0, lon: 10 }
    a: [192.0.2.1]
policies:
  - { name: a.example.com, method: nearest, regions: [us-east, nowhere] }
  - { name: a.example.com, method: nearest }
  - name: b.example.com
    method: geo
    geo:
      rules: [ { countries: [XX], regions: [eu-west] } ]
      default: [us-east]
"#,
    );
    let joined = errors.join("\n");
    for (line, col, what) in [
        (25, 22, "latitude 95"),
        (28, 64, "unknown region \"nowhere\""),
        (29, 13, "already defined"),
        (33, 30, "unknown country code \"XX\""),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("bad.yaml:{line}:{col}: ")) && e.contains(what)),
            "missing {line}:{col} {what} in:\n{joined}"
        );
    }
    let unknown_key =
        load_errors("policies:\n  - { name: c.example.com, method: nearest, tll: 30 }\n");
    assert!(
        unknown_key[0].contains("bad.yaml:25:") && unknown_key[0].contains("tll"),
        "{unknown_key:?}"
    );
}

/// Every route kind must give, for every client, exactly the ranking of its class, and an
/// ECS scope over which no address gets a different list (RFC 7871 7.2.1: the answer must
/// hold for the whole scope). City-like data: every network its own point, so nearest
/// orders change inside a country.
#[test]
fn every_route_kind_agrees_with_ranking_and_scopes_hold() {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let countries = [
        "US", "IE", "DE", "IN", "GB", "JP", "BR", "ZA", "AU", "FR", "AE",
    ];
    // 3000 adjacent networks of random sizes, countries and points (a few points repeat,
    // as a city's do) across 10.0.0.0/8 and beyond.
    let mut nets = Vec::new();
    let mut at: u32 = 0x0A00_0000;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for _ in 0..3000 {
        let prefix = 18 + (next() % 7) as u8;
        let size = 1u32 << (32 - prefix);
        at = at.div_ceil(size) * size;
        let cc = countries[(next() % countries.len() as u64) as usize];
        let mut l = loc(cc);
        let point = match points.get((next() % 4000) as usize) {
            Some(&p) => p,
            None => {
                let p = (
                    (next() % 1600) as f64 / 10.0 - 80.0,
                    (next() % 3600) as f64 / 10.0 - 180.0,
                );
                points.push(p);
                p
            }
        };
        l.point = Some(point);
        nets.push((
            IpNet::new(std::net::Ipv4Addr::from(at).into(), prefix).unwrap(),
            l,
        ));
        at += size * (1 + (next() % 2) as u32);
    }
    let mut regions = String::from("regions:\n");
    for i in 0..20 {
        let jurisdiction = if i % 3 == 0 { "eu" } else { "us" };
        regions.push_str(&format!(
            "  - {{ name: r{i}, location: {{ lat: {}, lon: {} }}, a: [192.0.2.{}], labels: {{ jurisdiction: {jurisdiction} }} }}\n",
            (next() % 1400) as f64 / 10.0 - 70.0,
            (next() % 3600) as f64 / 10.0 - 180.0,
            i + 1
        ));
    }
    let all: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    let policies = [
        format!("  - {{ name: a.example.com, method: nearest, regions: [{}] }}", all.join(", ")),
        "  - { name: b.example.com, method: nearest, regions: [r4, r1, r9] }".into(),
        "  - { name: c.example.com, method: latency, regions: [r2, r5, r7, r11, r13] }".into(),
        "  - { name: d.example.com, method: nearest, answers: 2, regions: [r0, r1, r2, r3, r6], residency: [ { clients: { countries: [EU] }, regions: { jurisdiction: eu } } ] }".into(),
        "  - { name: e.example.com, method: geo, regions: [r1, r2, r3], geo: { rules: [ { countries: [IE, GB], regions: [r2, r1] }, { continents: [AS], regions: [r3] } ], default: [r1, r3] } }".into(),
        "  - { name: f.example.com, method: failover, regions: [r5, r6] }".into(),
        "  - { name: g.example.com, method: weighted, regions: [r0, r1, r3], residency: [ { clients: { countries: [EU] }, regions: { jurisdiction: eu } } ] }".into(),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!("version: 1\n{regions}policies:\n{policies}\n"),
    )
    .unwrap();
    let mut set = load(dir.path(), None, 5.0).unwrap_or_else(|e| panic!("{e:?}"));
    let geo = GeoTable::compile(nets, set.overlays(), None, "t".into());
    compile::compile(&mut set, &geo).unwrap();
    use crate::policy::route::Kind;
    let kinds: Vec<Kind> = set.policies.iter().map(|p| p.route.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::Class,
            Kind::Nearest,
            Kind::Nearest,
            Kind::Nearest,
            Kind::Area,
            Kind::One,
            Kind::Area
        ]
    );
    let health = HealthView::default();
    let list_of = |p: usize, addr: u32| {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(addr));
        let d = decide(&set, &health, &set.policies[p], A, Some(ip));
        let (list, scope) = crate::policy::decide::order(&set, &set.policies[p].route, Some(ip));
        if !set.policies[p].route.weighted() {
            assert_eq!(d.scope, scope, "decide and order agree");
        }
        (list, scope)
    };
    let mut widened = 0;
    for p in 0..set.policies.len() {
        for _ in 0..2000 {
            let addr = 0x0A00_0000 + (next() % (at as u64 - 0x0A00_0000)) as u32;
            let (list, scope) = list_of(p, addr);
            let (class, lo, hi) = geo
                .classify(crate::geo::Family::V4, u128::from(addr))
                .unwrap();
            if scope < crate::geo::scope_within(32, u128::from(addr), lo, hi) {
                widened += 1;
            }
            let ranked = compile::rank(&set, &geo, &set.policies[p], geo.class(class).unwrap());
            assert_eq!(list, ranked.order, "policy {p}, client {addr:#x}");
            let mask = if scope == 0 {
                0
            } else {
                u32::MAX << (32 - scope)
            };
            let first = addr & mask;
            let last = first | !mask;
            for probe in [first, last, first + (next() as u32 & !mask)] {
                assert_eq!(
                    list_of(p, probe).0,
                    list,
                    "policy {p}: {probe:#x} inside the /{scope} of {addr:#x} gets another list"
                );
            }
        }
    }
    assert!(
        widened > 1000,
        "scopes widen over neighbours with the same list: {widened}"
    );
}

#[test]
fn policies_of_one_shape_share_their_compiled_route_and_keep_their_own_settings() {
    let w = world(
        "  - { name: a.example.com, method: nearest, regions: [us-east, eu-west], ttl: 30 }\n  \
         - { name: b.example.com, method: nearest, regions: [us-east, eu-west], ttl: 60, answers: 2 }\n  \
         - { name: c.example.com, method: nearest, regions: [eu-west, us-east] }\n",
        None,
    );
    let r = |i: usize| &w.set.policies[i].route;
    assert!(
        r(0).shares_data_with(r(1)),
        "same method and regions: one route"
    );
    assert!(
        !r(0).shares_data_with(r(2)),
        "another operator order is another shape"
    );
    assert_eq!((r(0).ttl(), r(0).answers()), (30, 1));
    assert_eq!((r(1).ttl(), r(1).answers()), (60, 2));
    // Sharing changes no answer: each gets what it would get alone.
    let (list_a, chosen_a, scope_a, _) = ask(&w, 0, "10.2.200.1", A, &[]);
    let (list_b, chosen_b, scope_b, _) = ask(&w, 1, "10.2.200.1", A, &[]);
    assert_eq!(list_a, list_b);
    assert_eq!(scope_a, scope_b);
    assert_eq!(chosen_a, ["eu-west"]);
    assert_eq!(chosen_b, ["eu-west", "us-east"]);
}

/// The shipped policy file loads, and a key no table knows is reported at its own line
/// and column in each table of the schema (hickory-dns fuzzes unknown keys into its
/// example configs the same way).
#[test]
fn the_shipped_policies_load_and_an_unknown_key_in_each_table_is_reported_where_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = load(
        &root.join("policies"),
        Some(&root.join("geoip/latency.yaml")),
        5.0,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(set.policies.len() >= 6 && set.regions.len() == 3);
    let region = "  - name: r1\n    location: { lat: 1, lon: 2 }\n    a: [192.0.2.1]\n";
    // (text after `version: 1\n`, the line of the inserted key `colour`)
    let cases: Vec<(String, usize)> = vec![
        ("colour: 1\n".into(), 2),
        (format!("regions:\n{region}    colour: 1\n"), 6),
        (
            "regions:\n  - name: r1\n    a: [192.0.2.1]\n    location: { lat: 1, lon: 2, colour: 1 }\n".into(),
            5,
        ),
        (format!("regions:\n{region}    health:\n      colour: 1\n"), 7),
        (
            format!(
                "regions:\n{region}    endpoints:\n      - name: w\n        probe: tcp\n        address: \"127.0.0.1:1\"\n        colour: 1\n"
            ),
            10,
        ),
        (
            format!("regions:\n{region}policies:\n  - name: www.example.com\n    method: nearest\n    colour: 1\n"),
            9,
        ),
        (
            format!(
                "regions:\n{region}policies:\n  - name: www.example.com\n    method: geo\n    geo:\n      default: [r1]\n      colour: 1\n"
            ),
            11,
        ),
        (
            format!(
                "regions:\n{region}policies:\n  - name: www.example.com\n    method: geo\n    geo:\n      default: [r1]\n      rules:\n        - countries: [IE]\n          regions: [r1]\n          colour: 1\n"
            ),
            14,
        ),
        (
            format!(
                "regions:\n{region}policies:\n  - name: www.example.com\n    method: nearest\n    residency:\n      - clients: {{ countries: [IE] }}\n        regions: {{ j: eu }}\n        colour: 1\n"
            ),
            12,
        ),
    ];
    for (body, line) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), format!("version: 1\n{body}")).unwrap();
        let errors = load(dir.path(), None, 5.0).err().unwrap_or_default();
        assert_eq!(errors.len(), 1, "{body}: {errors:?}");
        let e = &errors[0];
        assert!(e.message.contains("colour"), "{body}: {e}");
        assert_eq!(e.line, line, "{body}: {e}");
        assert!(e.column.is_some_and(|c| c > 0), "{body}: {e}");
    }
}

#[test]
fn bad_traffic_settings_are_reported_at_their_line_and_column() {
    let errors = file_errors(
        "version: 1
regions:
  - name: a
    location: { lat: 1, lon: 2 }
    a: [192.0.2.1]
    capacity: -5
    health: { failback: { ramp: 5s, steps: 10 } }
  - name: b
    location: { lat: 1, lon: 2 }
    a: [192.0.2.2]
    capacity: 100
    load: { prometheus: \"ftp://x\", query: up }
policies:
  - { name: p.example.com, method: nearest, demand: 0 }
",
    );
    let has = |at: &str, what: &str| errors.iter().any(|e| e.contains(at) && e.contains(what));
    assert!(has("bad.yaml:6:", "capacity -5 must be"), "{errors:?}");
    assert!(
        has("bad.yaml:7:", "shorter than its 10 steps"),
        "{errors:?}"
    );
    assert!(has("bad.yaml:12:", "must be http or https"), "{errors:?}");
    assert!(has("bad.yaml:14:", "demand 0 must be"), "{errors:?}");
    let overflow = load_errors(
        "policies:\n  - { name: q.example.com, method: nearest, overflow: sometimes }\n",
    );
    assert!(
        overflow[0].contains("bad.yaml:")
            && overflow[0].contains("expected one of spill, all_down"),
        "{overflow:?}"
    );
}

#[test]
fn probe_headers_are_checked_at_load() {
    let errors = file_errors(
        "version: 1
regions:
  - name: a
    location: { lat: 1, lon: 2 }
    a: [192.0.2.1]
    endpoints:
      - { name: web, probe: http, address: \"192.0.2.1:80\", headers: { \"Bad Name\": x } }
",
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("bad.yaml:7:") && e.contains("not a valid HTTP header")),
        "{errors:?}"
    );
}

/// A partial drain moves its share of a region's clients in every method, weighted
/// included (down the client's own weighted order), and a split answer holds for the
/// client's /24 only.
#[test]
fn a_partial_drain_moves_its_share_of_weighted_and_nearest_clients() {
    let w = world(
        "  - { name: w.example.com, method: weighted, regions: [us-east, eu-west] }\n  \
         - { name: n.example.com, method: nearest, regions: [us-east, eu-west] }\n",
        None,
    );
    let us = &w.set.regions[usize::from(w.set.region_index("us-east").unwrap())];
    let plain = HealthView::default();
    let mut drained = HealthView::default();
    let mut h = crate::health::RegionHealth::new(crate::health::Effective::Up, None);
    h.keep = crate::traffic::Share::from_fraction(0.5);
    drained.put(us.id, h);
    drained.refresh_shifting();
    assert!(drained.shifting);
    for policy in 0..2 {
        let (mut first_us, mut moved) = (0, 0);
        for i in 0..4000u32 {
            // US clients across 10.1.0.0/16, one per /24 and more.
            let ip = IpAddr::from(std::net::Ipv4Addr::from(
                0x0A01_0000 + (i % 256) * 256 + i / 256,
            ));
            let before = decide(&w.set, &plain, &w.set.policies[policy], A, Some(ip));
            if names(&w.set, before.chosen()) != ["us-east"] {
                continue;
            }
            first_us += 1;
            let after = decide(&w.set, &drained, &w.set.policies[policy], A, Some(ip));
            if names(&w.set, after.chosen()) == ["eu-west"] {
                moved += 1;
                assert_eq!(after.scope, 24, "a split answer holds for its /24");
            }
        }
        let share = f64::from(moved) / f64::from(first_us.max(1));
        assert!(first_us > 500, "policy {policy}: {first_us}");
        assert!((0.4..0.6).contains(&share), "policy {policy}: {share}");
    }
}

/// Every key of the policy schema, given a value of the wrong type, is reported, and so
/// is a mistake next to it (before or after): one mistake never hides another.
#[test]
fn every_policy_key_mistyped_is_reported_with_its_neighbour() {
    const REGION: &str = "  - name: eu\n    location: {lat: 53.3, lon: -6.3}\n    a: [192.0.2.1]\n";
    const ENDPOINT: &str =
        "    endpoints:\n      - name: web\n        probe: http\n        address: 127.0.0.1:80\n";
    const METRIC: &str = "    metric:\n      prometheus: http://127.0.0.1:9090\n      query: up\n      fail_above: 1\n      recover_below: 0.5\n";
    const LOAD: &str = "    load:\n      prometheus: http://127.0.0.1:9090\n      query: up\n";
    const POLICY: &str = "  - name: www.example.com\n    method: nearest\n    regions: [eu]\n";
    const GEO: &str = "  - name: geo.example.com\n    method: geo\n    geo:\n      default: [eu]\n";
    const RULE: &str = "      rules:\n        - countries: [GB]\n          regions: [eu]\n";
    const RESIDENCY: &str = "    residency:\n      - clients:\n          countries: [GB]\n        regions: {jurisdiction: eu}\n";
    let region = |line: &str| format!("regions:\n{REGION}{line}\npolicies:\n{POLICY}");
    let region_with =
        |block: &str, line: &str| format!("regions:\n{REGION}{block}{line}\npolicies:\n{POLICY}");
    let policy = |line: &str| format!("regions:\n{REGION}policies:\n{POLICY}{line}\n");
    let policy_with =
        |base: &str, line: &str| format!("regions:\n{REGION}policies:\n{base}{line}\n");
    let mut cases: Vec<String> = vec![
        "version: one # mistyped\nregions: []".into(),
        format!("regions: 5 # mistyped\npolicies:\n{POLICY}"),
        format!("regions:\n{REGION}policies: 5 # mistyped"),
    ];
    for (key, bad) in [
        ("location", "5"),
        ("a", "5"),
        ("aaaa", "5"),
        ("order", "sideways"),
        ("cname", "[1]"),
        ("weight", "heavy"),
        ("labels", "5"),
        ("endpoints", "5"),
        ("health", "5"),
        ("metric", "5"),
        ("capacity", "big"),
        ("load", "5"),
    ] {
        cases.push(region(&format!("    {key}: {bad} # mistyped")));
    }
    for (key, bad) in [
        ("preset", "[1]"),
        ("window", "wide"),
        ("fail_error_rate", "high"),
        ("fail_latency", "[1]"),
        ("fail_consecutive", "many"),
        ("recover_error_rate", "low"),
        ("recover_latency", "[1]"),
        ("recover_consecutive", "many"),
        ("cooldown", "[1]"),
        ("latency_percentile", "many"),
        ("degraded_latency", "[1]"),
        ("min_up", "many"),
        ("min_up_fraction", "half"),
        ("failback", "5"),
    ] {
        cases.push(region_with(
            "    health:\n",
            &format!("      {key}: {bad} # mistyped"),
        ));
    }
    cases.push(region_with(
        "    health:\n      failback:\n        steps: 3\n",
        "        ramp: [1] # mistyped",
    ));
    cases.push(region_with(
        "    health:\n      failback:\n        ramp: 1m\n",
        "        steps: many # mistyped",
    ));
    for (key, bad) in [
        ("path", "[1]"),
        ("method", "[1]"),
        ("qname", "[1]"),
        ("qtype", "[1]"),
        ("expect_rcode", "[1]"),
        ("host", "[1]"),
        ("sni", "[1]"),
        ("tls_verify", "maybe"),
        ("expect_status", "5"),
        ("expect_body", "[1]"),
        ("headers", "5"),
        ("interval", "[1]"),
        ("timeout", "[1]"),
        ("serves", "5"),
        ("probe", "[1]"),
        ("address", "[1]"),
    ] {
        cases.push(region_with(
            ENDPOINT,
            &format!("        {key}: {bad} # mistyped"),
        ));
    }
    for (key, bad) in [
        ("interval", "[1]"),
        ("timeout", "[1]"),
        ("fail_above", "high"),
        ("recover_below", "low"),
    ] {
        let block = METRIC.replace(&format!("      {key}: "), &format!("      x_{key}: "));
        let block: String = block
            .lines()
            .filter(|l| !l.contains("x_"))
            .map(|l| format!("{l}\n"))
            .collect();
        cases.push(region_with(
            &block,
            &format!("      {key}: {bad} # mistyped"),
        ));
    }
    for (key, bad) in [("interval", "[1]"), ("timeout", "[1]"), ("query", "[1]")] {
        let block: String = LOAD
            .lines()
            .filter(|l| !l.contains(&format!(" {key}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        cases.push(region_with(
            &block,
            &format!("      {key}: {bad} # mistyped"),
        ));
    }
    for (key, bad) in [
        ("method", "sideways"),
        ("ttl", "long"),
        ("answers", "many"),
        ("residency", "5"),
        ("geo", "5"),
        ("all_down", "sideways"),
        ("demand", "lots"),
        ("overflow", "sideways"),
    ] {
        let base: String = POLICY
            .lines()
            .filter(|l| !l.contains(&format!(" {key}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        cases.push(policy_with(&base, &format!("    {key}: {bad} # mistyped")));
    }
    cases.push(policy("    regions: 5 # mistyped").replace("    regions: [eu]\n", ""));
    for (key, bad) in [
        ("countries", "5"),
        ("continents", "5"),
        ("subdivisions", "5"),
        ("cidrs", "5"),
        ("cidrs_file", "[1]"),
        ("asns", "5"),
    ] {
        cases.push(policy_with(
            &format!("{GEO}{RULE}"),
            &format!("          {key}: {bad} # mistyped"),
        ));
    }
    cases.push(policy_with(GEO, "      rules: 5 # mistyped"));
    cases.push(policy_with(
        &GEO.replace("      default: [eu]\n", ""),
        "      default: 5 # mistyped",
    ));
    for (key, bad) in [
        ("countries", "5"),
        ("continents", "5"),
        ("cidrs", "5"),
        ("cidrs_file", "[1]"),
    ] {
        cases.push(policy_with(
            &format!("{POLICY}{RESIDENCY}"),
            &format!("          {key}: {bad} # mistyped"),
        ));
    }
    cases.push(policy_with(
        &format!("{POLICY}{RESIDENCY}").replace("        regions: {jurisdiction: eu}\n", ""),
        "        regions: 5 # mistyped",
    ));
    for case in &cases {
        let body = if case.starts_with("version") {
            case.clone()
        } else {
            format!("version: 1\n{case}")
        };
        let mut lines: Vec<&str> = body.lines().collect();
        for at in [lines.len(), 1] {
            lines.insert(at, "colour: blue");
            let text = lines.join("\n");
            lines.remove(at);
            let got = file_errors(&text);
            let reported: Vec<usize> = got
                .iter()
                .filter_map(|d| d.split(':').nth(1).and_then(|l| l.parse().ok()))
                .collect();
            let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
            let (mistyped, neighbour) = (line_of("# mistyped"), line_of("colour"));
            assert!(
                reported.contains(&mistyped),
                "{text}\nmistyped key not reported at {mistyped}: {got:?}"
            );
            assert!(
                reported.contains(&neighbour),
                "{text}\nneighbour not reported at {neighbour}: {got:?}"
            );
        }
    }
}

/// A `home` policy over the test regions with `tenants.csv` beside it.
fn home_world(csv: &str, extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "version: 1\n{REGIONS}\npolicies:\n  - name: \"*.tenants.example.com\"\n    method: home\n    tenants: tenants.csv\n    regions: [us-east, eu-west, ap-south]\n{extra}"
        ),
    )
    .unwrap();
    let mut set = load(dir.path(), None, 5.0).unwrap_or_else(|e| panic!("{e:?}"));
    let geo = GeoTable::compile(networks(), set.overlays(), None, "test".into());
    compile::compile(&mut set, &geo).unwrap();
    World { set, _dir: dir }
}

/// (chosen regions, outcome, scope, case) for `qname`'s tenant at `now`.
fn ask_home(
    w: &World,
    qname: &str,
    client: &str,
    down: &[&str],
    now: i64,
) -> (Vec<String>, Outcome, u8, Option<decide::HomeCase>) {
    let mut health = HealthView::default();
    for d in down {
        let r = &w.set.regions[usize::from(w.set.region_index(d).unwrap())];
        health.set(r.id, crate::health::Effective::Down);
    }
    let wire = crate::name::from_text(qname, crate::name::ROOT).unwrap();
    let lower = crate::name::lowercase(&wire);
    let home = w.set.homes[0].as_ref().unwrap();
    let label = decide::tenant_label(&lower, home.depth);
    let client: Option<IpAddr> = (!client.is_empty()).then(|| client.parse().unwrap());
    let (d, case) = decide::decide_home(
        &w.set,
        &health,
        &w.set.routes[0],
        home,
        label,
        A,
        client,
        &|| now,
    );
    (names(&w.set, d.chosen()), d.outcome, d.scope, Some(case))
}

const TENANTS: &str = "tenant,home,allowed,move_to,move_at
acme,eu-west,eu-west us-east,,
globex,us-east,,,
solo,ap-south,ap-south,,
initech,eu-west,eu-west us-east,us-east,2026-12-20T02:00:00Z
";

#[test]
fn home_answers_the_tenants_home_and_fails_over_only_inside_its_allowed_regions() {
    use decide::HomeCase::*;
    let w = home_world(TENANTS, "");
    let eu = "acme.tenants.example.com.";
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // (qname, client, down) → (chosen, outcome, away)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Outcome,
        bool,
    );
    let cases: &[Case] = &[
        // Home up: the home, wherever the client is.
        (eu, "10.1.0.1", &[], &["eu-west"], Outcome::Addresses, false),
        (eu, "10.4.0.1", &[], &["eu-west"], Outcome::Addresses, false),
        (
            "ACME.Tenants.Example.Com.",
            "",
            &[],
            &["eu-west"],
            Outcome::Addresses,
            false,
        ),
        // Home down: the next allowed region.
        (
            eu,
            "10.4.0.1",
            &["eu-west"],
            &["us-east"],
            Outcome::Addresses,
            true,
        ),
        // Every allowed region down: all_down (servfail by default), never ap-south.
        (
            eu,
            "10.4.0.1",
            &["eu-west", "us-east"],
            &["eu-west"],
            Outcome::AllDown,
            false,
        ),
        // Allowed empty: any of the policy's regions, home first, then nearest to it
        // (from us-east: eu-west before ap-south).
        (
            "globex.tenants.example.com.",
            "10.4.0.1",
            &[],
            &["us-east"],
            Outcome::Addresses,
            false,
        ),
        (
            "globex.tenants.example.com.",
            "10.4.0.1",
            &["us-east"],
            &["eu-west"],
            Outcome::Addresses,
            true,
        ),
        (
            "globex.tenants.example.com.",
            "",
            &["us-east", "eu-west"],
            &["ap-south"],
            Outcome::Addresses,
            true,
        ),
        (
            "solo.tenants.example.com.",
            "",
            &["ap-south"],
            &["ap-south"],
            Outcome::AllDown,
            false,
        ),
    ];
    for &(q, client, down, want, outcome, away) in cases {
        let (chosen, got, scope, case) = ask_home(&w, q, client, down, 0);
        assert_eq!((chosen, got), (s(want), outcome), "{q} {client} {down:?}");
        assert_eq!(scope, 0, "one answer for every client");
        assert!(
            matches!(case, Some(Tenant { away: a, .. }) if a == away),
            "{q} {down:?}: {case:?}"
        );
    }
}

#[test]
fn unknown_tenants_get_what_unknown_says() {
    use decide::HomeCase::Unknown;
    // nearest (the default): from the client's location, scoped as nearest scopes.
    let w = home_world(TENANTS, "");
    let (chosen, outcome, scope, case) =
        ask_home(&w, "nobody.tenants.example.com.", "10.4.0.1", &[], 0);
    assert_eq!(
        (chosen, outcome, case),
        (
            vec!["ap-south".to_string()],
            Outcome::Addresses,
            Some(Unknown)
        )
    );
    assert!(scope > 0);
    // Two labels below the wildcard: the wildcard's label is the tenant (here: acme).
    let (chosen, ..) = ask_home(&w, "www.acme.tenants.example.com.", "10.4.0.1", &[], 0);
    assert_eq!(chosen, vec!["eu-west".to_string()]);
    // A fixed list.
    let w = home_world(TENANTS, "    unknown: [us-east, ap-south]\n");
    let (chosen, _, scope, _) = ask_home(
        &w,
        "nobody.tenants.example.com.",
        "10.4.0.1",
        &["us-east"],
        0,
    );
    assert_eq!((chosen, scope), (vec!["ap-south".to_string()], 0));
    // NXDOMAIN.
    let w = home_world(TENANTS, "    unknown: nxdomain\n");
    let (chosen, outcome, ..) = ask_home(&w, "nobody.tenants.example.com.", "10.4.0.1", &[], 0);
    assert_eq!((chosen.len(), outcome), (0, Outcome::NxDomain));
}

#[test]
fn a_planned_move_answers_the_new_home_from_its_time() {
    let w = home_world(TENANTS, "");
    let at = 1_797_732_000; // 2026-12-20T02:00:00Z
    let q = "initech.tenants.example.com.";
    assert_eq!(
        ask_home(&w, q, "", &[], at - 1).0,
        vec!["eu-west".to_string()]
    );
    assert_eq!(ask_home(&w, q, "", &[], at).0, vec!["us-east".to_string()]);
    // After the move, the old home is the fallback inside the allowed set.
    assert_eq!(
        ask_home(&w, q, "", &["us-east"], at).0,
        vec!["eu-west".to_string()]
    );
}

#[test]
fn a_home_policy_refuses_what_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.csv"),
        "tenant,home,allowed,move_to,move_at\nacme,edge,,,\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "version: 1\n{REGIONS}\npolicies:\n  - {{ name: plain.example.com, method: home, tenants: t.csv, regions: [us-east, eu-west] }}\n  - {{ name: \"*.t.example.com\", method: home }}\n  - {{ name: www.example.com, method: nearest, tenants: t.csv, unknown: nearest }}\n  - {{ name: \"*.u.example.com\", method: home, tenants: missing.csv }}\n  - {{ name: \"*.v.example.com\", method: home, tenants: t.csv, unknown: somewhere, regions: [edge] }}\n"
        ),
    )
    .unwrap();
    let errors: Vec<String> = load(dir.path(), None, 5.0)
        .unwrap_err()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let text = errors.join("\n");
    for want in [
        "method home needs a wildcard name",
        "region \"edge\" is not one of the policy's regions",
        "method home needs tenants:",
        "tenants: only applies to method home",
        "unknown: only applies to method home",
        "missing.csv: cannot read tenant file",
        "unknown: \"somewhere\" is not nearest, nxdomain or a list of regions",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}
