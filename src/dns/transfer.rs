//! Zone transfer to standard secondaries: AXFR (RFC 5936), IXFR answered with the whole
//! zone (RFC 1995 4 allows it) or with the SOA alone when the secondary is current, over
//! TCP only, to sources `transfer.allow` admits, signed with TSIG (RFC 8945) when their
//! rule names a key. The TSIG work is NLnet Labs' `domain`; the messages are composed
//! with its builder, so nothing here is on the UDP query path.
//!
//! A policy name is transferred as the answer a client with no location gets under the
//! current health view: a secondary cannot route, it can only be a fallback. A signed
//! zone goes with its signatures and an NSEC chain over the names sent (`dnssec::chain`),
//! so a secondary's negative answers validate too.

use std::collections::HashMap;
use std::net::IpAddr;

use domain::base::iana::Class;
use domain::base::name::Name;
use domain::base::{Message, MessageBuilder, ToName, Ttl, UnknownRecordData};
use domain::rdata::tsig::Time48;
use domain::tsig::{Algorithm, Key, KeyName, ServerSequence};

use crate::dnssec::chain;
use crate::health::HealthView;
use crate::iana::{Rcode, Rtype};
use crate::snapshot::Snapshot;
use crate::zone::lookup::{Dynamic, DynamicAnswers};
use crate::zone::{Rdata, Zone};

use super::handler::PolicyAnswers;

/// Answer records per message stay below this many bytes (RFC 5936 leaves the size to
/// the server; 16 KiB keeps a lost segment cheap and leaves room for the TSIG).
const MESSAGE_BUDGET: usize = 16 * 1024;

/// How a transfer request ended: the `result` label of `meridian_transfers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole zone was sent.
    Sent,
    /// IXFR from a secondary that already has our serial: the SOA alone.
    UpToDate,
    /// The source is not allowed, or it did not sign and its rule needs a key.
    Refused,
    /// A TSIG that does not verify (unknown key, bad MAC, time out of the fudge).
    BadTsig,
    /// We do not serve the zone named in the question.
    NotAuth,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::UpToDate => "up_to_date",
            Outcome::Refused => "refused",
            Outcome::BadTsig => "bad_tsig",
            Outcome::NotAuth => "not_authoritative",
        }
    }
}

pub struct Response {
    pub outcome: Outcome,
    /// The zone asked for, as the metric label (`none` when not ours).
    pub zone: String,
    pub records: usize,
    /// DNS messages, each to be framed by the caller.
    pub messages: Vec<Vec<u8>>,
}

type Store = HashMap<(KeyName, Algorithm), Key>;

/// Answers one AXFR or IXFR request that came over TCP from `peer`.
pub fn respond(snapshot: &Snapshot, health: &HealthView, request: &[u8], peer: IpAddr) -> Response {
    let mut resp = Response {
        outcome: Outcome::Refused,
        zone: "none".into(),
        records: 0,
        messages: Vec::new(),
    };
    let Ok(mut msg) = Message::from_octets(request.to_vec()) else {
        return resp; // request::parse accepted it; unreachable in practice
    };
    let Some(config) = snapshot.transfer.as_deref() else {
        resp.messages.push(error(&msg, Rcode::REFUSED));
        return resp;
    };
    let rules: Vec<_> = config.rules_for(peer).collect();
    if rules.is_empty() {
        resp.messages.push(error(&msg, Rcode::REFUSED));
        return resp;
    }
    let store: Store = rules
        .iter()
        .filter_map(|r| r.key.as_deref())
        .filter_map(|k| config.key(k))
        .map(|k| ((k.name().clone(), k.algorithm()), k.clone()))
        .collect();
    let open = rules.iter().any(|r| r.key.is_none());
    let now = Time48::now();
    let mut signer = match ServerSequence::request(&store, &mut msg, now) {
        Ok(Some(seq)) => Some(seq),
        Ok(None) if open => None,
        Ok(None) => {
            resp.messages.push(error(&msg, Rcode::REFUSED));
            return resp;
        }
        Err(e) => {
            resp.outcome = Outcome::BadTsig;
            let built = e
                .build_message(&msg, MessageBuilder::new_vec())
                .map(|b| b.finish());
            resp.messages
                .push(built.unwrap_or_else(|_| error(&msg, Rcode::NOTAUTH)));
            return resp;
        }
    };
    let Some(question) = msg.first_question() else {
        resp.messages.push(error(&msg, Rcode::FORMERR));
        return resp;
    };
    let qname = question.qname().to_name::<Vec<u8>>();
    let qname = crate::name::lowercase(qname.as_slice());
    let Some(zone) = snapshot.zones.iter().find(|z| *z.apex == *qname) else {
        resp.outcome = Outcome::NotAuth;
        resp.messages
            .push(finish(&msg, Rcode::NOTAUTH, &[], signer.as_mut(), now));
        return resp;
    };
    resp.zone = zone.display.to_string();
    let mut records = zone_records(snapshot, health, zone);
    if let Some(zk) = snapshot.dnssec.zones.get(&zone.apex) {
        let names = chain::names(zone, records.iter().map(|r| (&r.0[..], r.1)));
        let chain = chain::nsec_chain(&snapshot.dnssec, zk, &names);
        for link in chain {
            for sig in link.sigs.iter() {
                records.push((link.owner.clone(), Rtype::RRSIG, link.ttl, sig[..].into()));
            }
            records.push((link.owner, Rtype::NSEC, link.ttl, link.rdata.into()));
        }
    }
    let Some(soa) = records.first().cloned() else {
        resp.outcome = Outcome::NotAuth;
        resp.messages
            .push(finish(&msg, Rcode::NOTAUTH, &[], signer.as_mut(), now));
        return resp;
    };
    if question.qtype() == Rtype::IXFR
        && let (Some(ours), Some(theirs)) = (zone.serial(), ixfr_serial(&msg))
        && !serial_lt(theirs, ours)
    {
        resp.outcome = Outcome::UpToDate;
        resp.records = 1;
        resp.messages
            .push(finish(&msg, Rcode::NOERROR, &[soa], signer.as_mut(), now));
        return resp;
    }
    // SOA, the rest, SOA again (RFC 5936 2.2).
    let mut all = records;
    all.push(soa);
    resp.records = all.len();
    let mut batch = Vec::new();
    let mut size = 0;
    for r in all {
        let len = r.0.len() + 10 + r.3.len();
        if size + len > MESSAGE_BUDGET && !batch.is_empty() {
            resp.messages
                .push(finish(&msg, Rcode::NOERROR, &batch, signer.as_mut(), now));
            batch.clear();
            size = 0;
        }
        size += len;
        batch.push(r);
    }
    resp.messages
        .push(finish(&msg, Rcode::NOERROR, &batch, signer.as_mut(), now));
    resp.outcome = Outcome::Sent;
    resp
}

/// What a secondary of `zone` gets now: the records sent (SOA counted once) and, for
/// a signed zone, the names its NSEC chain links (`meridian check` prints them).
pub fn secondary_view(snapshot: &Snapshot, health: &HealthView, zone: &Zone) -> (usize, usize) {
    let records = zone_records(snapshot, health, zone);
    let names = if zone.signed {
        chain::names(zone, records.iter().map(|r| (&r.0[..], r.1))).len()
    } else {
        0
    };
    (records.len(), names)
}

/// Owner (wire), type, TTL, RDATA (wire).
type Record = (Box<[u8]>, Rtype, u32, Rdata);

/// The zone's records, SOA first; policy names as the no-location answer.
fn zone_records(snapshot: &Snapshot, health: &HealthView, zone: &Zone) -> Vec<Record> {
    let mut out = Vec::with_capacity(zone.record_count + 8);
    if let Some(apex) = zone.apex_node()
        && let Some(soa) = apex.rrset(Rtype::SOA)
    {
        for rd in soa.rdata.iter() {
            out.push((apex.owner.clone(), Rtype::SOA, soa.ttl, rd.clone()));
        }
    }
    // Sorted by name so a transfer is the same stream every time.
    let mut nodes: Vec<_> = zone.nodes.iter().collect();
    nodes.sort_by(|a, b| a.0.cmp(b.0));
    let mut policies = PolicyAnswers {
        snapshot,
        health,
        client: None,
        scope: 0,
        tally: None,
        dnssec: zone.signed,
    };
    for (_, node) in nodes {
        for set in node.rrsets.iter() {
            // The SOA went first; its signatures go with the rest.
            for rd in set.rdata.iter().filter(|_| set.rtype != Rtype::SOA) {
                out.push((node.owner.clone(), set.rtype, set.ttl, rd.clone()));
            }
            // A signed zone's signatures go with it (its NSEC chain is added after).
            for sig in set.sigs.iter() {
                out.push((node.owner.clone(), Rtype::RRSIG, set.ttl, sig.clone()));
            }
        }
        let Some(p) = node.policy else { continue };
        for qtype in [Rtype::A, Rtype::AAAA] {
            match policies.answer(p, qtype, &node.owner) {
                Dynamic::Records {
                    rtype,
                    ttl,
                    rdata,
                    sigs,
                } => {
                    for rd in rdata {
                        out.push((node.owner.clone(), rtype, ttl, rd.into()));
                    }
                    for sig in sigs.iter().flat_map(|s| s.iter()) {
                        out.push((node.owner.clone(), Rtype::RRSIG, ttl, sig[..].into()));
                    }
                }
                Dynamic::Cname { ttl, target, sigs } => {
                    out.push((node.owner.clone(), Rtype::CNAME, ttl, target.into()));
                    for sig in sigs.iter().flat_map(|s| s.iter()) {
                        out.push((node.owner.clone(), Rtype::RRSIG, ttl, sig[..].into()));
                    }
                    break; // a CNAME owns the name: one record, whatever the type
                }
                Dynamic::NoData | Dynamic::ServFail | Dynamic::NxDomain => {}
            }
        }
    }
    out
}

/// The serial in an IXFR request's authority SOA (RFC 1995 3).
fn ixfr_serial(msg: &Message<Vec<u8>>) -> Option<u32> {
    let section = msg.authority().ok()?;
    let rr = section
        .limit_to::<domain::rdata::Soa<_>>()
        .flatten()
        .next()?;
    Some(rr.data().serial().into_int())
}

/// RFC 1982: `a` is older than `b`.
fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

fn error(msg: &Message<Vec<u8>>, rcode: Rcode) -> Vec<u8> {
    finish(msg, rcode, &[], None, Time48::now())
}

fn finish(
    msg: &Message<Vec<u8>>,
    rcode: Rcode,
    records: &[Record],
    signer: Option<&mut ServerSequence<Key>>,
    now: Time48,
) -> Vec<u8> {
    let build = || -> Result<Vec<u8>, domain::base::message_builder::PushError> {
        let mut answer = MessageBuilder::new_vec().start_answer(msg, rcode)?;
        answer.header_mut().set_aa(rcode == Rcode::NOERROR);
        for (owner, rtype, ttl, rdata) in records {
            let Ok(owner) = Name::from_slice(&owner[..]) else {
                continue; // our own zone data: always a valid name
            };
            let Ok(data) = UnknownRecordData::from_octets(*rtype, &rdata[..]) else {
                continue;
            };
            answer.push((owner, Class::IN, Ttl::from_secs(*ttl), data))?;
        }
        let mut additional = answer.additional();
        if let Some(s) = signer {
            s.answer(&mut additional, now)?;
        }
        Ok(additional.finish())
    };
    build().unwrap_or_else(|_| {
        // Only a message over 64 KiB fails to build; the budget keeps them far smaller.
        let (id, flags) = match msg.as_slice() {
            [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
            _ => (0, 0),
        };
        let mut out = Vec::with_capacity(12);
        super::response::header_only(&mut out, id, flags, Rcode::SERVFAIL);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::serial_lt;

    #[test]
    fn serials_compare_in_rfc_1982_arithmetic() {
        for (a, b, lt) in [
            (1, 2, true),
            (2, 1, false),
            (5, 5, false),
            (u32::MAX, 0, true),
            (0, u32::MAX, false),
            (2026120100, 2026120101, true),
        ] {
            assert_eq!(serial_lt(a, b), lt, "{a} < {b}");
        }
    }
}
