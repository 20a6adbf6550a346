//! Three instances of the NS set on their own loopback addresses (DNS, HTTP and gossip
//! on 127.0.0.1N), each probing the same local backends, gossiping with an
//! authenticated key: one vantage point failing alone moves nothing, two of three move
//! every instance, answers agree for hundreds of client subnets, a drain set on one
//! applies on all, a lone survivor isolates itself and rejoins without a flap, and a
//! peer with the wrong key or garbage datagrams change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::httpd::Httpd;
use common::*;
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";
const EU: &str = "198.51.100.10";
const US: &str = "192.0.2.10";
const TOKEN: &str = "cluster-test-token";
const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Node {
    name: String,
    ip: String,
    dns: SocketAddr,
    http: SocketAddr,
    config: PathBuf,
    _dir: tempfile::TempDir,
    m: Option<Meridian>,
}

impl Node {
    fn start(&mut self) {
        self.m = Some(Meridian::start_at(&self.config, self.dns, self.http));
    }

    fn spawn(&mut self) {
        self.m = Some(Meridian::spawn_at(&self.config, self.dns, self.http));
    }

    fn stop(&mut self) {
        if let Some(mut m) = self.m.take() {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = http(self.http, "GET", "/api/v1/status", &[], "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn metrics(&self) -> String {
        http(self.http, "GET", "/metrics", &[], "").1
    }

    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.config.parent().unwrap().join("meridian.log"))
            .unwrap_or_default()
    }
}

/// Spawns them together (each waits for a peer before it serves), then waits for all.
fn start_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.spawn();
    }
    for n in nodes.iter() {
        n.m.as_ref().unwrap().wait_ready();
    }
}

fn policies(dir: &Path, eu: SocketAddr, us: SocketAddr) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let endpoint = |a: SocketAddr| {
        format!(
            "{{ name: web, probe: http, address: \"{a}\", path: /healthz, interval: 150ms, timeout: 120ms }}"
        )
    };
    let health = "{ window: 6, fail_error_rate: 0.5, fail_consecutive: 2, fail_latency: 300ms, recover_error_rate: 0.0, recover_latency: 200ms, recover_consecutive: 3, cooldown: 2s }";
    std::fs::write(
        dir.join("policies/web.yaml"),
        format!(
            "version: 1
regions:
  - name: eu-west
    location: {{ lat: 53.35, lon: -6.26 }}
    a: [{EU}]
    endpoints: [{}]
    health: {health}
  - name: us-east
    location: {{ lat: 39.04, lon: -77.49 }}
    a: [{US}]
    endpoints: [{}]
    health: {health}
policies:
  - {{ name: www.example.test, method: nearest, ttl: 30 }}
",
            endpoint(eu),
            endpoint(us)
        ),
    )
    .unwrap();
}

/// Instance `i` (1-based) of `n`, gossiping on 127.0.0.1{i}:`gossip`.
fn node(i: usize, n: usize, gossip: u16, eu: SocketAddr, us: SocketAddr, key: &str) -> Node {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    policies(dir.path(), eu, us);
    std::fs::write(dir.path().join("cluster.key"), key).unwrap();
    let ip = format!("127.0.0.1{i}");
    let peers: Vec<String> = (1..=n)
        .filter(|&j| j != i)
        .map(|j| format!("\"127.0.0.1{j}:{gossip}\""))
        .collect();
    let config = dir.path().join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1
dns:
  udp_sockets_per_address: 1
http:
  admin_token: {TOKEN}
health:
  state_file: state.json
  startup_wait: 5s
cluster:
  instance: ns{i}
  listen: \"{ip}:{gossip}\"
  peers: [{}]
  secret_file: cluster.key
  quorum: majority
  isolation_timeout: 4s
  gossip_interval: 200ms
",
            peers.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    Node {
        name: format!("ns{i}"),
        dns: format!("{ip}:{port}").parse().unwrap(),
        http: format!("{ip}:{}", free_port()).parse().unwrap(),
        ip,
        config,
        _dir: dir,
        m: None,
    }
}

fn answer_for(dns: SocketAddr, subnet: &str) -> Option<String> {
    let mut q = query_msg("www.example.test.", RecordType::A, None);
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        subnet.parse().unwrap(),
        24,
        0,
    )));
    q.set_edns(e);
    let bytes = try_udp(dns, &q.to_vec().unwrap(), Duration::from_secs(1))?;
    let r = Message::from_vec(&bytes).ok()?;
    let mut a: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
    a.sort();
    Some(a.join(","))
}

/// The answer for a client in the UK (nearest: eu-west, then us-east).
fn uk(n: &Node) -> String {
    answer_for(n.dns, "81.2.69.0").unwrap_or_default()
}

fn wait_all(nodes: &[&Node], want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if nodes.iter().all(|n| uk(n) == want) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let got: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}={}", n.name, uk(n)))
                .collect();
            panic!(
                "not every instance answers {want} within {limit:?}: {got:?}\n{}",
                nodes
                    .iter()
                    .map(|n| n.log())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stays_all(nodes: &[&Node], want: &str, for_: Duration) {
    let start = Instant::now();
    while start.elapsed() < for_ {
        for n in nodes {
            assert_eq!(
                uk(n),
                want,
                "{} changed after {:?}; log:\n{}",
                n.name,
                start.elapsed(),
                n.log()
            );
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// A few hundred client /24s spread over the address space.
fn subnets() -> Vec<String> {
    let mut x: u32 = 0x9e37_79b9;
    (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let [a, b, c, _] = x.to_be_bytes();
            format!("{}.{b}.{c}.0", 1 + a % 223)
        })
        .collect()
}

fn same_answers_everywhere(nodes: &[&Node]) -> usize {
    let mut distinct = std::collections::BTreeSet::new();
    for s in subnets() {
        let answers: Vec<Option<String>> = nodes.iter().map(|n| answer_for(n.dns, &s)).collect();
        assert!(
            answers[0].is_some(),
            "{s}: no answer from {}",
            nodes[0].name
        );
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{s}: instances disagree: {answers:?}"
        );
        distinct.insert(answers[0].clone());
    }
    distinct.len()
}

fn wait_peers(nodes: &[&Node], live: usize) {
    let start = Instant::now();
    for n in nodes {
        loop {
            let st = n.status();
            let count = st["cluster"]["peers"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["live"] == true).count());
            if count == live {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: {count} live peers, not {live}: {st}\n{}",
                n.name,
                n.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn endpoint<'a>(st: &'a serde_json::Value, region: &str) -> &'a serde_json::Value {
    st["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["region"] == region)
        .unwrap()
}

#[test]
fn three_instances_decide_by_quorum_and_answer_alike() {
    let (eu, us) = (Httpd::start(), Httpd::start());
    let gossip = free_port();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| node(i, 3, gossip, eu.addr, us.addr, KEY))
        .collect();
    start_all(&mut nodes);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_peers(&all, 2);
    wait_all(&all, EU, Duration::from_secs(10));
    assert!(
        same_answers_everywhere(&all) >= 2,
        "both regions appear in the answers"
    );

    // Probes say which instance sent them.
    let agents = eu.agents.lock().unwrap().clone();
    for i in 1..=3 {
        let want = format!("Meridian/{} (ns{i})", env!("CARGO_PKG_VERSION"));
        assert!(agents.contains(&want), "{want} not in {agents:?}");
    }

    // eu-west fails for ns1's probes only: ns1 sees it down, nobody moves.
    eu.fail_for(&["(ns1)"]);
    let start = Instant::now();
    loop {
        let st = nodes[0].status();
        if endpoint(&st, "eu-west")["measured"] == "down" {
            let q = &endpoint(&st, "eu-west")["quorum"];
            assert_eq!(q["state"], "up", "{st}");
            assert_eq!(q["down"], 1, "{st}");
            assert_eq!(q["needed"], 2, "{st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ns1 never measured eu-west down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stays_all(&all, EU, Duration::from_secs(2));

    // Failing for two of three: out everywhere within the probe bound (2 failures at
    // 150 ms, a 120 ms timeout) plus two gossip rounds (200 ms), with the second of
    // slack for polling the health tests allow.
    eu.fail_for(&["(ns1)", "(ns2)"]);
    let took = wait_all(
        &all,
        US,
        Duration::from_millis(2 * 150 + 120 + 2 * 200 + 1000),
    );
    eprintln!("two of three: every instance moved within {took:?}");
    let votes = nodes[2]
        .metric("meridian_endpoint_votes{endpoint=\"web\",region=\"eu-west\",state=\"down\"}")
        .unwrap();
    assert_eq!(votes, 2.0, "{}", nodes[2].metrics());
    assert_eq!(
        same_answers_everywhere(&all),
        1,
        "every client now gets us-east"
    );
    let st = nodes[2].status();
    assert_eq!(
        endpoint(&st, "eu-west")["measured"],
        "up",
        "ns3's own probes still pass"
    );
    let t = st["transitions"].as_array().unwrap();
    assert!(
        t.iter()
            .any(|t| t["cause"] == "quorum" && t["key"] == "eu-west/web" && t["to"] == "down"),
        "{st}"
    );
    eu.fail_for(&[]);
    // Back after the cooldown (2 s), everywhere.
    wait_all(&all, EU, Duration::from_secs(8));

    // A drain set on one instance moves clients on all; cleared on another, back on all.
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = http(
        nodes[1].http,
        "POST",
        "/api/v1/regions/eu-west/drain",
        &[("Authorization", &auth)],
        "{\"reason\":\"cluster test\"}",
    );
    assert_eq!(code, 200, "{body}");
    wait_all(&all, US, Duration::from_secs(3));
    let st = nodes[0].status();
    let region = st["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "eu-west")
        .unwrap()
        .clone();
    assert_eq!(region["override"]["kind"], "drain", "{st}");
    let (code, body) = http(
        nodes[2].http,
        "POST",
        "/api/v1/regions/eu-west/undrain",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    wait_all(&all, EU, Duration::from_secs(3));

    // A peer with the wrong key is not admitted, and its datagrams are counted.
    let mut intruder = node(
        4,
        4,
        gossip,
        eu.addr,
        us.addr,
        "a completely different key!!",
    );
    intruder.start();
    std::thread::sleep(Duration::from_secs(2));
    let bad = nodes[0]
        .metric("meridian_cluster_auth_failures_total{reason=\"bad_mac\"}")
        .unwrap_or(0.0);
    assert!(bad > 0.0, "{}", nodes[0].metrics());
    let names: Vec<String> = nodes[0].status()["cluster"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&"ns4".to_string()), "{names:?}");
    assert_eq!(
        intruder.status()["cluster"]["peers"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(
        intruder
            .log()
            .contains("serving before any cluster peer was heard"),
        "it waited for a peer up to the startup wait: {}",
        intruder.log()
    );
    drop(intruder);

    // Garbage and replayed datagrams change nothing.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target: SocketAddr = format!("{}:{gossip}", nodes[0].ip).parse().unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i * 31 + j * 7) as u8).collect();
        sock.send_to(&junk, target).unwrap();
        let mut framed = b"MRD2".to_vec();
        framed.extend_from_slice(&junk);
        framed.resize(80, 0);
        sock.send_to(&framed, target).unwrap();
    }
    // Oversized: the largest UDP payload, framed as ours with a wrong tag.
    let mut big = b"MRD2".to_vec();
    big.resize(65_507, 0xa5);
    sock.send_to(&big, target).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        nodes[0]
            .metric("meridian_cluster_auth_failures_total{reason=\"bad_mac\"}")
            .unwrap_or(0.0)
            > bad,
        "the oversized datagram fails authentication"
    );
    assert!(
        nodes[0]
            .metric("meridian_cluster_auth_failures_total{reason=\"malformed\"}")
            .unwrap_or(0.0)
            >= 100.0
    );
    wait_peers(&all[..1], 2);
    stays_all(&all, EU, Duration::from_secs(1));

    // A second process under an existing name is named in that instance's log.
    let mut twin = node(3, 3, gossip, eu.addr, us.addr, KEY);
    let text = std::fs::read_to_string(&twin.config).unwrap().replace(
        &format!("listen: \"127.0.0.13:{gossip}\""),
        &format!("listen: \"127.0.0.14:{gossip}\""),
    );
    std::fs::write(&twin.config, text).unwrap();
    twin.spawn();
    let start = Instant::now();
    while !nodes[2]
        .log()
        .contains("another live instance uses this instance's name")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(twin);

    // An instance with the key whose only seed is this test's socket: one of its
    // authentic datagrams, addressed to that socket, captured and sent to ns1 three
    // times, is refused every time: it was sealed for another receiver. (Replays of a
    // datagram sealed for ns1 itself are `auth`'s unit tests.)
    let tap = UdpSocket::bind("127.0.0.1:0").unwrap();
    tap.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut source = node(5, 5, gossip, eu.addr, us.addr, KEY);
    let text = std::fs::read_to_string(&source.config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("peers:") {
                format!("  peers: [\"{}\"]", tap.local_addr().unwrap())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&source.config, text).unwrap();
    source.spawn();
    let mut buf = [0u8; 65536];
    let (n, _) = tap
        .recv_from(&mut buf)
        .expect("the instance gossips to its only seed");
    let misdirected = |n: &Node| {
        n.metric("meridian_cluster_auth_failures_total{reason=\"misdirected\"}")
            .unwrap_or(0.0)
    };
    let before = misdirected(&nodes[0]);
    for _ in 0..3 {
        tap.send_to(&buf[..n], target).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        misdirected(&nodes[0]) - before,
        3.0,
        "a datagram sealed for another receiver is refused by ns1 every time"
    );
}

#[test]
fn a_lone_instance_isolates_itself_and_rejoins_without_a_flap() {
    let (eu, us) = (Httpd::start(), Httpd::start());
    let gossip = free_port();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| node(i, 3, gossip, eu.addr, us.addr, KEY))
        .collect();
    start_all(&mut nodes);
    {
        let all: Vec<&Node> = nodes.iter().collect();
        wait_peers(&all, 2);
        wait_all(&all, EU, Duration::from_secs(10));
    }
    assert_eq!(nodes[2].metric("meridian_cluster_isolated"), Some(0.0));
    nodes[0].stop();
    nodes[1].stop();
    // Answers go on throughout; after the isolation timeout (4 s) it says it is alone.
    let start = Instant::now();
    loop {
        assert_eq!(uk(&nodes[2]), EU, "{}", nodes[2].log());
        if nodes[2].metric("meridian_cluster_isolated") == Some(1.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let alone = start.elapsed();
    assert!(
        alone >= Duration::from_secs(3),
        "isolated after {alone:?}, before the timeout"
    );
    assert_eq!(nodes[2].status()["cluster"]["isolated"], true);
    assert!(
        nodes[2]
            .log()
            .contains("deciding from this instance's own probes")
    );

    // Alone, its own view decides: a backend failing for its probes takes the region out.
    eu.fail_for(&["(ns3)"]);
    let start = Instant::now();
    while uk(&nodes[2]) != US {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eu.fail_for(&[]);
    let start = Instant::now();
    while uk(&nodes[2]) != EU {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    start_all(&mut nodes[..2]);
    let start = Instant::now();
    loop {
        assert_eq!(
            uk(&nodes[2]),
            EU,
            "flapped while rejoining; {}",
            nodes[2].log()
        );
        if nodes[2].metric("meridian_cluster_isolated") == Some(0.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    stays_all(&all, EU, Duration::from_secs(2));
    assert!(nodes[2].log().contains("peers heard again"));
}
