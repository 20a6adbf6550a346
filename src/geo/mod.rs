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

pub mod asn;
mod compile;
pub mod countries;
pub mod db;
mod location;
mod range;

pub use compile::{Class, GeoTable, Networks};
pub use location::{CONTINENTS, Location, Unit, closeness, country, distance_km, two, unit};
pub use range::{Found, Key, RangeTable, scope_within};

use std::net::IpAddr;

use ipnet::IpNet;

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
    fn scope_asks_only_the_neighbours_a_wider_prefix_needs_and_agrees_with_widen() {
        let mut x = 0x1234_5678_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = RangeTable::<u32>::default();
        let mut at = 0u128;
        for _ in 0..5000 {
            t.push(at, (next() % 3) as u32);
            at += 1 + u128::from(next() % 4096);
        }
        let t = t.index();
        for _ in 0..20_000 {
            let addr = u128::from(next() as u32) % at;
            let found = t.find(addr).unwrap();
            let same = |v: u32| v % 2 == found.value % 2;
            let (lo, hi) = t.widen(found, 16, same);
            assert_eq!(
                t.scope(found, addr, 16, same),
                scope_within(32, addr, lo, hi),
                "{addr:#x}"
            );
        }
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
