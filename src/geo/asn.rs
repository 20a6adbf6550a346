//! The ASN database (`geo.asn_database`): MaxMind's GeoLite2-ASN schema, which
//! ip-location-db's ASN files share (`autonomous_system_number`,
//! `autonomous_system_organization`).
//!
//! Geo rules with `asns:` need only the networks of the ASNs they name: those become
//! overlay CIDRs of the class table (as `cidrs:` do), each tagged with its ASN, so the
//! query path is unchanged. The file is kept in memory for explanations (`meridian
//! query` names any client's ASN, not only the ones a rule names).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

use super::db::DbError;

#[derive(Deserialize)]
struct Record<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

/// A client's autonomous system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asn {
    pub number: u32,
    pub organization: String,
    /// The database network it was found in.
    pub network: IpNet,
}

pub struct AsnDb {
    reader: Reader<Vec<u8>>,
    pub database_type: String,
    pub build_epoch: u64,
}

impl std::fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnDb")
            .field("database_type", &self.database_type)
            .finish_non_exhaustive()
    }
}

/// Records looked at to tell an ASN database from another kind.
const SCHEMA_PROBE: usize = 1000;

impl AsnDb {
    pub fn open(path: &Path) -> Result<AsnDb, DbError> {
        Self::from_bytes(std::fs::read(path)?)
    }

    /// Checks the schema on the first records: a GeoIP country or city file has no
    /// `autonomous_system_number`, and routing by ASN with one would match nothing.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<AsnDb, DbError> {
        let reader = Reader::from_source(bytes).map_err(|e| DbError::Format(e.to_string()))?;
        let database_type = reader.metadata().database_type.clone();
        let build_epoch = reader.metadata().build_epoch;
        let mut found = false;
        for item in reader
            .networks(WithinOptions::default())
            .map_err(|e| DbError::Format(e.to_string()))?
            .take(SCHEMA_PROBE)
        {
            let item = item.map_err(|e| DbError::Format(e.to_string()))?;
            let rec: Option<Record<'_>> = item.decode().ok().flatten();
            if rec.and_then(|r| r.autonomous_system_number).is_some() {
                found = true;
                break;
            }
        }
        if !found {
            return Err(DbError::AsnSchema(database_type));
        }
        Ok(AsnDb {
            reader,
            database_type,
            build_epoch,
        })
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<Asn> {
        let r = self.reader.lookup(ip).ok()?;
        let network = super::db::to_ipnet(r.network().ok()?)?;
        let rec: Record<'_> = r.decode().ok()??;
        Some(Asn {
            number: rec.autonomous_system_number?,
            organization: rec
                .autonomous_system_organization
                .unwrap_or_default()
                .to_string(),
            network,
        })
    }

    /// Every network of the ASNs in `wanted`, with its ASN, in database order. One pass
    /// over the file; records are decoded once per data offset (networks share them).
    pub fn networks_of(&self, wanted: &BTreeSet<u32>) -> Result<Vec<(IpNet, u32)>, DbError> {
        let mut out = Vec::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut cache: HashMap<usize, Option<u32>, foldhash::fast::RandomState> =
            HashMap::default();
        for item in self
            .reader
            .networks(WithinOptions::default())
            .map_err(|e| DbError::Format(e.to_string()))?
        {
            let item = item.map_err(|e| DbError::Format(e.to_string()))?;
            let decode = || {
                item.decode::<Record<'_>>()
                    .ok()
                    .flatten()
                    .and_then(|r| r.autonomous_system_number)
            };
            let asn = match item.offset() {
                Some(off) => *cache.entry(off).or_insert_with(decode),
                None => decode(),
            };
            if let Some(asn) = asn.filter(|a| wanted.contains(a))
                && let Some(net) = item.network().ok().and_then(super::db::to_ipnet)
            {
                out.push((net, asn));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> AsnDb {
        AsnDb::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/asn.mmdb")).unwrap()
    }

    #[test]
    fn the_shipped_database_names_well_known_networks() {
        let db = shipped();
        let cf = db.lookup("1.1.1.1".parse().unwrap()).unwrap();
        assert_eq!(cf.number, 13335, "{cf:?}");
        assert!(cf.organization.contains("Cloudflare"), "{cf:?}");
        let g = db.lookup("2001:4860:4860::8888".parse().unwrap()).unwrap();
        assert_eq!(g.number, 15169, "{g:?}");
        assert!(db.lookup("10.0.0.1".parse().unwrap()).is_none());
        let nets = db.networks_of(&BTreeSet::from([13335])).unwrap();
        assert!(nets.len() > 100, "{}", nets.len());
        assert!(nets.iter().all(|&(_, a)| a == 13335));
        assert!(nets.iter().any(|(n, _)| n.contains(&cf.network)));
    }

    #[test]
    fn a_country_database_is_not_taken_for_an_asn_database() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/geo-whois-asn-country.mmdb");
        let e = AsnDb::open(&path).unwrap_err().to_string();
        assert!(e.contains("autonomous_system_number"), "{e}");
        let e = AsnDb::from_bytes(b"not a database".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid MaxMind DB"), "{e}");
    }
}
