//! Traffic policies: `policies/*.yaml` → validated model → per-client-class region
//! rankings compiled into range tables → `decide` on the query path.
//!
//! ```text
//!  policies/*.yaml ─spec─► load (every error, FILE:LINE:COL) ─► PolicySet { regions, policies }
//!  geoip/latency.yaml ─────────────────────────────────────────► Latency
//!                 compile::compile(set, GeoTable, Latency): rank regions per class and
//!                 pack each policy's class→list mapping and lists into a `Route`
//!  query: decide(set, health, policy, qtype, client) → Decision (pure, no allocation)
//! ```

pub mod compile;
pub mod decide;
pub mod route;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use crate::diag::Diagnostic;
use crate::geo::{self, RangeTable};
use crate::name;
pub use route::Route;
use spec::S;

pub const POLICY_VERSION: u32 = 1;
/// Most regions one answer may carry.
pub const MAX_ANSWERS: usize = 8;

/// The member states of the European Union, for `countries: [EU]`.
pub const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

pub use crate::health::probe::{Endpoint, Probe};
pub use crate::health::{MinUp, Thresholds};

/// A and AAAA answers in wire form, which the query path's answers borrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressRdata {
    a: Box<[[u8; 4]]>,
    aaaa: Box<[[u8; 16]]>,
}

impl AddressRdata {
    pub fn new(a: &[Ipv4Addr], aaaa: &[Ipv6Addr]) -> Self {
        AddressRdata {
            a: a.iter().map(|x| x.octets()).collect(),
            aaaa: aaaa.iter().map(|x| x.octets()).collect(),
        }
    }

    /// Appends the rdata of type `qtype` (A, else AAAA) to `out`.
    pub fn push_to<'a>(&'a self, qtype: u16, out: &mut smallvec::SmallVec<[&'a [u8]; 8]>) {
        if qtype == crate::zone::rtype::A {
            out.extend(self.a.iter().map(|x| &x[..]));
        } else {
            out.extend(self.aaaa.iter().map(|x| &x[..]));
        }
    }
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub point: (f64, f64),
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// `a` and `aaaa` as answered.
    pub rdata: AddressRdata,
    /// Wire form; when set the region answers with this CNAME.
    pub cname: Option<Box<[u8]>>,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
    pub thresholds: Thresholds,
    pub min_up: MinUp,
    /// Stable across reloads for the same name: the health view is indexed by it.
    pub id: u32,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct GeoRule {
    pub countries: Vec<[u8; 2]>,
    pub continents: Vec<[u8; 2]>,
    pub subdivisions: Vec<String>,
    pub cidrs: Vec<IpNet>,
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
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Nearest => "nearest",
            Method::Latency => "latency",
            Method::Geo { .. } => "geo",
            Method::Weighted => "weighted",
            Method::Failover => "failover",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Residency {
    pub countries: Vec<[u8; 2]>,
    pub continents: Vec<[u8; 2]>,
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
    /// Metric handles, filled by `Snapshot::attach_metrics` on a serving snapshot.
    pub counters: PolicyCounters,
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
    pub file: PathBuf,
    pub line: usize,
}

pub use crate::metrics::PolicyCounters;

/// Measured RTTs, by the most specific client key; see `geoip/latency.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub by_cidr: Vec<(IpNet, HashMap<u16, f64>)>,
    pub by_country: HashMap<[u8; 2], HashMap<u16, f64>>,
    pub by_continent: HashMap<[u8; 2], HashMap<u16, f64>>,
    /// Added to distance-based estimates (processing, last mile).
    pub overhead_ms: f64,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct PolicySet {
    pub regions: Vec<Region>,
    pub policies: Vec<Policy>,
    pub latency: Latency,
    /// Interned ordered region lists (`Decision::list` indexes them).
    pub lists: Vec<Box<[u16]>>,
    /// Each policy's route, by policy index: the query path reads these and not the
    /// policies, 16 bytes each instead of a policy's cache lines.
    pub routes: Vec<Route>,
    /// The GeoIP class tables, shared with the `GeoTable`.
    pub classes_v4: Arc<RangeTable<u32>>,
    pub classes_v6: Arc<RangeTable<u128>>,
}

impl PolicySet {
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
            if let Some(at) = class.and_then(|(c, ..)| route.class_list(c)) {
                sink ^= route.list(at).id;
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

    pub fn list(&self, id: u32) -> &[u16] {
        self.lists
            .get(id as usize)
            .map(|l| &l[..])
            .unwrap_or_default()
    }

    /// Every overlay CIDR the geo table must split at.
    pub fn overlays(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.latency.by_cidr.iter().map(|(n, _)| *n).collect();
        for p in &self.policies {
            if let Method::Geo { rules, .. } = &p.method {
                out.extend(rules.iter().flat_map(|r| r.cidrs.iter().copied()));
            }
        }
        out
    }
}

fn pos<T>(s: &S<T>) -> (usize, usize) {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

fn diag<T>(file: &Path, s: &S<T>, message: impl Into<String>) -> Diagnostic {
    let (l, c) = pos(s);
    Diagnostic::at(file, l, c, message)
}

/// Parses one YAML file into `T`, turning saphyr's error into a diagnostic.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, Diagnostic> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        let msg = e.to_string();
        Diagnostic::at(
            file,
            line,
            col,
            msg.lines().next().unwrap_or("invalid YAML").to_string(),
        )
    })
}

fn country_code(file: &Path, s: &S<String>, errors: &mut Vec<Diagnostic>) -> Vec<[u8; 2]> {
    if s.value.eq_ignore_ascii_case("EU") {
        return EU.iter().filter_map(|c| geo::two(c)).collect();
    }
    match geo::country(&s.value) {
        Some((cc, ..)) => vec![cc],
        None => {
            errors.push(diag(
                file,
                s,
                format!("unknown country code {:?} (ISO 3166-1 alpha-2)", s.value),
            ));
            vec![]
        }
    }
}

fn continent_code(file: &Path, s: &S<String>, errors: &mut Vec<Diagnostic>) -> Option<[u8; 2]> {
    let up = s.value.to_ascii_uppercase();
    if geo::CONTINENTS.contains(&up.as_str()) {
        geo::two(&up)
    } else {
        errors.push(diag(
            file,
            s,
            format!(
                "unknown continent {:?} (one of {})",
                s.value,
                geo::CONTINENTS.join(", ")
            ),
        ));
        None
    }
}

/// Reads every `*.yaml`/`*.yml` in `dir` and the optional latency table, and validates
/// them together. All errors at once.
pub fn load(
    dir: &Path,
    latency_file: Option<&Path>,
    overhead_ms: f64,
) -> Result<PolicySet, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(vec![Diagnostic::new(
                dir,
                0,
                format!("cannot read policies folder: {e}"),
            )]);
        }
    };
    files.sort();
    let mut parsed = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Diagnostic::new(&f, 0, format!("cannot read: {e}")));
                continue;
            }
        };
        match parse_yaml::<spec::File>(&f, &text) {
            Ok(spec) => {
                if spec.version.value != POLICY_VERSION {
                    errors.push(diag(
                        &f,
                        &spec.version,
                        format!(
                            "version {} is not supported (this meridian reads {POLICY_VERSION})",
                            spec.version.value
                        ),
                    ));
                    continue;
                }
                parsed.push((f, spec));
            }
            Err(e) => errors.push(e),
        }
    }

    // Regions first: policies in any file may use regions of any file.
    let mut set = PolicySet::default();
    let mut region_at: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for (file, spec) in &parsed {
        for r in &spec.regions {
            if let Some(region) = region(file, r, &mut region_at, &mut errors) {
                set.regions.push(region);
            }
        }
    }
    for (i, r) in set.regions.iter_mut().enumerate() {
        r.id = i as u32; // the snapshot renumbers with the process-wide registry
    }
    if set.regions.len() > usize::from(u16::MAX) {
        errors.push(Diagnostic::new(dir, 0, "more than 65535 regions"));
    }
    let index: HashMap<String, u16> = set
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i as u16))
        .collect();

    let mut seen: HashMap<Box<[u8]>, (PathBuf, usize)> = HashMap::new();
    for (file, spec) in &parsed {
        for p in &spec.policies {
            if let Some(policy) = policy(file, p, &set.regions, &index, &mut seen, &mut errors) {
                set.policies.push(policy);
            }
        }
    }
    set.latency.overhead_ms = overhead_ms;
    if let Some(lf) = latency_file {
        load_latency(lf, &index, &mut set.latency, &mut errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn region(
    file: &Path,
    r: &S<spec::Region>,
    seen: &mut HashMap<String, (PathBuf, usize)>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Region> {
    let spec = &r.value;
    let n = errors.len();
    let name = spec.name.value.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        errors.push(diag(
            file,
            &spec.name,
            format!("region name {name:?} may only use letters, digits, - and _"),
        ));
    }
    if let Some((f, l)) = seen.get(&name) {
        errors.push(diag(
            file,
            &spec.name,
            format!("region {name} is already defined at {}:{l}", f.display()),
        ));
    }
    let (lat, lon) = (spec.location.value.lat.value, spec.location.value.lon.value);
    if !(-90.0..=90.0).contains(&lat) {
        errors.push(diag(
            file,
            &spec.location.value.lat,
            format!("latitude {lat} is outside -90..90"),
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        errors.push(diag(
            file,
            &spec.location.value.lon,
            format!("longitude {lon} is outside -180..180"),
        ));
    }
    let cname = match &spec.cname {
        Some(c) => {
            if !spec.a.is_empty() || !spec.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    c,
                    "a region answers with addresses or a CNAME, not both",
                ));
            }
            match name::from_text(&c.value, name::ROOT) {
                Ok(w) => Some(w.into_boxed_slice()),
                Err(e) => {
                    errors.push(diag(file, c, format!("bad CNAME target: {e}")));
                    None
                }
            }
        }
        None => {
            if spec.a.is_empty() && spec.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    &spec.name,
                    format!("region {name} has no a, aaaa or cname answer"),
                ));
            }
            None
        }
    };
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for e in &spec.endpoints {
        match crate::health::probe::endpoint_from_spec(&e.value) {
            Ok(ep) => {
                if endpoints.iter().any(|x| x.name == ep.name) {
                    errors.push(diag(
                        file,
                        &e.value.name,
                        format!("endpoint {} is defined twice", ep.name),
                    ));
                }
                endpoints.push(ep);
            }
            Err((at, msg)) => errors.push(Diagnostic::at(file, at.0, at.1, msg)),
        }
    }
    if let Some(m) = &spec.metric {
        match crate::health::probe::metric_from_spec(&m.value) {
            Ok(ep) => endpoints.push(ep),
            Err((at, msg)) => {
                let (l, c) = if at.0 == 0 { pos(m) } else { at };
                errors.push(Diagnostic::at(file, l, c, msg));
            }
        }
    }
    let (thresholds, min_up) =
        match crate::health::thresholds_from_spec(&spec.health, spec.endpoints.len()) {
            Ok(t) => t,
            Err((at, msg)) => {
                let (l, c) = if at.0 == 0 { pos(r) } else { at };
                errors.push(Diagnostic::at(file, l, c, msg));
                (Thresholds::default_preset(), MinUp::Count(1))
            }
        };
    let (line, _) = pos(r);
    seen.insert(name.clone(), (file.to_path_buf(), line));
    (errors.len() == n).then(|| Region {
        name,
        point: (lat, lon),
        a: spec.a.clone(),
        aaaa: spec.aaaa.clone(),
        rdata: AddressRdata::new(&spec.a, &spec.aaaa),
        cname,
        weight: spec.weight,
        labels: spec.labels.clone(),
        endpoints,
        thresholds,
        min_up,
        id: 0,
        file: file.to_path_buf(),
        line,
    })
}

fn region_refs(
    file: &Path,
    names: &[S<String>],
    index: &HashMap<String, u16>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for n in names {
        match index.get(&n.value) {
            Some(&i) if !out.contains(&i) => out.push(i),
            Some(_) => errors.push(diag(file, n, format!("region {} is listed twice", n.value))),
            None => errors.push(diag(file, n, format!("unknown region {:?}", n.value))),
        }
    }
    out
}

fn policy(
    file: &Path,
    p: &S<spec::Policy>,
    regions: &[Region],
    index: &HashMap<String, u16>,
    seen: &mut HashMap<Box<[u8]>, (PathBuf, usize)>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Policy> {
    let spec = &p.value;
    let n = errors.len();
    let text = spec.name.value.trim_end_matches('.');
    let wire = match name::from_text(&format!("{text}."), name::ROOT) {
        Ok(w) => name::lowercase(&w).into_boxed_slice(),
        Err(e) => {
            errors.push(diag(file, &spec.name, format!("bad policy name: {e}")));
            return None;
        }
    };
    if name::labels(&wire).skip(1).any(|l| l == b"*") {
        errors.push(diag(
            file,
            &spec.name,
            "a wildcard may only be the leftmost label (*.name)",
        ));
    }
    if let Some((f, l)) = seen.get(&wire) {
        errors.push(diag(
            file,
            &spec.name,
            format!(
                "policy {} is already defined at {}:{l}",
                name::to_text(&wire),
                f.display()
            ),
        ));
    }
    let candidates = match &spec.regions {
        Some(list) => region_refs(file, list, index, errors),
        None => (0..regions.len() as u16).collect(),
    };
    if candidates.is_empty() && errors.len() == n {
        errors.push(diag(
            file,
            &spec.name,
            "the policy has no regions to answer with",
        ));
    }
    let answers = spec.answers.value as usize;
    if answers == 0 || answers > MAX_ANSWERS {
        errors.push(diag(
            file,
            &spec.answers,
            format!("answers must be 1..{MAX_ANSWERS}"),
        ));
    }
    if spec.ttl > 0x7fff_ffff {
        errors.push(diag(file, &spec.name, "ttl is above 2147483647"));
    }
    let method = match (&spec.method.value, &spec.geo) {
        (spec::MethodName::Geo, Some(g)) => {
            let mut rules = Vec::new();
            for r in &g.value.rules {
                let rv = &r.value;
                let mut countries = Vec::new();
                for c in &rv.countries {
                    countries.extend(country_code(file, c, errors));
                }
                let continents = rv
                    .continents
                    .iter()
                    .filter_map(|c| continent_code(file, c, errors))
                    .collect();
                let mut subdivisions = Vec::new();
                for s in &rv.subdivisions {
                    let up = s.value.to_ascii_uppercase();
                    match up.split_once('-') {
                        Some((cc, sub)) if geo::country(cc).is_some() && !sub.is_empty() => {
                            subdivisions.push(up)
                        }
                        _ => errors.push(diag(
                            file,
                            s,
                            format!("subdivision {:?} is not CC-CODE (ISO 3166-2)", s.value),
                        )),
                    }
                }
                let mut cidrs = Vec::new();
                for c in &rv.cidrs {
                    match c.value.parse::<IpNet>() {
                        Ok(net) if net.trunc() == net => cidrs.push(net),
                        Ok(_) => {
                            errors.push(diag(file, c, format!("{} has host bits set", c.value)))
                        }
                        Err(_) => {
                            errors.push(diag(file, c, format!("{:?} is not a CIDR", c.value)))
                        }
                    }
                }
                if rv.countries.is_empty()
                    && rv.continents.is_empty()
                    && rv.subdivisions.is_empty()
                    && rv.cidrs.is_empty()
                {
                    errors.push(diag(
                        file,
                        r,
                        "a geo rule needs countries, continents, subdivisions or cidrs",
                    ));
                }
                let regions = region_refs(file, &rv.regions, index, errors);
                rules.push(GeoRule {
                    countries,
                    continents,
                    subdivisions,
                    cidrs,
                    regions,
                });
            }
            let default = region_refs(file, &g.value.default, index, errors);
            Method::Geo { rules, default }
        }
        (spec::MethodName::Geo, None) => {
            errors.push(diag(
                file,
                &spec.method,
                "method geo needs a geo: section with rules and a default",
            ));
            Method::Failover
        }
        (_, Some(g)) => {
            errors.push(diag(file, g, "a geo: section only applies to method geo"));
            Method::Failover
        }
        (spec::MethodName::Nearest, None) => Method::Nearest,
        (spec::MethodName::Latency, None) => Method::Latency,
        (spec::MethodName::Weighted, None) => Method::Weighted,
        (spec::MethodName::Failover, None) => Method::Failover,
    };
    let mut residency = Vec::new();
    for r in &spec.residency {
        let clients = &r.value.clients.value;
        let mut countries = Vec::new();
        for c in &clients.countries {
            countries.extend(country_code(file, c, errors));
        }
        let continents = clients
            .continents
            .iter()
            .filter_map(|c| continent_code(file, c, errors))
            .collect();
        if clients.countries.is_empty() && clients.continents.is_empty() {
            errors.push(diag(
                file,
                &r.value.clients,
                "residency clients need countries or continents",
            ));
        }
        if r.value.regions.is_empty() {
            errors.push(diag(
                file,
                r,
                "residency needs the labels its regions must carry",
            ));
        }
        residency.push(Residency {
            countries,
            continents,
            labels: r.value.regions.clone(),
        });
    }
    let all_down = match &spec.all_down {
        None | Some(spec::AllDown::FailOpen) => AllDown::FailOpen,
        Some(spec::AllDown::Nodata) => AllDown::NoData,
        Some(spec::AllDown::Servfail) => AllDown::ServFail,
        Some(spec::AllDown::Static(s)) => {
            if s.a.is_empty() && s.aaaa.is_empty() {
                errors.push(diag(
                    file,
                    &spec.name,
                    "all_down static needs a or aaaa addresses",
                ));
            }
            AllDown::Static {
                a: s.a.clone(),
                aaaa: s.aaaa.clone(),
                rdata: AddressRdata::new(&s.a, &s.aaaa),
            }
        }
    };
    let (line, _) = pos(p);
    seen.insert(wire.clone(), (file.to_path_buf(), line));
    (errors.len() == n).then(|| Policy {
        display: name::to_text(&wire),
        name: wire,
        ttl: spec.ttl,
        method,
        answers,
        candidates,
        residency,
        all_down,
        route: Route::default(),
        counters: PolicyCounters::default(),
        file: file.to_path_buf(),
        line,
    })
}

fn load_latency(
    file: &Path,
    index: &HashMap<String, u16>,
    out: &mut Latency,
    errors: &mut Vec<Diagnostic>,
) {
    out.file = Some(file.to_path_buf());
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(Diagnostic::new(
                file,
                0,
                format!("cannot read latency table: {e}"),
            ));
            return;
        }
    };
    let spec: spec::LatencyFile = match parse_yaml(file, &text) {
        Ok(s) => s,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    if spec.version.value != POLICY_VERSION {
        errors.push(diag(
            file,
            &spec.version,
            format!("version {} is not supported", spec.version.value),
        ));
        return;
    }
    for m in &spec.measurements {
        let mut rtts = HashMap::new();
        for (region, ms) in &m.value.rtt_ms {
            match index.get(region) {
                Some(&i) if ms.is_finite() && *ms >= 0.0 => {
                    rtts.insert(i, *ms);
                }
                Some(_) => errors.push(diag(
                    file,
                    m,
                    format!("rtt for {region} must be a non-negative number"),
                )),
                None => errors.push(diag(file, m, format!("unknown region {region:?}"))),
            }
        }
        match &m.value.from.value {
            spec::LatencyKey::Cidr(c) => match c.parse::<IpNet>() {
                Ok(net) => out.by_cidr.push((net.trunc(), rtts)),
                Err(_) => errors.push(diag(file, &m.value.from, format!("{c:?} is not a CIDR"))),
            },
            spec::LatencyKey::Country(c) => match geo::country(c) {
                Some((cc, ..)) => {
                    out.by_country.insert(cc, rtts);
                }
                None => errors.push(diag(
                    file,
                    &m.value.from,
                    format!("unknown country code {c:?}"),
                )),
            },
            spec::LatencyKey::Continent(c) => {
                let up = c.to_ascii_uppercase();
                match geo::two(&up).filter(|_| geo::CONTINENTS.contains(&up.as_str())) {
                    Some(cc) => {
                        out.by_continent.insert(cc, rtts);
                    }
                    None => errors.push(diag(
                        file,
                        &m.value.from,
                        format!("unknown continent {c:?}"),
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
