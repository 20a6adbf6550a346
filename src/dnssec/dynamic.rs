//! Signatures for the answers traffic policies give, made before any query asks.
//!
//! A policy's answer is the addresses of up to `answers` of its candidate regions (the
//! live ones, or all of them when it fails open), a region's CNAME, or its all-down
//! static addresses: a small set known at load. Every such RRset is signed when the
//! snapshot is built, for the health view of that moment and for every address live;
//! `Table::prepare` signs the ones a new health view makes possible before the view is
//! published. The query path finds an answer's signatures by its content (an
//! order-independent hash of the RDATAs), so rotated or shuffled answers share them.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::ZoneKeys;
use super::sign::expiration_of;
use crate::health::HealthView;
use crate::iana::Rtype;
use crate::policy::{AddressOrder, AllDown, Policy, PolicySet};
use crate::zone::FastMap;

/// RRSIG RDATAs of one RRset.
pub use crate::zone::lookup::Sigs;

/// Answer sets pre-signed per policy and type, at most: past it (a policy with dozens of
/// candidates and a large `answers`), the rest are signed when first asked for.
const MAX_SETS: usize = 4096;

type PolicySigs = FastMap<(u16, u64), Sigs>;

#[derive(Debug, Default)]
pub struct Table {
    per_policy: ArcSwap<Vec<Arc<PolicySigs>>>,
}

/// The key of an RRset's content: the same for any order of the same RDATAs.
pub fn content_hash(rdata: &[&[u8]]) -> u64 {
    let h = foldhash::fast::FixedState::with_seed(0x6d65_7269_6469_616e);
    rdata
        .iter()
        .fold(rdata.len() as u64, |acc, d| acc.wrapping_add(h.hash_one(d)))
}

/// Which address types a policy can answer (for NODATA proofs).
pub fn types_of(set: &PolicySet, p: &Policy) -> (bool, bool) {
    let mut a = false;
    let mut aaaa = false;
    for &r in &p.candidates {
        if let Some(region) = set.regions.get(usize::from(r)) {
            a |= !region.a.is_empty();
            aaaa |= !region.aaaa.is_empty();
        }
    }
    if let AllDown::Static {
        a: sa, aaaa: saaaa, ..
    } = &p.all_down
    {
        a |= !sa.is_empty();
        aaaa |= !saaaa.is_empty();
    }
    (a, aaaa)
}

/// Every RRset (type, RDATAs) the policy can answer with the regions' addresses live
/// as `live` says, plus its CNAMEs and static all-down answers.
fn answer_sets<'p>(
    set: &'p PolicySet,
    p: &'p Policy,
    live: &dyn Fn(u32) -> u64,
) -> Vec<(Rtype, Vec<&'p [u8]>)> {
    let mut out = Vec::new();
    let cands: Vec<&crate::policy::Region> = p
        .candidates
        .iter()
        .filter_map(|&r| set.regions.get(usize::from(r)))
        .collect();
    let n = p.answers.max(1).min(cands.len());
    for qtype in [Rtype::A, Rtype::AAAA] {
        for all in [false, true] {
            let per_region: Vec<smallvec::SmallVec<[&[u8]; 8]>> = cands
                .iter()
                .map(|r| {
                    let mut v = smallvec::SmallVec::new();
                    let mask = if all { u64::MAX } else { live(r.id) };
                    r.rdata.push_to(qtype, mask, AddressOrder::Fixed, 0, &mut v);
                    v
                })
                .collect();
            let mut count = 0;
            let mut pick: Vec<usize> = Vec::new();
            subsets(per_region.len(), n, &mut pick, &mut |chosen| {
                count += 1;
                if count > MAX_SETS {
                    return false;
                }
                let rdata: Vec<&[u8]> = chosen
                    .iter()
                    .filter_map(|&i| per_region.get(i))
                    .flat_map(|v| v.iter().copied())
                    .collect();
                if !rdata.is_empty() {
                    out.push((qtype, rdata));
                }
                true
            });
        }
        if let AllDown::Static { rdata, .. } = &p.all_down {
            let mut v = smallvec::SmallVec::new();
            rdata.push_to(qtype, u64::MAX, AddressOrder::Fixed, 0, &mut v);
            if !v.is_empty() {
                out.push((qtype, v.to_vec()));
            }
        }
    }
    for r in &cands {
        if let Some(target) = r.cname.as_deref() {
            out.push((Rtype::CNAME, vec![target]));
        }
    }
    out
}

/// Calls `f` with every non-empty subset of `0..k` of at most `n` elements (in
/// increasing order), until it returns false.
fn subsets(k: usize, n: usize, pick: &mut Vec<usize>, f: &mut dyn FnMut(&[usize]) -> bool) -> bool {
    let start = pick.last().map_or(0, |&l| l + 1);
    for i in start..k {
        pick.push(i);
        if !f(pick) {
            pick.pop();
            return false;
        }
        if pick.len() < n && !subsets(k, n, pick, f) {
            pick.pop();
            return false;
        }
        pick.pop();
    }
    true
}

/// Signs what `sets` has that `have` lacks, into `add`; the earliest expiry made.
fn sign_missing(
    zk: &ZoneKeys,
    p: &Policy,
    sets: Vec<(Rtype, Vec<&[u8]>)>,
    have: &PolicySigs,
    add: &mut PolicySigs,
    now: u64,
) -> u64 {
    let mut earliest = u64::MAX;
    for (t, rdata) in sets {
        let key = (t.to_int(), content_hash(&rdata));
        if have.contains_key(&key) || add.contains_key(&key) {
            continue;
        }
        let sigs = zk.sign(now, &p.name, t, p.ttl, &rdata);
        for s in &sigs {
            if let Some(e) = expiration_of(s) {
                earliest = earliest.min(u64::from(e));
            }
        }
        add.insert(key, sigs.into());
    }
    earliest
}

impl Table {
    /// Signs every answer of every policy in a signed zone, for `view` and for all
    /// addresses live. Returns the table and the earliest expiry per zone.
    pub fn build(
        set: &PolicySet,
        keys: &[Option<Arc<ZoneKeys>>],
        view: &HealthView,
        now: u64,
    ) -> (Table, BTreeMap<String, u64>) {
        let mut earliest: BTreeMap<String, u64> = BTreeMap::new();
        let empty = PolicySigs::default();
        let per_policy = set
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut add = PolicySigs::default();
                if let Some(Some(zk)) = keys.get(i) {
                    let sets = answer_sets(set, p, &|id| view.live(id));
                    let e = sign_missing(zk, p, sets, &empty, &mut add, now);
                    let slot = earliest.entry(zk.display.to_string()).or_insert(e);
                    *slot = (*slot).min(e);
                }
                Arc::new(add)
            })
            .collect();
        (
            Table {
                per_policy: ArcSwap::from_pointee(per_policy),
            },
            earliest,
        )
    }

    /// Signs the answers `view` makes possible that the table lacks, and publishes
    /// them; returns how many RRsets were signed. Called before `view` is published, so
    /// that no answer it gives is unsigned.
    pub fn prepare(
        &self,
        set: &PolicySet,
        keys: &[Option<Arc<ZoneKeys>>],
        view: &HealthView,
        now: u64,
    ) -> usize {
        let current = self.per_policy.load_full();
        let mut next: Option<Vec<Arc<PolicySigs>>> = None;
        let mut signed = 0;
        for (i, p) in set.policies.iter().enumerate() {
            let Some(Some(zk)) = keys.get(i) else {
                continue;
            };
            let Some(have) = current.get(i) else {
                continue;
            };
            let sets = answer_sets(set, p, &|id| view.live(id));
            let mut add = PolicySigs::default();
            sign_missing(zk, p, sets, have, &mut add, now);
            if add.is_empty() {
                continue;
            }
            signed += add.len();
            let mut merged = (**have).clone();
            merged.extend(add);
            let next = next.get_or_insert_with(|| (*current).clone());
            if let Some(slot) = next.get_mut(i) {
                *slot = Arc::new(merged);
            }
        }
        if let Some(n) = next {
            self.per_policy.store(Arc::new(n));
        }
        signed
    }

    /// The signatures of policy `policy`'s RRset `rtype`/`rdata`, if pre-signed, copied
    /// out under the table's guard (no reference count touched).
    pub fn copy(
        &self,
        policy: u32,
        rtype: Rtype,
        rdata: &[&[u8]],
    ) -> Option<crate::zone::lookup::SigCopies> {
        let guard = self.per_policy.load();
        let sigs = guard
            .get(policy as usize)?
            .get(&(rtype.to_int(), content_hash(rdata)))?;
        Some(sigs.iter().map(|s| s.to_vec()).collect())
    }

    /// RRsets pre-signed, over all policies (for `meridian check`).
    pub fn len(&self) -> usize {
        self.per_policy.load().iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_ignores_order() {
        let (a, b, c) = (&[1u8, 2, 3, 4][..], &[5u8, 6, 7, 8][..], &[9u8; 4][..]);
        assert_eq!(content_hash(&[a, b, c]), content_hash(&[c, a, b]));
        assert_ne!(content_hash(&[a, b]), content_hash(&[a, c]));
        assert_ne!(content_hash(&[a]), content_hash(&[a, a]));
    }

    #[test]
    fn subsets_up_to_n() {
        let mut seen = Vec::new();
        subsets(4, 2, &mut Vec::new(), &mut |s| {
            seen.push(s.to_vec());
            true
        });
        // C(4,1) + C(4,2)
        assert_eq!(seen.len(), 10);
        assert!(seen.contains(&vec![1, 3]));
        assert!(seen.iter().all(|s| s.len() <= 2));
        let mut n = 0;
        subsets(10, 3, &mut Vec::new(), &mut |_| {
            n += 1;
            n < 5
        });
        assert_eq!(n, 5);
    }
}
