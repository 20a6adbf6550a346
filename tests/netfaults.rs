//! The health checker judging real network faults: Meridian in a network namespace of
//! its own, each region's backend behind its own veth pair, faults on the link to
//! eu-west: packet loss that raises the error rate past the threshold (nftables
//! dropping a random 60 % of what Meridian sends on that link), added delay that
//! crosses the degraded and then the failing latency, and a partition (every packet
//! dropped) and its heal. Delay is `tc netem` where the kernel has it; where it does
//! not (this project's CI kernel has no `sch_netem`), a relay process on the backend's
//! side of the link holds every segment for the delay, and the test says which it
//! used. States, logged transitions (with their causes) and DNS answers are checked
//! end to end. Needs root, iproute2, nftables and python3; without them it says so
//! and passes (under CI, where all of them are, a skip fails).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{HTTPD_OK, Namespaces};
use common::{BIN, skip};

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";
const EU: &str = "198.51.100.10";
const US: &str = "192.0.2.10";

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces m (Meridian), eu and us (one backend each), veth m<->eu, m<->us.
struct Net(Namespaces);

impl Net {
    fn ns(&self, n: &str) -> String {
        self.0.ns(n)
    }

    fn create() -> Option<Net> {
        let set = Namespaces::create("mrf", &["m", "eu", "us"])?;
        for (k, n) in [(1, "eu"), (2, "us")] {
            let ok = set.veth(
                ("m", &format!("to{n}"), &format!("10.78.{k}.1/24")),
                (n, "up0", &format!("10.78.{k}.2/24")),
            );
            if !ok {
                return None;
            }
        }
        Some(Net(set))
    }

    /// Drops that percentage of what Meridian sends to eu-west (0: none), with
    /// nftables in Meridian's namespace.
    fn loss(&self, percent: u32) -> bool {
        let m = self.ns("m");
        let nft = |args: &[&str]| {
            let mut cmd = vec!["ip", "netns", "exec", &m, "nft"];
            cmd.extend_from_slice(args);
            run(&cmd)
        };
        nft(&["delete", "table", "inet", "fault"]);
        if percent == 0 {
            return true;
        }
        let rule = if percent >= 100 {
            "add rule inet fault out oifname \"toeu\" drop".to_string()
        } else {
            format!(
                "add rule inet fault out oifname \"toeu\" numgen random mod 100 < {percent} drop"
            )
        };
        nft(&["add", "table", "inet", "fault"])
            && nft(&[
                "add",
                "chain",
                "inet",
                "fault",
                "out",
                "{ type filter hook output priority 0; }",
            ])
            && nft(&[&rule])
    }

    /// Replaces the netem qdisc on Meridian's link to eu-west (`None`: none).
    fn netem(&self, args: Option<&[&str]>) -> bool {
        let m = self.ns("m");
        run(&[
            "ip", "netns", "exec", &m, "tc", "qdisc", "del", "dev", "toeu", "root",
        ]);
        match args {
            None => true,
            Some(args) => {
                let mut cmd = vec![
                    "ip", "netns", "exec", &m, "tc", "qdisc", "add", "dev", "toeu", "root", "netem",
                ];
                cmd.extend_from_slice(args);
                run(&cmd)
            }
        }
    }

    fn exec(&self, n: &str, cmd: &str) -> Command {
        self.0.exec(n, cmd)
    }
}

/// A TCP relay that holds every segment, each way, for the milliseconds in a file
/// (read per segment), and the connection's setup too: a slow link in userspace.
const RELAY: &str = r#"
import asyncio, sys
listen, target, delay_file = sys.argv[1:4]
def delay():
    try:
        return float(open(delay_file).read().strip() or 0) / 1000
    except Exception:
        return 0
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            d = delay()
            if d:
                await asyncio.sleep(d)
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(r, w):
    d = delay()
    if d:
        await asyncio.sleep(d)
    h, p = target.rsplit(":", 1)
    try:
        r2, w2 = await asyncio.open_connection(h, int(p))
    except Exception:
        w.close()
        return
    await asyncio.gather(pipe(r, w2), pipe(r2, w))
async def main():
    h, p = listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, h, int(p))
    await server.serve_forever()
asyncio.run(main())
"#;

fn deployment() -> tempfile::TempDir {
    let dir = common::deployment(&[("example.test", ZONE)]);
    common::with_shipped_geoip(dir.path());
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    // Probes every 700 ms with a 700 ms timeout; judged on the error rate over 8 probes
    // (consecutive failures set out of the way), median latency degraded from 120 ms
    // and failing from 400 ms (a failed probe counts its timeout as its latency, so
    // the median, not a high percentile, keeps loss judged by the error rate).
    let endpoint = |a: &str| {
        format!(
            "{{ name: web, probe: http, address: \"{a}\", path: /, interval: 700ms, timeout: 700ms }}"
        )
    };
    let health = "{ window: 8, fail_error_rate: 0.5, fail_consecutive: 1000, fail_latency: 400ms, degraded_latency: 120ms, recover_error_rate: 0.2, recover_latency: 100ms, recover_consecutive: 3, cooldown: 3s, latency_percentile: 50 }";
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        format!(
            "version: 1\nregions:\n  - name: eu-west\n    location: {{ lat: 53.35, lon: -6.26 }}\n    a: [{EU}]\n    endpoints: [{}]\n    health: {health}\n  - name: us-east\n    location: {{ lat: 39.04, lon: -77.49 }}\n    a: [{US}]\n    endpoints: [{}]\n    health: {health}\npolicies:\n  - {{ name: www.example.test, method: nearest, ttl: 30 }}\n",
            endpoint("10.78.1.2:8081"),
            endpoint("10.78.2.2:8080")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  listen: [\"127.0.0.1:5353\"]\n  udp_sockets_per_address: 1\nhttp:\n  listen: \"127.0.0.1:9153\"\nhealth:\n  state_file: null\n  startup_wait: 5s\n",
    )
    .unwrap();
    dir
}

struct Case<'a> {
    net: &'a Net,
    log: std::path::PathBuf,
}

impl Case<'_> {
    fn uk(&self) -> String {
        let out = self
            .net
            .exec("m", "dig")
            .args([
                "@127.0.0.1",
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
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a logged eu-west/web transition to `to` with `cause`.
    fn transition(&self, to: &str, cause: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let found = self.log().lines().any(|l| {
                l.contains("key=\"eu-west/web\"")
                    && l.contains(&format!("to=\"{to}\""))
                    && l.contains(&format!("cause=\"{cause}\""))
            });
            if found {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "no eu-west/web → {to} ({cause}) within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answer(&self, want: &str, limit: Duration) {
        let start = Instant::now();
        while self.uk() != want {
            assert!(
                start.elapsed() < limit,
                "answer not {want} within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clears the log, so the next transitions looked for are new ones.
    fn mark(&self) {
        std::fs::write(&self.log, "").unwrap();
    }
}

#[test]
fn loss_delay_and_a_partition_are_judged_as_configured() {
    let Some(net) = Net::create() else {
        return skip("cannot create network namespaces and veth pairs (needs root and iproute2)");
    };
    if !run(&["python3", "-c", "1"]) {
        return skip("python3 (the backends' HTTP server) is not installed");
    }
    if !net.loss(50) {
        return skip("nftables (nft) is missing or the kernel refuses nf_tables");
    }
    net.loss(0);
    let netem = net.netem(Some(&["delay", "1ms"]));
    net.netem(None);
    let delay_file = tempfile::NamedTempFile::new().unwrap();
    // `ms` more per probe round trip on the way out.
    let set_delay = |ms: u32| -> &'static str {
        if netem {
            if ms == 0 {
                net.netem(None);
            } else {
                assert!(net.netem(Some(&["delay", &format!("{ms}ms")])));
            }
            "tc netem on the link"
        } else {
            // The relay waits at setup and on each segment each way: per probe (a
            // connection and one request) about what netem's one-way delay adds.
            std::fs::write(delay_file.path(), (ms * 2 / 3).to_string()).unwrap();
            "a delaying relay (this kernel has no sch_netem)"
        }
    };
    let _eu = common::Process(
        net.exec("eu", "python3")
            .args(["-c", HTTPD_OK, "127.0.0.1:8080"])
            .spawn()
            .unwrap(),
    );
    let _relay = common::Process(
        net.exec("eu", "python3")
            .args(["-c", RELAY, "10.78.1.2:8081", "127.0.0.1:8080"])
            .arg(delay_file.path())
            .spawn()
            .unwrap(),
    );
    let _us = common::Process(
        net.exec("us", "python3")
            .args(["-c", HTTPD_OK, "10.78.2.2:8080"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let dir = deployment();
    let log = dir.path().join("log");
    // Append mode: `mark` truncates the file under the running server.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let _m = common::Process(
        net.exec("m", BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("meridian.yaml"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let case = Case { net: &net, log };
    case.answer(EU, Duration::from_secs(60));

    // 1. Loss: 60 % of what Meridian sends to eu-west dropped. A lost SYN is retried
    // after 1 s, past the probe's 700 ms timeout, often enough that the error rate crosses 0.5:
    // down by error rate, clients move.
    case.mark();
    assert!(net.loss(60));
    let took = case.transition("down", "error_rate", Duration::from_secs(30));
    eprintln!("60 % loss: down by error rate after {took:?}");
    case.answer(US, Duration::from_secs(3));
    net.loss(0);
    case.transition("up", "recovered", Duration::from_secs(30));
    case.answer(EU, Duration::from_secs(3));

    // 2. Delay: 80 ms more per round trip (~160 ms a probe: a connection and a
    // request): degraded (kept, ranked after healthy regions); then 250 ms (~500 ms): down by latency.
    case.mark();
    let how = set_delay(80);
    let took = case.transition("degraded", "latency_degraded", Duration::from_secs(20));
    eprintln!("+80 ms by {how}: degraded after {took:?}");
    // Slow but working: kept, ranked after the healthy us-east.
    case.answer(US, Duration::from_secs(3));
    set_delay(250);
    let took = case.transition("down", "latency", Duration::from_secs(20));
    eprintln!("+250 ms: down by latency after {took:?}");
    case.answer(US, Duration::from_secs(3));
    set_delay(0);
    case.transition("up", "recovered", Duration::from_secs(30));
    case.answer(EU, Duration::from_secs(3));

    // 3. Partition: every packet to eu-west dropped; then healed.
    case.mark();
    assert!(net.loss(100));
    let took = case.transition("down", "error_rate", Duration::from_secs(20));
    eprintln!("partition: down after {took:?}");
    case.answer(US, Duration::from_secs(3));
    let healed = Instant::now();
    net.loss(0);
    case.transition("up", "recovered", Duration::from_secs(30));
    case.answer(EU, Duration::from_secs(3));
    eprintln!("healed: back after {:?} (cooldown 3 s)", healed.elapsed());
}
