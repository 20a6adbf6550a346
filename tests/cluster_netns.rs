//! The cluster over real links: three instances in network namespaces of their own
//! (n1, n2, n3), the backends in a fourth (be), joined through a hub namespace that
//! routes between them. Cutting one instance's path to a backend (a blackhole route in
//! its namespace: its probes time out, its gossip still flows) moves no answer; cutting
//! a second instance's path moves every instance's; healing brings all back after the
//! cooldown counted on the shared state. Needs root, iproute2 and python3 (CI has them); elsewhere it says so and
//! passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{HTTPD_OK, Namespaces, ip};
use common::{BIN, skip};

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";
const EU: &str = "198.51.100.10";
const US: &str = "192.0.2.10";
/// The backends, in namespace `be`.
const EU_BACKEND: &str = "10.77.9.2:8080";
const US_BACKEND: &str = "10.77.9.3:8080";

/// Namespaces n1, n2, n3 (the instances) and be (the backends), each joined to a hub
/// that routes between them; deleted at the end (their veths go with them).
struct Net(Namespaces);

impl Net {
    fn ns(&self, short: &str) -> String {
        self.0.ns(short)
    }

    fn create() -> Option<Net> {
        let set = Namespaces::create("mrc", &["hub", "n1", "n2", "n3", "be"])?;
        let hub = set.ns("hub");
        for (k, n) in [(1, "n1"), (2, "n2"), (3, "n3"), (9, "be")] {
            let (inner, outer) = (format!("v{k}"), format!("h{k}"));
            let ok = set.veth(
                (n, &inner, &format!("10.77.{k}.2/24")),
                ("hub", &outer, &format!("10.77.{k}.1/24")),
            ) && ip(&[
                "-n",
                &set.ns(n),
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{k}.1"),
            ]);
            if !ok {
                return None;
            }
        }
        ip(&[
            "-n",
            &set.ns("be"),
            "addr",
            "add",
            "10.77.9.3/24",
            "dev",
            "v9",
        ]);
        let forward = Command::new("ip")
            .args([
                "netns",
                "exec",
                &hub,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .is_ok_and(|s| s.success());
        forward.then_some(Net(set))
    }

    fn exec(&self, n: &str, cmd: &str) -> Command {
        self.0.exec(n, cmd)
    }
}

fn deployment(i: usize) -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    common::with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let endpoint = |a: &str| {
        format!(
            "{{ name: web, probe: http, address: \"{a}\", path: /healthz, interval: 200ms, timeout: 150ms }}"
        )
    };
    let health = "{ window: 6, fail_error_rate: 0.5, fail_consecutive: 2, recover_error_rate: 0.0, recover_consecutive: 3, cooldown: 5s }";
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1\nregions:\n  - name: eu-west\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [{EU}]\n    endpoints: [{}]\n    health: {health}\n  - name: us-east\n    location: {{ lat: 39.04, lon: -77.49 }}\n    a: [{US}]\n    endpoints: [{}]\n    health: {health}\npolicies:\n  - {{ name: www.example.test, method: nearest, ttl: 30 }}\n",
            endpoint(EU_BACKEND),
            endpoint(US_BACKEND)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cluster.key"),
        "netns-test-key-0123456789abcdef",
    )
    .unwrap();
    let peers: Vec<String> = (1..=3)
        .filter(|&j| j != i)
        .map(|j| format!("\"10.77.{j}.2:7946\""))
        .collect();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        format!(
            "version: 1\ndns:\n  listen: [\"10.77.{i}.2:5353\"]\n  udp_sockets_per_address: 1\nhttp:\n  listen: \"10.77.{i}.2:9153\"\nhealth:\n  state_file: null\n  startup_wait: 5s\ncluster:\n  instance: ns{i}\n  listen: \"10.77.{i}.2:7946\"\n  peers: [{}]\n  secret_file: cluster.key\n  isolation_timeout: 10s\n  gossip_interval: 200ms\n",
            peers.join(", ")
        ),
    )
    .unwrap();
    dir
}

/// What instance `i` answers a client in the UK, asked with `dig` from its namespace.
fn uk(net: &Net, i: usize) -> String {
    let out = net
        .exec(&format!("n{i}"), "dig")
        .args([
            &format!("@10.77.{i}.2"),
            "-p",
            "5353",
            "www.example.test",
            "A",
            "+short",
            "+subnet=81.2.69.0/24",
            "+time=1",
            "+tries=1",
        ])
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_all(net: &Net, want: &str, limit: Duration, logs: &[std::path::PathBuf]) -> Duration {
    let start = Instant::now();
    loop {
        if (1..=3).all(|i| uk(net, i) == want) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let got: Vec<String> = (1..=3).map(|i| uk(net, i)).collect();
            let text: Vec<String> = logs
                .iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect();
            panic!(
                "not all {want} within {limit:?}: {got:?}\n{}",
                text.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_instance_cut_from_a_backend_moves_nothing_two_move_everyone() {
    let Some(net) = Net::create() else {
        return skip("cannot create network namespaces and veth pairs (needs root and iproute2)");
    };
    if Command::new("python3").arg("-c").arg("1").status().is_err() {
        return skip("python3 (the backends' HTTP server) is not installed");
    }
    let _backend = common::Process(
        net.exec("be", "python3")
            .args(["-c", HTTPD_OK, EU_BACKEND, US_BACKEND])
            .spawn()
            .unwrap(),
    );
    // Both backends listening before the instances probe them.
    let start = Instant::now();
    while !net
        .exec("be", "python3")
        .args(["-c", "import socket\nfor a in ('10.77.9.2', '10.77.9.3'): socket.create_connection((a, 8080), 1).close()"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the backends did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dirs: Vec<tempfile::TempDir> = (1..=3).map(deployment).collect();
    let logs: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().join("log")).collect();
    let _instances: Vec<common::Process> = (1..=3)
        .map(|i| {
            common::Process(
                net.exec(&format!("n{i}"), BIN)
                    .args(["serve", "--config"])
                    .arg(dirs[i - 1].path().join("meridian.yaml"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&logs[i - 1]).unwrap())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_all(&net, EU, Duration::from_secs(60), &logs);

    // ns1's path to the eu-west backend is cut: its probes time out, nobody moves.
    cut(&net, "n1", "add");
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
        // Its own verdict (the measured transition), not the quorum's.
        if log.lines().any(|l| {
            l.contains("health transition")
                && l.contains("key=\"eu-west/web\"")
                && l.contains("to=\"down\"")
                && !l.contains("cause=\"quorum\"")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ns1 never saw eu-west down:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for i in 1..=3 {
            assert_eq!(uk(&net, i), EU, "ns{i} moved on ns1's broken link alone");
        }
    }

    // ns2's path is cut too: two of three see it down, every instance moves.
    cut(&net, "n2", "add");
    let moved = Instant::now();
    // Within the probe bound (2 failures at 200 ms) plus two gossip rounds (200 ms),
    // with a second of slack for the polling, as the health tests allow.
    let took = wait_all(&net, US, Duration::from_millis(400 + 400 + 1000), &logs);
    eprintln!("two instances cut: all answered us-east after {took:?}");

    // Healed at once: back everywhere, but not before the cooldown (5 s) counted on the
    // shared state from when it went down (after the cut).
    cut(&net, "n1", "del");
    cut(&net, "n2", "del");
    wait_all(&net, EU, Duration::from_secs(15), &logs);
    let back = moved.elapsed();
    eprintln!("healed: all back on eu-west {back:?} after the second cut");
    let ns3 = std::fs::read_to_string(&logs[2]).unwrap_or_default();
    assert!(
        back >= Duration::from_secs(5),
        "back after {back:?}, before the cooldown:\n{ns3}"
    );
}

/// Adds or deletes a blackhole route to the eu-west backend in namespace `n`.
fn cut(net: &Net, n: &str, action: &str) {
    assert!(ip(&[
        "-n",
        &net.ns(n),
        "route",
        action,
        "blackhole",
        "10.77.9.2/32"
    ]));
}
