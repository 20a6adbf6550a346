//! Operator overrides (drain, force up, force down) on regions and endpoints: set and
//! cleared through the admin API, restored from the state file, ended by their
//! deadlines, and in a cluster ordered by their records (last writer wins by
//! `(stamp, instance)`), whoever set them. What an override does to a region's state
//! is `aggregate`'s to decide; this part only keeps them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::health::cause::Cause;
use crate::health::peers::{OverrideRecord, OverrideTarget};
use crate::health::status::{OverrideError, Target};
use crate::health::store::{self, StateFile};
use crate::health::view::{Override, OverrideKind};

/// The longest an override given a duration may last, and how far a peer's record may
/// reach: bounds every time sum here far from overflow.
pub const MAX_OVERRIDE_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// How far ahead of this instance's clock a peer's record stamp may be (clocks drift;
/// a stamp years ahead would win every later change).
const MAX_PEER_CLOCK_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// What happened to an override that ended by its deadline.
pub(super) struct Ended {
    pub(super) target: OverrideTarget,
    pub(super) kind: OverrideKind,
}

/// What a peer's record did here.
pub(super) enum FromPeer {
    /// Not ours to apply: an unknown target, or not newer than ours.
    Ignored,
    /// A record no instance could have made (out of bounds): ignored and counted.
    Implausible,
    /// Newer, but clears what was never set here: only the record is kept.
    Noted,
    /// Applied, with the cause to record.
    Applied(Cause),
}

pub(super) struct Overrides {
    region: BTreeMap<String, Override>,
    endpoint: BTreeMap<String, Override>,
    /// The last change of each target, set or cleared, as gossiped.
    records: BTreeMap<OverrideTarget, OverrideRecord>,
    /// When the next override with a deadline ends.
    next_expiry: Option<Instant>,
    /// Unix seconds at a moment of tokio's clock: deadlines are kept as Unix seconds
    /// (they outlive the process) but counted on tokio's clock, so paused-time tests
    /// can run them.
    epoch: (u64, Instant),
    /// This instance's name, the `by` of its records.
    instance: String,
    /// Impossible peer records already counted, by (instance, stamp): a peer's record
    /// is seen again at every poll of the gossip state.
    rejected: HashSet<(String, u64)>,
}

/// The key of a target in the maps and the state file.
pub(super) fn target_key(t: &OverrideTarget) -> &str {
    match t {
        OverrideTarget::Region(k) | OverrideTarget::Endpoint(k) => k,
    }
}

/// A state-file key back to its target: endpoint keys are `region/endpoint`, and
/// region names hold no `/`.
pub(super) fn target_of(key: &str) -> OverrideTarget {
    if key.contains('/') {
        OverrideTarget::Endpoint(key.to_string())
    } else {
        OverrideTarget::Region(key.to_string())
    }
}

impl Overrides {
    /// The overrides and records of the state file (an override from a file written
    /// before records were kept gets one, stamped when it was set).
    pub(super) fn restore(persisted: &StateFile, instance: String) -> Overrides {
        let mut o = Overrides {
            region: persisted.region_overrides.clone(),
            endpoint: persisted.endpoint_overrides.clone(),
            records: persisted
                .override_records
                .iter()
                .map(|(k, r)| (target_of(k), r.clone()))
                .collect(),
            next_expiry: None,
            epoch: (store::now_unix(), Instant::now()),
            instance,
            rejected: HashSet::new(),
        };
        // A hand-edited or damaged state file must not hold what the API refuses.
        let now = o.unix_now();
        for map in [&mut o.region, &mut o.endpoint] {
            map.retain(|key, ov| {
                let sane = ov
                    .fraction
                    .is_none_or(|f| ov.kind == OverrideKind::Drain && f > 0.0 && f < 1.0)
                    && ov.until.is_none_or(|u| {
                        u <= now.saturating_add(MAX_OVERRIDE_DURATION.as_secs() + 1)
                    });
                if !sane {
                    tracing::warn!(
                        target = key,
                        "state file: ignoring an override out of bounds"
                    );
                }
                sane
            });
        }
        let unrecorded: Vec<(OverrideTarget, Override)> = o
            .region
            .iter()
            .chain(&o.endpoint)
            .map(|(k, ov)| (target_of(k), ov.clone()))
            .filter(|(t, _)| !o.records.contains_key(t))
            .collect();
        for (t, ov) in unrecorded {
            let rec = OverrideRecord {
                stamp: ov.since.saturating_mul(1000),
                state: Some(ov),
                by: o.instance.clone(),
            };
            o.records.insert(t, rec);
        }
        o
    }

    pub(super) fn set_instance(&mut self, instance: String) {
        self.instance = instance;
    }

    pub(super) fn region(&self, name: &str) -> Option<&Override> {
        self.region.get(name)
    }

    pub(super) fn endpoint(&self, key: &str) -> Option<&Override> {
        self.endpoint.get(key)
    }

    pub(super) fn regions(&self) -> &BTreeMap<String, Override> {
        &self.region
    }

    pub(super) fn endpoints(&self) -> &BTreeMap<String, Override> {
        &self.endpoint
    }

    pub(super) fn records(&self) -> &BTreeMap<OverrideTarget, OverrideRecord> {
        &self.records
    }

    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Unix seconds now, on tokio's clock.
    pub(super) fn unix_now(&self) -> u64 {
        self.epoch.0.saturating_add(
            Instant::now()
                .saturating_duration_since(self.epoch.1)
                .as_secs(),
        )
    }

    /// Unix milliseconds now, on tokio's clock.
    pub(super) fn unix_ms(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.epoch.1);
        self.epoch
            .0
            .saturating_mul(1000)
            .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// Checks an operator's request and turns it into the target and what to set
    /// (`None`: clear). `known`: whether the target exists in the plan.
    pub(super) fn request(
        &self,
        target: &Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
        known: bool,
    ) -> Result<(OverrideTarget, Option<Override>), OverrideError> {
        let invalid = |why: String| Err(OverrideError::Invalid(why));
        if lasts.is_some_and(|d| d.is_zero()) || (lasts.is_some() && kind.is_none()) {
            return invalid("\"for\" goes with setting an override, and must be above 0".into());
        }
        if lasts.is_some_and(|d| d > MAX_OVERRIDE_DURATION) {
            return invalid(format!(
                "\"for\" is longer than the limit of {}d",
                MAX_OVERRIDE_DURATION.as_secs() / 86_400
            ));
        }
        if let Some(f) = fraction {
            if !(f > 0.0 && f <= 1.0) {
                return invalid(format!("fraction {f} must be in (0, 1]"));
            }
            if kind != Some(OverrideKind::Drain) || !matches!(target, Target::Region(_)) {
                return invalid("a fraction applies to draining a region".into());
            }
        }
        let target = match target {
            Target::Region(r) if known => OverrideTarget::Region(r.clone()),
            Target::Region(r) => return Err(OverrideError::UnknownTarget(format!("region {r:?}"))),
            Target::Endpoint { region, endpoint } => {
                let key = format!("{region}/{endpoint}");
                if !known {
                    return Err(OverrideError::UnknownTarget(format!("endpoint {key:?}")));
                }
                OverrideTarget::Endpoint(key)
            }
        };
        let now = self.unix_now();
        // Bounded above, so this cannot overflow; checked all the same.
        let until = match lasts.map(|d| now.checked_add(d.as_secs().max(1))) {
            None => None,
            Some(Some(u)) => Some(u),
            Some(None) => return invalid("\"for\" ends past the clock's range".into()),
        };
        let state = kind.map(|kind| Override {
            kind,
            reason,
            since: now,
            fraction: fraction.filter(|&f| f < 1.0),
            until,
        });
        Ok((target, state))
    }

    /// Sets (`Some`) or clears (`None`) the override of `target`, recorded as this
    /// instance's change.
    pub(super) fn set(&mut self, target: OverrideTarget, state: Option<Override>) {
        let key = target_key(&target).to_string();
        let map = match target {
            OverrideTarget::Region(_) => &mut self.region,
            OverrideTarget::Endpoint(_) => &mut self.endpoint,
        };
        match &state {
            Some(o) => {
                map.insert(key, o.clone());
            }
            None => {
                map.remove(&key);
            }
        }
        self.note(target, state);
    }

    /// The record of a change made here: ordered after every record seen for the
    /// target, whatever this instance's clock says.
    fn note(&mut self, target: OverrideTarget, state: Option<Override>) {
        let stamp = self.unix_ms().max(
            self.records
                .get(&target)
                .map_or(0, |r| r.stamp.saturating_add(1)),
        );
        let by = self.instance.clone();
        self.records
            .insert(target, OverrideRecord { state, stamp, by });
    }

    /// Removes overrides whose time is up (logged), and sets when the next one ends.
    pub(super) fn expire(&mut self) -> Vec<Ended> {
        let now = self.unix_now();
        let mut ended = Vec::new();
        for (map, what) in [
            (&mut self.region, "region"),
            (&mut self.endpoint, "endpoint"),
        ] {
            map.retain(|key, o| {
                let live = o.until.is_none_or(|u| u > now);
                if !live {
                    info!(
                        target = key,
                        kind = o.kind.name(),
                        "{what} override expired"
                    );
                    ended.push(Ended {
                        target: target_of(key),
                        kind: o.kind,
                    });
                }
                live
            });
        }
        for e in &ended {
            self.note(e.target.clone(), None);
        }
        let next = self
            .region
            .values()
            .chain(self.endpoint.values())
            .filter_map(|o| o.until)
            .min();
        // A deadline past tokio's range (a hand-edited state file) never fires.
        self.next_expiry = next
            .and_then(|u| Instant::now().checked_add(Duration::from_secs(u.saturating_sub(now))));
        ended
    }

    /// A peer's record for `target` (`known`: the target exists here).
    pub(super) fn apply_peer(
        &mut self,
        target: &OverrideTarget,
        rec: &OverrideRecord,
        known: bool,
    ) -> FromPeer {
        if !plausible(rec, self.unix_ms()) {
            if self.rejected.len() > 10_000 {
                self.rejected.clear();
            }
            return if self.rejected.insert((rec.by.clone(), rec.stamp)) {
                FromPeer::Implausible
            } else {
                FromPeer::Ignored
            };
        }
        if !known
            || self
                .records
                .get(target)
                .is_some_and(|mine| !rec.newer_than(mine))
        {
            return FromPeer::Ignored;
        }
        let key = target_key(target).to_string();
        let map = match target {
            OverrideTarget::Region(_) => &mut self.region,
            OverrideTarget::Endpoint(_) => &mut self.endpoint,
        };
        let cause = match &rec.state {
            Some(o) => {
                map.insert(key, o.clone());
                Cause::OverrideSet {
                    kind: o.kind,
                    reason: o.reason.clone(),
                }
            }
            None if map.remove(&key).is_none() => {
                self.records.insert(target.clone(), rec.clone());
                return FromPeer::Noted;
            }
            None => Cause::OverrideCleared,
        };
        self.records.insert(target.clone(), rec.clone());
        FromPeer::Applied(cause)
    }
}

/// A peer's record this instance could have made itself: a fraction only on a drain
/// and within (0, 1), a deadline after the setting and within the longest duration, a
/// stamp not far ahead of our clock, a short reason and name.
pub(super) fn plausible(rec: &OverrideRecord, now_ms: u64) -> bool {
    let short = |s: &str| s.len() <= 256;
    short(&rec.by)
        && rec.stamp <= now_ms.saturating_add(MAX_PEER_CLOCK_AHEAD_MS)
        && rec.state.as_ref().is_none_or(|o| {
            o.fraction
                .is_none_or(|f| o.kind == OverrideKind::Drain && f > 0.0 && f < 1.0)
                && o.until.is_none_or(|u| {
                    u > o.since && u - o.since <= MAX_OVERRIDE_DURATION.as_secs() + 1
                })
                && o.since <= (now_ms / 1000).saturating_add(MAX_PEER_CLOCK_AHEAD_MS / 1000)
                && o.reason.as_deref().is_none_or(short)
        })
}
