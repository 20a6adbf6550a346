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
