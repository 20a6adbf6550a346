//! `health:` (the state file, the startup wait) and `overrides:` (region states an
//! operator writes into the configuration).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::report::{Given, Report, S, given};
use crate::health::OverrideKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthSpec {
    /// Absent: `meridian.state.json`; `null`: no state file.
    #[serde(default, deserialize_with = "given")]
    state_file: Given<Option<PathBuf>>,
    startup_wait: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideSpec {
    region: String,
    state: OverrideState,
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideState {
    Down,
    Up,
    Drain,
    ForceDown,
    ForceUp,
}

impl OverrideState {
    pub fn kind(self) -> OverrideKind {
        match self {
            OverrideState::Down | OverrideState::ForceDown => OverrideKind::ForceDown,
            OverrideState::Up | OverrideState::ForceUp => OverrideKind::ForceUp,
            OverrideState::Drain => OverrideKind::Drain,
        }
    }
}

/// An operator's override of a region's state, from the configuration.
#[derive(Debug, Clone)]
pub struct RegionOverride {
    pub region: String,
    pub state: OverrideState,
    pub reason: Option<String>,
    pub line: usize,
    pub column: usize,
}

/// The state file (default `meridian.state.json` beside the configuration; `null`:
/// none) and the longest wait for the first probe round.
pub(super) fn validate(
    health: &HealthSpec,
    base: &Path,
    r: &mut Report<'_>,
) -> (Option<PathBuf>, Duration) {
    let startup_wait = r.duration(
        "health.startup_wait",
        health.startup_wait.as_ref(),
        Duration::from_secs(10),
    );
    let state_file = match &health.state_file {
        Given::Absent => Some(base.join("meridian.state.json")),
        Given::Written(p) => p.as_ref().map(|p| base.join(p)),
    };
    (state_file, startup_wait)
}

/// `overrides:` as written (regions are checked against the policies at snapshot build).
pub(super) fn overrides(list: &[S<OverrideSpec>]) -> Vec<RegionOverride> {
    list.iter()
        .map(|o| RegionOverride {
            region: o.value.region.clone(),
            state: o.value.state,
            reason: o.value.reason.clone(),
            line: o.referenced.line() as usize,
            column: o.referenced.column() as usize,
        })
        .collect()
}
