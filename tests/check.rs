//! `meridian check` on files with several mistakes: every one is reported at its
//! `FILE:LINE:COL`, in `meridian.yaml` and in policy files alike, and none hides the
//! ones after it. A reload with such a file keeps the running configuration
//! (`tests/ops.rs`); here the command an operator runs before that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;

#[test]
fn a_bad_address_a_bad_duration_and_an_unknown_key_are_three_errors() {
    let dir = example_copy();
    let config = dir.path().join("meridian.yaml");
    std::fs::write(
        &config,
        "version: 1\ndns:\n  listen: [\"127.0.0.1:notaport\"]   # bad address\n  tcp_idle_timeout: soon           # bad duration\n  colour: blue                     # unknown key\n",
    )
    .unwrap();
    let err = check_errors(&config);
    let file = config.display().to_string();
    for want in [
        format!("{file}:3:12: dns.listen: \"127.0.0.1:notaport\" is not IP:PORT"),
        format!("{file}:4:21: dns.tcp_idle_timeout \"soon\""),
        format!("{file}:5:3: unknown field `colour`"),
        format!("3 errors in {file}"),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
}

#[test]
fn an_unknown_key_and_a_wrong_type_in_a_policy_file_hide_nothing_after_them() {
    let dir = example_copy();
    let policy = dir.path().join("policies/extra.yaml");
    std::fs::write(
        &policy,
        "version: 1\nregions:\n  - name: mars\n    location: {lat: 0, lon: 0}\n    a: [192.0.2.99]\n    colour: red\n    capacity: lots\npolicies:\n  - name: extra.example.com\n    method: nearest\n    regions: [mars, pluto]\n",
    )
    .unwrap();
    let err = check_errors(&dir.path().join("meridian.yaml"));
    let file = policy.display().to_string();
    for want in [
        format!("{file}:6:5: unknown field `colour`"),
        format!("{file}:7:15: invalid floating point"),
        format!("{file}:11:21: unknown region \"pluto\""),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
}

/// `meridian check` holds every policy's worst-case failover (detection, the TTL a
/// resolver may hold, publication) against its regions' `failover_target`: a TTL too
/// long for the target is a warning with the TTL that would do, a target shorter than
/// detection alone is an error at its line.
#[test]
fn a_ttl_too_long_for_the_failover_target_is_named_with_the_ttl_that_would_do() {
    let dir = example_copy();
    let policy = dir.path().join("policies/extra.yaml");
    let write = |target: &str| {
        std::fs::write(
            &policy,
            format!(
                "version: 1\nregions:\n  - name: mars\n    location: {{lat: 0, lon: 0}}\n    a: [192.0.2.99]\n    endpoints: [{{ name: web, probe: tcp, address: \"127.0.0.1:9\", interval: 2s, timeout: 1s }}]\n    health: {{ preset: aggressive, failover_target: {target} }}\npolicies:\n  - {{ name: slow.example.com, method: nearest, regions: [mars], ttl: 60 }}\n"
            ),
        )
        .unwrap();
    };
    write("60s");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("meridian.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: failover slow.example.com.: worst case 63.2 s (first failed probe 3.0 s + ttl 60 s + publish 0.2 s) through mars, target 60 s: over target, lower ttl to 56 s"
        ),
        "{err}"
    );
    write("4s");
    let err = check_errors(&dir.path().join("meridian.yaml"));
    let file = policy.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:7:52: failover_target \"4s\" can never be met: detecting the failure alone takes 5.0 s"
        )),
        "{err}"
    );
}
