//! The state file: last measured endpoint states and operator overrides, so that a
//! restart neither flaps (a down endpoint stays down and its cooldown continues) nor
//! forgets a drain. Written atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Override;
use super::peers::OverrideRecord;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `up`, `degraded` or `down`.
    pub state: String,
    /// Unix seconds when it entered that state.
    pub since: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// Keyed `region/endpoint`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointRecord>,
    #[serde(default)]
    pub region_overrides: BTreeMap<String, Override>,
    /// Keyed `region/endpoint`.
    #[serde(default)]
    pub endpoint_overrides: BTreeMap<String, Override>,
    /// The last change of each override target (clears too), keyed `region` or
    /// `region/endpoint`: what a cluster orders overrides by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub override_records: BTreeMap<String, OverrideRecord>,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StateFile {
    /// A missing file is an empty state; an unreadable one is an error to log (and
    /// the server starts from measurements alone rather than refusing to serve).
    pub fn load(path: &Path) -> Result<StateFile, String> {
        match std::fs::read(path) {
            Ok(bytes) => StateFile::parse(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile {
                version: STATE_VERSION,
                ..Default::default()
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// A state file's bytes (what the checker trusts of them is bounded where it is
    /// used: overrides out of bounds are dropped when restored).
    pub fn parse(bytes: &[u8]) -> Result<StateFile, String> {
        let s: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.version != STATE_VERSION {
            return Err(format!(
                "state version {} is not {STATE_VERSION}",
                s.version
            ));
        }
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}
