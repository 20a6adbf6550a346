//! Anycast without namespaces: mistakes in `anycast:` at their lines, a BIRD control
//! socket that is absent, then a real BIRD 2 that knows one protocol and not the other
//! (DNS answers throughout, the driver's errors are counted and shown, the protocol it
//! knows is switched), and NSID (RFC 5001) as `dig +nsid` shows it. The router-level
//! behaviour is `tests/anycast_netns.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

#[test]
fn anycast_mistakes_are_reported_at_their_lines() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    std::fs::write(
        &config,
        "version: 1
anycast:
  driver: bird
  prefixes:
    - { prefix: 198.51.100.53/24, when: serving, bird_protocol: ns }
    - { prefix: 203.0.113.0/24, when: { region: eu-west } }
    - { prefix: 192.0.2.0/24, when: sometimes, bird_protocol: x }
    - { prefix: 198.51.100.0/25, when: serving, bird_protocol: \"bad name\" }
  on_unhealthy: { med: 500 }
  rise: 0
",
    )
    .unwrap();
    let err = check_errors(&config);
    let file = config.display().to_string();
    for want in [
        format!(
            "{file}:5:17: anycast prefix 198.51.100.53/24: host bits are set (the network is 198.51.100.0/24)"
        ),
        format!("{file}:6:7: anycast prefix 203.0.113.0/24: the bird driver needs bird_protocol"),
        format!("{file}:7:37: anycast when: expected serving or {{ region: NAME }}"),
        format!("{file}:8:64: anycast bird_protocol \"bad name\" is not a BIRD protocol name"),
        format!(
            "{file}:9:17: anycast.on_unhealthy: the bird driver enables and disables the operator's static protocol and cannot change its MED"
        ),
        format!("{file}:10:9: anycast.rise must be 1 to 100"),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }

    // A region the policies do not have: at its line, once the rest loads.
    std::fs::write(
        &config,
        "version: 1\nanycast:\n  driver: exabgp\n  prefixes:\n    - { prefix: 203.0.113.0/24, when: { region: mars } }\n",
    )
    .unwrap();
    let err = check_errors(&config);
    assert!(
        err.contains(&format!(
            "{file}:5:39: anycast prefix 203.0.113.0/24 follows unknown region \"mars\""
        )),
        "{err}"
    );
}

/// The example deployment with `anycast:` (bird driver at `bird.ctl` in the folder)
/// and `dns.nsid`.
fn deployment(nsid: &str) -> tempfile::TempDir {
    let dir = example_copy();
    let text = std::fs::read_to_string(dir.path().join("meridian.yaml")).unwrap();
    let text = text
        .replace("dns:\n", &format!("dns:\n  nsid: {nsid}\n"))
        .replace("http:\n", "http:\n  admin_token: test-token\n");
    std::fs::write(
        dir.path().join("meridian.yaml"),
        format!(
            "{text}\nanycast:\n  driver: bird\n  bird: {{ socket: bird.ctl }}\n  prefixes:\n    - {{ prefix: 198.51.100.53/32, when: serving, bird_protocol: anycast_ns }}\n    - {{ prefix: 203.0.113.0/24, when: {{ region: eu-west }}, bird_protocol: anycast_web }}\n  rise: 2\n  fall: 2\n  interval: 200ms\n"
        ),
    )
    .unwrap();
    dir
}

fn status(m: &Meridian) -> serde_json::Value {
    let (code, body) = http(m.http, "GET", "/api/v1/anycast", &[], "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_for(
    m: &Meridian,
    what: &str,
    mut ok: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(m);
        if ok(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: {s:#}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bird_that_is_absent_or_refuses_never_stops_dns() {
    if Command::new("bird")
        .arg("--version")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return skip("bird is not installed (Debian: bird2)");
    }
    let dir = deployment("\"ns-test.example\"");
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    // No BIRD yet: answers go on, the error is shown and counted, retried.
    // Decided all the same: the route is what BIRD will be told once it is there.
    wait_for(&m, "the absent socket reported, the prefix decided", |s| {
        s["driver_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach BIRD"))
            && s["prefixes"][0]["route"] == "announced"
    });
    assert!(!first_rdata(&m.udp("www.example.com", RecordType::A)).is_empty());
    let errors = m.metric("meridian_anycast_driver_errors_total").unwrap();
    assert!(errors >= 1.0, "{errors}");
    assert!(
        m.log()
            .contains("anycast: driver error, retrying every interval")
    );

    // BIRD comes, knowing anycast_ns but not anycast_web.
    std::fs::write(
        dir.path().join("bird.conf"),
        "router id 192.0.2.1;\nprotocol device {}\nprotocol static anycast_ns { ipv4; route 198.51.100.53/32 via \"lo\"; }\n",
    )
    .unwrap();
    let bird = || {
        Process(
            Command::new("bird")
                .args(["-f", "-c"])
                .arg(dir.path().join("bird.conf"))
                .arg("-s")
                .arg(dir.path().join("bird.ctl"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let running = bird();
    let s = wait_for(&m, "BIRD's refusal of the unknown protocol", |s| {
        s["driver_error"]
            .as_str()
            .is_some_and(|e| e.contains("anycast_web") && e.contains("syntax error"))
    });
    // The protocol it knows is enabled: its route is in BIRD's table.
    assert!(
        s["session"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "anycast_ns" && p["state"] == "up"),
        "{s:#}"
    );
    let route = Command::new("birdc")
        .arg("-s")
        .arg(dir.path().join("bird.ctl"))
        .args(["show", "route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&route.stdout).contains("198.51.100.53/32"));
    // An operator's withdrawal disables it, and says so until it is lifted.
    let auth = [("Authorization", "Bearer test-token")];
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/anycast/withdraw",
        &auth,
        r#"{"prefix": "198.51.100.53/32", "for": "10m", "reason": "maintenance"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let s = wait_for(&m, "the withdrawal applied", |s| {
        s["session"].as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["name"] == "anycast_ns" && p["state"] == "down")
        })
    });
    assert_eq!(s["prefixes"][0]["reason"], "operator", "{s:#}");
    assert_eq!(
        s["prefixes"][0]["operator"]["reason"], "maintenance",
        "{s:#}"
    );
    // BIRD restarts: its config enables the protocol again; Meridian notices and
    // disables it again.
    drop(running);
    let _restarted = bird();
    let start = Instant::now();
    while !m.log().contains("BIRD restarted?") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restart was not noticed:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(&m, "the withdrawal applied again", |s| {
        s["session"].as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["name"] == "anycast_ns" && p["state"] == "down")
        })
    });
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/anycast/withdraw",
        &auth,
        r#"{"prefix": "192.0.2.0/24"}"#,
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not an anycast prefix"), "{body}");
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/anycast/withdraw",
        &auth,
        r#"{"prefix": "198.51.100.53/32", "for": "300000000000y"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(!first_rdata(&m.udp("www.example.com", RecordType::A)).is_empty());
}

#[test]
fn nsid_is_answered_only_to_a_query_that_asks() {
    let dir = deployment("\"ns-test.example\"");
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    let dig = |extra: &[&str]| {
        let out = Command::new("dig")
            .args([
                &format!("@{}", m.addr.ip()),
                "-p",
                &m.addr.port().to_string(),
                "www.example.com",
            ])
            .args(extra)
            .output()
            .expect("dig (dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let asked = dig(&["+nsid"]);
    assert!(
        asked
            .contains("; NSID: 6e 73 2d 74 65 73 74 2e 65 78 61 6d 70 6c 65 (\"ns-test.example\")"),
        "{asked}"
    );
    assert!(asked.contains("status: NOERROR"), "{asked}");
    let plain = dig(&[]);
    assert!(!plain.contains("NSID"), "{plain}");
    // With ECS as well: both options come back.
    let both = dig(&["+nsid", "+subnet=81.2.69.0/24"]);
    assert!(
        both.contains("NSID:") && both.contains("CLIENT-SUBNET: 81.2.69.0/24/"),
        "{both}"
    );
}
