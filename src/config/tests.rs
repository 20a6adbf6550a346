//! `meridian.yaml` as users write it: defaults, every mistake at its position.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::health::peers::Quorum;

fn load_in(dir: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let file = dir.join("meridian.yaml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file, &Overrides::default())
}

fn load(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let dir = tempfile::tempdir().unwrap();
    load_in(dir.path(), text)
}

/// (line, column, message) of each error.
fn errors(text: &str) -> Vec<(usize, Option<usize>, String)> {
    load(text)
        .unwrap_err()
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = load("version: 1\n").unwrap();
    assert_eq!(
        c.startup.dns.listen,
        vec!["127.0.0.1:5353".parse().unwrap()]
    );
    assert_eq!(c.startup.http_listen, "127.0.0.1:9153".parse().unwrap());
    assert_eq!(c.startup.dns.tcp_idle_timeout, Duration::from_secs(10));
    assert_eq!(c.edns_udp_size, 1232);
    assert!(c.zones_dir.ends_with("zones"));
    assert!(
        c.startup
            .state_file
            .as_ref()
            .is_some_and(|p| p.ends_with("meridian.state.json"))
    );
}

#[test]
fn the_shipped_configuration_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = Config::load(&root.join("meridian.yaml"), &Overrides::default()).unwrap();
    assert!(c.geo_database.exists(), "{}", c.geo_database.display());
    assert!(c.latency_table.is_some());
}

#[test]
fn three_mistakes_are_reported_together_with_line_and_column() {
    let got = errors(
        "version: 1\ndns:\n  tcp_idle_timeout: soon\n  edns_udp_size: 100\n  listen: [\"127.0.0.1:53\", \"nope\"]\n",
    );
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (3, Some(21)), "{got:?}");
    assert!(got[0].2.contains("tcp_idle_timeout"), "{got:?}");
    assert_eq!((got[1].0, got[1].1), (4, Some(18)), "{got:?}");
    assert_eq!(got[2].0, 5, "{got:?}");
    assert!(got[2].2.contains("nope"), "{got:?}");
}

#[test]
fn an_unknown_key_in_each_table_is_reported_at_its_line() {
    let tables = [
        ("", 1),
        ("dns:\n  ", 1),
        ("http:\n  ", 1),
        ("geo:\n  ", 1),
        ("health:\n  ", 1),
        ("geo:\n  default_location:\n    ", 2),
        ("overrides:\n  - region: x\n    state: drain\n    ", 3),
    ];
    for (prefix, depth) in tables {
        let text = format!("version: 1\n{prefix}colour: blue\n");
        let got = errors(&text);
        assert_eq!(got.len(), 1, "{text}: {got:?}");
        assert_eq!(
            got[0].0,
            2 + depth - usize::from(prefix.is_empty()),
            "{text}: {got:?}"
        );
        assert!(got[0].2.contains("colour"), "{text}: {got:?}");
    }
}

#[test]
fn a_comment_mentioning_latency_does_not_make_the_table_required() {
    let c = load("version: 1\n# latency: see geoip/latency.yaml\ngeo: {}\n").unwrap();
    assert_eq!(c.latency_table, None, "absent and no file: no table");
    let c = load("version: 1\ngeo:\n  latency: null\n").unwrap();
    assert_eq!(c.latency_table, None);
    let c = load("version: 1\ngeo:\n  latency: rtt.yaml\n").unwrap();
    assert!(c.latency_table.is_some_and(|p| p.ends_with("rtt.yaml")));
}

#[test]
fn bad_values_name_the_key_and_the_version_is_checked() {
    let got = errors("version: 2\n");
    assert_eq!((got[0].0, got[0].1), (1, Some(10)), "{got:?}");
    let got = errors("version: 1\ngeo:\n  default_location: { country: XX }\n");
    assert!(got[0].2.contains("XX"), "{got:?}");
    assert_eq!(got[0].0, 3);
}

#[test]
fn startup_settings_that_changed_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = load_in(dir.path(), "version: 1\n").unwrap();
    let b = load_in(
        dir.path(),
        "version: 1\ndns:\n  listen: [\"127.0.0.1:5454\"]\n  edns_udp_size: 1400\nhttp:\n  listen: \"127.0.0.1:9999\"\n",
    )
    .unwrap();
    assert_eq!(a.startup.changed(&b.startup), ["dns.listen", "http.listen"]);
    assert!(a.startup.changed(&a.startup.clone()).is_empty());
}

#[test]
fn transfer_settings_are_checked_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.key"), "not base64 at all!\n").unwrap();
    std::fs::write(
        dir.path().join("good.key"),
        "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
    )
    .unwrap();
    let got: Vec<(usize, String)> = load_in(
        dir.path(),
        "version: 1\ntransfer:\n  tsig_keys:\n    k1: { algorithm: hmac-md5, secret_file: good.key }\n    k2: { algorithm: hmac-sha256, secret_file: bad.key }\n  allow:\n    - { from: [\"192.0.2.1/24\", \"nowhere\"], key: k3 }\n  notify: [\"192.0.2.53:53\", \"ns2\"]\n",
    )
    .unwrap_err()
    .into_iter()
    .map(|d| (d.line, d.message))
    .collect();
    let lines: Vec<usize> = got.iter().map(|g| g.0).collect();
    assert_eq!(lines, [4, 5, 7, 7, 7, 8], "{got:?}");
    assert!(got[0].1.contains("hmac-md5"), "{got:?}");
    assert!(got[1].1.contains("not base64"), "{got:?}");
    assert!(got[2].1.contains("host bits"), "{got:?}");
    assert!(got[3].1.contains("\"nowhere\""), "{got:?}");
    assert!(
        got[4].1.contains("\"k3\" is not in transfer.tsig_keys"),
        "{got:?}"
    );
    assert!(got[5].1.contains("\"ns2\""), "{got:?}");
    let c = load_in(
        dir.path(),
        "version: 1\ntransfer:\n  tsig_keys: { xfr: { algorithm: hmac-sha256, secret_file: good.key } }\n  allow: [{ from: [\"127.0.0.1\"], key: xfr }, { from: [\"10.0.0.0/8\"] }]\n  notify: [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let t = c.transfer.unwrap();
    assert_eq!(t.notify, ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(t.rules_for(ip("127.0.0.1")).count(), 1);
    assert_eq!(t.rules_for(ip("127.0.0.2")).count(), 0);
    assert!(t.rules_for(ip("10.1.2.3")).all(|r| r.key.is_none()));
    assert!(c.warnings.iter().any(|w| w.message.contains("no TSIG")));
}

#[test]
fn cluster_settings_are_checked_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.key"), "tooshort\n").unwrap();
    std::fs::write(dir.path().join("good.key"), "0123456789abcdef0123\n").unwrap();
    let got: Vec<(usize, String)> = load_in(
        dir.path(),
        "version: 1\ncluster:\n  instance: \"ns 1\"\n  listen: nowhere\n  peers: [\"127.0.0.2:7946\", \"bad\"]\n  secret_file: short.key\n  quorum: most\n  isolation_timeout: 10ms\n",
    )
    .unwrap_err()
    .into_iter()
    .map(|d| (d.line, d.message))
    .collect();
    let lines: Vec<usize> = got.iter().map(|g| g.0).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{got:?}");
    assert!(got[3].1.contains("at least 16"), "{got:?}");
    assert!(
        load_in(
            dir.path(),
            "version: 1\ncluster:\n  listen: \"127.0.0.1:7946\"\n  secret_file: missing.key\n"
        )
        .unwrap_err()[0]
            .message
            .contains("missing.key")
    );
    let c = load_in(
        dir.path(),
        "version: 1\ncluster:\n  instance: ns1\n  listen: \"127.0.0.1:7946\"\n  peers: [\"ns2.example.net:7946\"]\n  secret_file: good.key\n  quorum: 2\n",
    )
    .unwrap();
    let cl = c.startup.cluster.unwrap();
    assert_eq!(cl.quorum, Quorum::Count(2));
    assert_eq!(cl.isolation_timeout, Duration::from_secs(30));
    assert_eq!(cl.secret, b"0123456789abcdef0123");
    assert!(
        !format!("{cl:?}").contains("0123456789"),
        "the key stays out of logs"
    );
}

/// The line (1-based) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn three_mistakes_are_three_errors_each_at_its_line_and_column() {
    let text = "version: 1\ndns:\n  listen: [\"127.0.0.1:notaport\"]\n  tcp_idle_timeout: soon\n  colour: blue\n";
    let got = errors(text);
    let at: Vec<(usize, Option<usize>)> = got.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(at.contains(&(3, Some(12))), "bad address: {got:?}");
    assert!(at.contains(&(4, Some(21))), "bad duration: {got:?}");
    assert!(at.contains(&(5, Some(3))), "unknown key: {got:?}");
    assert!(
        got.iter()
            .any(|(_, _, m)| m.contains("unknown field `colour`"))
    );
}

/// Every key of the schema, given a value of the wrong type, is reported, and so is a
/// mistake next to it (before or after): one mistake never hides another.
#[test]
fn every_key_mistyped_is_reported_with_its_neighbour() {
    // (the section with the mistyped key on the line marked `# mistyped`)
    let cases: &[&str] = &[
        "version: one # mistyped",
        "dns:\n  listen: {a: 1} # mistyped",
        "dns:\n  edns_udp_size: [1] # mistyped",
        "dns:\n  tcp_idle_timeout: [1] # mistyped",
        "dns:\n  tcp_max_connections: many # mistyped",
        "dns:\n  tcp_max_queries: many # mistyped",
        "dns:\n  udp_sockets_per_address: many # mistyped",
        "dns: 5 # mistyped",
        "http:\n  listen: [1] # mistyped",
        "http:\n  admin_token: [1] # mistyped",
        "http: [1] # mistyped",
        "zones: [1] # mistyped",
        "policies: [1] # mistyped",
        "geoip: [1] # mistyped",
        "geo:\n  database: [1] # mistyped",
        "geo:\n  asn_database: [1] # mistyped",
        "geo:\n  latency: [1] # mistyped",
        "geo:\n  latency_overhead_ms: fast # mistyped",
        "geo:\n  default_location: 5 # mistyped",
        "geo:\n  default_location:\n    country: [1] # mistyped",
        "geo:\n  default_location:\n    lat: north # mistyped",
        "geo:\n  default_location:\n    lon: west # mistyped",
        "overrides: 5 # mistyped",
        "overrides:\n  - region: [1] # mistyped\n    state: drain",
        "overrides:\n  - region: eu-west\n    state: sideways # mistyped",
        "overrides:\n  - region: eu-west\n    state: drain\n    reason: [1] # mistyped",
        "health:\n  state_file: [1] # mistyped",
        "health:\n  startup_wait: [1] # mistyped",
        "cluster: 5 # mistyped",
        "cluster:\n  listen: [1] # mistyped\n  secret_file: s.key",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: [1] # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  instance: [1] # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  advertise: [1] # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  peers: 5 # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  quorum: [1] # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  isolation_timeout: [1] # mistyped",
        "cluster:\n  listen: 127.0.0.1:7946\n  secret_file: s.key\n  gossip_interval: [1] # mistyped",
        "rrl: 5 # mistyped",
        "rrl:\n  responses_per_second: many # mistyped",
        "rrl:\n  window: [1] # mistyped",
        "rrl:\n  slip: many # mistyped",
        "rrl:\n  ipv4_prefix: many # mistyped",
        "rrl:\n  ipv6_prefix: many # mistyped",
        "rrl:\n  exempt: 5 # mistyped",
        "transfer: 5 # mistyped",
        "transfer:\n  tsig_keys: 5 # mistyped",
        "transfer:\n  tsig_keys:\n    k:\n      algorithm: [1] # mistyped\n      secret_file: k.key",
        "transfer:\n  tsig_keys:\n    k:\n      algorithm: hmac-sha256\n      secret_file: [1] # mistyped",
        "transfer:\n  allow: 5 # mistyped",
        "transfer:\n  allow:\n    - from: 5 # mistyped",
        "transfer:\n  allow:\n    - from: [127.0.0.1]\n      key: [1] # mistyped",
        "transfer:\n  notify: 5 # mistyped",
        "dnssec: 5 # mistyped",
        "dnssec:\n  keys: [1] # mistyped",
        "dnssec:\n  signature_validity: [1] # mistyped",
        "dnssec:\n  refresh: [1] # mistyped",
        "dnssec:\n  max_online_signatures_per_second: many # mistyped",
        "limits: 5 # mistyped",
        "limits:\n  zone_records: many # mistyped",
        "limits:\n  records_per_name: many # mistyped",
    ];
    for case in cases {
        let with_version = |body: &str| {
            if case.starts_with("version") {
                body.to_string()
            } else {
                format!("version: 1\n{body}")
            }
        };
        for text in [
            with_version(&format!("{case}\ncolour: blue\n")),
            with_version(&format!("colour: blue\n{case}\n")),
        ] {
            let got = errors(&text);
            let lines: Vec<usize> = got.iter().map(|(l, _, _)| *l).collect();
            let (mistyped, neighbour) = (line_of(&text, "# mistyped"), line_of(&text, "colour"));
            assert!(
                lines.contains(&mistyped),
                "{text}\nmistyped key not reported at {mistyped}: {got:?}"
            );
            assert!(
                lines.contains(&neighbour),
                "{text}\nneighbour not reported at {neighbour}: {got:?}"
            );
        }
    }
}
