//! What the health checker publishes: effective states per stable region id (the
//! [`HealthView`] the query path reads), operator overrides, and the ids themselves.
//! This module imports nothing else of the crate.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The state answers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    Up,
    Degraded,
    Down,
}

impl Effective {
    pub fn name(self) -> &'static str {
        match self {
            Effective::Up => "up",
            Effective::Degraded => "degraded",
            Effective::Down => "down",
        }
    }
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

    /// Sets a region's whole entry.
    pub fn put(&mut self, id: u32, health: RegionHealth) {
        let i = id as usize;
        if self.regions.len() <= i {
            self.regions.resize(i + 1, None);
        }
        if let Some(slot) = self.regions.get_mut(i) {
            *slot = Some(health);
        }
    }

    /// Sets a region's state, keeping its TTL cap.
    pub fn set(&mut self, id: u32, state: Effective) {
        let ttl_cap = self.ttl_cap(id);
        self.put(id, RegionHealth { state, ttl_cap });
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
