//! Zone data: master files in `zones/` → validated, immutable [`Zone`]s gathered in a
//! [`ZoneSet`], which the query path reads through one atomically swapped snapshot.
//!
//! ```text
//!  zones/<name>[.zone] ──lexer──► entries ──parse──► ParsedRecord (wire RDATA, file:line)
//!                                                        │ build: group into RRsets, add
//!                                                        ▼ empty non-terminals, check rules
//!                                  Zone { nodes: lowercase wire name → Node { RRsets } }
//! ```
//!
//! Everything a lookup needs (node presence for empty non-terminals, the negative-answer
//! SOA TTL, which nodes are zone cuts) is computed here, at load time.

mod build;
pub mod lexer;
pub mod lookup;
pub mod parse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::iana::Rtype;
use crate::name;
pub use parse::ZoneError;

/// The query path's maps, keyed by names from the network: foldhash (randomly seeded per
/// map) instead of SipHash, which was a few per cent of the CPU per answer.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A node's key: the lowercase wire name, inline up to 24 bytes. With thousands of names
/// the table's bucket is already a cache miss; a boxed key cost a second one before the
/// name could be compared.
pub type NameKey = smallvec::SmallVec<[u8; 24]>;

/// One RR's data in uncompressed wire form.
pub type Rdata = Box<[u8]>;

#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: Rtype,
    pub ttl: u32,
    pub rdata: Box<[Rdata]>,
    /// RRSIG RDATAs covering this RRset (one per signing key); empty when the zone is
    /// not signed or the RRset is not authoritative (NS and glue at a cut). Filled by
    /// `dnssec` when the snapshot is built.
    pub sigs: Box<[Rdata]>,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    /// The owner as first written in the file (case preserved), wire form.
    pub owner: Box<[u8]>,
    /// Sorted by type; empty for an empty non-terminal.
    pub rrsets: Box<[RRset]>,
    /// A traffic policy answers A/AAAA here (index into the snapshot's policies).
    pub policy: Option<u32>,
}

impl Node {
    pub fn rrset(&self, rtype: Rtype) -> Option<&RRset> {
        self.rrsets
            .binary_search_by_key(&rtype, |s| s.rtype)
            .ok()
            .and_then(|i| self.rrsets.get(i))
    }
}

#[derive(Debug)]
pub struct Zone {
    /// Lowercase wire form.
    pub apex: Box<[u8]>,
    /// The apex in presentation form (a metric label, computed once).
    pub display: Box<str>,
    pub file: PathBuf,
    pub nodes: FastMap<NameKey, Node>,
    /// The SOA RRset as served in negative answers: TTL = min(SOA TTL, MINIMUM)
    /// (RFC 2308 3).
    pub negative_soa: RRset,
    pub record_count: usize,
    /// Signed by `dnssec`: answers to DO queries carry RRSIGs and NSEC proofs.
    pub signed: bool,
}

/// Where the serial starts in SOA RDATA: after two uncompressed names.
fn soa_serial_offset(soa: &[u8]) -> Option<usize> {
    let name_len = |at: usize| -> Option<usize> {
        let mut i = at;
        loop {
            let l = usize::from(*soa.get(i)?);
            i += 1 + l;
            if l == 0 {
                return Some(i - at);
            }
        }
    };
    let mname = name_len(0)?;
    let rname = name_len(mname)?;
    Some(mname + rname)
}

impl Zone {
    pub fn node(&self, lower_name: &[u8]) -> Option<&Node> {
        self.nodes.get(lower_name)
    }

    pub fn apex_node(&self) -> Option<&Node> {
        self.nodes.get(&self.apex[..])
    }

    /// The apex SOA's serial (what secondaries compare; RFC 1982 arithmetic).
    pub fn serial(&self) -> Option<u32> {
        let soa = self.apex_node()?.rrset(Rtype::SOA)?.rdata.first()?;
        let at = soa_serial_offset(soa)?;
        let b = soa.get(at..at + 4)?;
        Some(u32::from_be_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    }

    /// Serves `serial` in the apex SOA and the negative-answer SOA (before signing:
    /// the signatures cover the serial).
    pub fn set_serial(&mut self, serial: u32) {
        let apex = self.apex.clone();
        let sets = self
            .nodes
            .get_mut(&apex[..])
            .into_iter()
            .flat_map(|n| n.rrsets.iter_mut())
            .filter(|s| s.rtype == Rtype::SOA)
            .chain(std::iter::once(&mut self.negative_soa));
        for set in sets {
            for rd in set.rdata.iter_mut() {
                if let Some(at) = soa_serial_offset(rd)
                    && let Some(b) = rd.get_mut(at..at + 4)
                {
                    b.copy_from_slice(&serial.to_be_bytes());
                }
            }
        }
    }

    /// Binds a traffic policy to `name` (lowercase wire, inside this zone), creating the
    /// node and its empty non-terminals if the zone has no data there. The policy owns
    /// the name's A, AAAA and CNAME answers, so the zone must not have those there, and
    /// the name must not be hidden by a delegation or DNAME above it.
    pub fn attach_policy(&mut self, name: &[u8], policy: u32) -> Result<(), String> {
        let mut up = crate::name::parent(name);
        while let Some(anc) = up {
            if anc == &*self.apex || !crate::name::is_at_or_below(anc, &self.apex) {
                break;
            }
            if let Some(n) = self.nodes.get(anc) {
                if n.rrset(Rtype::NS).is_some() {
                    return Err(format!(
                        "{} is below the delegation at {}",
                        name::to_text(name),
                        name::to_text(anc)
                    ));
                }
                if n.rrset(Rtype::DNAME).is_some() {
                    return Err(format!(
                        "{} is below the DNAME at {}",
                        name::to_text(name),
                        name::to_text(anc)
                    ));
                }
            }
            up = crate::name::parent(anc);
        }
        if let Some(node) = self.nodes.get_mut(name) {
            for t in [Rtype::A, Rtype::AAAA, Rtype::CNAME] {
                if node.rrset(t).is_some() {
                    return Err(format!(
                        "zone {} already has {} records at {} ({}); the policy answers those: remove them",
                        name::to_text(&self.apex),
                        match t {
                            Rtype::A => "A",
                            Rtype::AAAA => "AAAA",
                            _ => "CNAME",
                        },
                        name::to_text(name),
                        self.file.display()
                    ));
                }
            }
            if *name != *self.apex && node.rrset(Rtype::NS).is_some() {
                return Err(format!("{} is a delegation point", name::to_text(name)));
            }
            node.policy = Some(policy);
            return Ok(());
        }
        let mut up = Some(name);
        while let Some(n) = up {
            if n == &*self.apex || self.nodes.contains_key(n) {
                break;
            }
            self.nodes.insert(
                n.into(),
                Node {
                    owner: n.into(),
                    rrsets: Box::new([]),
                    policy: None,
                },
            );
            up = crate::name::parent(n);
        }
        if let Some(node) = self.nodes.get_mut(name) {
            node.policy = Some(policy);
        }
        Ok(())
    }

    /// Loads and validates one zone file; every problem comes back as `FILE:LINE`.
    pub fn load(
        apex_text: &str,
        path: &Path,
        zones_dir: &Path,
        limits: &ZoneLimits,
    ) -> Result<(Zone, Vec<ZoneError>), Vec<ZoneError>> {
        let file_err = |line: usize, message: String| ZoneError {
            column: None,
            file: path.to_path_buf(),
            line,
            message,
        };
        let apex = name::from_text(apex_text, name::ROOT)
            .map(|n| {
                if n.last() == Some(&0) {
                    n
                } else {
                    [n.as_slice(), &[0]].concat()
                }
            })
            .map_err(|e| vec![file_err(0, format!("file name is not a zone name: {e}"))])?;
        let (records, mut errors) = parse::parse_file(path, &apex, zones_dir, limits.records);
        // Records per name, counted case-insensitively; the first one over is named.
        let mut per_name: HashMap<Vec<u8>, usize> = HashMap::new();
        for r in &records {
            let n = per_name.entry(name::lowercase(&r.owner)).or_default();
            *n += 1;
            if *n == limits.records_per_name + 1 {
                errors.push(ZoneError {
                    column: None,
                    file: r.file.clone(),
                    line: r.line,
                    message: format!(
                        "more than {} records at {} (limits.records_per_name)",
                        limits.records_per_name,
                        name::to_text(&r.owner)
                    ),
                });
            }
        }
        let built = build::build(&apex, path, records);
        let (zone, warnings) = match built {
            Ok(z) => z,
            Err(mut e) => {
                errors.append(&mut e);
                return Err(errors);
            }
        };
        if errors.is_empty() {
            Ok((zone, warnings))
        } else {
            Err(errors)
        }
    }
}

/// Every served zone, keyed by lowercase apex.
#[derive(Debug, Default)]
pub struct ZoneSet {
    zones: FastMap<Box<[u8]>, Arc<Zone>>,
}

impl ZoneSet {
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Self {
        ZoneSet {
            zones: zones
                .into_iter()
                .map(|z| (z.apex.clone(), Arc::new(z)))
                .collect(),
        }
    }

    /// The zone that is the closest encloser of `lower_name` (longest match).
    pub fn find(&self, lower_name: &[u8]) -> Option<&Zone> {
        name::suffix_offsets(lower_name)
            .filter_map(|o| lower_name.get(o..))
            .find_map(|s| self.zones.get(s))
            .map(|z| z.as_ref())
    }

    /// The traffic policy bound exactly at `lower_name`, if any: the common case of a
    /// policy query, looked up without the walk, for warming caches ahead of a batch.
    pub fn policy_at(&self, lower_name: &[u8]) -> Option<u32> {
        self.find(lower_name)?.node(lower_name)?.policy
    }

    /// Among `zones`, the index of the closest encloser of `lower_name`.
    pub fn find_in(zones: &[Zone], lower_name: &[u8]) -> Option<usize> {
        zones
            .iter()
            .enumerate()
            .filter(|(_, z)| name::is_at_or_below(lower_name, &z.apex))
            .max_by_key(|(_, z)| z.apex.len())
            .map(|(i, _)| i)
    }

    /// The closest enclosing zone strictly above `apex`, if we also serve it.
    pub fn find_parent(&self, apex: &[u8]) -> Option<&Zone> {
        self.find(name::parent(apex)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values().map(|z| z.as_ref())
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

/// The zone a file in `zones/` serves, by gdnsd's convention: the file name, minus a
/// trailing `.zone`. Files that are not zones (hidden, editor backups, `*.inc` include
/// fragments) and subfolders (where `$INCLUDE` fragments live) are skipped.
pub fn zone_name_for_file(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.')
        || file.ends_with('~')
        || file.ends_with(".swp")
        || file.ends_with(".inc")
    {
        return None;
    }
    let stem = file.strip_suffix(".zone").unwrap_or(file);
    let stem = stem.strip_suffix('.').unwrap_or(stem);
    if stem.is_empty() {
        return None;
    }
    Some(format!("{stem}."))
}

/// Result of loading a zones folder: the zones, or every error; warnings either way.
pub struct Loaded {
    pub zones: Vec<Zone>,
    pub warnings: Vec<ZoneError>,
}

/// What one zone may hold (`limits:` in `meridian.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneLimits {
    pub records: usize,
    pub records_per_name: usize,
}

impl Default for ZoneLimits {
    fn default() -> Self {
        ZoneLimits {
            records: 10_000_000,
            records_per_name: 10_000,
        }
    }
}

pub fn load_dir(dir: &Path) -> Result<Loaded, Vec<ZoneError>> {
    load_dir_with(dir, &ZoneLimits::default())
}

pub fn load_dir_with(dir: &Path, limits: &ZoneLimits) -> Result<Loaded, Vec<ZoneError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut zones = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(vec![ZoneError {
                column: None,
                file: dir.to_path_buf(),
                line: 0,
                message: format!("cannot read zones folder: {e}"),
            }]);
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut seen: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    for path in files {
        let Some(zone_name) = zone_name_for_file(&path) else {
            continue;
        };
        match Zone::load(&zone_name, &path, dir, limits) {
            Ok((zone, mut w)) => {
                warnings.append(&mut w);
                if let Some(first) = seen.get(zone.apex.as_ref()) {
                    errors.push(ZoneError {
                        column: None,
                        file: path.clone(),
                        line: 0,
                        message: format!(
                            "zone {} is already served from {}",
                            name::to_text(&zone.apex),
                            first.display()
                        ),
                    });
                    continue;
                }
                seen.insert(zone.apex.to_vec(), path.clone());
                zones.push(zone);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(Loaded { zones, warnings })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod lookup_tests;
