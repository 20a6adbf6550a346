//! Client location, compiled at load time.
//!
//! ```text
//!  GeoIP database (MaxMind or ip-location-db schema) ──db::read──► (network, Location)…
//!  + overlay CIDRs (geo-policy CIDR rules, latency-table CIDR keys)
//!        │ compile: sort, fill gaps with "unknown", split at overlays, intern classes,
//!        ▼ merge neighbours of the same class
//!  GeoTable { v4/v6: RangeTable<class id>, classes: [Class { location, overlay }] }
//! ```
//!
//! A *class* is everything the routing methods can see of a client: its location and the
//! innermost overlay CIDR it falls in. Policies rank regions per class once, at load
//! time (`policy::compile`); a query does one binary search.

pub mod countries;
pub mod db;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub country: Option<[u8; 2]>,
    pub continent: Option<[u8; 2]>,
    /// `CC-SUB` as in ISO 3166-2, e.g. `US-CA`.
    pub subdivision: Option<Box<str>>,
    /// Degrees; from the database, else the country's representative point.
    pub point: Option<(f64, f64)>,
}

type LocationKey = (
    Option<[u8; 2]>,
    Option<[u8; 2]>,
    Option<Box<str>>,
    Option<(u64, u64)>,
);

impl Location {
    /// A location with only a country, completed from the built-in table.
    pub fn from_country(code: &str) -> Option<Location> {
        let (cc, continent, lat, lon) = country(code)?;
        Some(Location {
            country: Some(cc),
            continent: Some(continent),
            subdivision: None,
            point: Some((lat, lon)),
        })
    }

    pub fn country_str(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    pub fn continent_str(&self) -> Option<&str> {
        self.continent
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    /// Identity for interning (f64 is not Hash).
    fn key(&self) -> LocationKey {
        (
            self.country,
            self.continent,
            self.subdivision.clone(),
            self.point.map(|(a, b)| (a.to_bits(), b.to_bits())),
        )
    }
}

/// The built-in table entry for an ISO 3166-1 alpha-2 code (case-insensitive).
pub fn country(code: &str) -> Option<([u8; 2], [u8; 2], f64, f64)> {
    let upper = code.to_ascii_uppercase();
    let i = countries::COUNTRIES
        .binary_search_by(|(c, ..)| (*c).cmp(upper.as_str()))
        .ok()?;
    let (c, cont, lat, lon) = countries::COUNTRIES.get(i)?;
    Some((two(c)?, two(cont)?, *lat, *lon))
}

pub fn two(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    match b {
        [a, b] => Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
        _ => None,
    }
}

pub const CONTINENTS: &[&str] = &["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address as (family, value), IPv4-mapped IPv6 unmapped.
pub fn addr_bits(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (Family::V4, u128::from(u32::from(v4))),
            None => (Family::V6, u128::from(v6)),
        },
    }
}

pub fn net_bits(net: &IpNet) -> (Family, u128, u8) {
    match net {
        IpNet::V4(n) => (
            Family::V4,
            u128::from(u32::from(n.network())),
            n.prefix_len(),
        ),
        IpNet::V6(n) => (Family::V6, u128::from(n.network()), n.prefix_len()),
    }
}

fn mask(width: u8, prefix: u8) -> u128 {
    let full = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        (full >> (width - prefix.min(width))) << (width - prefix.min(width)) & full
    }
}

fn last_of(width: u8, start: u128, prefix: u8) -> u128 {
    let full = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    start | (!mask(width, prefix) & full)
}

/// The widest prefix around `addr` that lies entirely inside `[lo, hi]`: the ECS scope
/// over which an answer decided by that range cannot change (RFC 7871 7.2.1).
pub fn scope_within(width: u8, addr: u128, lo: u128, hi: u128) -> u8 {
    for p in 0..=width {
        let start = addr & mask(width, p);
        if start >= lo && last_of(width, start, p) <= hi {
            return p;
        }
    }
    width
}

/// An address family's key in a [`RangeTable`]: IPv4 tables use `u32`, a quarter of the
/// memory and of the cache lines a lookup touches.
pub trait Key: Copy + Ord + std::fmt::Debug + Default {
    const WIDTH: u8;
    /// Top address bits that pick a block of the index (see `RangeTable::buckets`).
    const BUCKET_BITS: u8;
    /// The key of an address given as bits (IPv4 in the low 32).
    fn from_bits(bits: u128) -> Self;
    fn bits(self) -> u128;
}

impl Key for u32 {
    const WIDTH: u8 = 32;
    /// /20 blocks: 4 MB of index, and a lookup lands on about one entry, where /16 blocks
    /// left hundreds in the dense parts of the address space (a miss per search step).
    const BUCKET_BITS: u8 = 20;
    fn from_bits(bits: u128) -> Self {
        bits as u32
    }
    fn bits(self) -> u128 {
        u128::from(self)
    }
}

impl Key for u128 {
    const WIDTH: u8 = 128;
    const BUCKET_BITS: u8 = 16;
    fn from_bits(bits: u128) -> Self {
        bits
    }
    fn bits(self) -> u128 {
        self
    }
}

/// Contiguous ranges covering a whole address family: entry `i` is (first address,
/// value), and its range runs to the next entry's start - 1.
///
/// Start and value sit side by side, so the entry a lookup lands on brings its value in
/// the same cache line: on the query path this table is the one data structure too big
/// for the caches (a million-network database), and misses on it were most of the
/// decision's time.
#[derive(Debug, Clone, Default)]
pub struct RangeTable<K: Key> {
    entries: Vec<(K, u32)>,
    /// `buckets[b]` is the first range starting in the block whose top
    /// `K::BUCKET_BITS` address bits are `b`. A lookup searches only its block: a cache
    /// line or two instead of ~20 misses over a table of a million networks.
    buckets: Vec<u32>,
}

impl<K: Key> RangeTable<K> {
    pub fn width(&self) -> u8 {
        K::WIDTH
    }

    fn max() -> u128 {
        last_of(K::WIDTH, 0, 0)
    }

    fn bucket(addr: K) -> usize {
        (addr.bits() >> (K::WIDTH - K::BUCKET_BITS)) as usize
    }

    fn push(&mut self, start: u128, value: u32) {
        if self.entries.last().map(|e| e.1) != Some(value) {
            self.entries.push((K::from_bits(start), value));
        }
    }

    /// Builds the block index; call once the ranges are complete.
    fn index(mut self) -> Self {
        self.entries.shrink_to_fit();
        let n = 1usize << K::BUCKET_BITS;
        let mut buckets = Vec::with_capacity(n + 1);
        let mut i = 0usize;
        for b in 0..=n {
            while self.entries.get(i).is_some_and(|e| Self::bucket(e.0) < b) {
                i += 1;
            }
            buckets.push(i as u32);
        }
        self.buckets = buckets;
        self
    }

    /// The value for `addr` and the range it lies in.
    pub fn lookup(&self, addr: u128) -> Option<(u32, u128, u128)> {
        self.lookup_mapped(addr, 0, |v| v)
    }

    /// As `lookup`, with values mapped through `f` and the range widened over up to
    /// `reach` neighbours on each side that map to the same value: the ECS scope of an
    /// answer can then span neighbouring networks that get the same answer (as a
    /// per-policy merged table would give) without a table per policy. Past `reach` the
    /// range is narrower than it could be, never wrong.
    pub fn lookup_mapped(
        &self,
        addr: u128,
        reach: usize,
        f: impl Fn(u32) -> u32,
    ) -> Option<(u32, u128, u128)> {
        let key = K::from_bits(addr);
        let b = Self::bucket(key);
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.entries.len()),
        };
        // The containing range is the last one starting at or before `addr`: inside this
        // block, or the one that began in an earlier block.
        let within = self.entries.get(lo..hi)?.partition_point(|e| e.0 <= key);
        let i = (lo + within).checked_sub(1)?;
        let v = f(self.entries.get(i)?.1);
        let same = |j: usize| self.entries.get(j).is_some_and(|e| f(e.1) == v);
        let mut first = i;
        while first > 0 && i - first < reach && same(first - 1) {
            first -= 1;
        }
        let mut last = i;
        while last - i < reach && same(last + 1) {
            last += 1;
        }
        let lo = self.entries.get(first)?.0.bits();
        let hi = self
            .entries
            .get(last + 1)
            .map(|n| n.0.bits() - 1)
            .unwrap_or_else(Self::max);
        Some((v, lo, hi))
    }

    /// Loads the cache lines that lookups of `addrs` will read: first every address's
    /// index block, then every block's entries. The loads of one pass do not depend on
    /// each other, so their cache misses overlap instead of queueing one after another
    /// as they do inside a lookup (index, then entries). Returns a value derived from the
    /// loads, for the caller to pass to `std::hint::black_box`.
    pub fn warm(&self, addrs: impl Iterator<Item = u128>) -> u32 {
        let mut sink = 0u32;
        let blocks = addrs.map(|a| {
            let b = Self::bucket(K::from_bits(a));
            let lo = self.buckets.get(b).copied().unwrap_or(0);
            let hi = self.buckets.get(b + 1).copied().unwrap_or(lo);
            (lo, hi)
        });
        let mut spans = [(0u32, 0u32); 64];
        let mut n = 0;
        for (slot, span) in spans.iter_mut().zip(blocks) {
            *slot = span;
            n += 1;
        }
        for &(lo, hi) in spans.iter().take(n) {
            // A block's entries span a line or two: its first and its last.
            let first = self.entries.get(lo as usize).map_or(0, |e| e.1);
            let last = self
                .entries
                .get((hi as usize).saturating_sub(1))
                .map_or(0, |e| e.1);
            sink ^= first ^ last;
        }
        sink
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

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
        }
    }
}

#[derive(Default)]
struct Interner {
    classes: Vec<Class>,
    ids: HashMap<Class, u32>,
}

impl Interner {
    fn id(&mut self, class: Class) -> u32 {
        *self.ids.entry(class).or_insert_with(|| {
            self.classes.push(class);
            (self.classes.len() - 1) as u32
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(cc: &str) -> Location {
        Location::from_country(cc).unwrap()
    }

    #[test]
    fn the_country_table_knows_continents_and_points() {
        let (cc, cont, lat, _) = country("ie").unwrap();
        assert_eq!((&cc, &cont), (b"IE", b"EU"));
        assert!((50.0..56.0).contains(&lat));
        assert!(country("XX").is_none());
        let d = distance_km((53.35, -6.26), (39.04, -77.49));
        assert!((5400.0..5500.0).contains(&d), "{d}");
    }

    #[test]
    fn scope_is_the_widest_prefix_inside_the_range() {
        // 10.0.0.0 - 10.0.3.255 is a /22
        let lo = u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)));
        let hi = u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 3, 255)));
        let a = u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 2, 7)));
        assert_eq!(scope_within(32, a, lo, hi), 22);
        // an unaligned range: 10.0.1.0 - 10.0.3.255 → 10.0.2.0/23 around .2.7
        assert_eq!(scope_within(32, a, lo + 256, hi), 23);
        assert_eq!(scope_within(32, a, 0, u128::from(u32::MAX)), 0);
    }

    #[test]
    fn compiling_fills_gaps_splits_at_overlays_and_merges_neighbours() {
        let nets = vec![
            ("10.0.0.0/9".parse().unwrap(), loc("US")),
            ("10.128.0.0/9".parse().unwrap(), loc("US")),
            ("11.0.0.0/8".parse().unwrap(), loc("IE")),
            ("2001:db8::/32".parse().unwrap(), loc("JP")),
        ];
        let overlay: IpNet = "10.1.2.0/24".parse().unwrap();
        let t = GeoTable::compile(nets, vec![overlay], None, "test".into());
        let v4 = |s: &str| u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()));
        let (c, lo, hi) = t.classify(Family::V4, v4("10.200.0.1")).unwrap();
        let class = t.class(c).unwrap();
        assert_eq!(
            t.location(class.location.unwrap()).unwrap().country_str(),
            Some("US")
        );
        // The two US /9s merged, up to the overlay cut at 10.1.2.0/24.
        assert_eq!((lo, hi), (v4("10.1.3.0"), v4("10.255.255.255")));
        let (c, lo, hi) = t.classify(Family::V4, v4("10.1.2.9")).unwrap();
        assert_eq!(t.class(c).unwrap().overlay, Some(0));
        assert_eq!(scope_within(32, v4("10.1.2.9"), lo, hi), 24);
        let (c, ..) = t.classify(Family::V4, v4("192.168.1.1")).unwrap();
        assert_eq!(t.class(c).unwrap().location, None, "gaps are unknown");
        let (c, ..) = t
            .classify(
                Family::V6,
                u128::from("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()),
            )
            .unwrap();
        assert!(t.class(c).unwrap().location.is_some());
    }

    #[test]
    fn warming_reads_the_blocks_of_any_addresses_and_changes_nothing() {
        let nets = vec![
            ("10.0.0.0/8".parse().unwrap(), loc("US")),
            ("11.0.0.0/8".parse().unwrap(), loc("IE")),
        ];
        let t = GeoTable::compile(nets, vec![], None, "test".into());
        let before = t.classify(Family::V4, 0x0B00_0001);
        // Edges of the family, more addresses than a batch, and none at all.
        let addrs = [0u128, 0x0A00_0001, 0x0B00_0001, u128::from(u32::MAX)];
        t.v4.warm(addrs.iter().copied().cycle().take(200));
        t.v4.warm(std::iter::empty());
        t.v6.warm([0u128, u128::MAX].into_iter());
        RangeTable::<u32>::default().warm(addrs.into_iter());
        assert_eq!(t.classify(Family::V4, 0x0B00_0001), before);
    }
}
