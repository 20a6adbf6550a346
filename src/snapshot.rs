//! The immutable snapshot the query path reads: everything loaded from files, validated,
//! compiled, and published whole through one `ArcSwap` (a reload swaps it or changes
//! nothing).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::geo::asn::AsnDb;
use crate::geo::{GeoTable, db};
use crate::health::{HealthPlan, HealthView, Override, PlanRegion, RegionIds};
use crate::metrics::{PolicyCounterStore, PolicyCounters};
use crate::name;
use crate::policy::{self, PolicySet, compile};
use crate::zone::{self, ZoneSet};

#[derive(Debug)]
pub struct Snapshot {
    pub zones: ZoneSet,
    pub geo: GeoTable,
    pub policies: PolicySet,
    /// Operator overrides written in the configuration (runtime ones live in the
    /// health checker and its state file, and take precedence).
    pub config_overrides: BTreeMap<String, Override>,
    /// Our EDNS UDP payload size, advertised in every OPT we send.
    pub edns_udp_size: u16,
    /// `dns.nsid`.
    pub nsid: Option<Box<[u8]>>,
    /// Each policy's answer counters, by policy index (owned by the metrics registry;
    /// counts carry over reloads by name).
    pub counters: Box<[PolicyCounters]>,
    /// What compiling the policies cost (for `meridian check`).
    pub compile_stats: compile::CompileStats,
    /// The clients the traffic split models (`policy::population`).
    pub population: Arc<[crate::traffic::Client]>,
    /// The policies with a `demand`, as the population's clients number them.
    pub demands: Arc<[crate::traffic::demand::PolicyDemand]>,
    /// `geo.asn_database`, for explanations (the class table already holds the networks
    /// of the ASNs rules name).
    pub asn: Option<Arc<AsnDb>>,
    /// `transfer:`: who may copy the zones, whom to notify.
    pub transfer: Option<Arc<crate::config::TransferConfig>>,
    /// Keys, pre-signed answers and denial cache of the signed zones.
    pub dnssec: crate::dnssec::Dnssec,
}

pub type Shared = Arc<ArcSwap<Snapshot>>;

pub struct Built {
    pub snapshot: Snapshot,
    pub warnings: Vec<Diagnostic>,
}

impl Snapshot {
    /// Reads, validates and compiles everything the configuration names. Every error
    /// from every file comes back at once.
    ///
    /// The policies' answer counters come from `counters` (the serving registry's, or a
    /// throwaway store for `check` and `query`).
    pub fn build(
        config: &Config,
        ids: &mut RegionIds,
        counters: &PolicyCounterStore,
    ) -> Result<Built, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut warnings = config.warnings.clone();
        let mut zones = match zone::load_dir_with(&config.zones_dir, &config.zone_limits) {
            Ok(l) => {
                warnings.extend(l.warnings);
                l.zones
            }
            Err(e) => {
                errors.extend(e);
                Vec::new()
            }
        };
        let mut policies = match policy::load(
            &config.policies_dir,
            config.latency_table.as_deref(),
            config.latency_overhead_ms,
        ) {
            Ok(p) => p,
            Err(e) => {
                errors.extend(e);
                PolicySet::default()
            }
        };
        // Routing by ASN: the networks of the ASNs geo rules name become overlays.
        let wanted = policies.asns();
        let asn = match &config.asn_database {
            None => {
                for (a, (file, line, col)) in wanted.iter().take(1) {
                    errors.push(Diagnostic::at(
                        file,
                        *line,
                        *col,
                        format!(
                            "asns: AS{a} needs an ASN database (geo.asn_database in {})",
                            config.file.display()
                        ),
                    ));
                }
                None
            }
            Some(path) => match AsnDb::open(path) {
                Ok(db) => Some(Arc::new(db)),
                Err(e) => {
                    errors.push(Diagnostic::new(path, 0, e.to_string()));
                    None
                }
            },
        };
        let asn_networks = match &asn {
            Some(db) => match db.networks_of(&wanted.keys().copied().collect()) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(Diagnostic::new(
                        config.asn_database.as_deref().unwrap_or(&config.file),
                        0,
                        e.to_string(),
                    ));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for (a, (file, line, col)) in &wanted {
            if asn.is_some() && !asn_networks.iter().any(|(_, x)| x == a) {
                warnings.push(Diagnostic::at(
                    file,
                    *line,
                    *col,
                    format!("asns: AS{a} has no networks in the ASN database: the rule matches no client by it"),
                ));
            }
        }
        let mut overlays = policies.overlays();
        overlays.extend(asn_networks.iter().map(|(n, _)| *n));
        let geo = if policies.policies.is_empty() && !config.geo_database.exists() {
            // Static-only deployments need no GeoIP database.
            GeoTable::compile(
                Vec::new(),
                Vec::new(),
                config.default_location.clone(),
                String::new(),
            )
        } else {
            match db::read(&config.geo_database) {
                Ok(c) => {
                    if !c.unknown_countries.is_empty() {
                        warnings.push(Diagnostic::new(
                            &config.geo_database,
                            0,
                            format!(
                                "country codes not in the built-in table (no location): {}",
                                c.unknown_countries.join(", ")
                            ),
                        ));
                    }
                    let mut table = GeoTable::compile_indexed(
                        c.networks,
                        c.locations,
                        overlays,
                        config.default_location.clone(),
                        format!("{} ({})", config.geo_database.display(), c.database_type),
                    );
                    table.build_epoch = c.build_epoch;
                    table
                }
                Err(e) => {
                    errors.push(Diagnostic::new(&config.geo_database, 0, e.to_string()));
                    GeoTable::default()
                }
            }
        };
        for p in config.startup.anycast.iter().flat_map(|a| &a.prefixes) {
            if let crate::config::anycast::Kind::Region(r) = &p.kind
                && policies.region_index(r).is_none()
            {
                errors.push(Diagnostic::at(
                    &config.file,
                    p.at.0,
                    p.at.1,
                    format!("anycast prefix {} follows unknown region {r:?}", p.prefix),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut geo = geo;
        geo.set_asns(&asn_networks);
        let compile_stats = match compile::compile(&mut policies, &geo) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                return Err(errors);
            }
        };
        for (i, p) in policies.policies.iter().enumerate() {
            match ZoneSet::find_in(&zones, &p.name) {
                None => errors.push(Diagnostic::new(
                    &p.file,
                    p.line,
                    format!(
                        "policy name {} is not inside any served zone",
                        name::to_text(&p.name)
                    ),
                )),
                Some(z) => {
                    if let Some(zone) = zones.get_mut(z)
                        && let Err(e) = zone.attach_policy(&p.name, i as u32)
                    {
                        errors.push(Diagnostic::new(&p.file, p.line, e));
                    }
                }
            }
        }
        for r in policies.regions.iter_mut() {
            r.id = ids.id(&r.name);
        }
        let mut config_overrides = BTreeMap::new();
        for o in &config.overrides {
            if policies.region_index(&o.region).is_none() {
                errors.push(Diagnostic::at(
                    &config.file,
                    o.line,
                    o.column,
                    format!("override for unknown region {:?}", o.region),
                ));
                continue;
            }
            config_overrides.insert(
                o.region.clone(),
                Override {
                    kind: o.state.kind(),
                    reason: o.reason.clone(),
                    since: 0,
                    fraction: None,
                    until: None,
                },
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let regions = &policies.regions;
        let store = counters;
        let counters = counters
            .attach(policies.policies.iter().map(|p| {
                let names = p
                    .candidates
                    .iter()
                    .map(|&r| regions.get(usize::from(r)).map_or("", |r| r.name.as_str()))
                    .collect();
                (&*p.display, names, p.all_down.name())
            }))
            .into_boxed_slice();
        let homes: Vec<&str> = policies
            .policies
            .iter()
            .filter(|p| p.home.is_some())
            .map(|p| &*p.display)
            .collect();
        store.set_tenant_policies(&homes);
        let population = crate::policy::population::model(&policies, &geo).into();
        let demands = crate::policy::population::demands(&policies).into();
        // Dynamic answers are signed for every address live here; the first health
        // view (and each one after) signs the rest before it is published.
        let dnssec = crate::dnssec::sign_zones(
            &config.dnssec,
            &mut zones,
            &policies,
            &HealthView::default(),
            crate::dnssec::now(),
        )?;
        // An unknown tenant's NXDOMAIN cannot be proven where the wildcard exists.
        let mut refused = Vec::new();
        for p in &policies.policies {
            let nx = p
                .home
                .as_ref()
                .is_some_and(|h| h.unknown == crate::policy::UnknownTenant::NxDomain);
            let signed = crate::zone::ZoneSet::find_in(&zones, &p.name)
                .and_then(|i| zones.get(i))
                .is_some_and(|z| z.signed);
            if nx && signed {
                refused.push(Diagnostic::new(
                    &p.file,
                    p.line,
                    format!(
                        "{}: unknown: nxdomain cannot be proven in a signed zone (the wildcard exists); use nearest or a list of regions",
                        p.display
                    ),
                ));
            }
        }
        if !refused.is_empty() {
            return Err(refused);
        }
        Ok(Built {
            snapshot: Snapshot {
                population,
                demands,
                zones: ZoneSet::new(zones),
                geo,
                policies,
                config_overrides,
                edns_udp_size: config.edns_udp_size,
                nsid: config.nsid.clone(),
                counters,
                compile_stats,
                asn,
                transfer: config.transfer.clone().map(Arc::new),
                dnssec,
            },
            warnings,
        })
    }
}

impl Snapshot {
    /// What the health checker watches: every region with its endpoints and thresholds,
    /// the policies using it, and the configuration's overrides.
    pub fn health_plan(&self) -> HealthPlan {
        let set = &self.policies;
        let mut using: Vec<Vec<&str>> = vec![Vec::new(); set.regions.len()];
        let mut max_ttl: Vec<u32> = vec![0; set.regions.len()];
        for p in &set.policies {
            for &r in &p.candidates {
                if let Some(u) = using.get_mut(usize::from(r)) {
                    u.push(p.display.trim_end_matches('.'));
                }
                if let Some(t) = max_ttl.get_mut(usize::from(r)) {
                    *t = (*t).max(p.ttl);
                }
            }
        }
        HealthPlan {
            regions: set
                .regions
                .iter()
                .zip(using)
                .zip(max_ttl)
                .map(|((r, names), max_ttl)| PlanRegion {
                    name: r.name.clone(),
                    id: r.id,
                    endpoints: r.endpoints.clone(),
                    thresholds: r.thresholds.clone(),
                    min_up: r.min_up,
                    policies: summarise(&names),
                    capacity: r.capacity,
                    failback: r.failback,
                    load: r.load.clone(),
                    addresses: r
                        .a
                        .iter()
                        .map(|&a| a.into())
                        .chain(r.aaaa.iter().map(|&a| a.into()))
                        .collect(),
                    max_ttl,
                })
                .collect(),
            config_overrides: self.config_overrides.clone(),
            clients: self.population.clone(),
            demands: self.demands.clone(),
            prepare: None,
        }
    }

    /// The plan, with the hook that signs what each new view makes possible in the
    /// snapshot being served when the view is published.
    pub fn health_plan_serving(&self, shared: &Shared) -> HealthPlan {
        let mut plan = self.health_plan();
        if self.dnssec.is_signed() {
            let shared = shared.clone();
            plan.prepare = Some(crate::health::plan::Prepare(Arc::new(move |view| {
                let s = shared.load();
                s.dnssec.prepare(&s.policies, view);
            })));
        }
        plan
    }

    /// The health view before any probe has run: configured overrides only.
    pub fn static_health(&self) -> HealthView {
        self.health_plan().static_view()
    }
}

/// The policies using a region, as logs, transitions and the status show them: every
/// name up to a few, then a count, so that with 10 000 policies a transition record is
/// not a quarter of a megabyte.
fn summarise(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        n if n <= SHOWN => names.join(","),
        n => format!(
            "{} and {} more",
            names.get(..SHOWN).unwrap_or_default().join(","),
            n - SHOWN
        ),
    }
}
