//! Parsing a query off the wire. Hand-written rather than a general message decoder
//! because this is the hot path: it borrows from the packet, allocates nothing and reads
//! only what answering needs (header, the one question, the OPT record).
//!
//! Outcomes follow RFC 1035 4.1.1 and RFC 6891: packets too short for a header and
//! responses are dropped (never answer a response: that is how reflection loops start);
//! anything else malformed gets FORMERR; opcodes other than QUERY get NOTIMP.

use std::net::IpAddr;

use crate::iana::{OptionCode, Rcode, Rtype, flags as flag};
use crate::name;

pub const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns<'a> {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// The CO flag: the client understands NXDOMAIN with compact denial (RFC 9824 4).
    pub compact_ok: bool,
    /// The OPT RDATA: a sequence of (code, length, data) options, checked well formed.
    pub options: &'a [u8],
}

/// EDNS Client Subnet (RFC 7871 6), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs<'a> {
    pub family: u16,
    pub source_prefix: u8,
    /// The address octets as sent: exactly ceil(source / 8) of them.
    pub address: &'a [u8],
}

impl Ecs<'_> {
    /// The client network's address, or `None` for SOURCE PREFIX-LENGTH 0, which says
    /// "no client information" (RFC 7871 7.1.2).
    pub fn client(&self) -> Option<IpAddr> {
        if self.source_prefix == 0 {
            return None;
        }
        match self.family {
            1 => {
                let mut b = [0u8; 4];
                b.iter_mut().zip(self.address).for_each(|(d, s)| *d = *s);
                Some(IpAddr::from(b))
            }
            _ => {
                let mut b = [0u8; 16];
                b.iter_mut().zip(self.address).for_each(|(d, s)| *d = *s);
                Some(IpAddr::from(b))
            }
        }
    }
}

/// EDNS Client Subnet (RFC 7871).
pub const OPTION_ECS: u16 = OptionCode::CLIENT_SUBNET.to_int();
pub const OPTION_NSID: u16 = OptionCode::NSID.to_int();

/// Whether the (well-formed) options carry option `code`.
pub fn has_option(mut opts: &[u8], code: u16) -> bool {
    while let (Some(c), Some(len)) = (u16_at(opts, 0), u16_at(opts, 2)) {
        if c == code {
            return true;
        }
        opts = opts.get(4 + usize::from(len)..).unwrap_or_default();
    }
    false
}

/// Finds and checks the ECS option; `Err` means FORMERR (RFC 7871 7.1.1: unknown family,
/// a prefix longer than the family, an address of the wrong length or with bits set
/// beyond the source prefix, or the option twice).
fn find_ecs(mut opts: &[u8]) -> Result<Option<Ecs<'_>>, ()> {
    let mut found = None;
    while let (Some(code), Some(len)) = (u16_at(opts, 0), u16_at(opts, 2)) {
        let data = opts.get(4..4 + usize::from(len)).ok_or(())?;
        opts = opts.get(4 + usize::from(len)..).unwrap_or_default();
        if code != OPTION_ECS {
            continue;
        }
        if found.is_some() {
            return Err(());
        }
        let (Some(family), Some(&source), Some(address)) =
            (u16_at(data, 0), data.get(2), data.get(4..))
        else {
            return Err(());
        };
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return Err(()),
        };
        if source > max || address.len() != usize::from(source).div_ceil(8) {
            return Err(());
        }
        if source % 8 != 0 {
            let last = address.last().copied().unwrap_or(0);
            if last & (0xFFu8 >> (source % 8)) != 0 {
                return Err(());
            }
        }
        found = Some(Ecs {
            family,
            source_prefix: source,
            address,
        });
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// The request's flag word; the response copies opcode, RD and CD from it.
    pub flags: u16,
    /// Question as received, byte for byte (RFC 1035 4.1.2; 0x20 case kept).
    pub question: &'a [u8],
    pub qname: &'a [u8],
    pub qtype: Rtype,
    pub qclass: u16,
    pub edns: Option<Edns<'a>>,
    pub ecs: Option<Ecs<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Query(Query<'a>),
    /// Answer with only a header carrying this rcode.
    HeaderOnly {
        id: u16,
        flags: u16,
        rcode: Rcode,
    },
    Drop,
}

impl<'a> Parsed<'a> {
    /// The query, when the packet was one.
    pub fn as_query(&self) -> Option<&Query<'a>> {
        match self {
            Parsed::Query(q) => Some(q),
            _ => None,
        }
    }
}

pub(super) fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *p.get(at)?,
        *p.get(at + 1)?,
        *p.get(at + 2)?,
        *p.get(at + 3)?,
    ]))
}

/// Reads an uncompressed name at `at`, returning its end. A question name has nothing
/// before it to point at, so compression there is malformed.
fn plain_name(p: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = usize::from(*p.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > name::MAX_LABEL_LEN {
            return None;
        }
        pos += 1 + len;
        if pos - at > name::MAX_NAME_LEN {
            return None;
        }
    }
    if pos - at > name::MAX_NAME_LEN || pos > p.len() {
        return None;
    }
    Some(pos)
}

/// Skips a possibly compressed name (in RRs after the question), returning its end.
pub(super) fn skip_name(p: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = *p.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + usize::from(len),
            0xC0..=0xFF => {
                p.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

fn options_well_formed(mut opts: &[u8]) -> bool {
    while !opts.is_empty() {
        let Some(len) = u16_at(opts, 2) else {
            return false;
        };
        let end = 4 + usize::from(len);
        let Some(rest) = opts.get(end..) else {
            return false;
        };
        opts = rest;
    }
    true
}

pub fn parse(p: &[u8]) -> Parsed<'_> {
    let (Some(id), Some(flags)) = (u16_at(p, 0), u16_at(p, 2)) else {
        return Parsed::Drop;
    };
    if p.len() < HEADER_LEN || flags & flag::QR != 0 {
        return Parsed::Drop;
    }
    let formerr = Parsed::HeaderOnly {
        id,
        flags,
        rcode: Rcode::FORMERR,
    };
    let opcode = (flags & flag::OPCODE_MASK) >> flag::OPCODE_SHIFT;
    if opcode != 0 {
        return Parsed::HeaderOnly {
            id,
            flags,
            rcode: Rcode::NOTIMP,
        };
    }
    let counts = (u16_at(p, 4), u16_at(p, 6), u16_at(p, 8), u16_at(p, 10));
    let (Some(1), Some(an), Some(ns), Some(ar)) = counts else {
        return formerr; // RFC 9619: exactly one question
    };
    let Some(qname_end) = plain_name(p, HEADER_LEN) else {
        return formerr;
    };
    let (Some(qtype), Some(qclass)) = (u16_at(p, qname_end), u16_at(p, qname_end + 2)) else {
        return formerr;
    };
    let question_end = qname_end + 4;
    let (Some(question), Some(qname)) = (
        p.get(HEADER_LEN..question_end),
        p.get(HEADER_LEN..qname_end),
    ) else {
        return formerr;
    };
    let qtype = Rtype::from_int(qtype);
    if qtype == Rtype::OPT {
        return formerr;
    }
    let mut pos = question_end;
    let mut edns = None;
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        let Some(name_end) = skip_name(p, pos) else {
            return formerr;
        };
        let (Some(t), Some(class), Some(ttl), Some(rdlen)) = (
            u16_at(p, name_end),
            u16_at(p, name_end + 2),
            u32_at(p, name_end + 4),
            u16_at(p, name_end + 8),
        ) else {
            return formerr;
        };
        let rdata_start = name_end + 10;
        let rdata_end = rdata_start + usize::from(rdlen);
        let Some(rdata) = p.get(rdata_start..rdata_end) else {
            return formerr;
        };
        if Rtype::from_int(t) == Rtype::OPT {
            let in_additional = i >= u32::from(an) + u32::from(ns);
            // RFC 6891 6.1.1: one OPT, owned by the root, in the additional section.
            if edns.is_some() || !in_additional || p.get(pos..name_end) != Some(name::ROOT) {
                return formerr;
            }
            if !options_well_formed(rdata) {
                return formerr;
            }
            edns = Some(Edns {
                udp_size: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
                compact_ok: ttl & 0x4000 != 0,
                options: rdata,
            });
        }
        pos = rdata_end;
    }
    let ecs = match edns.map(|e| find_ecs(e.options)) {
        Some(Err(())) => return formerr,
        Some(Ok(e)) => e,
        None => None,
    };
    Parsed::Query(Query {
        id,
        flags,
        question,
        qname,
        qtype,
        qclass,
        edns,
        ecs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(extra);
        p
    }

    const WWW: &[u8] = b"\x03WwW\x07example\x03com\x00";
    const OPT: &[u8] = &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn a_plain_query_borrows_its_question_verbatim() {
        let p = query(WWW, 1, &[], 0);
        let Parsed::Query(q) = parse(&p) else {
            panic!()
        };
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qname, WWW);
        assert_eq!(q.question.len(), WWW.len() + 4);
        assert_eq!(q.edns, None);
    }

    #[test]
    fn edns_is_read_from_the_opt_record() {
        let p = query(WWW, 1, OPT, 1);
        let Parsed::Query(q) = parse(&p) else {
            panic!()
        };
        let e = q.edns.unwrap();
        assert_eq!((e.udp_size, e.version, e.dnssec_ok), (1232, 0, true));
    }

    #[test]
    fn malformed_queries_get_formerr_and_garbage_is_dropped() {
        assert_eq!(parse(&[1, 2, 3]), Parsed::Drop);
        let mut response = query(WWW, 1, &[], 0);
        response[2] |= 0x80;
        assert_eq!(parse(&response), Parsed::Drop);
        let truncated = &query(WWW, 1, &[], 0)[..20];
        assert!(matches!(
            parse(truncated),
            Parsed::HeaderOnly {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
        let two_opts = query(WWW, 1, &[OPT, OPT].concat(), 2);
        assert!(matches!(
            parse(&two_opts),
            Parsed::HeaderOnly {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
        let mut two_questions = query(WWW, 1, &[], 0);
        two_questions[5] = 2;
        assert!(matches!(
            parse(&two_questions),
            Parsed::HeaderOnly {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
        let compressed = query(&[0xC0, 12], 1, &[], 0);
        assert!(matches!(
            parse(&compressed),
            Parsed::HeaderOnly {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
        let mut bad_opt = OPT.to_vec();
        bad_opt.truncate(9);
        bad_opt.extend_from_slice(&[0, 3, 0, 8, 0]);
        let p = query(WWW, 1, &bad_opt, 1);
        assert!(matches!(
            parse(&p),
            Parsed::HeaderOnly {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
    }

    fn with_ecs(option: &[u8]) -> Vec<u8> {
        let mut opt = OPT[..9].to_vec();
        opt.extend_from_slice(&(option.len() as u16 + 4).to_be_bytes());
        opt.extend_from_slice(&OPTION_ECS.to_be_bytes());
        opt.extend_from_slice(&(option.len() as u16).to_be_bytes());
        opt.extend_from_slice(option);
        query(WWW, 1, &opt, 1)
    }

    #[test]
    fn client_subnet_is_read_and_malformed_ones_are_formerr() {
        let p = with_ecs(&[0, 1, 24, 0, 198, 51, 100]);
        let Parsed::Query(q) = parse(&p) else {
            panic!()
        };
        let ecs = q.ecs.unwrap();
        assert_eq!(ecs.source_prefix, 24);
        assert_eq!(ecs.client(), Some("198.51.100.0".parse().unwrap()));
        let p = with_ecs(&[0, 2, 0, 0]);
        let Parsed::Query(q) = parse(&p) else {
            panic!()
        };
        assert_eq!(
            q.ecs.unwrap().client(),
            None,
            "source 0 means no client information"
        );
        for bad in [
            &[0, 1, 24, 0, 198, 51, 100, 7][..], // too many address octets
            &[0, 1, 23, 0, 198, 51, 101],        // bits set beyond /23
            &[0, 3, 8, 0, 10],                   // unknown family
            &[0, 1, 33, 0, 1, 2, 3, 4, 5],       // prefix longer than IPv4
            &[0, 1],                             // truncated
        ] {
            assert!(
                matches!(
                    parse(&with_ecs(bad)),
                    Parsed::HeaderOnly {
                        rcode: Rcode::FORMERR,
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        let mut notify = query(WWW, 6, &[], 0);
        notify[2] = 0x20; // opcode 4
        assert!(matches!(
            parse(&notify),
            Parsed::HeaderOnly {
                rcode: Rcode::NOTIMP,
                ..
            }
        ));
    }
}
