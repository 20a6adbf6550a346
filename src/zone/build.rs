//! From parsed records to a [`Zone`], in named phases over one [`Builder`]:
//! `group` (records into nodes and RRsets: duplicates, one SOA, one CNAME/DNAME, one TTL
//! per RRset), `check_nodes` (CNAME and other data, the apex, data below a DNAME or a
//! delegation), `negative_soa` (the apex SOA and NS, the negative TTL) and `finish`
//! (empty non-terminals, sorted RRsets). Each phase records every problem it finds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::parse::{ParsedRecord, ZoneError};
use super::{FastMap, NameKey, Node, RRset, Rdata, Zone};
use crate::iana::Rtype;
use crate::name;

/// One RRset as it is gathered: type, TTL, data, and the line it started on.
struct PendingSet {
    rtype: Rtype,
    ttl: u32,
    rdata: Vec<Rdata>,
    line: usize,
}

/// One owner's records as they are gathered.
struct PendingNode {
    /// The owner as first written (case preserved).
    owner: Vec<u8>,
    line: usize,
    file: PathBuf,
    sets: Vec<PendingSet>,
}

impl PendingNode {
    fn set(&self, t: Rtype) -> Option<&PendingSet> {
        self.sets.iter().find(|s| s.rtype == t)
    }
}

struct Builder<'a> {
    apex: &'a [u8],
    apex_lower: Vec<u8>,
    path: &'a Path,
    /// Lowercase owner → its records.
    nodes: HashMap<Vec<u8>, PendingNode>,
    count: usize,
    errors: Vec<ZoneError>,
    warnings: Vec<ZoneError>,
}

fn at(file: &Path, line: usize, message: String) -> ZoneError {
    ZoneError {
        column: None,
        file: file.to_path_buf(),
        line,
        message,
    }
}

impl<'a> Builder<'a> {
    fn new(apex: &'a [u8], path: &'a Path) -> Self {
        Builder {
            apex,
            apex_lower: name::lowercase(apex),
            path,
            nodes: HashMap::new(),
            count: 0,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Phase 1: records into nodes and RRsets.
    fn group(&mut self, records: Vec<ParsedRecord>) {
        for r in records {
            let lower = name::lowercase(&r.owner);
            let err = |m: String| at(&r.file, r.line, m);
            if !name::is_at_or_below(&lower, &self.apex_lower) {
                self.errors.push(err(format!(
                    "owner {} is outside the zone {}",
                    name::to_text(&r.owner),
                    name::to_text(self.apex)
                )));
                continue;
            }
            if r.rtype == Rtype::SOA && lower != self.apex_lower {
                self.errors.push(err(format!(
                    "SOA record at {} is not at the zone apex {}",
                    name::to_text(&r.owner),
                    name::to_text(self.apex)
                )));
                continue;
            }
            let node = self.nodes.entry(lower).or_insert_with(|| PendingNode {
                owner: r.owner.clone(),
                line: r.line,
                file: r.file.clone(),
                sets: Vec::new(),
            });
            match node.sets.iter_mut().find(|s| s.rtype == r.rtype) {
                Some(set) => {
                    if set.rdata.iter().any(|d| **d == *r.rdata) {
                        // RFC 2181 5: an RRset holds no duplicates; a repeated line is harmless.
                        continue;
                    }
                    if r.rtype == Rtype::SOA {
                        self.errors
                            .push(err("a zone has exactly one SOA record".into()));
                        continue;
                    }
                    if r.rtype == Rtype::CNAME || r.rtype == Rtype::DNAME {
                        self.errors.push(err(format!(
                            "{} already has a {} record; there can be only one",
                            name::to_text(&r.owner),
                            r.rtype
                        )));
                        continue;
                    }
                    if set.ttl != r.ttl {
                        // RFC 2181 5.2: the RRset gets one TTL; we take the lowest, as BIND does.
                        self.warnings.push(err(format!(
                            "TTL {} differs from the RRset's TTL {}; using the lower",
                            r.ttl, set.ttl
                        )));
                        set.ttl = set.ttl.min(r.ttl);
                    }
                    set.rdata.push(r.rdata.into_boxed_slice());
                }
                None => node.sets.push(PendingSet {
                    rtype: r.rtype,
                    ttl: r.ttl,
                    rdata: vec![r.rdata.into_boxed_slice()],
                    line: r.line,
                }),
            }
            self.count += 1;
        }
    }

    /// Phase 2: the rules about what may sit at and below each node.
    fn check_nodes(&mut self) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for (lower, p) in &self.nodes {
            if let Some(c) = p.set(Rtype::CNAME) {
                let others = p
                    .sets
                    .iter()
                    .any(|s| !matches!(s.rtype, Rtype::CNAME | Rtype::RRSIG | Rtype::NSEC));
                if others {
                    errors.push(at(
                        &p.file,
                        c.line,
                        format!(
                            "{} has a CNAME and other data (RFC 1034 3.6.2, RFC 2181 10.1)",
                            name::to_text(&p.owner)
                        ),
                    ));
                }
                if *lower == self.apex_lower {
                    errors.push(at(&p.file, c.line, "CNAME at the zone apex".into()));
                }
            }
            if *lower != self.apex_lower && p.set(Rtype::NS).is_none() {
                match self.below_cut(lower, p) {
                    Some(Finding::Error(e)) => errors.push(e),
                    Some(Finding::Warning(w)) => warnings.push(w),
                    None => {}
                }
            }
        }
        self.errors.extend(errors);
        self.warnings.extend(warnings);
    }

    /// Data below a DNAME is an error (RFC 6672 2.4); below a delegation, anything but
    /// glue is occluded: it can never be served, so it is worth a warning.
    fn below_cut(&self, lower: &[u8], p: &PendingNode) -> Option<Finding> {
        let mut up = name::parent(lower);
        while let Some(anc) = up {
            if anc == self.apex_lower.as_slice() {
                break;
            }
            if let Some(a) = self.nodes.get(anc) {
                if a.set(Rtype::DNAME).is_some() {
                    return Some(Finding::Error(at(
                        &p.file,
                        p.line,
                        format!(
                            "{} lies below the DNAME at {} (RFC 6672 2.4)",
                            name::to_text(&p.owner),
                            name::to_text(&a.owner)
                        ),
                    )));
                }
                let not_glue = p
                    .sets
                    .iter()
                    .any(|s| !matches!(s.rtype, Rtype::A | Rtype::AAAA));
                if a.set(Rtype::NS).is_some() && not_glue {
                    return Some(Finding::Warning(at(
                        &p.file,
                        p.line,
                        format!(
                            "{} lies below the delegation at {} and is not glue: it is never served",
                            name::to_text(&p.owner),
                            name::to_text(&a.owner)
                        ),
                    )));
                }
            }
            up = name::parent(anc);
        }
        None
    }

    /// Phase 3: the apex must have an SOA and NS; the SOA served in negative answers
    /// has TTL = min(SOA TTL, MINIMUM) (RFC 2308 3).
    fn negative_soa(&mut self) -> Option<RRset> {
        let apex = self.nodes.get(&self.apex_lower);
        let Some(soa) = apex.and_then(|p| p.set(Rtype::SOA)) else {
            self.errors.push(at(
                self.path,
                0,
                format!(
                    "zone {} has no SOA record at its apex",
                    name::to_text(self.apex)
                ),
            ));
            return None;
        };
        if apex.is_some_and(|p| p.set(Rtype::NS).is_none()) {
            self.errors.push(at(
                self.path,
                soa.line,
                format!(
                    "zone {} has no NS records at its apex",
                    name::to_text(self.apex)
                ),
            ));
        }
        let rdata = soa.rdata.first().cloned().unwrap_or_default();
        let minimum = rdata
            .len()
            .checked_sub(4)
            .and_then(|o| rdata.get(o..))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        Some(RRset {
            rtype: Rtype::SOA,
            ttl: soa.ttl.min(minimum),
            rdata: vec![rdata].into_boxed_slice(),
            sigs: Box::new([]),
        })
    }

    /// Phase 4: the served nodes, with their empty non-terminals (RFC 4592 2.2.2: they
    /// exist, answer NODATA and block wildcards) and RRsets sorted by type.
    fn finish(self, negative_soa: RRset) -> (Zone, Vec<ZoneError>) {
        let mut nodes: FastMap<NameKey, Node> =
            FastMap::with_capacity_and_hasher(self.nodes.len() * 2, Default::default());
        for (lower, p) in self.nodes {
            let mut up = name::parent(&lower);
            while let Some(anc) = up {
                if !name::is_at_or_below(anc, &self.apex_lower) {
                    break;
                }
                if !nodes.contains_key(anc) {
                    let owner_case = name::suffix_with_labels(&p.owner, name::label_count(anc))
                        .unwrap_or(anc)
                        .into();
                    nodes.insert(
                        anc.into(),
                        Node {
                            owner: owner_case,
                            rrsets: Box::new([]),
                            policy: None,
                        },
                    );
                }
                up = name::parent(anc);
            }
            let mut sets: Vec<RRset> = p
                .sets
                .into_iter()
                .map(|s| RRset {
                    rtype: s.rtype,
                    ttl: s.ttl,
                    rdata: s.rdata.into_boxed_slice(),
                    sigs: Box::new([]),
                })
                .collect();
            sets.sort_by_key(|s| s.rtype);
            nodes.insert(
                NameKey::from_slice(&lower),
                Node {
                    owner: p.owner.into_boxed_slice(),
                    rrsets: sets.into_boxed_slice(),
                    policy: None,
                },
            );
        }
        (
            Zone {
                display: name::to_text(&self.apex_lower).into_boxed_str(),
                apex: self.apex_lower.into_boxed_slice(),
                file: self.path.to_path_buf(),
                nodes,
                negative_soa,
                record_count: self.count,
                signed: false,
            },
            self.warnings,
        )
    }
}

enum Finding {
    Error(ZoneError),
    Warning(ZoneError),
}

/// Groups records into nodes and RRsets and checks the rules a nameserver must refuse
/// to serve around (RFC 1034, RFC 2181 10.1, RFC 6672 2.4). Returns warnings too.
pub(super) fn build(
    apex: &[u8],
    path: &Path,
    records: Vec<ParsedRecord>,
) -> Result<(Zone, Vec<ZoneError>), Vec<ZoneError>> {
    let mut b = Builder::new(apex, path);
    b.group(records);
    b.check_nodes();
    let soa = b.negative_soa();
    match soa {
        Some(soa) if b.errors.is_empty() => Ok(b.finish(soa)),
        _ => Err(b.errors),
    }
}
