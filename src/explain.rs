//! `meridian query`: the answer a configuration gives a client, and why. It runs the
//! server's own code (`zone::lookup::resolve` with `dns::handler::PolicyAnswers`, and
//! `policy::compile::rank` for the reasons), so it cannot disagree with the server.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::dns::handler::PolicyAnswers;
use crate::geo::{self, Class};
use crate::health::store::StateFile;
use crate::health::{Effective, HealthView, RegionHealth};
use crate::iana::Rtype;
use crate::name;
use crate::policy::compile;
use crate::policy::decide;
use crate::snapshot::Snapshot;
use crate::traffic::{self, RegionIn, Share};
use crate::zone::lookup::{self, Rcode, Rr};

#[derive(Debug, Serialize)]
pub struct LocationInfo {
    pub country: Option<String>,
    pub continent: Option<String>,
    pub subdivision: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// `database`, or `default location` when the address is unknown, private or loopback.
    pub source: String,
}

/// The client's autonomous system, from `geo.asn_database`.
#[derive(Debug, Serialize)]
pub struct AsnInfo {
    pub number: u32,
    pub organization: String,
    /// The database network the client is in.
    pub network: String,
}

#[derive(Debug, Serialize)]
pub struct CandidateInfo {
    pub region: String,
    pub distance_km: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// `measured` (latency table) or `estimated` (distance).
    pub rtt_source: Option<String>,
    pub health: Effective,
    /// Position in the ordered list after constraints, if the region is in it.
    pub rank: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct PolicyInfo {
    pub name: String,
    pub file: String,
    pub line: usize,
    pub method: String,
    pub answers: usize,
    pub ttl: u32,
    pub all_down: String,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub name: String,
    pub qtype: String,
    pub client: Option<String>,
    pub location: Option<LocationInfo>,
    /// With an ASN database: the client's AS (whether or not a rule names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<AsnInfo>,
    pub policy: Option<PolicyInfo>,
    pub candidates: Vec<CandidateInfo>,
    pub reasons: Vec<String>,
    pub chosen: Vec<String>,
    pub outcome: Option<String>,
    pub ecs_scope: u8,
    pub rcode: String,
    pub authoritative: bool,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
}

/// A query type from its mnemonic or `TYPE<n>` (RFC 3597), case-insensitive.
pub fn qtype_from_str(s: &str) -> Option<Rtype> {
    crate::iana::rtype_from_str(s)
}

fn type_name(t: Rtype) -> String {
    crate::iana::rtype_name(t)
}

fn rr_text(rr: &Rr<'_>) -> String {
    let data = match rr.rtype {
        Rtype::A => <[u8; 4]>::try_from(&rr.rdata[..])
            .map(|b| std::net::Ipv4Addr::from(b).to_string())
            .unwrap_or_default(),
        Rtype::AAAA => <[u8; 16]>::try_from(&rr.rdata[..])
            .map(|b| std::net::Ipv6Addr::from(b).to_string())
            .unwrap_or_default(),
        Rtype::CNAME | Rtype::NS | Rtype::DNAME | Rtype::PTR => name::to_text(&rr.rdata),
        _ => format!(
            "\\# {} {}",
            rr.rdata.len(),
            rr.rdata
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    };
    format!(
        "{} {} IN {} {}",
        name::to_text(&rr.owner),
        rr.ttl,
        type_name(rr.rtype),
        data
    )
}

/// Explains `qname`/`qtype` for a client given as `IP` or `IP/LEN` (as ECS would carry
/// it), with `down` regions taken out on top of the configured overrides.
pub fn explain(
    snapshot: &Snapshot,
    health: &HealthView,
    qname: &str,
    qtype: Rtype,
    client: Option<IpNet>,
    down: &[String],
) -> Result<Explanation, String> {
    let wire = name::from_text(&format!("{}.", qname.trim_end_matches('.')), name::ROOT)
        .map_err(|e| e.to_string())?;
    let lower = name::lowercase(&wire);
    let mut health = health.clone();
    for r in down {
        let i = snapshot
            .policies
            .region_index(r)
            .ok_or_else(|| format!("--down {r}: no such region"))?;
        if let Some(region) = snapshot.policies.regions.get(usize::from(i)) {
            health.put(region.id, RegionHealth::new(Effective::Down, None));
        }
    }
    // Regions taken out here move their clients as the server would (capacities).
    if !down.is_empty() {
        health = with_split(snapshot, health);
    }
    // ECS semantics: the network address of the given prefix; /0 means no client info.
    let client_addr: Option<IpAddr> =
        client.and_then(|n| (n.prefix_len() > 0).then(|| n.trunc().addr()));
    // The answer, exactly as the server computes it, with the health view changed by `--down`.
    let mut answers = PolicyAnswers {
        snapshot,
        health: &health,
        client: client_addr,
        scope: 0,
        tally: None,
        dnssec: false,
    };
    let ans = lookup::resolve(&snapshot.zones, &wire, qtype, &mut answers);

    // The reasons: the policy bound at this name (or the wildcard that covers it).
    let policy = find_policy(snapshot, &lower);
    let (family_bits, class) = match client_addr.map(geo::addr_bits) {
        Some((fam, bits)) => {
            let class = snapshot
                .geo
                .classify(fam, bits)
                .and_then(|(c, ..)| snapshot.geo.class(c).copied());
            (Some((fam, bits)), class)
        }
        None => (None, None),
    };
    let class = class.unwrap_or(Class {
        location: None,
        overlay: None,
    });
    let location = if family_bits.is_some() || snapshot.geo.default_location.is_some() {
        snapshot.geo.class_location(&class).map(|l| LocationInfo {
            country: l.country_str().map(str::to_string),
            continent: l.continent_str().map(str::to_string),
            subdivision: l.subdivision.as_deref().map(str::to_string),
            latitude: l.point.map(|p| p.0),
            longitude: l.point.map(|p| p.1),
            source: if class.location.is_some() {
                "database".into()
            } else {
                "default location".into()
            },
        })
    } else {
        None
    };
    let mut explanation = Explanation {
        name: name::to_text(&wire),
        qtype: type_name(qtype),
        client: client.map(|c| c.to_string()),
        location,
        asn: snapshot
            .asn
            .as_ref()
            .zip(client_addr)
            .and_then(|(db, ip)| db.lookup(ip))
            .map(|a| AsnInfo {
                number: a.number,
                organization: a.organization,
                network: a.network.to_string(),
            }),
        policy: None,
        candidates: Vec::new(),
        reasons: Vec::new(),
        chosen: Vec::new(),
        outcome: None,
        ecs_scope: answers.scope,
        rcode: ans.rcode.to_string(),
        authoritative: ans.aa,
        answer: ans.answer.iter().map(rr_text).collect(),
        authority: ans.authority.iter().map(rr_text).collect(),
    };
    if ans.rcode == Rcode::REFUSED {
        explanation
            .reasons
            .push("the name is outside every served zone".into());
    }
    if let Some(pi) = policy {
        let set = &snapshot.policies;
        if let Some(p) = set.policies.get(pi) {
            let ranking = compile::rank(set, &snapshot.geo, p, &class);
            let qt = if qtype == Rtype::AAAA {
                Rtype::AAAA
            } else {
                Rtype::A
            };
            let d = decide::decide(set, &health, p, qt, client_addr);
            let (list, _) = decide::order(set, &p.route, client_addr);
            explanation.policy = Some(PolicyInfo {
                name: p.display.clone(),
                file: p.file.display().to_string(),
                line: p.line,
                method: p.method.name().into(),
                answers: p.answers,
                ttl: p.ttl,
                all_down: p.all_down.name().into(),
            });
            explanation.candidates = ranking
                .candidates
                .iter()
                .map(|c| CandidateInfo {
                    region: set
                        .regions
                        .get(usize::from(c.region))
                        .map(|r| r.name.clone())
                        .unwrap_or_default(),
                    distance_km: c.distance_km.map(|d| (d * 10.0).round() / 10.0),
                    rtt_ms: c.rtt_ms.map(|d| (d * 10.0).round() / 10.0),
                    rtt_source: c.rtt_ms.map(|_| {
                        if c.measured {
                            "measured".into()
                        } else {
                            "estimated".into()
                        }
                    }),
                    health: set
                        .regions
                        .get(usize::from(c.region))
                        .map(|r| health.state(r.id))
                        .unwrap_or(Effective::Up),
                    rank: list.iter().position(|&r| r == c.region).map(|i| i + 1),
                })
                .collect();
            explanation.reasons.extend(ranking.notes);
            explanation.reasons.extend(split_reasons(
                snapshot,
                &health,
                &list,
                d.chosen(),
                client_addr,
                p.spill_overflow,
            ));
            if client_addr.is_none() {
                explanation.reasons.push(
                    "no client information (no --client, or a /0 prefix): default order".into(),
                );
            }
            let d = match set.homes.get(pi).and_then(Option::as_ref) {
                Some(home) => {
                    let ((d, candidates), notes) =
                        explain_tenant(set, &health, p, home, &lower, qt, client_addr);
                    if candidates.is_empty() {
                        // An unknown tenant ranked as nearest: that ranking's reasons.
                        explanation.reasons.splice(0..0, notes);
                    } else {
                        explanation.candidates = candidates;
                        explanation.reasons = notes;
                    }
                    d
                }
                None => d,
            };
            let fails_open = p.all_down == crate::policy::AllDown::FailOpen;
            if d.outcome != decide::Outcome::AllDown || fails_open {
                explanation.chosen = d
                    .chosen()
                    .iter()
                    .filter_map(|&r| set.regions.get(usize::from(r)).map(|x| x.name.clone()))
                    .collect();
            }
            explanation.outcome = Some(match d.outcome {
                decide::Outcome::AllDown => format!("all down: {}", p.all_down.name()),
                o => format!("{o:?}").to_lowercase(),
            });
        }
    }
    Ok(explanation)
}

/// A `home` policy's decision for the tenant in `lower`, its candidates (the tenant's
/// set, in its order) and the reasons: tenant, home, allowed, the move, health, scope.
#[allow(clippy::type_complexity)]
fn explain_tenant(
    set: &crate::policy::PolicySet,
    health: &HealthView,
    p: &crate::policy::Policy,
    home: &crate::policy::HomeRoutes,
    lower: &[u8],
    qtype: Rtype,
    client: Option<IpAddr>,
) -> ((decide::Decision, Vec<CandidateInfo>), Vec<String>) {
    let now = crate::health::store::now_unix() as i64;
    let label = decide::tenant_label(lower, home.depth);
    let (d, case) = decide::decide_home(set, health, &p.route, home, label, qtype, client, &|| now);
    let name = |r: u16| {
        set.regions
            .get(usize::from(r))
            .map_or_else(|| "?".to_string(), |x| x.name.clone())
    };
    // A fixed list as candidates: its order is the rank, health as the view has it.
    let ranked = |list: &[(u16, u16)]| -> Vec<CandidateInfo> {
        list.iter()
            .enumerate()
            .map(|(i, &(r, _))| CandidateInfo {
                region: name(r),
                distance_km: None,
                rtt_ms: None,
                rtt_source: None,
                health: set
                    .regions
                    .get(usize::from(r))
                    .map_or(Effective::Up, |x| health.state(x.id)),
                rank: Some(i + 1),
            })
            .collect()
    };
    let tenant = label
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    let mut notes = Vec::new();
    let found = label.and_then(|l| home.map.find(l, &|| now));
    let (decide::HomeCase::Tenant { set: s, away }, Some(found)) = (case, found) else {
        notes.push(format!(
            "tenant {tenant:?} is not in the map: unknown: {}",
            match &home.unknown {
                crate::policy::UnknownRoute::Nearest =>
                    "nearest (from the client's location)".to_string(),
                crate::policy::UnknownRoute::NxDomain => "nxdomain".to_string(),
                crate::policy::UnknownRoute::List(l) => l
                    .iter()
                    .map(|&(r, _)| name(r))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        ));
        let fixed = match &home.unknown {
            crate::policy::UnknownRoute::List(l) => &l[..],
            _ => &[],
        };
        return ((d, ranked(fixed)), notes);
    };
    let hs = home.map.sets.get(s as usize);
    let allowed = hs.map_or_else(String::new, |h| {
        if h.allowed.is_empty() {
            "any of the policy's regions".to_string()
        } else {
            h.allowed
                .iter()
                .map(|&r| name(r))
                .collect::<Vec<_>>()
                .join(" ")
        }
    });
    notes.push(format!(
        "tenant {tenant}: home {}, allowed {allowed} ({})",
        hs.map_or_else(String::new, |h| name(h.home)),
        p.home
            .as_ref()
            .map_or_else(String::new, |h| h.file.display().to_string())
    ));
    if let Some((before, mv)) = found.planned {
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(mv.at.max(0) as u64),
        );
        let from = home
            .map
            .sets
            .get(before as usize)
            .map_or_else(String::new, |h| name(h.home));
        let to = home
            .map
            .sets
            .get(mv.to as usize)
            .map_or_else(String::new, |h| name(h.home));
        notes.push(if now >= mv.at {
            format!("moved from {from} to {to} at {at}")
        } else {
            format!("planned move from {from} to {to} at {at}")
        });
    }
    if away {
        notes.push("the home is out: the allowed region nearest to it answers".into());
    } else if d.outcome == decide::Outcome::AllDown {
        notes.push(format!(
            "every allowed region is out: all_down {} (never a region outside the allowed set)",
            p.all_down.name()
        ));
    }
    notes.push("the answer does not depend on the client: ECS scope /0".into());
    let list = home.lists.get(s as usize).map_or(&[][..], |l| &l[..]);
    ((d, ranked(list)), notes)
}

fn find_policy(snapshot: &Snapshot, lower: &[u8]) -> Option<usize> {
    let by_name = |n: &[u8]| {
        snapshot
            .policies
            .policies
            .iter()
            .position(|p| *p.name == *n)
    };
    by_name(lower).or_else(|| {
        // The wildcard of the closest existing ancestor, as the lookup would use it.
        let zone = snapshot.zones.find(lower)?;
        let mut up = name::parent(lower);
        while let Some(anc) = up {
            if zone.node(anc).is_some() {
                return by_name(&name::wildcard_child(anc));
            }
            up = name::parent(anc);
        }
        None
    })
}

/// Human-readable form for the terminal.
pub fn render_text(e: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "query:     {} {}", e.name, e.qtype);
    match (&e.client, &e.location) {
        (Some(c), Some(l)) => {
            let _ = writeln!(
                s,
                "client:    {c} -> {} (country {}, continent {}{}) from the {}",
                l.latitude
                    .zip(l.longitude)
                    .map(|(a, b)| format!("{a:.2},{b:.2}"))
                    .unwrap_or("no point".into()),
                l.country.as_deref().unwrap_or("?"),
                l.continent.as_deref().unwrap_or("?"),
                l.subdivision
                    .as_deref()
                    .map(|x| format!(", {x}"))
                    .unwrap_or_default(),
                l.source
            );
        }
        (Some(c), None) => {
            let _ = writeln!(s, "client:    {c} -> location unknown");
        }
        (None, _) => {
            let _ = writeln!(s, "client:    none given (no client information)");
        }
    }
    if let Some(a) = &e.asn {
        let _ = writeln!(
            s,
            "asn:       AS{} {} ({} in the ASN database)",
            a.number, a.organization, a.network
        );
    }
    if let Some(p) = &e.policy {
        let _ = writeln!(
            s,
            "policy:    {} ({}:{}) method {}, answers {}, ttl {}, all-down {}",
            p.name, p.file, p.line, p.method, p.answers, p.ttl, p.all_down
        );
        let _ = writeln!(s, "candidates:");
        for c in &e.candidates {
            let _ = writeln!(
                s,
                "  {:<4} {:<12} {:>9} {:>18}  {}",
                c.rank.map(|r| format!("#{r}")).unwrap_or("-".into()),
                c.region,
                c.distance_km
                    .map(|d| format!("{d:.0} km"))
                    .unwrap_or("-".into()),
                c.rtt_ms
                    .map(|r| format!("{r:.1} ms {}", c.rtt_source.as_deref().unwrap_or("")))
                    .unwrap_or("-".into()),
                match c.health {
                    Effective::Up => "up",
                    Effective::Degraded => "degraded",
                    Effective::Down => "DOWN",
                }
            );
        }
        for r in &e.reasons {
            let _ = writeln!(s, "because:   {r}");
        }
        let _ = writeln!(
            s,
            "chosen:    {} ({})",
            if e.chosen.is_empty() {
                "none".into()
            } else {
                e.chosen.join(", ")
            },
            e.outcome.as_deref().unwrap_or("")
        );
    } else {
        for r in &e.reasons {
            let _ = writeln!(s, "because:   {r}");
        }
        let _ = writeln!(s, "policy:    none (static zone data)");
    }
    let _ = writeln!(
        s,
        "rcode:     {}{}",
        e.rcode,
        if e.authoritative {
            " (authoritative)"
        } else {
            ""
        }
    );
    for a in &e.answer {
        let _ = writeln!(s, "answer:    {a}");
    }
    for a in &e.authority {
        let _ = writeln!(s, "authority: {a}");
    }
    let _ = writeln!(s, "ecs scope: /{}", e.ecs_scope);
    s
}

/// The view `meridian query` uses: configured overrides, then the state file's last
/// known endpoint states and operator overrides (what a running server would restore).
pub fn last_known_view(snapshot: &Snapshot, state_file: Option<&std::path::Path>) -> HealthView {
    let mut view = snapshot.static_health();
    let Some(file) = state_file.and_then(|p| StateFile::load(p).ok()) else {
        return with_split(snapshot, view);
    };
    for r in &snapshot.policies.regions {
        if snapshot.config_overrides.contains_key(&r.name) {
            continue;
        }
        let measured = || {
            if r.endpoints.is_empty() {
                return Effective::Up;
            }
            let serving = r
                .endpoints
                .iter()
                .filter(|e| {
                    let key = format!("{}/{}", r.name, e.name);
                    match file.endpoint_overrides.get(&key) {
                        Some(o) => o.kind.effective() != Effective::Down,
                        None => file
                            .endpoints
                            .get(&key)
                            .is_none_or(|rec| rec.state != "down"),
                    }
                })
                .count();
            if serving >= r.min_up.needed(r.endpoints.len()) {
                Effective::Up
            } else {
                Effective::Down
            }
        };
        let o = file.region_overrides.get(&r.name);
        let state = o.and_then(|o| o.effective()).unwrap_or_else(measured);
        let mut health = RegionHealth::new(state, None);
        health.keep = match (state, o) {
            (Effective::Down, _) => Share::NONE,
            (_, Some(o)) => o.keep(),
            (_, None) => Share::ALL,
        };
        view.put(r.id, health);
    }
    with_split(snapshot, view)
}

/// The split's admission shares for a view's keeps, as the checker would publish them.
fn with_split(snapshot: &Snapshot, mut view: HealthView) -> HealthView {
    let mut regions: Vec<RegionIn> = snapshot
        .policies
        .regions
        .iter()
        .map(|r| {
            let h = view.region(r.id);
            RegionIn {
                id: r.id,
                capacity: r.capacity,
                keep: if h.state == Effective::Down {
                    Share::NONE
                } else {
                    h.keep
                },
                shed: Share::ALL,
                accepts: h.accepts(),
                other_load: 0.0,
            }
        })
        .collect();
    // Offline there is no history: a region over capacity is taken to have started
    // shedding (the share is the same once it has).
    let (outcome, _) = traffic::shed::split_shedding(&mut regions, &snapshot.population, &[]);
    for ((r, admit), rin) in snapshot
        .policies
        .regions
        .iter()
        .zip(outcome.admit)
        .zip(&regions)
    {
        let mut h = view.region(r.id);
        h.admit = admit;
        h.shed = rin.shed;
        view.put(r.id, h);
    }
    view.refresh_shifting();
    view
}

/// What the traffic split did with this client, in words (nothing when it did nothing).
fn split_reasons(
    snapshot: &Snapshot,
    health: &HealthView,
    order: &[u16],
    chosen: &[u16],
    client: Option<IpAddr>,
    spill: bool,
) -> Vec<String> {
    let set = &snapshot.policies;
    let (Some(ip), Some(&first)) = (client, order.first()) else {
        return Vec::new();
    };
    if !health.shifting {
        return Vec::new();
    }
    let (subnet, prefix) = traffic::subnet_of(ip);
    let name = |r: u16| {
        set.regions
            .get(usize::from(r))
            .map_or("?", |x| x.name.as_str())
    };
    let id = |r: u16| set.regions.get(usize::from(r)).map_or(0, |x| x.id);
    let pct = |f: f64| (f * 1000.0).round() / 10.0;
    let bucket = |r: u16| pct(f64::from(traffic::bucket(subnet, id(r))) / f64::from(u32::MAX));
    let h0 = health.region(id(first));
    let mut out = Vec::new();
    let keep = h0.keeps(spill);
    if keep == Share::ALL && h0.state != Effective::Down {
        return out;
    }
    let kept = chosen.first() == Some(&first);
    out.push(if h0.state == Effective::Down {
        format!("traffic split: {} is down: its clients move down their lists", name(first))
    } else {
        format!(
            "traffic split: {} keeps {} % of the clients ranking it first{}; this /{prefix} is at {} % of its buckets: {}",
            name(first),
            pct(keep.fraction()),
            if keep < h0.keep {
                " (shedding load past its capacity)"
            } else {
                ""
            },
            bucket(first),
            if kept { "kept" } else { "moved" }
        )
    });
    if kept {
        return out;
    }
    for &r in order.iter().skip(1) {
        let h = health.region(id(r));
        let taken = chosen.first() == Some(&r);
        if !h.accepts() {
            out.push(format!(
                "traffic split: {} takes no moved clients ({})",
                name(r),
                h.state.name()
            ));
            continue;
        }
        out.push(format!(
            "traffic split: {} admits {} % of the clients moved to it (its spare capacity); this /{prefix}: {} %: {}",
            name(r),
            pct(h.admit.fraction()),
            bucket(r),
            if taken { "taken" } else { "passed on" }
        ));
        if taken {
            break;
        }
    }
    out
}
