//! `meridian slo rules`: the shipped `dist/prometheus-slo-rules.yaml` is exactly its
//! output, Prometheus accepts it (`promtool check rules`), and its unit tests
//! (`dist/prometheus-slo-rules.test.yaml`: each alert firing on series that burn the
//! budget, quiet on ones that do not) pass under `promtool test rules`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, skip};

#[test]
fn the_shipped_rules_are_the_generated_ones_and_promtool_passes_them() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let out = Command::new(BIN).args(["slo", "rules"]).output().unwrap();
    assert!(out.status.success());
    let shipped = std::fs::read_to_string(dist.join("prometheus-slo-rules.yaml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shipped,
        "dist/prometheus-slo-rules.yaml is stale: meridian slo rules > dist/prometheus-slo-rules.yaml"
    );
    let bad = Command::new(BIN)
        .args(["slo", "rules", "--answer-objective", "1.5"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--answer-objective 1.5: an objective is a fraction")
    );
    if Command::new("promtool").arg("--version").output().is_err() {
        return skip("promtool is not installed (Debian: prometheus)");
    }
    for args in [
        vec!["check", "rules", "prometheus-slo-rules.yaml"],
        vec!["test", "rules", "prometheus-slo-rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dist)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
