//! Denial of existence online, in compact form (RFC 9824): one NSEC per negative
//! answer, at the query name itself, so no NSEC chain exists to walk and nothing is
//! signed per query beyond what the cache has not seen yet.
//!
//! - NODATA: NSEC at the name, listing the types that exist there (a policy's A/AAAA
//!   included), never the one asked for.
//! - NXDOMAIN: NSEC at the name with only RRSIG, NSEC and NXNAME (RFC 9824 3.2); the
//!   rcode is NOERROR unless the client set the CO flag (RFC 9824 4).
//! - Wildcard answer: an NSEC covering the next-closer name and nothing else that could
//!   exist: from its immediate predecessor to the first name after its subtree (RFC
//!   4470's epsilon functions).
//! - Insecure referral: NSEC at the cut with NS only, proving there is no DS.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Dnssec, ZoneKeys};
use crate::iana::Rtype;
use crate::name;
use crate::zone::FastMap;
use crate::zone::lookup::{Denial, Sigs};

/// RFC 9824 3.2's pseudo-type for a name that does not exist.
pub const NXNAME: u16 = 128;

/// Proofs signed so far, by NSEC owner (lowercase) and RDATA, in `SHARDS` shards each
/// behind its own lock, so threads answering different names rarely meet. Bounded: a
/// full shard (a random-name flood) forgets an eighth of its entries, not all of them,
/// so the names asked again stay signed while memory stays flat.
///
/// Online signing is also bounded in rate (`dnssec.max_online_signatures_per_second`):
/// past it, a UDP answer that needs a new signature is sent truncated, so the resolver
/// retries over TCP (which a spoofed flood cannot), where it is signed.
#[derive(Debug)]
pub struct Cache {
    shards: Box<[Shard]>,
    /// Signatures allowed per second; 0: no bound.
    per_second: u32,
    /// `second << 32 | signed in that second`.
    budget: AtomicU64,
}

/// One shard of the cache: signatures by key.
type Shard = Mutex<FastMap<Box<[u8]>, Sigs>>;

const SHARDS: usize = 64;
const CACHE_LIMIT: usize = 100_000;
const SHARD_LIMIT: usize = CACHE_LIMIT / SHARDS;

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(crate::config::DNSSEC_ONLINE_SIGNATURES_PER_SECOND)
    }
}

impl Cache {
    /// A cache that signs at most `per_second` new proofs a second on budgeted calls.
    pub fn new(per_second: u32) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_second,
            budget: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> Option<&Shard> {
        let h = crate::hash::fnv1a64(key.iter().copied());
        self.shards.get((h as usize) % SHARDS)
    }

    /// Whether one more signature fits this second's budget (and takes it).
    fn take_budget(&self) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let now = super::now() & 0xFFFF_FFFF;
        let mut word = self.budget.load(Ordering::Relaxed);
        loop {
            let (second, used) = (word >> 32, word & 0xFFFF_FFFF);
            let used = if second == now { used } else { 0 };
            if used >= u64::from(self.per_second) {
                return false;
            }
            match self.budget.compare_exchange_weak(
                word,
                (now << 32) | (used + 1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(w) => word = w,
            }
        }
    }

    /// The signatures of the NSEC `owner`/`rdata`, signed now if not cached; `None`
    /// when they are not cached and `budgeted` signing is over its rate.
    pub fn nsec_sigs(
        &self,
        zk: &ZoneKeys,
        owner: &[u8],
        rdata: &[u8],
        budgeted: bool,
    ) -> Option<Sigs> {
        let mut key = Vec::with_capacity(1 + owner.len() + rdata.len());
        key.push(0);
        key.extend(owner.iter().map(u8::to_ascii_lowercase));
        key.extend_from_slice(rdata);
        self.get_or_sign(key, budgeted, || {
            zk.sign(super::now(), owner, Rtype::NSEC, zk.negative_ttl, &[rdata])
        })
    }

    /// The cached signatures under `key`, or `sign`'s, cached; `None` when not cached
    /// and `budgeted` signing is over its rate.
    pub fn get_or_sign(
        &self,
        key: Vec<u8>,
        budgeted: bool,
        sign: impl FnOnce() -> Vec<Box<[u8]>>,
    ) -> Option<Sigs> {
        let shard = self.shard(&key)?;
        if let Ok(map) = shard.lock()
            && let Some(s) = map.get(&key[..])
        {
            return Some(s.clone());
        }
        if budgeted && !self.take_budget() {
            crate::metrics::SIGNING_DEFERRED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Signed without the lock: a slow signature must not hold up other queries.
        let sigs: Sigs = sign().into();
        if let Ok(mut map) = shard.lock() {
            if map.len() >= SHARD_LIMIT {
                let forget: Vec<Box<[u8]>> = map.keys().take(SHARD_LIMIT / 8).cloned().collect();
                for k in forget {
                    map.remove(&k);
                }
            }
            map.insert(key.into_boxed_slice(), Arc::clone(&sigs));
        }
        Some(sigs)
    }

    /// Entries cached (tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One proof, ready to be written: the NSEC record and its signatures.
#[derive(Debug, Clone)]
pub struct Proof<'a> {
    pub owner: Cow<'a, [u8]>,
    pub rdata: Vec<u8>,
    pub ttl: u32,
    pub sigs: Sigs,
}

/// What `compose` gives.
pub enum Composed<'a> {
    Proof(Proof<'a>),
    /// The zone is not signed, or the name is too long for a proof.
    None,
    /// A new signature was needed and online signing is over its rate (`budgeted`).
    OverBudget,
}

/// The NSEC that proves `d`, signed (from the cache when it was seen before).
/// `budgeted`: a new signature counts against the rate (UDP).
pub fn compose<'a>(dnssec: &Dnssec, d: &Denial<'a>, budgeted: bool) -> Composed<'a> {
    match compose_inner(dnssec, d, budgeted) {
        Some(Some(p)) => Composed::Proof(p),
        Some(None) => Composed::OverBudget,
        None => Composed::None,
    }
}

fn compose_inner<'a>(dnssec: &Dnssec, d: &Denial<'a>, budgeted: bool) -> Option<Option<Proof<'a>>> {
    let (zone, owner, next, types) = match d {
        Denial::NoData {
            zone,
            owner,
            node,
            qtype,
            cut,
        } => {
            let static_types = node.iter().flat_map(|n| n.rrsets.iter().map(|s| s.rtype));
            let policy = node
                .and_then(|n| n.policy)
                .and_then(|p| dnssec.policy_types.get(p as usize))
                .copied()
                .unwrap_or((false, false));
            let next = successor(&owner.to_ascii_lowercase())?;
            let types = nodata_types(static_types, policy, *qtype, *cut);
            (zone, owner.clone(), next, types)
        }
        Denial::NxDomain { zone, owner } => {
            let next = successor(&owner.to_ascii_lowercase())?;
            (zone, owner.clone(), next, vec![NXNAME])
        }
        Denial::Wildcard { zone, next_closer } => {
            let owner = Cow::Owned(predecessor(next_closer)?);
            (zone, owner, after_subtree(next_closer)?, Vec::new())
        }
        Denial::Insecure { zone, cut } => {
            let next = successor(&cut.owner.to_ascii_lowercase())?;
            let owner = Cow::Borrowed(&cut.owner[..]);
            (zone, owner, next, vec![Rtype::NS.to_int()])
        }
    };
    let zk = dnssec.zones.get(&zone.apex[..])?;
    let rdata = nsec_rdata(&next, &types);
    let Some(sigs) = dnssec.denials.nsec_sigs(zk, &owner, &rdata, budgeted) else {
        return Some(None);
    };
    Some(Some(Proof {
        owner,
        rdata,
        ttl: zk.negative_ttl,
        sigs,
    }))
}

/// The NSEC type bitmap (RFC 4034 4.1.2) of `types` (any order, duplicates allowed).
pub fn type_bitmap(types: &[u16]) -> Vec<u8> {
    let mut sorted = types.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&first) = sorted.get(i) {
        let window = (first >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0usize;
        while let Some(&t) = sorted.get(i) {
            if (t >> 8) as u8 != window {
                break;
            }
            let low = usize::from(t as u8);
            if let Some(b) = bits.get_mut(low / 8) {
                *b |= 0x80 >> (low % 8);
            }
            len = low / 8 + 1;
            i += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(bits.get(..len).unwrap_or_default());
    }
    out
}

/// NSEC RDATA: the next name and the bitmap of `types` plus RRSIG and NSEC.
pub fn nsec_rdata(next: &[u8], types: &[u16]) -> Vec<u8> {
    let mut all = types.to_vec();
    all.push(Rtype::RRSIG.to_int());
    all.push(Rtype::NSEC.to_int());
    let mut out = next.to_vec();
    out.extend_from_slice(&type_bitmap(&all));
    out
}

/// `\000.<name>`: the name's immediate successor in canonical order (RFC 4034 6.1),
/// which makes an NSEC at `name` cover nothing but `name` itself. `None` when it would
/// be longer than a name may be.
pub fn successor(name: &[u8]) -> Option<Vec<u8>> {
    if name.len() + 2 > name::MAX_NAME_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(name);
    Some(out)
}

/// The first name after `name` and all its descendants in canonical order: the
/// leftmost label with `\000` appended. (`\000.<name>` would not do for a covering
/// NSEC: a validator reads it as a child of `name` existing, so `name` would too.)
/// `None` for a 63-octet label or a name at the length limit.
pub fn after_subtree(name: &[u8]) -> Option<Vec<u8>> {
    let len = usize::from(*name.first()?);
    if len >= 63 || name.len() + 1 > name::MAX_NAME_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 1);
    out.push(len as u8 + 1);
    out.extend(name.get(1..1 + len)?.iter().map(u8::to_ascii_lowercase));
    out.push(0);
    out.extend_from_slice(name.get(1 + len..)?);
    Some(out)
}

/// A name just before `name` in canonical order, below the same parent, such that no
/// plausible name lies between (RFC 4471 3.1.2's idea, simplified): the leftmost
/// label's last octet decremented, then filled with `\255` to 63 octets or the name's
/// limit. A label whose last octet is `\000` loses it instead. `None` when no such
/// name exists below the parent (the label is a single `\000`).
pub fn predecessor(name: &[u8]) -> Option<Vec<u8>> {
    let len = usize::from(*name.first()?);
    let label = name.get(1..1 + len)?;
    let parent = name.get(1 + len..)?;
    let mut l = label.to_ascii_lowercase();
    match l.last_mut() {
        Some(0) => {
            l.pop();
            if l.is_empty() {
                return None;
            }
        }
        Some(last) => {
            *last -= 1;
            // Canonical order compares lowercase octets: an uppercase letter would sort
            // as its lowercase self, after `name`. '@' sorts before all of them.
            if last.is_ascii_uppercase() {
                *last = b'@';
            }
            let room = name::MAX_NAME_LEN.saturating_sub(parent.len() + 1);
            while l.len() < 63.min(room) {
                l.push(0xff);
            }
        }
        None => return None,
    }
    let mut out = Vec::with_capacity(1 + l.len() + parent.len());
    out.push(l.len() as u8);
    out.extend_from_slice(&l);
    out.extend_from_slice(parent);
    Some(out)
}

/// The types a NODATA proof at a node lists: what exists there, a policy's address
/// types included, never `qtype` (the proof says it is absent). At a delegation only
/// the parent's data: NS and DS.
pub fn nodata_types(
    static_types: impl Iterator<Item = Rtype>,
    policy: (bool, bool),
    qtype: Rtype,
    cut: bool,
) -> Vec<u16> {
    let mut types: Vec<u16> = static_types
        .filter(|t| !cut || matches!(*t, Rtype::NS | Rtype::DS))
        .filter(|t| *t != Rtype::RRSIG && *t != Rtype::NSEC)
        .map(|t| t.to_int())
        .collect();
    if policy.0 {
        types.push(Rtype::A.to_int());
    }
    if policy.1 {
        types.push(Rtype::AAAA.to_int());
    }
    types.retain(|&t| t != qtype.to_int());
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Vec<u8> {
        name::from_text(s, &[0]).unwrap_or_default()
    }

    #[test]
    fn bitmap_matches_rfc_4034_example() {
        // RFC 4034 4.3: A MX RRSIG NSEC TYPE1234.
        let got = type_bitmap(&[1, 15, 46, 47, 1234]);
        let mut want = vec![0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1b];
        want.extend([0u8; 26]);
        want.push(0x20);
        assert_eq!(got, want);
        assert!(type_bitmap(&[]).is_empty());
    }

    #[test]
    fn nxname_sits_in_window_zero() {
        let r = nsec_rdata(&[0], &[NXNAME]);
        // next name root, window 0, 17 octets (type 128 is bit 0 of octet 16).
        assert_eq!(r.get(..3), Some(&[0, 0, 17][..]));
        assert_eq!(r.last(), Some(&0x80));
        // RRSIG (46) and NSEC (47): octet 5, bits 6 and 7.
        assert_eq!(r.get(3 + 5), Some(&0x03));
    }

    #[test]
    fn successor_and_predecessor_bracket_the_name() {
        let b = n("b.example.");
        let s = successor(&b).unwrap_or_default();
        assert_eq!(s, n("\\000.b.example."));
        assert_eq!(after_subtree(&b), Some(n("b\\000.example.")));
        let p = predecessor(&b).unwrap_or_default();
        assert_eq!(p.get(..3), Some(&[63, b'a', 0xff][..]));
        assert!(p.ends_with(&n("example.")));
        // Uppercase never appears: "[" - 1 would be "Z", which sorts as "z".
        let p = predecessor(&n("\\[x.example.")).unwrap_or_default();
        assert_eq!(p.get(1..3), Some(&[b'[', b'w'][..]));
        let p = predecessor(&n("a\\[.example.")).unwrap_or_default();
        assert_eq!(p.get(1..3), Some(&[b'a', b'@'][..]));
        // A trailing \000 is dropped: "ab" sorts just before "ab\000".
        let p = predecessor(&n("ab\\000.example.")).unwrap_or_default();
        assert_eq!(p, n("ab.example."));
        assert_eq!(predecessor(&n("\\000.example.")), None);
        // The name limit holds.
        let long = n(&format!("{}.example.", "x".repeat(63)).repeat(1));
        assert!(predecessor(&long).is_some_and(|p| p.len() <= name::MAX_NAME_LEN));
    }

    #[test]
    fn nodata_lists_what_exists_but_the_question() {
        let t = nodata_types(
            [Rtype::TXT, Rtype::MX].into_iter(),
            (true, true),
            Rtype::AAAA,
            false,
        );
        assert_eq!(t, vec![16, 15, 1]);
        let t = nodata_types(
            [Rtype::NS, Rtype::A].into_iter(),
            (false, false),
            Rtype::DS,
            true,
        );
        assert_eq!(t, vec![2]);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn sig() -> Vec<Box<[u8]>> {
        vec![vec![1u8, 2, 3].into_boxed_slice()]
    }

    #[test]
    fn online_signing_is_bounded_per_second_and_what_is_cached_is_served_anyway() {
        let c = Cache::new(5);
        let signed = (0..10u8)
            .filter(|i| c.get_or_sign(vec![*i], true, sig).is_some())
            .count();
        assert_eq!(signed, 5, "five new signatures in this second");
        assert!(
            c.get_or_sign(vec![0], true, sig).is_some(),
            "cached: no new signature"
        );
        assert!(
            c.get_or_sign(vec![42], false, sig).is_some(),
            "TCP is not budgeted"
        );
        let unbounded = Cache::new(0);
        assert!((0..100u8).all(|i| unbounded.get_or_sign(vec![i], true, sig).is_some()));
    }

    #[test]
    fn a_full_cache_forgets_a_part_not_everything() {
        let c = Cache::new(0);
        for i in 0..(2 * CACHE_LIMIT as u32) {
            c.get_or_sign(i.to_be_bytes().to_vec(), false, sig);
        }
        let n = c.len();
        assert!(n <= CACHE_LIMIT, "bounded: {n}");
        assert!(n > CACHE_LIMIT * 3 / 4, "gradual: {n}");
        // The last name is still there.
        let last = (2 * CACHE_LIMIT as u32 - 1).to_be_bytes().to_vec();
        assert!(
            c.get_or_sign(last, true, || panic!("signed again"))
                .is_some()
        );
    }
}
