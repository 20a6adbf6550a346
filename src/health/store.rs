//! The state file: last measured endpoint states and operator overrides, so that a
//! restart neither flaps (a down endpoint stays down and its cooldown continues) nor
//! forgets a drain. Written atomically and durably (temporary file, fsync, rename, fsync
//! of the folder), so a crash or power loss leaves the old file or the new one.

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
    /// The last failover events (`/api/v1/failovers`), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<crate::health::status::FailoverEvent>,
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
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &text)
    }
}

/// Replaces `path` with `bytes` durably: a temporary file written and fsynced, renamed
/// over it, and the folder fsynced, so a crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the folder is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the state file for one checker: at once (an operator's override is on disk
/// before its reply) or in the background (a measured state change: many may come in
/// one second, and the checker must not wait on the disk). Writes are ordered: an older
/// state never replaces a newer one.
#[derive(Debug)]
pub struct Writer {
    path: std::path::PathBuf,
    /// The sequence number of the last state written, under the lock every write takes.
    written: std::sync::Arc<std::sync::Mutex<u64>>,
    next: u64,
    /// Counts the writes that failed (`meridian_state_file_write_failures_total`).
    failures: Option<prometheus::IntCounter>,
}

impl Writer {
    pub fn new(path: std::path::PathBuf) -> Writer {
        Writer {
            path,
            written: Default::default(),
            next: 0,
            failures: None,
        }
    }

    /// Counts failed writes in `c`.
    pub fn counting(mut self, c: prometheus::IntCounter) -> Writer {
        self.failures = Some(c);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save_now(&mut self, file: &StateFile) -> std::io::Result<()> {
        self.next += 1;
        let done = Self::write(&self.written, self.next, file, &self.path);
        if let (Err(_), Some(c)) = (&done, &self.failures) {
            c.inc();
        }
        done
    }

    /// Must run inside a tokio runtime.
    pub fn save_in_background(&mut self, file: StateFile) -> tokio::task::JoinHandle<()> {
        self.next += 1;
        let (written, seq, path) = (self.written.clone(), self.next, self.path.clone());
        let failures = self.failures.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = Self::write(&written, seq, &file, &path) {
                tracing::warn!("cannot write state file {}: {e}", path.display());
                if let Some(c) = failures {
                    c.inc();
                }
            }
        })
    }

    fn write(
        written: &std::sync::Mutex<u64>,
        seq: u64,
        file: &StateFile,
        path: &Path,
    ) -> std::io::Result<()> {
        let mut last = written.lock().unwrap_or_else(|e| e.into_inner());
        if *last > seq {
            return Ok(());
        }
        file.save(path)?;
        *last = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(region: &str) -> StateFile {
        let text = format!(
            r#"{{"version":1,"endpoints":{{}},"region_overrides":{{"{region}":{{"kind":"drain","since":0}}}},"endpoint_overrides":{{}}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_late_write_never_replaces_a_newer_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut w = Writer::new(path.clone());
        // A background write is numbered when it is spawned, and a slow disk or a busy
        // pool may run it after a later one.
        w.next += 1;
        let late = w.next;
        w.save_now(&drained("new")).unwrap();
        Writer::write(&w.written, late, &drained("old"), &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"new\"") && !text.contains("\"old\""),
            "{text}"
        );
        assert!(
            !path.with_extension("tmp").exists(),
            "no temporary file left"
        );
    }
}
