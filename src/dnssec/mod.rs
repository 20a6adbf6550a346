//! DNSSEC: signed zones and signed dynamic answers, signed before the queries arrive.
//!
//! ```text
//!  keys/K<zone>.+013+<tag>.{key,private} ──keys──► Key (timing: publish/activate/…)
//!                                                    │
//!  Zone (loaded) ──sign_zones──► every authoritative RRset's RRSIGs in RRset::sigs,
//!                                DNSKEY at the apex                  (snapshot build)
//!  PolicySet ─────dynamic──────► every RRset a policy can answer, signed (snapshot
//!                                build, and before each new health view is published)
//!  Answer::denial ──denial─────► compact NSEC proofs (RFC 9824), signed once and cached
//!  AXFR of a signed zone ─chain─► the NSEC chain a secondary serves its denials from
//! ```
//!
//! The query path copies signatures; it signs only a denial it has not seen (then
//! cached) or a dynamic answer the tables missed (counted: it should stay 0).

pub mod chain;
pub mod denial;
pub mod dynamic;
pub mod keys;
pub mod sign;

use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::diag::Diagnostic;
use crate::iana::Rtype;
use crate::name;
use crate::policy::PolicySet;
use crate::zone::{FastMap, Node, RRset, Zone};
use keys::Key;
use sign::Window;

/// `dnssec:` in meridian.yaml (the settings are the configuration's).
pub use crate::config::DnssecSettings as Settings;

/// Inception this far in the past, for validators whose clocks run behind.
const INCEPTION_SLACK: u64 = 3600;

pub use crate::metrics::{INLINE_SIGNED, PRESIGNED_SERVED};

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One signed zone's keys and signing parameters.
#[derive(Debug)]
pub struct ZoneKeys {
    /// Lowercase wire form.
    pub apex: Box<[u8]>,
    pub display: Box<str>,
    /// Every key for the zone in the folder, whatever its state.
    pub keys: Vec<Key>,
    /// When the snapshot was signed: key states are as of this instant.
    pub signed_at: u64,
    pub validity: u64,
    pub refresh: u64,
    /// TTL of NSEC proofs: the negative-answer TTL (RFC 9077).
    pub negative_ttl: u32,
    /// The SOA serial in the zone file, and the one served (`signed_serial`).
    pub serial: Option<(u32, u32)>,
}

impl ZoneKeys {
    pub fn published(&self) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(|k| k.timing.published(self.signed_at))
    }

    fn active(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(|k| k.timing.active(self.signed_at))
    }

    /// The keys that sign zone data: the active ZSKs, or every active key while the
    /// zone has none (a combined signing key, BIND's rule).
    pub fn data_signers(&self) -> Vec<&Key> {
        let zsks: Vec<&Key> = self.active().filter(|k| !k.is_ksk()).collect();
        if zsks.is_empty() {
            self.active().collect()
        } else {
            zsks
        }
    }

    /// The keys that sign the DNSKEY RRset: the active KSKs, or every active key.
    pub fn dnskey_signers(&self) -> Vec<&Key> {
        let ksks: Vec<&Key> = self.active().filter(|k| k.is_ksk()).collect();
        if ksks.is_empty() {
            self.active().collect()
        } else {
            ksks
        }
    }

    /// A signature's window, its expiry spread over the last quarter of the margin
    /// between refresh and validity so that RRsets do not all expire at one instant.
    pub fn window(&self, now: u64, owner: &[u8], rtype: Rtype) -> Window {
        let spread = (self.validity.saturating_sub(self.refresh) / 4).max(1);
        let h = crate::hash::fnv1a64(
            owner
                .iter()
                .chain(&rtype.to_int().to_be_bytes())
                .map(u8::to_ascii_lowercase),
        );
        let expiration = now + self.validity - h % spread;
        Window {
            inception: now.saturating_sub(INCEPTION_SLACK) as u32,
            expiration: expiration as u32,
        }
    }

    /// Signs one RRset with the keys its type calls for.
    pub fn sign(
        &self,
        now: u64,
        owner: &[u8],
        rtype: Rtype,
        ttl: u32,
        rdata: &[&[u8]],
    ) -> Vec<Box<[u8]>> {
        let window = self.window(now, owner, rtype);
        let signers = if rtype == Rtype::DNSKEY {
            self.dnskey_signers()
        } else {
            self.data_signers()
        };
        sign::sign_rrset(signers, owner, rtype, ttl, rdata, window)
    }

    /// The next instant the key set changes (a key published, activated, retired).
    pub fn next_key_event(&self) -> Option<u64> {
        self.keys
            .iter()
            .filter_map(|k| k.timing.next_event(self.signed_at))
            .min()
    }
}

/// What the snapshot carries for DNSSEC. Empty (nothing signed) when no zone has a key.
#[derive(Debug, Default)]
pub struct Dnssec {
    /// Signed zones by apex (lowercase wire).
    pub zones: FastMap<Box<[u8]>, Arc<ZoneKeys>>,
    /// Each policy's zone keys, when its zone is signed (by policy index).
    pub policy_keys: Box<[Option<Arc<ZoneKeys>>]>,
    /// The types each policy can answer (A, AAAA): NODATA proofs list them.
    pub policy_types: Box<[(bool, bool)]>,
    pub dynamic: dynamic::Table,
    pub denials: denial::Cache,
    /// When the signatures must be renewed or a key's state changes: the server
    /// rebuilds the snapshot then.
    pub next_resign: Option<u64>,
    /// Per zone (display name): the earliest signature expiry.
    pub earliest_expiry: BTreeMap<String, u64>,
    /// The regions' live-address masks of the last view prepared: the answer sets
    /// depend on nothing else of a view (every subset of candidates is signed), so a view
    /// that changes only states or shares needs no work. Held while preparing, which
    /// also keeps a reload's and the checker's preparations from interleaving.
    prepared: std::sync::Mutex<Vec<u64>>,
}

impl Dnssec {
    pub fn is_signed(&self) -> bool {
        !self.zones.is_empty()
    }

    /// Signs the policy answers `view` makes possible that are not signed yet.
    pub fn prepare(&self, policies: &PolicySet, view: &crate::health::HealthView) -> usize {
        if !self.is_signed() {
            return 0;
        }
        let masks: Vec<u64> = policies.regions.iter().map(|r| view.live(r.id)).collect();
        let mut last = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if *last == masks {
            return 0;
        }
        let n = self
            .dynamic
            .prepare(policies, &self.policy_keys, view, now());
        *last = masks;
        n
    }

    /// The seconds until the earliest signature of each zone expires, at `now`.
    pub fn expiry_in(&self, now: u64) -> Vec<(String, f64)> {
        self.earliest_expiry
            .iter()
            .map(|(z, &t)| (z.clone(), t as f64 - now as f64))
            .collect()
    }
}

/// The serial a signed zone serves: its file's serial plus the seconds from
/// `SERIAL_EPOCH` to the signing. Every re-sign raises it, so secondaries transfer the
/// new signatures before the old ones expire (PowerDNS's SOA-EDIT does this with the
/// inception time); an edit that raises the file's serial raises it too. Both terms
/// only grow, so it never goes back, and the steps stay far below RFC 1982's 2^31 (the
/// epoch is recent so that even the first step, unsigned to signed, does until 2094).
pub fn signed_serial(file: u32, signed_at: u64) -> u32 {
    file.wrapping_add(signed_at.saturating_sub(SERIAL_EPOCH) as u32)
}

/// 2026-01-01T00:00:00Z.
pub const SERIAL_EPOCH: u64 = 1_767_225_600;

/// Whether the node is a delegation point (NS below the apex).
fn is_cut(zone: &Zone, lower: &[u8], node: &Node) -> bool {
    *lower != *zone.apex && node.rrset(Rtype::NS).is_some()
}

/// Names in the zone that are not authoritative: below a cut (glue) or a DNAME.
fn occluded(zone: &Zone, lower: &[u8]) -> bool {
    let mut up = name::parent(lower);
    while let Some(anc) = up {
        if anc.len() < zone.apex.len() {
            break;
        }
        if let Some(n) = zone.node(anc)
            && ((is_cut(zone, anc, n)) || n.rrset(Rtype::DNAME).is_some())
        {
            return true;
        }
        up = name::parent(anc);
    }
    false
}

/// Signs every authoritative RRset of `zone`, puts the DNSKEY RRset at its apex, and
/// returns the earliest expiry. Spread over the machine's cores.
fn sign_zone(zone: &mut Zone, zk: &ZoneKeys, now: u64) -> u64 {
    let dnskeys: Vec<Box<[u8]>> = zk.published().map(|k| k.dnskey.clone()).collect();
    let soa_ttl = zone
        .apex_node()
        .and_then(|a| a.rrset(Rtype::SOA))
        .map_or(3600, |s| s.ttl);
    let apex = zone.apex.clone();
    if let Some(node) = zone.nodes.get_mut(&apex[..]) {
        let mut sets: Vec<RRset> = node
            .rrsets
            .iter()
            .filter(|s| s.rtype != Rtype::DNSKEY)
            .cloned()
            .collect();
        sets.push(RRset {
            rtype: Rtype::DNSKEY,
            ttl: soa_ttl,
            rdata: dnskeys.into_boxed_slice(),
            sigs: Box::new([]),
        });
        sets.sort_by_key(|s| s.rtype);
        node.rrsets = sets.into_boxed_slice();
    }
    // Which nodes to sign, and which are cuts, is decided first (it reads other nodes),
    // then signing runs on disjoint nodes in parallel.
    let cuts: FastMap<Vec<u8>, bool> = zone
        .nodes
        .iter()
        .filter(|(k, _)| !occluded(zone, k))
        .map(|(k, n)| (k.to_vec(), is_cut(zone, k, n)))
        .collect();
    let mut work: Vec<(&[u8], &mut Node)> = zone
        .nodes
        .iter_mut()
        .filter(|(k, _)| cuts.contains_key(&k[..]))
        .map(|(k, n)| (&k[..], n))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = work.len().div_ceil(threads).max(1);
    let earliest = AtomicU64::new(u64::MAX);
    std::thread::scope(|s| {
        for part in work.chunks_mut(chunk) {
            let cuts = &cuts;
            let earliest = &earliest;
            s.spawn(move || {
                for (lower, node) in part.iter_mut() {
                    let cut = cuts.get(*lower).copied().unwrap_or(false);
                    let owner = node.owner.clone();
                    let mut sets = node.rrsets.to_vec();
                    for set in sets.iter_mut() {
                        // At a cut only the DS is the parent's data (RFC 4035 2.2).
                        if (cut && set.rtype != Rtype::DS) || set.rtype == Rtype::RRSIG {
                            continue;
                        }
                        let rdata: Vec<&[u8]> = set.rdata.iter().map(|d| &d[..]).collect();
                        let sigs = zk.sign(now, &owner, set.rtype, set.ttl, &rdata);
                        for s in &sigs {
                            if let Some(e) = sign::expiration_of(s) {
                                earliest.fetch_min(u64::from(e), Ordering::Relaxed);
                            }
                        }
                        set.sigs = sigs.into_boxed_slice();
                    }
                    node.rrsets = sets.into_boxed_slice();
                }
            });
        }
    });
    // The negative-answer SOA is a copy with a lower TTL: the same signatures.
    if let Some(soa) = zone.apex_node().and_then(|a| a.rrset(Rtype::SOA)) {
        zone.negative_soa.sigs = soa.sigs.clone();
    }
    zone.signed = true;
    earliest.load(Ordering::Relaxed)
}

/// Reads the keys, signs the zones that have active keys and the policies' answers in
/// them. A key for a zone that is not served is an error naming its file.
pub fn sign_zones(
    settings: &Settings,
    zones: &mut [Zone],
    policies: &PolicySet,
    view: &crate::health::HealthView,
    now: u64,
) -> Result<Dnssec, Vec<Diagnostic>> {
    let all = keys::read_dir(&settings.keys_dir)?;
    let mut by_zone: BTreeMap<Box<[u8]>, Vec<Key>> = BTreeMap::new();
    let mut errors = Vec::new();
    for k in all {
        if !zones.iter().any(|z| *z.apex == *k.zone) {
            errors.push(Diagnostic::new(
                &k.file,
                0,
                format!(
                    "key {} is for zone {}, which is not served (no such file in the zones folder)",
                    k.tag,
                    name::to_text(&k.zone)
                ),
            ));
            continue;
        }
        by_zone.entry(k.zone.clone()).or_default().push(k);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = Dnssec {
        denials: denial::Cache::new(settings.max_online_signatures_per_second),
        ..Dnssec::default()
    };
    let mut next_resign: Option<u64> = None;
    for zone in zones.iter_mut() {
        let Some(keys) = by_zone.remove(&zone.apex) else {
            continue;
        };
        let serial = zone.serial().map(|f| (f, signed_serial(f, now)));
        let zk = ZoneKeys {
            serial,
            apex: zone.apex.clone(),
            display: zone.display.clone(),
            keys,
            signed_at: now,
            validity: settings.signature_validity.as_secs(),
            refresh: settings.refresh.as_secs(),
            negative_ttl: zone.negative_soa.ttl,
        };
        let event = zk.next_key_event();
        next_resign = [next_resign, event, Some(now + zk.refresh)]
            .into_iter()
            .flatten()
            .min();
        if zk.data_signers().is_empty() {
            // Published but not yet active keys only: served unsigned until one activates.
            continue;
        }
        if let Some((_, served)) = serial {
            zone.set_serial(served);
        }
        let earliest = sign_zone(zone, &zk, now);
        out.earliest_expiry
            .insert(zone.display.to_string(), earliest);
        out.zones.insert(zone.apex.clone(), Arc::new(zk));
    }
    out.next_resign = next_resign;
    out.policy_types = policies
        .policies
        .iter()
        .map(|p| dynamic::types_of(policies, p))
        .collect();
    out.policy_keys = policies
        .policies
        .iter()
        .map(|p| {
            let z = crate::zone::ZoneSet::find_in(zones, &p.name)?;
            let apex = &zones.get(z)?.apex;
            out.zones.get(apex).cloned()
        })
        .collect();
    let (table, earliest) = dynamic::Table::build(policies, &out.policy_keys, view, now);
    for (zone, t) in earliest {
        let e = out.earliest_expiry.entry(zone).or_insert(t);
        *e = (*e).min(t);
    }
    out.dynamic = table;
    Ok(out)
}
