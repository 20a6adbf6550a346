//! What the health checker publishes: effective states per stable region id (the
//! [`HealthView`] the query path reads), operator overrides, and the ids themselves.
//! This module imports nothing else of the crate but the `traffic` leaf's `Share`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::traffic::Share;

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
    /// The share of the clients ranking it first that it keeps (`traffic::split`):
    /// less than all while partly drained or ramping back after a recovery.
    pub keep: Share,
    /// The share of displaced clients reaching it that it takes (its spare capacity).
    pub admit: Share,
    /// While its own clients bring more than its capacity, the share of those of
    /// `overflow: spill` policies it keeps (`traffic::shed`); `ALL` otherwise.
    pub shed: Share,
    /// Which of its addresses are answered (bit i: the i-th, A before AAAA): those of
    /// endpoints that are down (`serves:`) are left out.
    pub live: u64,
}

impl RegionHealth {
    /// A region in `state`, keeping and admitting everyone.
    pub fn new(state: Effective, ttl_cap: Option<u32>) -> RegionHealth {
        RegionHealth {
            state,
            ttl_cap,
            keep: Share::ALL,
            admit: Share::ALL,
            shed: Share::ALL,
            live: u64::MAX,
        }
    }

    /// Whether it takes clients displaced from other regions: serving, and neither
    /// partly drained, ramping nor shedding.
    pub fn accepts(&self) -> bool {
        self.state != Effective::Down && self.keep == Share::ALL && self.shed == Share::ALL
    }

    /// The share of its own clients it keeps, for a client whose policy may be shed
    /// (`spill`) or not.
    #[inline]
    pub fn keeps(&self, spill: bool) -> Share {
        if spill {
            self.keep.min(self.shed)
        } else {
            self.keep
        }
    }
}

/// When the query path first answered a policy name from a view: the failover events'
/// `answer` phase. Set once per view; after that a batch costs one relaxed load of a
/// line nobody writes.
#[derive(Debug, Clone, Default)]
pub struct AnswerStamp(Arc<AtomicU64>);

/// Not part of what a view says: two views deciding the same are equal.
impl PartialEq for AnswerStamp {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AnswerStamp {}

fn stamp_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl AnswerStamp {
    /// Called by the query path after answering a policy name from this view.
    #[inline]
    pub fn mark(&self) {
        if self.0.load(Ordering::Relaxed) == 0 {
            self.mark_now(Instant::now());
        }
    }

    /// Marks `at` unless already marked (first wins).
    pub fn mark_now(&self, at: Instant) {
        let epoch = stamp_epoch();
        let n = at.saturating_duration_since(epoch).as_nanos();
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        let _ = self
            .0
            .compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// When the first answer was given, if one was.
    pub fn get(&self) -> Option<Instant> {
        let n = self.0.load(Ordering::Relaxed);
        (n != 0).then(|| stamp_epoch() + Duration::from_nanos(n))
    }
}

/// What the query path reads: region states by stable region id. A region the view does
/// not know (new since the last publication) is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    pub regions: Vec<Option<RegionHealth>>,
    /// Set when some region keeps or admits only part of its clients: only then does a
    /// decision hash the client subnet (`policy::decide`); otherwise it is plain
    /// failover and the view changes nothing for the query path.
    pub shifting: bool,
    /// When a policy name was first answered from this view (or from the first of the
    /// views published since the last answer: they share it).
    pub answered: AnswerStamp,
}

impl HealthView {
    /// A region's whole entry (a region the view does not know is up).
    #[inline]
    pub fn region(&self, id: u32) -> RegionHealth {
        self.regions
            .get(id as usize)
            .copied()
            .flatten()
            .unwrap_or(RegionHealth::new(Effective::Up, None))
    }

    /// Recomputes `shifting` from the entries.
    pub fn refresh_shifting(&mut self) {
        self.shifting = self.regions.iter().flatten().any(|r| {
            r.admit != Share::ALL
                || r.shed != Share::ALL
                || (r.keep != Share::ALL && r.keep != Share::NONE)
        });
    }

    pub fn state(&self, id: u32) -> Effective {
        self.regions
            .get(id as usize)
            .copied()
            .flatten()
            .map(|r| r.state)
            .unwrap_or(Effective::Up)
    }

    /// Which of the region's addresses are answered (all, for a region it does not know).
    #[inline]
    pub fn live(&self, id: u32) -> u64 {
        self.regions
            .get(id as usize)
            .copied()
            .flatten()
            .map_or(u64::MAX, |r| r.live)
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
        self.put(id, RegionHealth::new(state, ttl_cap));
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub kind: OverrideKind,
    pub reason: Option<String>,
    /// Unix seconds when it was set.
    pub since: u64,
    /// A drain of this share of the region's clients only (0 < f < 1): the region stays
    /// in the answers for the rest (a progressive rollout, a partial game day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Unix seconds when it ends by itself (`drain --for 30m`); kept in the state file,
    /// so a restart keeps the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl Override {
    /// The share of its clients the region keeps under this override.
    pub fn keep(&self) -> Share {
        match (self.kind, self.fraction) {
            (OverrideKind::Drain, Some(f)) if f < 1.0 => Share::from_fraction(1.0 - f),
            (k, _) if k.effective() == Effective::Down => Share::NONE,
            _ => Share::ALL,
        }
    }

    /// The state it imposes: none for a partial drain (the measured state holds).
    pub fn effective(&self) -> Option<Effective> {
        match (self.kind, self.fraction) {
            (OverrideKind::Drain, Some(f)) if f < 1.0 => None,
            (k, _) => Some(k.effective()),
        }
    }
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
