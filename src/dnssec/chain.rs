//! The NSEC chain (RFC 4034 4, RFC 4035 2.3) that goes with a signed zone to its
//! secondaries. Meridian answers denials online in compact form (`denial`), which needs
//! a signer at query time; a standard secondary (NSD, Knot, BIND) serves only the proofs
//! in the zone it received, so a transfer carries a whole chain over the names it sends,
//! each link signed (through the denial cache: a chain that did not change since the
//! last transfer costs no signature).

use std::collections::BTreeMap;

use super::{Dnssec, ZoneKeys, denial};
use crate::iana::Rtype;
use crate::name;
use crate::zone::Zone;
use crate::zone::lookup::Sigs;

/// One NSEC record of the chain and its signatures.
#[derive(Debug, Clone)]
pub struct Link {
    /// Owner as written in the zone (wire form).
    pub owner: Box<[u8]>,
    pub ttl: u32,
    pub rdata: Vec<u8>,
    pub sigs: Sigs,
}

/// A name of the chain: lowercase, as written in the zone, the types it has.
pub type ChainName<'a> = (Vec<u8>, &'a [u8], Vec<u16>);

/// The names the chain over `records` (owner in wire form, type) links, in canonical
/// order: the authoritative names a transfer of `zone` sends data for. Glue and names
/// below a DNAME have no NSEC; a delegation point lists only its NS and DS (RFC 4035
/// 2.3).
pub fn names<'a>(
    zone: &Zone,
    records: impl IntoIterator<Item = (&'a [u8], Rtype)>,
) -> Vec<ChainName<'a>> {
    // Lowercase name → (owner as written, types).
    let mut names: BTreeMap<Vec<u8>, (&'a [u8], Vec<u16>)> = BTreeMap::new();
    for (owner, rtype) in records {
        if matches!(rtype, Rtype::RRSIG | Rtype::NSEC) {
            continue;
        }
        let entry = names
            .entry(name::lowercase(owner))
            .or_insert_with(|| (owner, Vec::new()));
        entry.1.push(rtype.to_int());
    }
    let mut chain: Vec<ChainName<'a>> = names
        .into_iter()
        .filter(|(lower, _)| !super::occluded(zone, lower))
        .map(|(lower, (owner, mut types))| {
            if zone
                .node(&lower)
                .is_some_and(|n| super::is_cut(zone, &lower, n))
            {
                types.retain(|&t| t == Rtype::NS.to_int() || t == Rtype::DS.to_int());
            }
            (lower, owner, types)
        })
        .collect();
    chain.sort_by(|a, b| name::canonical_cmp(&a.0, &b.0));
    chain
}

/// The signed NSEC chain over `names` (from `names`): one NSEC per name, each pointing
/// at the next, the last back to the apex.
pub fn nsec_chain(dnssec: &Dnssec, zk: &ZoneKeys, names: &[ChainName<'_>]) -> Vec<Link> {
    let nexts = names.iter().cycle().skip(1).take(names.len());
    names
        .iter()
        .zip(nexts)
        .filter_map(|((_, owner, types), (next, _, _))| {
            let rdata = denial::nsec_rdata(next, types);
            let sigs = dnssec.denials.nsec_sigs(zk, owner, &rdata, false)?;
            Some(Link {
                owner: (*owner).into(),
                ttl: zk.negative_ttl,
                rdata,
                sigs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::names;
    use crate::iana::Rtype;
    use crate::name;

    #[test]
    fn the_chain_links_authoritative_names_in_canonical_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/diff/zones");
        let zones = crate::zone::load_dir(&dir).unwrap().zones;
        let zone = zones
            .iter()
            .find(|z| name::to_text(&z.apex) == "diff.test.")
            .unwrap();
        let records: Vec<(&[u8], Rtype)> = zone
            .nodes
            .values()
            .flat_map(|n| n.rrsets.iter().map(|s| (&n.owner[..], s.rtype)))
            .collect();
        let chain = names(zone, records);
        let text: Vec<String> = chain.iter().map(|c| name::to_text(&c.0)).collect();
        let at = |n: &str| text.iter().position(|t| t == n);
        assert_eq!(at("diff.test."), Some(0), "the apex starts the chain");
        for pair in chain.windows(2) {
            if let [a, b] = pair {
                assert!(name::canonical_cmp(&a.0, &b.0).is_lt());
            }
        }
        // A cut is linked with its NS (and DS) only; its glue and a DNAME's
        // subtree are not linked at all.
        assert!(at("sub.diff.test.").is_some());
        assert!(at("ns1.sub.diff.test.").is_none(), "{text:?}");
        let sub = chain
            .iter()
            .find(|c| c.0 == name::from_text("sub.diff.test.", &[0]).unwrap());
        let types = &sub.unwrap().2;
        assert!(
            types
                .iter()
                .all(|&t| t == Rtype::NS.to_int() || t == Rtype::DS.to_int())
        );
        assert!(at("dn.diff.test.").is_some());
        assert!(
            text.iter().all(|t| !t.ends_with(".dn.diff.test.")),
            "{text:?}"
        );
    }

    #[test]
    fn a_signed_serial_grows_with_the_file_and_the_clock() {
        use super::super::{SERIAL_EPOCH, signed_serial};
        let t = SERIAL_EPOCH + 86_400;
        assert_eq!(signed_serial(2026112201, t), 2026112201 + 86_400);
        assert!(signed_serial(2026112201, t + 1) > signed_serial(2026112201, t));
        assert!(signed_serial(2026112202, t) > signed_serial(2026112201, t));
        // A clock before the epoch leaves the file's serial.
        assert_eq!(signed_serial(7, 0), 7);
        // Near the top of the range it wraps, which RFC 1982 reads as an increase.
        let s = signed_serial(u32::MAX - 10, t);
        assert_eq!(s, 86_389);
    }
}
