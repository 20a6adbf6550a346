//! Health: probes → per-endpoint windows and state machines → region health, combined
//! with operator overrides into the [`HealthView`] the query path reads.
//!
//! ```text
//!  probe tasks (one per endpoint, own interval, timeout, jitter)
//!     │ Sample over a channel
//!     ▼
//!  checker core (one task owns all state: no locks)
//!     window → state::observe (pure) → endpoint effective state (overrides applied)
//!     → aggregate per region (MinUp) → HealthView → ArcSwap  (read once per query)
//!     → log transitions once; persist states and overrides to the state file
//! ```

pub mod checker;
pub mod probe;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use state::Thresholds;

use crate::policy::spec;

/// When a region counts as up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinUp {
    Count(usize),
    Fraction(f64),
}

impl MinUp {
    pub fn needed(&self, endpoints: usize) -> usize {
        match *self {
            MinUp::Count(k) => k.min(endpoints).max(1),
            MinUp::Fraction(f) => {
                ((f * endpoints as f64).ceil() as usize).clamp(1, endpoints.max(1))
            }
        }
    }
}

type At = (usize, usize);

fn at<T>(s: &spec::S<T>) -> At {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

fn dur(v: &Option<spec::S<String>>, into: &mut Duration) -> Result<(), (At, String)> {
    if let Some(s) = v {
        *into = humantime::parse_duration(&s.value)
            .map_err(|e| (at(s), format!("{:?}: {e}", s.value)))?;
    }
    Ok(())
}

/// A region's thresholds: the preset, then every field given. `(0, 0)` in an error
/// means "the region itself".
pub fn thresholds_from_spec(
    h: &spec::Health,
    endpoints: usize,
) -> Result<(Thresholds, MinUp), (At, String)> {
    let mut t = match &h.preset {
        Some(p) => Thresholds::preset(&p.value).ok_or_else(|| {
            (
                at(p),
                format!(
                    "unknown preset {:?} (default, aggressive, conservative)",
                    p.value
                ),
            )
        })?,
        None => Thresholds::default_preset(),
    };
    if let Some(w) = h.window {
        t.window = w.clamp(1, 1000);
        t.min_samples = t.min_samples.min(t.window);
    }
    for (v, into) in [
        (h.fail_error_rate, &mut t.fail_error_rate),
        (h.recover_error_rate, &mut t.recover_error_rate),
    ] {
        if let Some(x) = v {
            if !(0.0..=1.0).contains(&x) {
                return Err(((0, 0), format!("error rates are fractions 0..1, not {x}")));
            }
            *into = x;
        }
    }
    if let Some(c) = h.fail_consecutive {
        t.fail_consecutive = c.max(1);
    }
    if let Some(c) = h.recover_consecutive {
        t.recover_consecutive = c.max(1);
    }
    if let Some(p) = h.latency_percentile {
        t.latency_percentile = p.clamp(1, 100);
    }
    dur(&h.fail_latency, &mut t.fail_latency)?;
    dur(&h.recover_latency, &mut t.recover_latency)?;
    dur(&h.cooldown, &mut t.cooldown)?;
    if h.degraded_latency.is_some() {
        let mut d = Duration::ZERO;
        dur(&h.degraded_latency, &mut d)?;
        t.degraded_latency = Some(d);
    }
    if t.recover_error_rate > t.fail_error_rate {
        return Err((
            (0, 0),
            "recover_error_rate must not exceed fail_error_rate (hysteresis)".into(),
        ));
    }
    if t.recover_latency > t.fail_latency {
        return Err((
            (0, 0),
            "recover_latency must not exceed fail_latency (hysteresis)".into(),
        ));
    }
    let min_up = match (h.min_up, h.min_up_fraction) {
        (Some(_), Some(_)) => {
            return Err(((0, 0), "give min_up or min_up_fraction, not both".into()));
        }
        (_, Some(f)) if !(0.0..=1.0).contains(&f) || f == 0.0 => {
            return Err((
                (0, 0),
                format!("min_up_fraction must be in (0, 1], not {f}"),
            ));
        }
        (_, Some(f)) => MinUp::Fraction(f),
        (Some(k), None) if endpoints > 0 && (k == 0 || k > endpoints) => {
            return Err((
                (0, 0),
                format!("min_up {k} must be 1..{endpoints} (the number of endpoints)"),
            ));
        }
        (Some(k), None) => MinUp::Count(k),
        (None, None) => MinUp::Count(1),
    };
    Ok((t, min_up))
}

/// The state answers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    Up,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionHealth {
    pub state: Effective,
    /// Cap on answer TTLs while the region is near a state change (seconds).
    pub ttl_cap: Option<u32>,
}

/// What the query path reads: region states by stable region id. A region the view does
/// not know (new since the last publication) is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    pub regions: Vec<Option<RegionHealth>>,
}

impl HealthView {
    pub fn state(&self, id: u32) -> Effective {
        self.regions
            .get(id as usize)
            .copied()
            .flatten()
            .map(|r| r.state)
            .unwrap_or(Effective::Up)
    }

    pub fn ttl_cap(&self, id: u32) -> Option<u32> {
        self.regions
            .get(id as usize)
            .copied()
            .flatten()
            .and_then(|r| r.ttl_cap)
    }

    pub fn set(&mut self, id: u32, state: Effective) {
        let i = id as usize;
        if self.regions.len() <= i {
            self.regions.resize(i + 1, None);
        }
        if let Some(slot) = self.regions.get_mut(i) {
            let ttl_cap = slot.and_then(|r| r.ttl_cap);
            *slot = Some(RegionHealth { state, ttl_cap });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// Take out of answers for planned work; measured state keeps being tracked.
    Drain,
    ForceUp,
    ForceDown,
}

impl OverrideKind {
    pub fn name(&self) -> &'static str {
        match self {
            OverrideKind::Drain => "drain",
            OverrideKind::ForceUp => "force_up",
            OverrideKind::ForceDown => "force_down",
        }
    }

    /// The state an override imposes, whatever was measured.
    pub fn effective(&self) -> Effective {
        match self {
            OverrideKind::ForceUp => Effective::Up,
            OverrideKind::Drain | OverrideKind::ForceDown => Effective::Down,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub kind: OverrideKind,
    pub reason: Option<String>,
    /// Unix seconds when it was set.
    pub since: u64,
}

/// Stable numeric ids for region names, kept for the life of the process so that a
/// health view and a snapshot built at different moments agree on what id means what.
#[derive(Debug, Default)]
pub struct RegionIds {
    ids: HashMap<String, u32>,
}

impl RegionIds {
    pub fn id(&mut self, name: &str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(name.to_string()).or_insert(next)
    }
}

/// The view `meridian query` uses: configured overrides, then the state file's last
/// known endpoint states and operator overrides (what a running server would restore).
pub fn last_known_view(
    snapshot: &crate::snapshot::Snapshot,
    state_file: Option<&std::path::Path>,
) -> HealthView {
    let mut view = snapshot.static_health();
    let Some(file) = state_file.and_then(|p| store::StateFile::load(p).ok()) else {
        return view;
    };
    for r in &snapshot.policies.regions {
        if snapshot.config_overrides.contains_key(&r.name) {
            continue;
        }
        let state = match file.region_overrides.get(&r.name) {
            Some(o) => o.kind.effective(),
            None if r.endpoints.is_empty() => Effective::Up,
            None => {
                let serving = r
                    .endpoints
                    .iter()
                    .filter(|e| {
                        let key = format!("{}/{}", r.name, e.name);
                        match file.endpoint_overrides.get(&key) {
                            Some(o) => o.kind.effective() != Effective::Down,
                            None => file
                                .endpoints
                                .get(&key)
                                .is_none_or(|rec| rec.state != "down"),
                        }
                    })
                    .count();
                if serving >= r.min_up.needed(r.endpoints.len()) {
                    Effective::Up
                } else {
                    Effective::Down
                }
            }
        };
        view.set(r.id, state);
    }
    view
}
