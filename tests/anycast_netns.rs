//! Anycast with health over real BGP: a router namespace (rt) running BIRD 2 with a BGP
//! session to each of two nodes, a client namespace (cl) routed through it, and two
//! Meridian instances in a cluster, each with the anycast nameserver address
//! 198.51.100.53 on its loopback: n1 announces through BIRD (the `bird` driver enables
//! and disables its `protocol static`), n2 through ExaBGP (which runs `meridian anycast
//! exabgp`). eu-west's health endpoint is a backend in the router's namespace; its
//! prefix 203.0.113.0/24 is announced while eu-west serves. Faults are real: nftables
//! drops DNS on a node, the backend is killed, a node is stopped with SIGTERM.
//! Needs root, iproute2, nftables, BIRD 2 (Debian bird2) and ExaBGP (CI has them);
//! elsewhere it says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{HTTPD_OK, Namespaces, ip};
use common::{BIN, skip};

const ANYCAST: &str = "198.51.100.53";
const NS_PREFIX: &str = "198.51.100.53/32";
const WEB_PREFIX: &str = "203.0.113.0/24";
/// The nodes' addresses on their links to the router.
const N1: &str = "192.0.2.2";
const N2: &str = "192.0.2.10";
/// eu-west's health endpoint, on the router's loopback.
const BACKEND: &str = "192.0.2.33:8080";
const INTERVAL: Duration = Duration::from_millis(300);
const RISE: u32 = 3;
const FALL: u32 = 2;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   198.51.100.53
";

const ROUTER_BIRD: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol kernel { merge paths on; ipv4 { import none; export all; }; }
template bgp node { local as 64500; hold time 9; connect retry time 1; ipv4 { import all; export none; }; }
protocol bgp ns1 from node { neighbor 192.0.2.2 as 64511; }
protocol bgp ns2 from node { neighbor 192.0.2.10 as 64512; }
"#;

const NODE_BIRD: &str = r#"
router id 192.0.2.2;
protocol device {}
protocol static anycast_ns { ipv4; route 198.51.100.53/32 via "lo"; }
protocol static anycast_web { ipv4; route 203.0.113.0/24 via "lo"; }
protocol bgp uplink {
  local 192.0.2.2 as 64511;
  neighbor 192.0.2.1 as 64500;
  hold time 9;
  connect retry time 1;
  ipv4 { import none; export where proto = "anycast_ns" || proto = "anycast_web"; };
}
"#;

struct Net(Namespaces);

impl Net {
    fn create() -> Option<Net> {
        let set = Namespaces::create("mra", &["rt", "n1", "n2", "cl"])?;
        for (k, n, inner, outer) in [
            (1, "n1", "192.0.2.2/29", "192.0.2.1/29"),
            (2, "n2", "192.0.2.10/29", "192.0.2.9/29"),
            (3, "cl", "192.0.2.18/29", "192.0.2.17/29"),
        ] {
            let gw = outer.trim_end_matches("/29");
            let ok = set.veth(
                (n, &format!("v{k}"), inner),
                ("rt", &format!("r{k}"), outer),
            ) && ip(&["-n", &set.ns(n), "route", "add", "default", "via", gw]);
            if !ok {
                return None;
            }
        }
        let ok = ip(&[
            "-n",
            &set.ns("rt"),
            "addr",
            "add",
            "192.0.2.33/32",
            "dev",
            "lo",
        ]) && ip(&[
            "-n",
            &set.ns("n1"),
            "addr",
            "add",
            "198.51.100.53/32",
            "dev",
            "lo",
        ]) && ip(&[
            "-n",
            &set.ns("n2"),
            "addr",
            "add",
            "198.51.100.53/32",
            "dev",
            "lo",
        ]) && set
            .exec("rt", "sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Net(set))
    }

    fn exec(&self, n: &str, cmd: &str) -> Command {
        self.0.exec(n, cmd)
    }
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A node's deployment: eu-west (probed at BACKEND) and us-east (no endpoints).
fn deployment(i: usize, addr: &str, driver: &str) -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    common::with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1\nregions:\n  - name: eu-west\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [198.51.100.10]\n    endpoints: [{{ name: web, probe: http, address: \"{BACKEND}\", path: /healthz, interval: 200ms, timeout: 150ms }}]\n    health: {{ window: 4, fail_error_rate: 0.5, fail_consecutive: 2, recover_error_rate: 0.0, recover_consecutive: 2, cooldown: 2s }}\n  - name: us-east\n    location: {{ lat: 39.04, lon: -77.49 }}\n    a: [192.0.2.100]\npolicies:\n  - {{ name: www.example.test, method: nearest, ttl: 30 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cluster.key"),
        "anycast-test-key-0123456789abcdef",
    )
    .unwrap();
    let peer = if i == 1 { N2 } else { N1 };
    let bird = if driver == "bird" {
        "  bird: { socket: bird.ctl }\n"
    } else {
        ""
    };
    let protocol = |p: &str| {
        if driver == "bird" {
            format!(", bird_protocol: {p}")
        } else {
            String::new()
        }
    };
    std::fs::write(
        dir.path().join("meridian.yaml"),
        format!(
            "version: 1
dns:
  listen: [\"{ANYCAST}:53\", \"{addr}:53\"]
  udp_sockets_per_address: 1
  nsid: true
http:
  listen: \"{addr}:9153\"
health:
  state_file: null
  startup_wait: 5s
cluster:
  instance: ns{i}
  listen: \"{addr}:7946\"
  peers: [\"{peer}:7946\"]
  secret_file: cluster.key
  isolation_timeout: 10s
  gossip_interval: 200ms
anycast:
  driver: {driver}
{bird}  prefixes:
    - {{ prefix: {NS_PREFIX}, when: serving{} }}
    - {{ prefix: {WEB_PREFIX}, when: {{ region: eu-west }}{} }}
  rise: {RISE}
  fall: {FALL}
  interval: {}ms
  min_announcing: 1
  drain_on_stop: 3s
",
            protocol("anycast_ns"),
            protocol("anycast_web"),
            INTERVAL.as_millis()
        ),
    )
    .unwrap();
    dir
}

/// The next hops the router has for `prefix`, as BIRD shows them.
fn paths(ctl: &Path, prefix: &str) -> Vec<String> {
    let out = Command::new("birdc")
        .args(["-s"])
        .arg(ctl)
        .args(["show", "route", prefix])
        .output()
        .expect("birdc");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut hops: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

/// The router's `birdc show route` for `prefix`, for the log.
fn show_route(ctl: &Path, prefix: &str) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(["show", "route", prefix])
        .output()
        .expect("birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The NSID of the instance that answers the client at the anycast address.
fn nsid(net: &Net, server: &str) -> Option<String> {
    let out = net
        .exec("cl", "dig")
        .args([
            &format!("@{server}"),
            "www.example.test",
            "A",
            "+nsid",
            "+time=1",
            "+tries=1",
        ])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("NSID:"))?;
    Some(
        line.rsplit('(')
            .next()?
            .trim_end_matches(')')
            .trim_matches('"')
            .to_string(),
    )
}

fn wait(what: &str, limit: Duration, logs: &[PathBuf], mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let text: Vec<String> = logs
                .iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect();
            panic!("{what}: not within {limit:?}\n{}", text.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops every DNS query arriving in namespace `n` (the instance there stops
/// answering, its self-query included), or lifts that.
fn drop_dns(net: &Net, n: &str, on: bool) {
    let script = if on {
        "add table inet anycast_test\nadd chain inet anycast_test input { type filter hook input priority 0; }\nadd rule inet anycast_test input udp dport 53 drop\n"
    } else {
        "delete table inet anycast_test\n"
    };
    let mut child = net
        .exec(n, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft in {n}");
}

fn backend(net: &Net) -> common::Process {
    let p = common::Process(
        net.exec("rt", "python3")
            .args(["-c", HTTPD_OK, BACKEND])
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !net
        .exec("rt", "python3")
        .args([
            "-c",
            "import socket; socket.create_connection(('192.0.2.33', 8080), 1).close()",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the backend did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

#[test]
fn routes_follow_health_through_bird_and_exabgp() {
    for (tool, arg) in [
        ("bird", "--version"),
        ("birdc", "-h"),
        ("exabgp", "--version"),
        ("nft", "--version"),
    ] {
        if !have(tool, arg) {
            return skip(&format!(
                "{tool} is not installed (Debian: bird2, exabgp, nftables)"
            ));
        }
    }
    let Some(net) = Net::create() else {
        return skip("cannot create network namespaces and veth pairs (needs root and iproute2)");
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("router.conf"), ROUTER_BIRD).unwrap();
    std::fs::write(w.join("node.conf"), NODE_BIRD).unwrap();
    let rt_ctl = w.join("router.ctl");
    let _router = common::Process(
        net.exec("rt", "bird")
            .args(["-f", "-c"])
            .arg(w.join("router.conf"))
            .arg("-s")
            .arg(&rt_ctl)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut backend_proc = Some(backend(&net));
    let d1 = deployment(1, N1, "bird");
    let d2 = deployment(2, N2, "exabgp");
    let _node_bird = common::Process(
        net.exec("n1", "bird")
            .args(["-f", "-c"])
            .arg(w.join("node.conf"))
            .arg("-s")
            .arg(d1.path().join("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let logs = [
        d1.path().join("log"),
        d2.path().join("log"),
        w.join("exabgp.log"),
    ];
    let serve = |n: &str, d: &Path, log: &Path| {
        common::Process(
            net.exec(n, BIN)
                .args(["serve", "--config"])
                .arg(d.join("meridian.yaml"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let _m1 = serve("n1", d1.path(), &logs[0]);
    let mut m2 = Some(serve("n2", d2.path(), &logs[1]));
    std::fs::write(
        w.join("exabgp.conf"),
        format!(
            "process meridian {{\n  run {BIN} anycast exabgp --config {};\n  encoder text;\n}}\nneighbor 192.0.2.9 {{\n  router-id 192.0.2.10;\n  local-address 192.0.2.10;\n  local-as 64512;\n  peer-as 64500;\n  hold-time 9;\n  api {{ processes [ meridian ]; }}\n}}\n",
            d2.path().join("meridian.yaml").display()
        ),
    )
    .unwrap();
    let _exabgp = common::Process(
        net.exec("n2", "env")
            .args([
                "exabgp.daemon.user=root",
                "exabgp.log.destination=stdout",
                "exabgp",
            ])
            .arg(w.join("exabgp.conf"))
            .stdout(std::fs::File::create(&logs[2]).unwrap())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&logs[2])
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    );
    let mut both = vec![N1.to_string(), N2.to_string()];
    both.sort();

    // Both healthy: two paths to each prefix, and the client is answered (NSID says by whom).
    wait(
        "two paths to the nameserver address",
        Duration::from_secs(60),
        &logs,
        || paths(&rt_ctl, NS_PREFIX) == both,
    );
    wait(
        "two paths to eu-west's prefix",
        Duration::from_secs(20),
        &logs,
        || paths(&rt_ctl, WEB_PREFIX) == both,
    );
    eprintln!("router, both healthy:\n{}", show_route(&rt_ctl, NS_PREFIX));
    let first = nsid(&net, ANYCAST).expect("the client is answered at the anycast address");
    // n2's server sees its ExaBGP process read the routes (the driver's session state).
    let api = net
        .exec("n2", "curl")
        .args(["-s", "http://192.0.2.10:9153/api/v1/anycast"])
        .output()
        .expect("curl");
    let api: serde_json::Value = serde_json::from_slice(&api.stdout).unwrap();
    assert!(
        api["exabgp_polled_seconds_ago"]
            .as_f64()
            .is_some_and(|s| s < 2.0),
        "{api:#}"
    );
    assert!(first == "ns1" || first == "ns2", "{first}");

    // n1 stops answering DNS: its route is gone within fall × interval + 1 s, and the
    // client is answered by n2.
    let bound = INTERVAL * FALL + Duration::from_secs(1);
    drop_dns(&net, "n1", true);
    let took = wait("n1's route withdrawn", bound, &logs, || {
        paths(&rt_ctl, NS_PREFIX) == [N2]
    });
    eprintln!("n1 stopped answering: its route left the router after {took:?} (bound {bound:?})");
    eprintln!(
        "router, n1 not answering:\n{}",
        show_route(&rt_ctl, NS_PREFIX)
    );
    assert_eq!(nsid(&net, ANYCAST).as_deref(), Some("ns2"));

    // n1 answers again: announced only after `rise` healthy evaluations.
    drop_dns(&net, "n1", false);
    let back = wait("n1's route back", Duration::from_secs(10), &logs, || {
        paths(&rt_ctl, NS_PREFIX) == both
    });
    eprintln!("n1 answers again: announced after {back:?}");
    assert!(
        back >= INTERVAL * (RISE - 1),
        "announced after {back:?}, before {RISE} healthy evaluations"
    );

    // min_announcing 1: with n1 withdrawn, a sick n2 keeps announcing, and says why.
    drop_dns(&net, "n1", true);
    wait("n1 withdrawn again", bound, &logs, || {
        paths(&rt_ctl, NS_PREFIX) == [N2]
    });
    drop_dns(&net, "n2", true);
    std::thread::sleep(bound + INTERVAL * 2);
    assert_eq!(
        paths(&rt_ctl, NS_PREFIX),
        [N2],
        "the last announcer was withdrawn"
    );
    let log2 = std::fs::read_to_string(&logs[1]).unwrap();
    assert!(
        log2.contains("keeping the route") && log2.contains("last_announcers"),
        "{log2}"
    );
    drop_dns(&net, "n1", false);
    drop_dns(&net, "n2", false);
    wait("both back", Duration::from_secs(10), &logs, || {
        paths(&rt_ctl, NS_PREFIX) == both
    });

    // The region prefix follows the shared state: eu-west's backend dies for both.
    drop(backend_proc.take());
    wait(
        "eu-west's prefix withdrawn by both",
        Duration::from_secs(10),
        &logs,
        || paths(&rt_ctl, WEB_PREFIX).is_empty(),
    );
    assert_eq!(
        paths(&rt_ctl, NS_PREFIX),
        both,
        "the nameserver address stays"
    );
    backend_proc = Some(backend(&net));
    wait(
        "eu-west's prefix back on both",
        Duration::from_secs(20),
        &logs,
        || paths(&rt_ctl, WEB_PREFIX) == both,
    );

    // SIGTERM with drain_on_stop: n2 withdraws at once (through ExaBGP) and keeps
    // answering the while.
    let pid = m2.as_ref().unwrap().0.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let gone = wait(
        "n2's routes withdrawn on stop",
        Duration::from_secs(2),
        &logs,
        || paths(&rt_ctl, NS_PREFIX) == [N1] && paths(&rt_ctl, WEB_PREFIX) == [N1],
    );
    eprintln!("n2 stopping: its routes left the router after {gone:?}");
    assert_eq!(
        nsid(&net, N2).as_deref(),
        Some("ns2"),
        "n2 still answers while it drains"
    );
    assert_eq!(nsid(&net, ANYCAST).as_deref(), Some("ns1"));
    let _ = m2.take().unwrap().0.wait();
    let exa = std::fs::read_to_string(&logs[2]).unwrap_or_default();
    // ExaBGP's own word that it withdrew the route from its neighbour.
    assert!(
        exa.lines()
            .any(|l| l.contains("route removed") && l.contains("198.51.100.53/32")),
        "{exa}"
    );
    drop(backend_proc);
}
