//! Compiling a GeoIP database's networks and the overlay CIDRs into the class tables:
//! one streaming pass per family (sorted networks, gaps as unknown, cut at overlays,
//! classes interned, neighbours of one class merged).

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::location::{Location, LocationKey};
use super::range::{Key, RangeTable, last_of};
use super::{Family, net_bits};

/// GeoIP networks as read, compact per family (a million of them are held during a load:
/// 12 bytes each for IPv4 instead of 48 for a generic `(IpNet, start, end, id)` row).
#[derive(Debug, Default)]
pub struct Networks {
    /// (first address, prefix length, location id)
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
}

impl Networks {
    pub fn push(&mut self, net: IpNet, id: u32) {
        match net {
            IpNet::V4(n) => self.v4.push((u32::from(n.network()), n.prefix_len(), id)),
            IpNet::V6(n) => self.v6.push((u128::from(n.network()), n.prefix_len(), id)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shrink_to_fit(&mut self) {
        self.v4.shrink_to_fit();
        self.v6.shrink_to_fit();
    }

    /// Calls `f(first, last, id)` for one family's networks in address order, consuming
    /// them; at equal starts the less specific network comes first (and wins, see
    /// `GeoTable::compile_indexed`). Sorted in place: no wider copy of a million rows.
    fn for_each_sorted(&mut self, family: Family, mut f: impl FnMut(u128, u128, u32)) {
        let width = family.width();
        match family {
            Family::V4 => {
                let mut rows = std::mem::take(&mut self.v4);
                rows.sort_unstable_by_key(|&(s, p, _)| (s, p));
                for (s, p, id) in rows {
                    let s = u128::from(s);
                    f(s, last_of(width, s, p), id);
                }
            }
            Family::V6 => {
                let mut rows = std::mem::take(&mut self.v6);
                rows.sort_unstable_by_key(|&(s, p, _)| (s, p));
                for (s, p, id) in rows {
                    f(s, last_of(width, s, p), id);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    pub location: Option<u32>,
    /// Index into `GeoTable::overlays` of the innermost overlay CIDR, if any.
    pub overlay: Option<u32>,
}

#[derive(Debug, Default)]
pub struct GeoTable {
    /// Shared with the compiled policies, which look clients up in the same tables.
    pub v4: Arc<RangeTable<u32>>,
    pub v6: Arc<RangeTable<u128>>,
    pub classes: Vec<Class>,
    pub locations: Vec<Location>,
    pub overlays: Vec<IpNet>,
    /// Where clients with unknown, private or loopback addresses are taken to be.
    pub default_location: Option<u32>,
    /// Networks read from the database (for `check`'s summary).
    pub networks: usize,
    pub database: String,
    /// The database's own build time (Unix seconds), 0 without a database.
    pub build_epoch: u64,
    /// By overlay: the AS whose network holds it (`set_asns`), for geo rules' `asns:`.
    pub overlay_asn: Vec<Option<u32>>,
}

impl GeoTable {
    /// Class of an address, and the range of addresses sharing it.
    pub fn classify(&self, family: Family, addr: u128) -> Option<(u32, u128, u128)> {
        match family {
            Family::V4 => self.v4.lookup(addr),
            Family::V6 => self.v6.lookup(addr),
        }
    }

    pub fn class(&self, id: u32) -> Option<&Class> {
        self.classes.get(id as usize)
    }

    pub fn location(&self, id: u32) -> Option<&Location> {
        self.locations.get(id as usize)
    }

    /// Tags each overlay with the AS (of `networks`, which the overlays include) whose
    /// network contains it. AS networks do not overlap, so the innermost overlay of a
    /// client (what a class keeps) tells its AS: the one network containing it.
    pub fn set_asns(&mut self, networks: &[(IpNet, u32)]) {
        let by_net: HashMap<IpNet, u32> = networks.iter().copied().collect();
        self.overlay_asn = self
            .overlays
            .iter()
            .map(|o| {
                (0..=o.prefix_len())
                    .rev()
                    .filter_map(|len| IpNet::new(o.addr(), len).ok().map(|n| n.trunc()))
                    .find_map(|n| by_net.get(&n).copied())
            })
            .collect();
    }

    /// The AS of a class, when a geo rule names it.
    pub fn class_asn(&self, class: &Class) -> Option<u32> {
        self.overlay_asn
            .get(class.overlay? as usize)
            .copied()
            .flatten()
    }

    /// The effective location of a class (unknown → the configured default).
    pub fn class_location(&self, class: &Class) -> Option<&Location> {
        class
            .location
            .or(self.default_location)
            .and_then(|l| self.location(l))
    }

    /// Compiles networks (any order, non-overlapping as a GeoIP tree guarantees) and
    /// overlay CIDRs into the class tables.
    pub fn compile(
        networks: Vec<(IpNet, Location)>,
        overlays: Vec<IpNet>,
        default_location: Option<Location>,
        database: String,
    ) -> GeoTable {
        let mut locations: Vec<Location> = Vec::new();
        let mut ids: HashMap<LocationKey, u32> = HashMap::new();
        let mut indexed = Networks::default();
        for (net, loc) in networks {
            let id = *ids.entry(loc.key()).or_insert_with(|| {
                locations.push(loc);
                (locations.len() - 1) as u32
            });
            indexed.push(net, id);
        }
        Self::compile_indexed(indexed, locations, overlays, default_location, database)
    }

    /// As `compile`, with networks already pointing into `locations`.
    ///
    /// One streaming pass per family: the sorted networks, gaps filled as unknown, cut
    /// at overlay boundaries, each piece's class interned and merged into the table as it
    /// goes. Nothing but the input and the table is held, so a million-network database
    /// compiles in the memory of its result.
    pub fn compile_indexed(
        mut networks: Networks,
        mut locations: Vec<Location>,
        overlays: Vec<IpNet>,
        default_location: Option<Location>,
        database: String,
    ) -> GeoTable {
        let count = networks.len();
        let default_location = default_location.map(|l| {
            locations.push(l);
            (locations.len() - 1) as u32
        });
        let mut overlays = overlays;
        overlays.sort_by_key(|n| (n.prefix_len(), n.network()));
        overlays.dedup();
        let mut interner = Interner::default();
        let v4 = compile_family::<u32>(Family::V4, &mut networks, &overlays, &mut interner);
        let v6 = compile_family::<u128>(Family::V6, &mut networks, &overlays, &mut interner);
        let classes = interner.classes;
        GeoTable {
            v4: Arc::new(v4),
            v6: Arc::new(v6),
            classes,
            locations,
            overlays,
            default_location,
            networks: count,
            database,
            build_epoch: 0,
            overlay_asn: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Interner {
    classes: Vec<Class>,
    ids: HashMap<Class, u32, foldhash::fast::RandomState>,
    /// The last class interned: neighbouring pieces are often of one class.
    last: Option<(Class, u32)>,
}

impl Interner {
    fn id(&mut self, class: Class) -> u32 {
        if let Some((c, id)) = self.last
            && c == class
        {
            return id;
        }
        let id = *self.ids.entry(class).or_insert_with(|| {
            self.classes.push(class);
            (self.classes.len() - 1) as u32
        });
        self.last = Some((class, id));
        id
    }
}

/// One family's table (see `GeoTable::compile_indexed`).
fn compile_family<K: Key>(
    fam: Family,
    networks: &mut Networks,
    overlays: &[IpNet],
    interner: &mut Interner,
) -> RangeTable<K> {
    let top = last_of(fam.width(), 0, 0);
    let stamps = overlay_intervals(fam, overlays);
    let mut table = RangeTable::<K>::default();
    // A piece [start, end] of one location, cut where the innermost overlay changes.
    let mut piece = |start: u128, end: u128, location: Option<u32>| {
        let mut k = stamps
            .partition_point(|&(s, _)| s <= start)
            .saturating_sub(1);
        let mut at = start;
        loop {
            let overlay = stamps.get(k).and_then(|&(_, o)| o);
            table.push(at, interner.id(Class { location, overlay }));
            match stamps.get(k + 1) {
                Some(&(next, _)) if next <= end => {
                    at = next;
                    k += 1;
                }
                _ => break,
            }
        }
    };
    let mut next = 0u128;
    let mut done = false;
    networks.for_each_sorted(fam, |s, e, l| {
        if done || s < next {
            return; // overlapping input: the first (less specific) wins
        }
        if s > next {
            piece(next, s - 1, None);
        }
        piece(s, e, Some(l));
        if e == top {
            done = true;
        } else {
            next = e + 1;
        }
    });
    if !done {
        piece(next, top, None);
    }
    table.index()
}

/// The innermost overlay over a whole family as sorted `(start, overlay index)` intervals;
/// `overlays` are sorted least specific first, so later (more specific) ones overwrite.
fn overlay_intervals(fam: Family, overlays: &[IpNet]) -> Vec<(u128, Option<u32>)> {
    let width = fam.width();
    let top = last_of(width, 0, 0);
    let spans: Vec<(u32, u128, u128)> = overlays
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let (f, s, p) = net_bits(n);
            (f == fam).then(|| (i as u32, s, last_of(width, s, p)))
        })
        .collect();
    let mut cuts: Vec<u128> = vec![0];
    for &(_, s, e) in &spans {
        cuts.push(s);
        if e < top {
            cuts.push(e + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u128, Option<u32>)> = cuts.into_iter().map(|c| (c, None)).collect();
    for &(oi, s, e) in &spans {
        let from = out.partition_point(|r| r.0 < s);
        let to = out.partition_point(|r| r.0 <= e);
        for r in out.iter_mut().take(to).skip(from) {
            r.1 = Some(oi);
        }
    }
    out
}
