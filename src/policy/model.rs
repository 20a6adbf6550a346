//! The validated policy model: regions, policies and the set the snapshot holds. Built by
//! `validate` from the files; compiled into routes by `compile`; read by `decide`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;

use super::classes::ClassView;
use super::latency::Latency;
use super::route::{Kind, Route};
use crate::geo::{self, RangeTable};
use crate::health::{Endpoint, MinUp, Thresholds};
use crate::iana::Rtype;

/// Most regions one answer may carry.
pub const MAX_ANSWERS: usize = 8;

/// The member states of the European Union, for `countries: [EU]`.
pub const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// The order of a region's addresses in its RRset (`order:`, gdnsd#130).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AddressOrder {
    /// As listed: clients that take the first address all go to the same server.
    #[default]
    Fixed,
    /// Each answer starts one address further on (per serving thread).
    Rotate,
    /// A fresh random order each answer.
    Shuffle,
}

impl AddressOrder {
    pub fn name(self) -> &'static str {
        match self {
            AddressOrder::Fixed => "fixed",
            AddressOrder::Rotate => "rotate",
            AddressOrder::Shuffle => "shuffle",
        }
    }
}

/// A and AAAA answers in wire form, which the query path's answers borrow. Addresses
/// are numbered A first, then AAAA: bit i of a live mask (`HealthView::live`) is the
/// i-th; addresses past the 64th are always live (no endpoint can serve them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressRdata {
    a: Box<[[u8; 4]]>,
    aaaa: Box<[[u8; 16]]>,
}

/// Addresses one answer may carry from one region (a live mask's width).
pub const MAX_SERVED: usize = 64;

fn is_live(live: u64, i: usize) -> bool {
    i >= MAX_SERVED || live & (1u64 << i) != 0
}

impl AddressRdata {
    pub fn new(a: &[Ipv4Addr], aaaa: &[Ipv6Addr]) -> Self {
        AddressRdata {
            a: a.iter().map(|x| x.octets()).collect(),
            aaaa: aaaa.iter().map(|x| x.octets()).collect(),
        }
    }

    /// The rdata of type `qtype` (A, else AAAA) with their positions in the mask.
    fn of(&self, qtype: Rtype) -> impl Iterator<Item = (usize, &[u8])> + Clone {
        let (a, aaaa) = if qtype == Rtype::A {
            (&self.a[..], &[][..])
        } else {
            (&[][..], &self.aaaa[..])
        };
        let base = if qtype == Rtype::A { 0 } else { self.a.len() };
        a.iter()
            .map(|x| &x[..])
            .chain(aaaa.iter().map(|x| &x[..]))
            .enumerate()
            .map(move |(i, x)| (base + i, x))
    }

    /// Whether some address of type `qtype` is live.
    pub fn any_live(&self, qtype: Rtype, live: u64) -> bool {
        self.of(qtype).any(|(i, _)| is_live(live, i))
    }

    /// Appends the live rdata of type `qtype` (A, else AAAA) to `out`, in `order`;
    /// `turn` numbers the answer (rotate starts at `turn`, shuffle is seeded by it).
    pub fn push_to<'a>(
        &'a self,
        qtype: Rtype,
        live: u64,
        order: AddressOrder,
        turn: u64,
        out: &mut smallvec::SmallVec<[&'a [u8]; 8]>,
    ) {
        let start = out.len();
        out.extend(
            self.of(qtype)
                .filter(|&(i, _)| is_live(live, i))
                .map(|(_, x)| x),
        );
        let mine = out.get_mut(start..).unwrap_or_default();
        let n = mine.len();
        if n < 2 {
            return;
        }
        match order {
            AddressOrder::Fixed => {}
            AddressOrder::Rotate => mine.rotate_left((turn % n as u64) as usize),
            AddressOrder::Shuffle => {
                // Fisher-Yates over a splitmix stream: not for secrets, only spread.
                let mut x = turn;
                for i in (1..n).rev() {
                    x = x.wrapping_add(crate::hash::GOLDEN);
                    let z = crate::hash::mix64(x);
                    mine.swap(i, (z % (i as u64 + 1)) as usize);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub point: (f64, f64),
    /// `point` on the unit sphere (`geo::Unit`): what nearest ranking compares.
    pub unit: crate::geo::Unit,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// `a` and `aaaa` as answered.
    pub rdata: AddressRdata,
    /// The order of its addresses in an answer.
    pub order: AddressOrder,
    /// Wire form; when set the region answers with this CNAME.
    pub cname: Option<Box<[u8]>>,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
    pub thresholds: Thresholds,
    pub min_up: MinUp,
    /// Stable across reloads for the same name: the health view is indexed by it.
    pub id: u32,
    /// Requests/s it can serve; `None`: unlimited.
    pub capacity: Option<f64>,
    /// Gradual failback after a recovery; `None`: all clients at once.
    pub failback: Option<crate::traffic::Failback>,
    /// Its measured load, when it has a `load:` query.
    pub load: Option<crate::health::LoadQuery>,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct GeoRule {
    pub countries: Vec<[u8; 2]>,
    pub continents: Vec<[u8; 2]>,
    pub subdivisions: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub asns: Vec<u32>,
    pub regions: Vec<u16>,
}

#[derive(Debug, Clone)]
pub enum Method {
    Nearest,
    Latency,
    Geo {
        rules: Vec<GeoRule>,
        default: Vec<u16>,
    },
    Weighted,
    Failover,
    /// Each tenant's home (`Policy::home`); unknown tenants ranked as `Nearest`.
    Home,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Nearest => "nearest",
            Method::Latency => "latency",
            Method::Geo { .. } => "geo",
            Method::Weighted => "weighted",
            Method::Failover => "failover",
            Method::Home => "home",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Residency {
    pub countries: Vec<[u8; 2]>,
    pub continents: Vec<[u8; 2]>,
    /// Clients in these networks (overlays of the class table).
    pub cidrs: Vec<IpNet>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AllDown {
    FailOpen,
    NoData,
    ServFail,
    Static {
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
        rdata: AddressRdata,
    },
}

impl AllDown {
    pub fn name(&self) -> &'static str {
        match self {
            AllDown::FailOpen => "fail_open",
            AllDown::NoData => "nodata",
            AllDown::ServFail => "servfail",
            AllDown::Static { .. } => "static",
        }
    }
}

/// A compiled policy. A query reads its `route` (a copy of which is in
/// `PolicySet::routes`); the rest serves explanations, metrics and all-down answers.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What the query path reads, packed by `compile`: class → list, the lists, the list
    /// for a query without client information (ECS source prefix 0), and the settings a
    /// query needs (answers, TTL, weighted and its seed).
    pub route: Route,
    pub answers: usize,
    pub ttl: u32,
    /// Lowercase wire form (`*.x` for wildcards).
    pub name: Box<[u8]>,
    pub display: String,
    pub method: Method,
    /// The regions this policy may use, in the operator's order.
    pub candidates: Vec<u16>,
    pub residency: Vec<Residency>,
    pub all_down: AllDown,
    /// Requests/s at peak (`demand:`); policies with one carry load in the split.
    pub demand: Option<f64>,
    /// Past every region's capacity: keep spilling by rank (`true`) or apply `all_down`.
    pub spill_overflow: bool,
    /// Where the first geo rule's `asns:` is (line, column), for the errors found once the
    /// ASN database is read. Kept out of `method`, whose text is the shape key.
    pub asns_at: (usize, usize),
    pub file: PathBuf,
    pub line: usize,
    /// `method: home`: the tenant map and what unknown tenants get.
    pub home: Option<Home>,
}

/// A `home` policy's tenants (the map is shared by the policies naming the same file).
#[derive(Debug, Clone)]
pub struct Home {
    pub map: Arc<super::tenants::TenantMap>,
    pub file: PathBuf,
    pub unknown: UnknownTenant,
    /// The labels the policy's wildcard owner has (the tenant is the label in the
    /// wildcard's place: the name's labels minus this, counted from the left).
    pub depth: usize,
}

/// What a tenant the map does not list gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownTenant {
    /// Ranked like `method: nearest` from the client's location.
    Nearest,
    /// NXDOMAIN (unsigned zones only).
    NxDomain,
    /// These regions, in order, as a tenant of no particular home.
    Regions(Vec<u16>),
}

/// A `home` policy as the query path reads it: the map, and the ranked list of each of
/// its (home, allowed) sets as (region, counter slot).
#[derive(Debug, Clone)]
pub struct HomeRoutes {
    pub map: Arc<super::tenants::TenantMap>,
    pub lists: Vec<Box<[(u16, u16)]>>,
    pub unknown: UnknownRoute,
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownRoute {
    Nearest,
    NxDomain,
    List(Box<[(u16, u16)]>),
}

#[derive(Debug, Default)]
pub struct PolicySet {
    pub regions: Vec<Region>,
    pub policies: Vec<Policy>,
    pub latency: Latency,
    /// What the routes see of each client class (points and areas), shared.
    pub classes: ClassView,
    /// Each policy's route, by policy index: the query path reads these and not the
    /// policies, 16 bytes each instead of a policy's cache lines.
    pub routes: Vec<Route>,
    /// By policy index: a `home` policy's tenant routes (`None` for every other method).
    pub homes: Vec<Option<Arc<HomeRoutes>>>,
    /// The GeoIP class tables, shared with the `GeoTable`.
    pub classes_v4: Arc<RangeTable<u32>>,
    pub classes_v6: Arc<RangeTable<u128>>,
}

impl PolicySet {
    /// Tenants of `home` policies whose home is out while another allowed region
    /// serves them, at `now` (each map once, however many policies use it).
    pub fn tenants_away(&self, health: &crate::health::HealthView, now: i64) -> u64 {
        let mut seen = Vec::new();
        let mut away = 0u64;
        for h in self.homes.iter().flatten() {
            let key = Arc::as_ptr(&h.map) as usize;
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let down = |r: u16| {
                self.regions
                    .get(usize::from(r))
                    .is_none_or(|x| health.state(x.id) == crate::health::Effective::Down)
            };
            for (list, n) in h.lists.iter().zip(h.map.counts_at(now)) {
                let home_out = list.first().is_some_and(|&(r, _)| down(r));
                if home_out && list.iter().skip(1).any(|&(r, _)| !down(r)) {
                    away += u64::from(n);
                }
            }
        }
        away
    }

    /// Brings the lines that the decisions for a batch of queries ((policy, client)
    /// pairs) will read into the cache, one kind at a time so that each pass's misses
    /// overlap instead of queueing one after another as they do inside a decision: the
    /// routes' headers, the class tables (`RangeTable::warm`), then each route's class
    /// entry and list. In the geo bench these dependent misses were most of the user
    /// time (bench/README.md).
    pub fn warm(&self, batch: &[(u32, IpAddr)]) {
        let mut sink = 0u32;
        // One route for the whole batch (one busy name) is in the cache after its first
        // decision: only the class tables need the help.
        let one_route = batch.windows(2).all(|w| matches!(w, [a, b] if a.0 == b.0));
        for &(p, _) in batch.iter().filter(|_| !one_route) {
            if let Some(r) = self.routes.get(p as usize) {
                sink ^= u32::from(r.touch());
            }
        }
        let bits = |want: geo::Family| {
            batch
                .iter()
                .map(|&(_, c)| geo::addr_bits(c))
                .filter(move |&(f, _)| f == want)
                .map(|(_, b)| b)
        };
        sink ^= self.classes_v4.warm(bits(geo::Family::V4));
        sink ^= self.classes_v6.warm(bits(geo::Family::V6));
        for &(p, client) in batch.iter().filter(|_| !one_route) {
            let Some(route) = self.routes.get(p as usize) else {
                continue;
            };
            let (family, bits) = geo::addr_bits(client);
            let class = match family {
                geo::Family::V4 => self.classes_v4.lookup(bits),
                geo::Family::V6 => self.classes_v6.lookup(bits),
            };
            let Some((class, ..)) = class else {
                continue;
            };
            // The line each kind reads next: its entry (and list), or the class's point.
            let entry = match route.kind() {
                Kind::Class => route.entry(class),
                Kind::Area => self.classes.area(class).and_then(|a| route.entry(a)),
                Kind::One => Some(route.one()),
                Kind::Nearest => {
                    sink ^= self.classes.unit(class)[0].to_bits() as u32;
                    None
                }
            };
            if let Some(at) = entry {
                sink ^= route
                    .list(at)
                    .iter()
                    .next()
                    .map_or(0, |(r, _)| u32::from(r));
            }
        }
        std::hint::black_box(sink);
    }

    pub fn region_index(&self, name: &str) -> Option<u16> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(|i| i as u16)
    }

    /// Every AS number a geo rule names, with the first place it is named.
    pub fn asns(&self) -> std::collections::BTreeMap<u32, (PathBuf, usize, usize)> {
        let mut out = std::collections::BTreeMap::new();
        for p in &self.policies {
            if let Method::Geo { rules, .. } = &p.method {
                let (line, col) = p.asns_at;
                for &a in rules.iter().flat_map(|r| r.asns.iter()) {
                    out.entry(a).or_insert_with(|| (p.file.clone(), line, col));
                }
            }
        }
        out
    }

    /// Every overlay CIDR the geo table must split at.
    pub fn overlays(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.latency.by_cidr.iter().map(|(n, _)| *n).collect();
        for p in &self.policies {
            if let Method::Geo { rules, .. } = &p.method {
                out.extend(rules.iter().flat_map(|r| r.cidrs.iter().copied()));
            }
            out.extend(p.residency.iter().flat_map(|r| r.cidrs.iter().copied()));
        }
        out
    }
}
