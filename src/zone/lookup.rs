//! The authoritative lookup (RFC 1034 4.3.2) as a pure function over the zone set:
//! `resolve(zones, qname, qtype) -> Answer`. No I/O, no clock, no encoding; the caller
//! turns the [`Answer`] into wire format.
//!
//! Covered here: exact matches, CNAME chains across served zones with loop protection
//! (RFC 1034 3.6.2, RFC 6604 for the final rcode), DNAME synthesis (RFC 6672), wildcards
//! with the closest-encloser rule (RFC 4592: an existing node or an empty non-terminal
//! blocks the wildcard), referrals at zone cuts with glue, DS answered from the parent
//! side of a cut (RFC 4035 3.1.4.1), negative answers with the SOA (RFC 2308) and minimal
//! ANY answers (RFC 8482).
//!
//! With `dnssec` (the query's DO bit) in a signed zone, every RRset is followed by its
//! RRSIGs and every negative or wildcard answer names the proof it needs in
//! [`Answer::denial`], which the caller composes (the proofs are signed online).

use std::borrow::Cow;

use super::{Node, RRset, Zone, ZoneSet};
pub use crate::iana::Rcode;
use crate::iana::Rtype;
use crate::name;
use std::sync::Arc;

/// Longest CNAME/DNAME chain followed before giving up (BIND and NSD use similar limits).
const MAX_CHAIN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr<'a> {
    pub owner: Cow<'a, [u8]>,
    pub rtype: Rtype,
    pub ttl: u32,
    pub rdata: Cow<'a, [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    pub rcode: Rcode,
    pub aa: bool,
    pub answer: Vec<Rr<'a>>,
    pub authority: Vec<Rr<'a>>,
    pub additional: Vec<Rr<'a>>,
    /// Referral glue for name servers inside the delegated zone: without it the referral
    /// is useless, so a response that cannot carry it must be truncated (RFC 9471).
    pub glue_required: bool,
    /// The zone the query name fell in (its apex, for metrics), `None` when refused.
    pub zone: Option<&'a str>,
    /// Denial-of-existence proofs the authority section needs (signed zones, DO set).
    pub denial: Vec<Denial<'a>>,
}

/// RRSIG RDATAs of one RRset, shared with the table that pre-signed them.
pub type Sigs = Arc<[Box<[u8]>]>;

/// A dynamic answer's RRSIGs, copied out of the table for one response. A copy rather
/// than a clone of the table's `Arc`: every thread answering the same busy name would
/// otherwise bounce that `Arc`'s count between cores on each answer.
pub type SigCopies = smallvec::SmallVec<[Vec<u8>; 2]>;

/// A proof of non-existence a signed answer needs (RFC 4035 3.1.3, in RFC 9824's
/// compact form: see `dnssec::denial`).
#[derive(Debug, Clone)]
pub enum Denial<'a> {
    /// `owner` exists (or is synthesised from a wildcard) without a `qtype` RRset;
    /// `node` is what is there (`None`: nothing but the name). `cut`: the parent side of
    /// a delegation, where only NS and DS are the parent's.
    NoData {
        zone: &'a Zone,
        owner: Cow<'a, [u8]>,
        node: Option<&'a Node>,
        qtype: Rtype,
        cut: bool,
    },
    /// `owner` does not exist.
    NxDomain {
        zone: &'a Zone,
        owner: Cow<'a, [u8]>,
    },
    /// The answer was synthesised from a wildcard: `next_closer` (lowercase) must be
    /// shown not to exist (RFC 4035 3.1.3.3).
    Wildcard {
        zone: &'a Zone,
        next_closer: Vec<u8>,
    },
    /// A delegation without DS: the cut's NSEC shows there is none (RFC 4035 3.1.4).
    Insecure { zone: &'a Zone, cut: &'a Node },
}

impl<'a> Answer<'a> {
    fn new(rcode: Rcode, aa: bool) -> Self {
        Answer {
            rcode,
            aa,
            answer: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            glue_required: false,
            zone: None,
            denial: Vec::new(),
        }
    }

    pub fn refused() -> Self {
        Answer::new(Rcode::REFUSED, false)
    }
}

#[allow(clippy::ptr_arg)] // the Cow is cloned, keeping a borrow where there is one
fn push_set<'a>(out: &mut Vec<Rr<'a>>, owner: &Cow<'a, [u8]>, set: &'a RRset) {
    out.extend(set.rdata.iter().map(|d| Rr {
        owner: owner.clone(),
        rtype: set.rtype,
        ttl: set.ttl,
        rdata: Cow::Borrowed(&d[..]),
    }));
}

/// Zones and nodes compare by identity: a proof is about that zone's data.
impl PartialEq for Denial<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Denial::*;
        match (self, other) {
            (
                NoData {
                    zone: z,
                    owner: o,
                    node: n,
                    qtype: q,
                    cut: c,
                },
                NoData {
                    zone: z2,
                    owner: o2,
                    node: n2,
                    qtype: q2,
                    cut: c2,
                },
            ) => {
                std::ptr::eq(*z, *z2)
                    && o == o2
                    && q == q2
                    && c == c2
                    && match (n, n2) {
                        (Some(a), Some(b)) => std::ptr::eq(*a, *b),
                        (None, None) => true,
                        _ => false,
                    }
            }
            (
                NxDomain { zone: z, owner: o },
                NxDomain {
                    zone: z2,
                    owner: o2,
                },
            ) => std::ptr::eq(*z, *z2) && o == o2,
            (
                Wildcard {
                    zone: z,
                    next_closer: n,
                },
                Wildcard {
                    zone: z2,
                    next_closer: n2,
                },
            ) => std::ptr::eq(*z, *z2) && n == n2,
            (Insecure { zone: z, cut: c }, Insecure { zone: z2, cut: c2 }) => {
                std::ptr::eq(*z, *z2) && std::ptr::eq(*c, *c2)
            }
            _ => false,
        }
    }
}

impl Eq for Denial<'_> {}

/// `push_set`, then the set's RRSIGs when `signed`.
#[allow(clippy::ptr_arg)]
fn push_signed<'a>(out: &mut Vec<Rr<'a>>, owner: &Cow<'a, [u8]>, set: &'a RRset, signed: bool) {
    push_set(out, owner, set);
    if signed {
        push_sigs(
            out,
            owner,
            set.ttl,
            set.sigs.iter().map(|s| Cow::Borrowed(&s[..])),
        );
    }
}

#[allow(clippy::ptr_arg)]
fn push_sigs<'a>(
    out: &mut Vec<Rr<'a>>,
    owner: &Cow<'a, [u8]>,
    ttl: u32,
    sigs: impl Iterator<Item = Cow<'a, [u8]>>,
) {
    out.extend(sigs.map(|rdata| Rr {
        owner: owner.clone(),
        rtype: Rtype::RRSIG,
        ttl,
        rdata,
    }));
}

/// The name below `wildcard`'s closest encloser on the way to `lower` (RFC 4592 3.3.1).
fn next_closer(lower: &[u8], wildcard: &[u8]) -> Vec<u8> {
    let encloser = name::label_count(wildcard).saturating_sub(1);
    name::suffix_with_labels(lower, encloser + 1)
        .unwrap_or(lower)
        .to_vec()
}

/// A policy's answer for one name, produced by the caller (the traffic-policy layer);
/// the lookup places it like any other RRset. The data is borrowed from the caller's
/// compiled configuration: no allocation per answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dynamic<'a> {
    Records {
        rtype: Rtype,
        ttl: u32,
        rdata: smallvec::SmallVec<[&'a [u8]; 8]>,
        /// Their RRSIGs, when the query asked for DNSSEC and the zone is signed.
        sigs: Option<SigCopies>,
    },
    Cname {
        ttl: u32,
        target: &'a [u8],
        sigs: Option<SigCopies>,
    },
    NoData,
    ServFail,
    /// The name does not exist after all (a `home` policy's unknown tenant with
    /// `unknown: nxdomain`; unsigned zones only).
    NxDomain,
}

/// Answers A/AAAA at names bound to a traffic policy. `name` is the name asked
/// (lowercase wire form), which a wildcard policy may read (a tenant's label).
pub trait DynamicAnswers<'a> {
    fn answer(&mut self, policy: u32, qtype: Rtype, name: &[u8]) -> Dynamic<'a>;
}

/// For callers without policies (tests, static-only use).
pub struct NoPolicies;

impl<'a> DynamicAnswers<'a> for NoPolicies {
    fn answer(&mut self, _: u32, _: Rtype, _: &[u8]) -> Dynamic<'a> {
        Dynamic::NoData
    }
}

/// Where a name lands inside one zone.
enum Step<'a> {
    /// The node that answers; `wildcard` when synthesised from `*.<closest encloser>`.
    Node {
        node: &'a Node,
        wildcard: bool,
        from_parent_side: bool,
    },
    Referral(&'a Node),
    Dname(&'a Node),
    NxDomain,
}

fn walk<'a>(zone: &'a Zone, lower: &[u8], qtype: Rtype) -> Step<'a> {
    let mut offsets = [0u8; 128];
    let mut n = 0usize;
    for o in name::suffix_offsets(lower) {
        if let Some(slot) = offsets.get_mut(n) {
            *slot = o as u8;
            n += 1;
        }
    }
    // offsets[n-1] is the root; the suffix with `d` labels starts at offsets[n-1-d].
    let total = n.saturating_sub(1);
    let apex_labels = name::label_count(&zone.apex);
    let suffix = |d: usize| {
        offsets
            .get(total.wrapping_sub(d))
            .and_then(|&o| lower.get(usize::from(o)..))
            .unwrap_or_default()
    };
    for d in apex_labels..=total {
        let here = suffix(d);
        let Some(node) = zone.node(here) else {
            let encloser = suffix(d.saturating_sub(1));
            let wild = name::wildcard_child(encloser);
            return match zone.node(&wild) {
                Some(w) => Step::Node {
                    node: w,
                    wildcard: true,
                    from_parent_side: false,
                },
                None => Step::NxDomain,
            };
        };
        let is_apex = d == apex_labels;
        let is_cut = !is_apex && node.rrset(Rtype::NS).is_some();
        if d == total {
            if is_cut {
                if qtype == Rtype::DS {
                    return Step::Node {
                        node,
                        wildcard: false,
                        from_parent_side: true,
                    };
                }
                return Step::Referral(node);
            }
            return Step::Node {
                node,
                wildcard: false,
                from_parent_side: false,
            };
        }
        if is_cut {
            return Step::Referral(node);
        }
        if node.rrset(Rtype::DNAME).is_some() {
            return Step::Dname(node);
        }
    }
    Step::NxDomain
}

/// Answers `qname`/`qtype` (class IN) from the served zones. `qname` is the name as
/// received; its case is kept in the answer.
pub fn resolve<'a>(
    zones: &'a ZoneSet,
    qname: &'a [u8],
    qtype: Rtype,
    dynamic: &mut impl DynamicAnswers<'a>,
) -> Answer<'a> {
    resolve_with(zones, qname, qtype, dynamic, false)
}

/// `resolve`, with RRSIGs and denial proofs from signed zones when `dnssec`.
pub fn resolve_with<'a>(
    zones: &'a ZoneSet,
    qname: &'a [u8],
    qtype: Rtype,
    dynamic: &mut impl DynamicAnswers<'a>,
    dnssec: bool,
) -> Answer<'a> {
    let mut cur: Cow<'a, [u8]> = Cow::Borrowed(qname);
    let mut ans = Answer::new(Rcode::NOERROR, true);
    let mut visited: Vec<Vec<u8>> = Vec::new();
    for hop in 0..MAX_CHAIN {
        let lower = name::lowercase(&cur);
        if visited.contains(&lower) {
            break; // CNAME loop: stop with what we have (NOERROR), as NSD and Knot do.
        }
        let zone = match zones.find(&lower) {
            // DS lives on the parent side of a cut (RFC 4035 3.1.4.1).
            Some(z) if qtype == Rtype::DS && *z.apex == *lower => {
                zones.find_parent(&lower).unwrap_or(z)
            }
            Some(z) => z,
            None if hop == 0 => return Answer::refused(),
            None => break, // the chain leaves our zones: the resolver follows it.
        };
        if hop == 0 {
            ans.zone = Some(&zone.display);
        }
        let signed = dnssec && zone.signed;
        match walk(zone, &lower, qtype) {
            Step::NxDomain => {
                ans.rcode = Rcode::NXDOMAIN;
                push_negative(&mut ans, zone, signed);
                if signed {
                    ans.denial.push(Denial::NxDomain {
                        zone,
                        owner: cur.clone(),
                    });
                }
                break;
            }
            Step::Referral(cut) => {
                if hop == 0 {
                    ans.aa = false;
                }
                let owner = Cow::Borrowed(&cut.owner[..]);
                if let Some(ns) = cut.rrset(Rtype::NS) {
                    push_set(&mut ans.authority, &owner, ns);
                    add_glue(&mut ans, zone, cut, ns);
                }
                if signed {
                    match cut.rrset(Rtype::DS) {
                        Some(ds) => push_signed(&mut ans.authority, &owner, ds, true),
                        None => ans.denial.push(Denial::Insecure { zone, cut }),
                    }
                }
                break;
            }
            Step::Dname(node) => {
                let Some(dname) = node.rrset(Rtype::DNAME) else {
                    break;
                };
                let Some(target) = dname.rdata.first() else {
                    break;
                };
                push_signed(
                    &mut ans.answer,
                    &Cow::Borrowed(&node.owner[..]),
                    dname,
                    signed,
                );
                // qname = <prefix>.<owner> → <prefix>.<target>
                let prefix_len = cur.len().saturating_sub(node.owner.len());
                let mut synth = Vec::with_capacity(prefix_len + target.len());
                synth.extend_from_slice(cur.get(..prefix_len).unwrap_or_default());
                synth.extend_from_slice(target);
                if synth.len() > name::MAX_NAME_LEN {
                    ans.rcode = Rcode::YXDOMAIN;
                    break;
                }
                ans.answer.push(Rr {
                    owner: cur.clone(),
                    rtype: Rtype::CNAME,
                    ttl: dname.ttl,
                    rdata: Cow::Owned(synth.clone()),
                });
                visited.push(lower);
                cur = Cow::Owned(synth);
            }
            Step::Node {
                node,
                wildcard,
                from_parent_side,
            } => {
                let owner = if wildcard || hop == 0 {
                    cur.clone()
                } else {
                    Cow::Borrowed(&node.owner[..])
                };
                // A positive answer synthesised from a wildcard proves the name itself
                // does not exist; a negative one is a NODATA at the name (RFC 9824).
                let proves_wildcard = |ans: &mut Answer<'a>| {
                    if signed && wildcard {
                        ans.denial.push(Denial::Wildcard {
                            zone,
                            next_closer: next_closer(&lower, &node.owner),
                        });
                    }
                };
                let nodata = |ans: &mut Answer<'a>, qtype: Rtype| {
                    push_negative(ans, zone, signed);
                    if signed {
                        ans.denial.push(Denial::NoData {
                            zone,
                            owner: owner.clone(),
                            node: Some(node),
                            qtype,
                            cut: from_parent_side,
                        });
                    }
                };
                if let (Some(policy), false) = (node.policy, from_parent_side)
                    && matches!(qtype, Rtype::A | Rtype::AAAA | Rtype::CNAME | Rtype::ANY)
                {
                    // CNAME and ANY ask what an A query would get.
                    let asked = if matches!(qtype, Rtype::AAAA) {
                        qtype
                    } else {
                        Rtype::A
                    };
                    match dynamic.answer(policy, asked, &lower) {
                        Dynamic::Records {
                            rtype: t,
                            ttl,
                            rdata,
                            sigs,
                        } if qtype != Rtype::CNAME => {
                            ans.answer.extend(rdata.into_iter().map(|d| Rr {
                                owner: owner.clone(),
                                rtype: t,
                                ttl,
                                rdata: Cow::Borrowed(d),
                            }));
                            if let (true, Some(sigs)) = (signed, sigs) {
                                let copies = sigs.into_iter().map(Cow::Owned);
                                push_sigs(&mut ans.answer, &owner, ttl, copies);
                                proves_wildcard(&mut ans);
                            }
                            break;
                        }
                        Dynamic::Cname { ttl, target, sigs } => {
                            ans.answer.push(Rr {
                                owner: owner.clone(),
                                rtype: Rtype::CNAME,
                                ttl,
                                rdata: Cow::Borrowed(target),
                            });
                            if let (true, Some(sigs)) = (signed, sigs) {
                                let copies = sigs.into_iter().map(Cow::Owned);
                                push_sigs(&mut ans.answer, &owner, ttl, copies);
                                proves_wildcard(&mut ans);
                            }
                            if qtype == Rtype::CNAME {
                                break;
                            }
                            visited.push(lower);
                            cur = Cow::Borrowed(target);
                            continue;
                        }
                        Dynamic::ServFail if qtype != Rtype::CNAME => {
                            ans.rcode = Rcode::SERVFAIL;
                            ans.aa = false;
                            ans.answer.clear();
                            break;
                        }
                        Dynamic::NxDomain => {
                            ans.rcode = Rcode::NXDOMAIN;
                            ans.answer.clear();
                            push_negative(&mut ans, zone, false);
                            break;
                        }
                        Dynamic::NoData if qtype != Rtype::ANY => {
                            nodata(&mut ans, qtype);
                            break;
                        }
                        _ if qtype == Rtype::CNAME => {
                            nodata(&mut ans, qtype);
                            break;
                        }
                        _ => {} // ANY with nothing dynamic: the zone's own RRsets
                    }
                }
                if qtype == Rtype::ANY {
                    // RFC 8482 4.1: one RRset is enough; the CNAME if there is one.
                    let pick = node
                        .rrset(Rtype::CNAME)
                        .or_else(|| node.rrsets.iter().find(|s| s.rtype != Rtype::RRSIG));
                    match pick {
                        Some(set) => {
                            push_signed(&mut ans.answer, &owner, set, signed);
                            proves_wildcard(&mut ans);
                        }
                        None => nodata(&mut ans, qtype),
                    }
                    break;
                }
                if let Some(set) = node.rrset(qtype) {
                    push_signed(&mut ans.answer, &owner, set, signed);
                    proves_wildcard(&mut ans);
                    add_additional(&mut ans, zones, set, dnssec);
                    break;
                }
                if !from_parent_side && let Some(cname) = node.rrset(Rtype::CNAME) {
                    push_signed(&mut ans.answer, &owner, cname, signed);
                    proves_wildcard(&mut ans);
                    let Some(target) = cname.rdata.first() else {
                        break;
                    };
                    visited.push(lower);
                    cur = Cow::Borrowed(&target[..]);
                    continue;
                }
                nodata(&mut ans, qtype);
                break;
            }
        }
    }
    ans
}

fn push_negative<'a>(ans: &mut Answer<'a>, zone: &'a Zone, signed: bool) {
    if let Some(apex) = zone.apex_node() {
        push_signed(
            &mut ans.authority,
            &Cow::Borrowed(&apex.owner[..]),
            &zone.negative_soa,
            signed,
        );
    }
}

/// The name inside an RR's data that additional-section processing chases
/// (RFC 1035 3.3.9, 3.3.11; RFC 2782).
fn target_of(rtype: Rtype, rdata: &[u8]) -> Option<&[u8]> {
    match rtype {
        Rtype::NS => Some(rdata),
        Rtype::MX => rdata.get(2..),
        Rtype::SRV => rdata.get(6..),
        _ => None,
    }
}

/// A node's addresses, with their RRSIGs when `signed` (RFC 4035 3.1.1; glue has none:
/// it is not authoritative, so it was never signed).
fn push_addresses<'a>(out: &mut Vec<Rr<'a>>, node: &'a Node, signed: bool) {
    let owner = Cow::Borrowed(&node.owner[..]);
    for t in [Rtype::A, Rtype::AAAA] {
        if let Some(set) = node.rrset(t)
            && !out.iter().any(|r| r.rtype == t && r.owner == owner)
        {
            push_signed(out, &owner, set, signed);
        }
    }
}

fn add_additional<'a>(ans: &mut Answer<'a>, zones: &'a ZoneSet, set: &'a RRset, dnssec: bool) {
    for rdata in set.rdata.iter() {
        let Some(target) = target_of(set.rtype, rdata) else {
            return;
        };
        let lower = name::lowercase(target);
        if let Some(zone) = zones.find(&lower)
            && let Some(node) = zone.node(&lower)
        {
            push_addresses(&mut ans.additional, node, dnssec && zone.signed);
        }
    }
}

fn add_glue<'a>(ans: &mut Answer<'a>, zone: &'a Zone, cut: &Node, ns: &'a RRset) {
    let cut_lower = name::lowercase(&cut.owner);
    for rdata in ns.rdata.iter() {
        let lower = name::lowercase(rdata);
        if let Some(node) = zone.node(&lower) {
            if name::is_at_or_below(&lower, &cut_lower)
                && node
                    .rrsets
                    .iter()
                    .any(|s| matches!(s.rtype, Rtype::A | Rtype::AAAA))
            {
                ans.glue_required = true;
            }
            push_addresses(&mut ans.additional, node, false);
        }
    }
}
