//! `meridian demo` as a newcomer runs it: the example deployment with its three local
//! backends; eu-west's fails, and the line-a-second report shows the GB client leave
//! eu-west, the cooldown count down, and the client come back once eu-west recovers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_demo_fails_eu_west_over_and_back_while_it_serves() {
    let dns = free_port();
    let http_port = free_port();
    let mut child = Command::new(BIN)
        .args(["demo", "--config"])
        .arg(example_config())
        .args(["--dns-listen", &format!("127.0.0.1:{dns}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .env("MERIDIAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<String> = Vec::new();
    let mut status_during_outage = String::new();
    for line in lines {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.trim_start().starts_with("9s ") {
            // It serves like `meridian serve` meanwhile: the status API agrees.
            let addr = format!("127.0.0.1:{http_port}").parse().unwrap();
            status_during_outage = http_get(addr, "/api/v1/status");
        }
        if line.trim_start().starts_with("29s") || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let at = |s: &str| {
        seen.iter()
            .find(|l| l.trim_start().starts_with(&format!("{s} ")))
            .cloned()
            .unwrap_or_else(|| panic!("no line for {s}:\n{}", seen.join("\n")))
    };
    assert!(at("0s").contains("198.51.100.10") && at("0s").contains("eu-west up"));
    // Out within the probe bound (2 failures at 1 s), held by the 10 s cooldown.
    assert!(at("9s").contains("192.0.2.10"), "{}", at("9s"));
    assert!(at("9s").contains("eu-west down (cooldown"), "{}", at("9s"));
    // Its backend answers again at 15 s: the recovery thresholds still hold it out.
    assert!(at("16s").contains("192.0.2.10"), "{}", at("16s"));
    // Back on eu-west before the second failure at 30 s.
    assert!(
        seen.iter().any(|l| l.contains("198.51.100.10")
            && l.contains("eu-west up")
            && l.trim_start().starts_with(|c: char| c.is_ascii_digit())
            && l.trim_start()
                .split('s')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| (17..30).contains(&n))),
        "{}",
        seen.join("\n")
    );
    let status: serde_json::Value = serde_json::from_str(&status_during_outage).unwrap();
    let eu = status["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "eu-west")
        .unwrap()
        .clone();
    assert_eq!(eu["effective"], "down", "{eu}");
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http(addr, "GET", path, &[], "").1
}
