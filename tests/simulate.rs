//! `meridian simulate` on the shipped game-day scenario (examples/gameday): with spill no
//! region goes over capacity while another has room; plain failover overloads us-east.
//! And a broken scenario is refused with every mistake at its line and column.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use common::BIN;

fn gameday(args: &[&str]) -> (bool, String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["simulate", "--config"])
        .arg(format!("{root}/examples/gameday/meridian.yaml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(spill: bool) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let scenario = format!("{root}/examples/gameday/eu-outage.yaml");
    let mut args = vec!["--scenario", scenario.as_str(), "--json"];
    if !spill {
        args.push("--no-spill");
    }
    let (ok, out, err) = gameday(&args);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn load(step: &serde_json::Value, region: &str) -> (f64, f64, String) {
    let r = step["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .unwrap();
    (
        r["load"].as_f64().unwrap(),
        r["capacity"].as_f64().unwrap_or(f64::INFINITY),
        r["state"].as_str().unwrap().to_string(),
    )
}

#[test]
fn spill_keeps_every_region_within_capacity_and_plain_failover_does_not() {
    let spill = report(true);
    let plain = report(false);
    let steps = spill["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 61, "60 minutes in 1-minute steps");
    // During the outage (11m-30m) eu-west is down, its load is elsewhere, nobody is over
    // capacity and all the demand is served.
    for s in &steps[11..30] {
        let (eu, _, state) = load(s, "eu-west");
        assert_eq!((eu, state.as_str()), (0.0, "down"));
        let mut total = 0.0;
        for region in ["us-east", "eu-west", "ap-south"] {
            let (l, cap, _) = load(s, region);
            assert!(l <= cap + 1e-6, "{region} {l} > {cap} at {}", s["at_s"]);
            total += l;
        }
        assert!((total - 20_000.0).abs() < 1.0, "{total}");
    }
    assert_eq!(spill["overloaded_steps"], 0);
    // us-east is filled to its capacity, ap-south takes the rest.
    let (us, cap, _) = load(&steps[15], "us-east");
    assert!(us > cap * 0.97, "{us} of {cap}");
    // Plain failover: the same outage pushes us-east over its capacity.
    let (us_plain, cap, _) = load(&plain["steps"][15], "us-east");
    assert!(us_plain > cap, "{us_plain} <= {cap}");
    assert!(plain["overloaded_steps"].as_u64().unwrap() >= 19);
    // The ramp: eu-west back at 31m with 20 % kept, then 40 %, ... all at 39m.
    let keep = |s: &serde_json::Value| {
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == "eu-west")
            .unwrap()["keep"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (keep(&steps[31]) - 0.2).abs() < 1e-3,
        "{}",
        keep(&steps[31])
    );
    assert!((keep(&steps[35]) - 0.6).abs() < 1e-3);
    assert_eq!(keep(&steps[40]), 1.0);
    let (eu_31, _, _) = load(&steps[31], "eu-west");
    let (eu_40, _, _) = load(&steps[40], "eu-west");
    assert!(eu_31 > 0.0 && eu_31 < eu_40 * 0.3, "{eu_31} {eu_40}");
}

#[test]
fn the_text_report_and_the_picture_show_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("gameday.svg");
    let root = env!("CARGO_MANIFEST_DIR");
    let (ok, out, err) = gameday(&[
        "--scenario",
        &format!("{root}/examples/gameday/eu-outage.yaml"),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("eu-west fails") && out.contains("eu-west up→down"),
        "{out}"
    );
    assert!(out.contains("keep 20%"), "{out}");
    assert!(out.contains("overloaded at 0 of 61 steps"), "{out}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.matches("<polyline").count() >= 6);
}

#[test]
fn a_broken_scenario_is_refused_with_every_mistake_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "duration: 10m\nstep: 1m\ndemand: { www.example.com: 100, nope.example.com: 5 }\nevents:\n  - { at: 5m, region: eu-west, state: down }\n  - { at: 2m, region: mars, state: up }\n  - { at: 20m, region: us-east, capacity: -3 }\n  - { at: 8m, region: us-east, state: up, fraction: 0.5 }\n",
    )
    .unwrap();
    let (ok, _, err) = gameday(&["--scenario", bad.to_str().unwrap()]);
    assert!(!ok);
    for want in [
        "bad.yaml:3:",
        "unknown policy \"nope.example.com\"",
        "bad.yaml:6:",
        "before the event above it",
        "unknown region \"mars\"",
        "bad.yaml:7:",
        "past the duration",
        "capacity -3 must be above 0",
        "bad.yaml:8:",
        "a fraction goes with state: drain",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
}
