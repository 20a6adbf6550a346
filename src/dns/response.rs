//! Encoding an [`Answer`] into a response message: header, the question copied byte
//! for byte, the three sections with name compression (RFC 1035 4.1.4), the OPT record,
//! and truncation to the client's size limit (RFC 2181 9, RFC 6891 7).
//!
//! Hand-written for the hot path: it writes into a reused buffer, compresses by pointing
//! back into the message itself (no per-name allocation) and copies zone RDATA verbatim.

use super::request::{Ecs, HEADER_LEN, OPTION_ECS, Query};
use crate::iana::{OptRcode, OptionCode, Rcode, Rtype, flags as flag};
use crate::name;
use crate::zone::lookup::{Answer, Rr};

/// Opcode, RD and CD are copied from the query (RFC 1035 4.1.1, RFC 6840 5.9).
const COPIED_FLAGS: u16 = flag::OPCODE_MASK | flag::RD | flag::CD;
const OPT_LEN: usize = 11;
const MAX_COMPRESSION_TARGETS: usize = 64;

/// EDNS parameters of the response's OPT record.
#[derive(Debug, Clone, Copy)]
pub struct OptOut<'a> {
    pub udp_size: u16,
    /// The query's ECS option, echoed with this SCOPE PREFIX-LENGTH (RFC 7871 7.2.1).
    pub ecs: Option<(Ecs<'a>, u8)>,
    /// The DO bit, copied from the query (RFC 3225 3).
    pub dnssec_ok: bool,
    /// Our NSID (RFC 5001), when the query asked with an empty NSID option.
    pub nsid: Option<&'a [u8]>,
}

impl OptOut<'_> {
    fn len(&self) -> usize {
        OPT_LEN + self.options_len()
    }

    fn options_len(&self) -> usize {
        self.ecs.map_or(0, |(e, _)| 8 + e.address.len()) + self.nsid.map_or(0, |n| 4 + n.len())
    }
}

struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    limit: usize,
    targets: [u16; MAX_COMPRESSION_TARGETS],
    n_targets: usize,
}

struct Full;

/// Does the (possibly compressed) name at `off` in `msg` equal `name`, ignoring ASCII case?
fn name_at_eq(msg: &[u8], mut off: usize, name: &[u8]) -> bool {
    let mut i = 0usize;
    let mut hops = 0;
    loop {
        let Some(&len) = msg.get(off) else {
            return false;
        };
        if len >= 0xC0 {
            let Some(&lo) = msg.get(off + 1) else {
                return false;
            };
            off = (usize::from(len & 0x3F) << 8) | usize::from(lo);
            hops += 1;
            if hops > 16 {
                return false;
            }
            continue;
        }
        let l = usize::from(len);
        let (Some(a), Some(b)) = (msg.get(off..off + 1 + l), name.get(i..i + 1 + l)) else {
            return false;
        };
        if !a.eq_ignore_ascii_case(b) {
            return false;
        }
        if l == 0 {
            return true;
        }
        off += 1 + l;
        i += 1 + l;
    }
}

impl Writer<'_> {
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.targets
            .get(..self.n_targets)?
            .iter()
            .copied()
            .find(|&t| name_at_eq(self.buf, usize::from(t), suffix))
    }

    fn remember(&mut self, at: usize) {
        if at < 0x3FFF
            && let Some(slot) = self.targets.get_mut(self.n_targets)
        {
            *slot = at as u16;
            self.n_targets += 1;
        }
    }

    fn name(&mut self, name: &[u8], compress: bool) {
        for off in name::suffix_offsets(name) {
            let suffix = name.get(off..).unwrap_or(name::ROOT);
            if suffix == name::ROOT {
                self.buf.push(0);
                return;
            }
            if compress {
                if let Some(ptr) = self.find(suffix) {
                    self.buf.extend_from_slice(&(0xC000 | ptr).to_be_bytes());
                    return;
                }
                self.remember(self.buf.len());
            }
            let len = usize::from(suffix.first().copied().unwrap_or(0));
            self.buf
                .extend_from_slice(suffix.get(..1 + len).unwrap_or_default());
        }
    }

    /// RDATA with the names RFC 3597 4 allows to compress (the RFC 1035 types) compressed.
    fn rdata(&mut self, rtype: Rtype, rdata: &[u8]) {
        match rtype {
            Rtype::NS | Rtype::CNAME | Rtype::PTR => self.name(rdata, true),
            Rtype::MX if rdata.len() > 2 => {
                self.buf
                    .extend_from_slice(rdata.get(..2).unwrap_or_default());
                self.name(rdata.get(2..).unwrap_or_default(), true);
            }
            Rtype::SOA => {
                let mname_end = skip(rdata, 0);
                let rname_end = skip(rdata, mname_end);
                self.name(rdata.get(..mname_end).unwrap_or_default(), true);
                self.name(rdata.get(mname_end..rname_end).unwrap_or_default(), true);
                self.buf
                    .extend_from_slice(rdata.get(rname_end..).unwrap_or_default());
            }
            _ => self.buf.extend_from_slice(rdata),
        }
    }

    fn rr(&mut self, rr: &Rr<'_>) -> Result<(), Full> {
        let mark = self.buf.len();
        let marked_targets = self.n_targets;
        self.name(&rr.owner, true);
        self.buf.extend_from_slice(&rr.rtype.to_int().to_be_bytes());
        self.buf.extend_from_slice(&1u16.to_be_bytes());
        self.buf.extend_from_slice(&rr.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.rdata(rr.rtype, &rr.rdata);
        let rdlen = self.buf.len() - len_at - 2;
        if self.buf.len() > self.limit || rdlen > usize::from(u16::MAX) {
            self.buf.truncate(mark);
            self.n_targets = marked_targets;
            return Err(Full);
        }
        if let Some(slot) = self.buf.get_mut(len_at..len_at + 2) {
            slot.copy_from_slice(&(rdlen as u16).to_be_bytes());
        }
        Ok(())
    }

    fn section(&mut self, rrs: &[Rr<'_>]) -> (u16, bool) {
        let mut n = 0u16;
        for rr in rrs {
            if self.rr(rr).is_err() {
                return (n, false);
            }
            n += 1;
        }
        (n, true)
    }
}

/// End of the uncompressed name starting at `at` (zone RDATA is never compressed).
fn skip(rdata: &[u8], at: usize) -> usize {
    let mut pos = at;
    while let Some(&len) = rdata.get(pos) {
        pos += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    pos.min(rdata.len())
}

fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(slot) = buf.get_mut(at..at + 2) {
        slot.copy_from_slice(&v.to_be_bytes());
    }
}

fn header(buf: &mut Vec<u8>, id: u16, flags: u16) {
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&[0; 8]);
}

fn opt(buf: &mut Vec<u8>, out: OptOut<'_>, rcode: OptRcode) {
    buf.push(0);
    buf.extend_from_slice(&Rtype::OPT.to_int().to_be_bytes());
    buf.extend_from_slice(&out.udp_size.to_be_bytes());
    // TTL field: extended rcode (upper 8 bits of 12), version 0, flags: DO echoed.
    let flags = if out.dnssec_ok { 0x80 } else { 0 };
    buf.extend_from_slice(&[rcode.ext(), 0, flags, 0]);
    // Both lengths are bounded: an ECS address is at most 16 bytes, an NSID 128.
    buf.extend_from_slice(&(out.options_len() as u16).to_be_bytes());
    if let Some((ecs, scope)) = out.ecs {
        let len = 4 + ecs.address.len() as u16;
        buf.extend_from_slice(&OPTION_ECS.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&ecs.family.to_be_bytes());
        buf.extend_from_slice(&[ecs.source_prefix, scope]);
        buf.extend_from_slice(ecs.address);
    }
    if let Some(nsid) = out.nsid {
        buf.extend_from_slice(&OptionCode::NSID.to_int().to_be_bytes());
        buf.extend_from_slice(&(nsid.len() as u16).to_be_bytes());
        buf.extend_from_slice(nsid);
    }
}

/// A response of just a header with `rcode` (FORMERR for unparsable queries, NOTIMP).
pub fn header_only(buf: &mut Vec<u8>, id: u16, query_flags: u16, rcode: Rcode) {
    header(
        buf,
        id,
        flag::QR | (query_flags & COPIED_FLAGS) | u16::from(rcode.to_int()),
    );
}

/// A response with the question and no records, carrying a possibly extended rcode
/// (BADVERS = 16 needs the OPT record).
pub fn error(buf: &mut Vec<u8>, q: &Query<'_>, rcode: OptRcode, opt_out: Option<OptOut<'_>>) {
    header(
        buf,
        q.id,
        flag::QR | (q.flags & COPIED_FLAGS) | u16::from(rcode.rcode().to_int()),
    );
    buf.extend_from_slice(q.question);
    set_u16(buf, 4, 1);
    if let Some(o) = opt_out {
        opt(buf, o, rcode);
        set_u16(buf, 10, 1);
    }
}

/// Encodes `ans` as the response to `q` within `limit` octets.
pub fn encode(
    buf: &mut Vec<u8>,
    q: &Query<'_>,
    ans: &Answer<'_>,
    limit: usize,
    opt_out: Option<OptOut>,
) {
    let rcode = OptRcode::from_rcode(ans.rcode);
    let mut flags = flag::QR | (q.flags & COPIED_FLAGS) | u16::from(ans.rcode.to_int());
    if ans.aa {
        flags |= flag::AA;
    }
    header(buf, q.id, flags);
    buf.extend_from_slice(q.question);
    set_u16(buf, 4, 1);
    let reserve = opt_out.map(|o| o.len()).unwrap_or(0);
    let mut w = Writer {
        buf,
        limit: limit
            .saturating_sub(reserve)
            .max(HEADER_LEN + q.question.len()),
        targets: [0; MAX_COMPRESSION_TARGETS],
        n_targets: 0,
    };
    w.remember(HEADER_LEN);
    let after_question = w.buf.len();
    let (an, an_ok) = w.section(&ans.answer);
    let (ns, ns_ok) = if an_ok {
        w.section(&ans.authority)
    } else {
        (0, false)
    };
    let truncated;
    let mut ar = 0;
    if an_ok && ns_ok {
        let (n, ar_ok) = w.section(&ans.additional);
        ar = n;
        // Optional additional data is dropped silently; required glue is not (RFC 9471).
        truncated = !ar_ok && ans.glue_required;
    } else {
        truncated = true;
    }
    let (an, ns) = if truncated && !(an_ok && ns_ok) {
        // Partial required sections would mislead a cache; send the header and question
        // with TC so the client retries over TCP, as Knot does.
        w.buf.truncate(after_question);
        ar = 0;
        (0, 0)
    } else {
        (an, ns)
    };
    let buf = w.buf;
    if truncated && let Some(b) = buf.get_mut(2) {
        *b |= (flag::TC >> 8) as u8;
    }
    set_u16(buf, 6, an);
    set_u16(buf, 8, ns);
    if let Some(o) = opt_out {
        opt(buf, o, rcode);
        ar += 1;
    }
    set_u16(buf, 10, ar);
}

/// Cuts an encoded response down to its header, question and OPT record, with TC set:
/// for an answer the kernel would not send because it is larger than the interface's
/// MTU (UDP answers are never fragmented, see `dns::server`), so that the client retries
/// over TCP. False, leaving `buf` alone, when `buf` does not parse as a response.
pub fn cut_to_question(buf: &mut Vec<u8>) -> bool {
    let Some((question_end, opt)) = locate_question_and_opt(buf) else {
        return false;
    };
    let opt: Option<Vec<u8>> = opt.and_then(|r| buf.get(r).map(<[u8]>::to_vec));
    buf.truncate(question_end);
    set_u16(buf, 6, 0);
    set_u16(buf, 8, 0);
    set_u16(buf, 10, u16::from(opt.is_some()));
    if let Some(o) = opt {
        buf.extend_from_slice(&o);
    }
    if let Some(b) = buf.get_mut(2) {
        *b |= (flag::TC >> 8) as u8;
    }
    true
}

/// Where the question section ends, and the OPT record's bytes if there is one.
fn locate_question_and_opt(msg: &[u8]) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    use super::request::{skip_name, u16_at};
    let mut at = HEADER_LEN;
    for _ in 0..u16_at(msg, 4)? {
        at = skip_name(msg, at)? + 4;
    }
    let question_end = at;
    let (an, ns, ar) = (u16_at(msg, 6)?, u16_at(msg, 8)?, u16_at(msg, 10)?);
    let mut opt = None;
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        let start = at;
        at = skip_name(msg, at)?;
        let rr_type = u16_at(msg, at)?;
        let end = at + 10 + usize::from(u16_at(msg, at + 8)?);
        if i >= u32::from(an) + u32::from(ns) && Rtype::from_int(rr_type) == Rtype::OPT {
            opt = Some(start..end);
        }
        at = end;
    }
    (at <= msg.len() && question_end <= msg.len()).then_some((question_end, opt))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn big_answer(edns: bool) -> Vec<u8> {
        let name = Name::from_ascii("big.example.").unwrap();
        let mut m = Message::query();
        m.add_query(Query::query(name.clone(), RecordType::TXT));
        for i in 0..10 {
            let text = format!("record{i:02}-{}", "x".repeat(180));
            m.answers.push(Record::from_rdata(
                name.clone(),
                300,
                RData::TXT(TXT::new(vec![text])),
            ));
        }
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                "192.0.2.0".parse().unwrap(),
                24,
                16,
            )));
            m.set_edns(e);
        }
        let mut bytes = m.to_vec().unwrap();
        bytes[2] |= 0x84; // QR, AA
        bytes
    }

    #[test]
    fn an_answer_cut_to_its_question_keeps_the_opt_record_and_sets_tc() {
        let mut bytes = big_answer(true);
        assert!(bytes.len() > 2000);
        assert!(cut_to_question(&mut bytes));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.truncation);
        assert!(m.authoritative);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].query_type(), RecordType::TXT);
        assert!(m.answers.is_empty());
        let edns = m.edns.as_ref().unwrap();
        assert_eq!(edns.max_payload(), 4096);
        match edns.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => {
                assert_eq!((s.source_prefix(), s.scope_prefix()), (24, 16))
            }
            other => panic!("ECS option lost: {other:?}"),
        }
    }

    #[test]
    fn an_answer_without_edns_is_cut_to_header_and_question() {
        let mut bytes = big_answer(false);
        assert!(cut_to_question(&mut bytes));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.truncation);
        assert!(m.answers.is_empty() && m.additionals.is_empty() && m.edns.is_none());
        assert_eq!(bytes.len(), HEADER_LEN + "big.example.".len() + 1 + 4);
    }

    #[test]
    fn a_message_that_does_not_parse_is_left_alone() {
        let mut bytes = big_answer(true);
        bytes.truncate(bytes.len() - 3);
        let before = bytes.clone();
        assert!(!cut_to_question(&mut bytes));
        assert_eq!(bytes, before);
        let mut short = vec![0u8; 5];
        assert!(!cut_to_question(&mut short));
    }
}
