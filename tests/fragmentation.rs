//! UDP answers are never fragmented (RFC 9715): they leave with DF set, and one that does
//! not fit the interface goes out cut to its question with TC, so the client retries over
//! TCP. Runs Meridian and `dig` in a network namespace of its own whose loopback has an
//! MTU of 1280, with `edns_udp_size: 4096` so a 2 KB answer is allowed by EDNS but not by
//! the link. Needs root and iproute2 (CI has both); elsewhere it says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Namespaces, ip};
use common::{BIN, skip};

/// One namespace whose loopback has an MTU of 1280.
struct Netns(Namespaces);

impl Netns {
    fn create() -> Option<Netns> {
        let set = Namespaces::create("meridian-frag", &["m"])?;
        assert!(ip(&[
            "-n",
            &set.ns("m"),
            "link",
            "set",
            "lo",
            "up",
            "mtu",
            "1280"
        ]));
        Some(Netns(set))
    }

    fn exec(&self, cmd: &str) -> Command {
        self.0.exec("m", cmd)
    }

    fn dig(&self, args: &[&str]) -> String {
        let out: Output = self.exec("dig").args(args).output().expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn flags(dig_output: &str) -> String {
    dig_output
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_answer_larger_than_the_link_is_truncated_not_fragmented() {
    let Some(ns) = Netns::create() else {
        return skip("cannot create a network namespace (needs root and iproute2)");
    };
    let mut zone = String::from(
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n",
    );
    for i in 0..10 {
        zone.push_str(&format!("big TXT \"record{i:02}-{}\"\n", "x".repeat(180)));
    }
    let dir = common::deployment(&[("frag.example", &zone)]);
    let config = dir.path().join("meridian.yaml");
    std::fs::write(
        &config,
        "version: 1\ndns:\n  edns_udp_size: 4096\n  udp_sockets_per_address: 1\n",
    )
    .unwrap();
    let log = dir.path().join("meridian.log");
    let _server = Killed(
        ns.exec(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .args([
                "--dns-listen",
                "127.0.0.1:5300",
                "--dns-listen",
                "[::1]:5300",
            ])
            .args(["--http-listen", "127.0.0.1:9300"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start meridian in the namespace"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ns
        .dig(&[
            "+short",
            "+tries=1",
            "+time=1",
            "@127.0.0.1",
            "-p",
            "5300",
            "ns1.frag.example",
            "A",
        ])
        .contains("192.0.2.53")
    {
        assert!(
            Instant::now() < deadline,
            "meridian did not answer in the namespace; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for server in ["@127.0.0.1", "@::1"] {
        let q = [
            server,
            "-p",
            "5300",
            "+norec",
            "+bufsize=4096",
            "big.frag.example",
            "TXT",
        ];
        // UDP only: the 2 KB answer does not fit the 1280-byte link, so it comes back cut
        // to the question with TC (a server that fragments sends all ten records).
        let udp = ns.dig(&[&q[..], &["+ignore"]].concat());
        assert!(
            flags(&udp).contains(" tc"),
            "{server}: no TC over UDP:\n{udp}"
        );
        assert!(udp.contains("ANSWER: 0,"), "{server}:\n{udp}");
        assert!(
            udp.contains("; EDNS: version: 0"),
            "{server}: OPT dropped:\n{udp}"
        );
        // dig's default: retry over TCP on TC, and get every record.
        let full = ns.dig(&q);
        assert!(!flags(&full).contains(" tc"), "{server}:\n{full}");
        assert!(
            full.contains("ANSWER: 10,"),
            "{server}: not every record over TCP:\n{full}"
        );
        // Small answers fit and are not truncated.
        let small = ns.dig(&[
            server,
            "-p",
            "5300",
            "+norec",
            "+ignore",
            "ns1.frag.example",
            "A",
        ]);
        assert!(
            !flags(&small).contains(" tc") && small.contains("ANSWER: 1,"),
            "{server}:\n{small}"
        );
    }
}
