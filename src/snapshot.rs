//! The immutable snapshot the query path reads: everything loaded from files, validated,
//! and published whole through one `ArcSwap` (a reload swaps it or changes nothing).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::zone::{self, ZoneError, ZoneSet};

#[derive(Debug)]
pub struct Snapshot {
    pub zones: ZoneSet,
    /// Our EDNS UDP payload size, advertised in every OPT we send.
    pub edns_udp_size: u16,
}

pub type Shared = Arc<ArcSwap<Snapshot>>;

pub struct Built {
    pub snapshot: Snapshot,
    pub warnings: Vec<ZoneError>,
}

impl Snapshot {
    /// Reads and validates everything the configuration names. All errors at once.
    pub fn build(config: &Config) -> Result<Built, Vec<ZoneError>> {
        let loaded = zone::load_dir(&config.zones_dir)?;
        Ok(Built {
            snapshot: Snapshot {
                zones: loaded.zones,
                edns_udp_size: config.dns.edns_udp_size,
            },
            warnings: loaded.warnings,
        })
    }
}
