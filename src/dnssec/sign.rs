//! RRSIGs (RFC 4034 3, RFC 4035 2.2): the signed data in canonical form (RFC 4034 6)
//! composed here, the signature itself made by `domain`'s key pair (ring). No
//! cryptography is written here.

use std::sync::atomic::Ordering;

use domain::crypto::sign::SignRaw;

use super::keys::Key;
use crate::iana::{Class, Rtype};
use crate::name;

pub use crate::metrics::SIGNATURES;

/// The validity window of one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub inception: u32,
    pub expiration: u32,
}

/// End of the uncompressed name starting at `at`.
fn name_end(rdata: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    loop {
        let l = usize::from(*rdata.get(i)?);
        i += 1 + l;
        if l == 0 {
            return Some(i);
        }
        if i > rdata.len() {
            return None;
        }
    }
}

/// RDATA in canonical form (RFC 4034 6.2, RFC 6840 5.1): the domain names of the RFC
/// 1035-era types in lowercase. Names are uncompressed in zone data, and a label length
/// (at most 63) is never an uppercase letter, so a name's octets are lowercased whole.
pub fn canonical_rdata(rtype: Rtype, rdata: &[u8]) -> Vec<u8> {
    let mut out = rdata.to_vec();
    let mut lower_name_at = |at: usize| -> Option<usize> {
        let end = name_end(&out, at)?;
        if let Some(s) = out.get_mut(at..end) {
            s.make_ascii_lowercase();
        }
        Some(end)
    };
    match rtype {
        Rtype::NS
        | Rtype::MD
        | Rtype::MF
        | Rtype::CNAME
        | Rtype::MB
        | Rtype::MG
        | Rtype::MR
        | Rtype::PTR
        | Rtype::DNAME => {
            lower_name_at(0);
        }
        Rtype::SOA | Rtype::MINFO | Rtype::RP => {
            if let Some(e) = lower_name_at(0) {
                lower_name_at(e);
            }
        }
        Rtype::MX | Rtype::AFSDB | Rtype::RT | Rtype::KX => {
            lower_name_at(2);
        }
        Rtype::PX => {
            if let Some(e) = lower_name_at(2) {
                lower_name_at(e);
            }
        }
        Rtype::SRV => {
            lower_name_at(6);
        }
        _ => {}
    }
    out
}

/// The RRSIG `labels` field: the owner's labels, not counting the root or a leading
/// `*` (RFC 4034 3.1.3).
pub fn labels(owner: &[u8]) -> u8 {
    let n = name::label_count(owner);
    let n = if name::is_wildcard(owner) {
        n.saturating_sub(1)
    } else {
        n
    };
    n.min(255) as u8
}

/// The RRSIG RDATA (without the signature) for one key.
fn rrsig_head(key: &Key, owner: &[u8], rtype: Rtype, original_ttl: u32, window: Window) -> Vec<u8> {
    let mut r = Vec::with_capacity(18 + key.zone.len() + 64);
    r.extend_from_slice(&rtype.to_int().to_be_bytes());
    r.push(key.algorithm.number());
    r.push(labels(owner));
    r.extend_from_slice(&original_ttl.to_be_bytes());
    r.extend_from_slice(&window.expiration.to_be_bytes());
    r.extend_from_slice(&window.inception.to_be_bytes());
    r.extend_from_slice(&key.tag.to_be_bytes());
    r.extend_from_slice(&key.zone);
    r
}

/// Signs the RRset `owner`/`rtype` (any case; `rdata` in any order, duplicates
/// allowed) with each of `keys`: the RRSIG RDATAs, one per key. A key that fails to
/// sign (ring does not, for a key it accepted) is skipped and logged.
pub fn sign_rrset<'k>(
    keys: impl IntoIterator<Item = &'k Key>,
    owner: &[u8],
    rtype: Rtype,
    original_ttl: u32,
    rdata: &[&[u8]],
    window: Window,
) -> Vec<Box<[u8]>> {
    let owner = owner.to_ascii_lowercase();
    let mut canonical: Vec<Vec<u8>> = rdata.iter().map(|d| canonical_rdata(rtype, d)).collect();
    canonical.sort();
    canonical.dedup();
    // Owner | type | class | TTL | RDLENGTH | RDATA, for every RR, in canonical order.
    let mut rrs = Vec::with_capacity(canonical.iter().map(|d| owner.len() + 10 + d.len()).sum());
    for d in &canonical {
        rrs.extend_from_slice(&owner);
        rrs.extend_from_slice(&rtype.to_int().to_be_bytes());
        rrs.extend_from_slice(&Class::IN.to_int().to_be_bytes());
        rrs.extend_from_slice(&original_ttl.to_be_bytes());
        rrs.extend_from_slice(&(d.len() as u16).to_be_bytes());
        rrs.extend_from_slice(d);
    }
    let mut out = Vec::new();
    for key in keys {
        let mut data = rrsig_head(key, &owner, rtype, original_ttl, window);
        let head_len = data.len();
        data.extend_from_slice(&rrs);
        match key.pair.sign_raw(&data) {
            Ok(sig) => {
                data.truncate(head_len);
                data.extend_from_slice(sig.as_ref());
                SIGNATURES.fetch_add(1, Ordering::Relaxed);
                out.push(data.into_boxed_slice());
            }
            Err(e) => tracing::error!(key = %key.file.display(), "signing failed: {e}"),
        }
    }
    out
}

/// The expiration field of an RRSIG RDATA.
pub fn expiration_of(rrsig: &[u8]) -> Option<u32> {
    let b = rrsig.get(8..12)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_lowercases_names_only() {
        let soa = [
            &[2, b'N', b'S', 0][..],
            &[1, b'H', 0],
            &[
                0, 0, 0, 0x41, 0, 0, 0, 0x5A, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
            ],
        ]
        .concat();
        let c = canonical_rdata(Rtype::SOA, &soa);
        assert_eq!(c.get(..7), Some(&[2, b'n', b's', 0, 1, b'h', 0][..]));
        // The serial's 0x41 ('A') and 0x5A ('Z') are numbers, not letters.
        assert_eq!(c.get(7..), soa.get(7..));
        let mx = [&[0, 10][..], &[2, b'M', b'X', 0]].concat();
        assert_eq!(
            canonical_rdata(Rtype::MX, &mx),
            vec![0, 10, 2, b'm', b'x', 0]
        );
        let txt = [3, b'A', b'B', b'C'];
        assert_eq!(canonical_rdata(Rtype::TXT, &txt), txt.to_vec());
    }

    #[test]
    fn labels_skip_the_wildcard() {
        let w = name::from_text("*.a.example.", &[0]).unwrap_or_default();
        assert_eq!(labels(&w), 2);
        let n = name::from_text("b.a.example.", &[0]).unwrap_or_default();
        assert_eq!(labels(&n), 3);
        assert_eq!(labels(&[0]), 0);
    }
}
