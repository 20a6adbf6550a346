//! The 60-second version of `bench/soak.py` (10 minutes by default, run by hand): the
//! real binary at half its measured peak rate, eu-west flapping every 5 s, a reload
//! every 10 s; nothing lost, no error, RSS envelope and file descriptors flat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn a_minute_of_load_flapping_and_reloads_leaves_nothing_behind() {
    if std::process::Command::new("dnsperf")
        .arg("-h")
        .output()
        .is_err()
    {
        return common::skip("dnsperf is not installed (tests/run.sh installs it)");
    }
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/soak.py"))
        .args([
            "--seconds",
            "60",
            "--reload-every",
            "10",
            "--binary",
            common::BIN,
        ])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: flat, nothing lost"));
}
