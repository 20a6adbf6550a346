//! One query in, one response out: parse → checks every authoritative server makes →
//! `zone::lookup::resolve` → encode. Transport-independent and synchronous; it reads the
//! current snapshot once and never waits on anything.

use super::request::{self, Parsed, Query};
use super::response::{self, OptOut, RCODE_BADVERS};
use crate::snapshot::Snapshot;
use crate::zone::lookup::{self, Rcode};
use crate::zone::rtype;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Classic DNS over UDP without EDNS (RFC 1035 4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;
const CLASS_IN: u16 = 1;

/// Handles one packet; `false` means send nothing (the packet was not a query).
pub fn handle(snapshot: &Snapshot, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
    let q = match request::parse(packet) {
        Parsed::Drop => return false,
        Parsed::HeaderOnly { id, flags, rcode } => {
            response::header_only(out, id, flags, rcode);
            return true;
        }
        Parsed::Query(q) => q,
    };
    let our_size = snapshot.edns_udp_size;
    let opt_out = q.edns.map(|_| OptOut { udp_size: our_size });
    if let Some(e) = q.edns
        && e.version > 0
    {
        // RFC 6891 6.1.3: we speak version 0 only.
        response::error(out, &q, RCODE_BADVERS, opt_out);
        return true;
    }
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(e)) => usize::from(e.udp_size.clamp(512, our_size.max(512))),
    };
    answer(snapshot, &q, limit, opt_out, out);
    true
}

fn answer(
    snapshot: &Snapshot,
    q: &Query<'_>,
    limit: usize,
    opt_out: Option<OptOut>,
    out: &mut Vec<u8>,
) {
    if q.qclass != CLASS_IN {
        response::error(out, q, Rcode::Refused as u16, opt_out);
        return;
    }
    match q.qtype {
        // Zone transfers are not offered; meta-queries of RFC 1035 are obsolete.
        rtype::AXFR | rtype::IXFR => {
            response::error(out, q, Rcode::Refused as u16, opt_out);
        }
        rtype::MAILA | rtype::MAILB => {
            response::error(out, q, Rcode::NotImp as u16, opt_out);
        }
        _ => {
            let ans = lookup::resolve(&snapshot.zones, q.qname, q.qtype);
            response::encode(out, q, &ans, limit, opt_out);
        }
    }
}
