//! `meridian simulate`: a game day rehearsed before it happens. A scenario (a timeline
//! of outages, recoveries, drains, slowdowns and capacity changes) is replayed against a
//! client population on tokio's paused clock, through the server's own pieces: the
//! policies' compiled routes give each client its ranked list, the health checker's core
//! (`health::simulator`) turns synthetic probe outcomes into region states with the
//! configured thresholds, cooldowns and failback ramps, and `traffic::split` moves the
//! displaced clients. An hour of scenario takes a fraction of a second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, parse_yaml};
use crate::health::simulator::Simulator;
use crate::health::{Effective, HealthPlan, OverrideKind, Probe};
use crate::policy::{decide, population};
use crate::snapshot::Snapshot;
use crate::traffic::{Client, subnet_of};

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    duration: S<String>,
    step: S<String>,
    clients: Option<S<ClientsSpec>>,
    #[serde(default)]
    demand: BTreeMap<String, S<f64>>,
    #[serde(default)]
    events: Vec<S<EventSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsSpec {
    sample: Option<S<u32>>,
    csv: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    at: S<String>,
    region: S<String>,
    state: Option<S<Condition>>,
    capacity: Option<S<f64>>,
    fraction: Option<S<f64>>,
}

/// What happens to a region at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Its probes fail.
    Down,
    /// Its probes pass.
    Up,
    /// An operator drain (`fraction` for a partial one).
    Drain,
    Undrain,
    /// Its probes pass, slower than its `fail_latency`.
    Slow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub region: String,
    pub state: Option<Condition>,
    pub capacity: Option<f64>,
    pub fraction: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub duration: Duration,
    pub step: Duration,
    /// (client subnet address, relative weight)
    pub clients: Vec<(IpAddr, f64)>,
    /// Policy index → requests/s.
    pub demand: Vec<(usize, f64)>,
    pub events: Vec<Event>,
}

fn at<T>(s: &S<T>) -> (usize, usize) {
    (s.referenced.line() as usize, s.referenced.column() as usize)
}

fn duration_of(file: &Path, s: &S<String>, errors: &mut Vec<Diagnostic>) -> Option<Duration> {
    match humantime::parse_duration(&s.value) {
        Ok(d) => Some(d),
        Err(e) => {
            let (l, c) = at(s);
            errors.push(Diagnostic::at(file, l, c, format!("{:?}: {e}", s.value)));
            None
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario against the configuration it will run on: every
    /// mistake at once, at FILE:LINE:COL.
    pub fn load(file: &Path, snapshot: &Snapshot) -> Result<Scenario, Vec<Diagnostic>> {
        let text = crate::diag::read_yaml(file).map_err(|e| vec![e])?;
        let spec: ScenarioSpec = parse_yaml(file, &text).map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let err = |errors: &mut Vec<Diagnostic>, (l, c): (usize, usize), m: String| {
            errors.push(Diagnostic::at(file, l, c, m));
        };
        let duration = duration_of(file, &spec.duration, &mut errors).unwrap_or_default();
        let step = duration_of(file, &spec.step, &mut errors).unwrap_or_default();
        if duration.is_zero() || duration > Duration::from_secs(7 * 86_400) {
            err(
                &mut errors,
                at(&spec.duration),
                "duration must be above 0 and at most 7 days".into(),
            );
        }
        if step < Duration::from_secs(1) || step > duration {
            err(
                &mut errors,
                at(&spec.step),
                "step must be at least 1s and at most the duration".into(),
            );
        }
        let set = &snapshot.policies;
        let mut clients = Vec::new();
        match spec.clients.as_ref().map(|c| &c.value) {
            Some(ClientsSpec {
                csv: Some(path),
                sample: None,
            }) => {
                let base = file.parent().unwrap_or(Path::new("."));
                let csv = base.join(&path.value);
                match std::fs::read_to_string(&csv) {
                    Ok(text) => clients = read_csv(&csv, &text, &mut errors),
                    Err(e) => err(
                        &mut errors,
                        at(path),
                        format!("cannot read {}: {e}", csv.display()),
                    ),
                }
            }
            Some(ClientsSpec {
                sample: Some(n),
                csv: None,
            }) => {
                if n.value == 0 || n.value > 200_000 {
                    err(
                        &mut errors,
                        at(n),
                        "sample must be 1..200000 client subnets".into(),
                    );
                } else {
                    clients = population::sample(&snapshot.geo, n.value)
                        .into_iter()
                        .map(|a| (IpAddr::V4(a), 1.0))
                        .collect();
                }
            }
            None => {
                clients = population::sample(&snapshot.geo, population::SAMPLE)
                    .into_iter()
                    .map(|a| (IpAddr::V4(a), 1.0))
                    .collect();
            }
            Some(_) => {
                let c = spec.clients.as_ref().map(at).unwrap_or((0, 0));
                err(
                    &mut errors,
                    c,
                    "clients takes one of sample: N or csv: FILE".into(),
                );
            }
        }
        let mut demand = Vec::new();
        for (name, d) in &spec.demand {
            let wanted = name.trim_end_matches('.').to_ascii_lowercase();
            let found = set.policies.iter().position(|p| {
                p.display
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&wanted)
            });
            match found {
                None => err(
                    &mut errors,
                    at(d),
                    format!("demand for unknown policy {name:?}"),
                ),
                Some(_) if !(d.value.is_finite() && d.value > 0.0) => err(
                    &mut errors,
                    at(d),
                    format!("demand {} must be above 0", d.value),
                ),
                Some(i) => demand.push((i, d.value)),
            }
        }
        if spec.demand.is_empty() {
            demand = set
                .policies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.demand.map(|d| (i, d)))
                .collect();
            if demand.is_empty() {
                errors.push(Diagnostic::new(
                    file,
                    1,
                    "no demand: give `demand:` per policy here or in the policy files",
                ));
            }
        }
        let mut events = Vec::new();
        let mut last = Duration::ZERO;
        for e in &spec.events {
            let v = &e.value;
            let Some(t) = duration_of(file, &v.at, &mut errors) else {
                continue;
            };
            if t > duration {
                err(
                    &mut errors,
                    at(&v.at),
                    format!("{:?} is past the duration", v.at.value),
                );
            }
            if t < last {
                err(
                    &mut errors,
                    at(&v.at),
                    format!(
                        "{:?} is before the event above it: events go in time order",
                        v.at.value
                    ),
                );
            }
            last = last.max(t);
            if set.region_index(&v.region.value).is_none() {
                err(
                    &mut errors,
                    at(&v.region),
                    format!("unknown region {:?}", v.region.value),
                );
            }
            if v.state.is_none() && v.capacity.is_none() {
                err(
                    &mut errors,
                    at(e),
                    "an event sets a state, a capacity, or both".into(),
                );
            }
            if let Some(c) = &v.capacity
                && !(c.value.is_finite() && c.value > 0.0)
            {
                err(
                    &mut errors,
                    at(c),
                    format!("capacity {} must be above 0", c.value),
                );
            }
            if let Some(f) = &v.fraction {
                if !(f.value > 0.0 && f.value <= 1.0) {
                    err(
                        &mut errors,
                        at(f),
                        format!("fraction {} must be in (0, 1]", f.value),
                    );
                }
                if v.state.as_ref().map(|s| s.value) != Some(Condition::Drain) {
                    err(
                        &mut errors,
                        at(f),
                        "a fraction goes with state: drain".into(),
                    );
                }
            }
            events.push(Event {
                at: t,
                region: v.region.value.clone(),
                state: v.state.as_ref().map(|s| s.value),
                capacity: v.capacity.as_ref().map(|c| c.value),
                fraction: v.fraction.as_ref().map(|f| f.value),
            });
        }
        if errors.is_empty() {
            Ok(Scenario {
                duration,
                step,
                clients,
                demand,
                events,
            })
        } else {
            Err(errors)
        }
    }
}

/// `subnet,qps` lines (`#` comments, blank lines allowed).
fn read_csv(file: &Path, text: &str, errors: &mut Vec<Diagnostic>) -> Vec<(IpAddr, f64)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(',').map(str::trim);
        let (Some(net), Some(qps), None) = (parts.next(), parts.next(), parts.next()) else {
            errors.push(Diagnostic::new(file, i + 1, "expected subnet,qps"));
            continue;
        };
        let addr = net
            .parse::<ipnet::IpNet>()
            .map(|n| n.network())
            .or_else(|_| net.parse::<IpAddr>());
        match (addr, qps.parse::<f64>()) {
            (Ok(a), Ok(q)) if q.is_finite() && q >= 0.0 => out.push((a, q)),
            (Err(_), _) => errors.push(Diagnostic::new(
                file,
                i + 1,
                format!("{net:?} is not a subnet"),
            )),
            _ => errors.push(Diagnostic::new(
                file,
                i + 1,
                format!("{qps:?} is not a number of requests/s"),
            )),
        }
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionRow {
    pub region: String,
    pub state: Effective,
    /// Requests/s sent to it.
    pub load: f64,
    pub capacity: Option<f64>,
    /// Share of the clients ranking it first that it keeps.
    pub keep: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_s: u64,
    pub regions: Vec<RegionRow>,
    /// Load no region could take within its capacity.
    pub overflow: f64,
    /// Regions over capacity at this step.
    pub overloaded: Vec<String>,
    /// What changed since the last step: scenario events and health transitions.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub spill: bool,
    pub clients: usize,
    pub demand: f64,
    pub steps: Vec<Step>,
    /// Steps at which some region was over capacity.
    pub overloaded_steps: usize,
    pub max_overflow: f64,
}

/// Replays `scenario`. `spill: false` models plain failover (capacities ignored by the
/// split, still reported) for comparison.
pub fn run(snapshot: &Snapshot, scenario: &Scenario, spill: bool) -> Result<Report, String> {
    let set = &snapshot.policies;
    let total_weight: f64 = scenario.clients.iter().map(|c| c.1).sum();
    if total_weight <= 0.0 {
        return Err("the clients carry no weight".into());
    }
    let mut clients = Vec::new();
    for &(p, demand) in &scenario.demand {
        let Some(policy) = set.policies.get(p) else {
            continue;
        };
        for &(ip, w) in &scenario.clients {
            let (list, _) = decide::order(set, &policy.route, Some(ip));
            clients.push(Client {
                weight: demand * w / total_weight,
                subnet: subnet_of(ip).0,
                list,
                spill: policy.spill_overflow,
            });
        }
    }
    let mut capacities: Vec<Option<f64>> = set.regions.iter().map(|r| r.capacity).collect();
    let plan_for = |capacities: &[Option<f64>]| -> Arc<HealthPlan> {
        let mut plan = snapshot.health_plan();
        plan.clients = clients.clone().into();
        for (r, cap) in plan.regions.iter_mut().zip(capacities) {
            r.capacity = if spill { *cap } else { None };
            // Regions without probes get one, so outages go through the state machine.
            if r.endpoints.is_empty() {
                r.endpoints.push(crate::health::Endpoint {
                    name: "simulated".into(),
                    address: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
                    probe: Probe::Tcp,
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    serves: 0,
                });
            }
        }
        Arc::new(plan)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    let demand: f64 = scenario.demand.iter().map(|d| d.1).sum();
    runtime.block_on(async {
        let plan = plan_for(&capacities);
        let mut sim = Simulator::new(plan.clone());
        let mut plan = plan;
        let mut condition: BTreeMap<String, Condition> = BTreeMap::new();
        let mut pending = scenario.events.iter().peekable();
        let mut steps = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let tick = Duration::from_secs(1);
        let mut t = Duration::ZERO;
        loop {
            while let Some(e) = pending.next_if(|e| e.at <= t) {
                if let Some(c) = e.capacity {
                    if let Some(slot) = set
                        .region_index(&e.region)
                        .and_then(|i| capacities.get_mut(usize::from(i)))
                    {
                        *slot = Some(c);
                    }
                    plan = plan_for(&capacities);
                    sim.reconfigure(plan.clone());
                    notes.push(format!("{} capacity {c}", e.region));
                }
                match e.state {
                    Some(Condition::Drain) => {
                        sim.set_override(&e.region, Some(OverrideKind::Drain), e.fraction)?;
                        notes.push(match e.fraction {
                            Some(f) => format!("{} drained {:.0} %", e.region, f * 100.0),
                            None => format!("{} drained", e.region),
                        });
                    }
                    Some(Condition::Undrain) => {
                        sim.set_override(&e.region, None, None)?;
                        notes.push(format!("{} undrained", e.region));
                    }
                    Some(c) => {
                        condition.insert(e.region.clone(), c);
                        notes.push(format!(
                            "{} {}",
                            e.region,
                            match c {
                                Condition::Down => "fails",
                                Condition::Slow => "slows down",
                                _ => "serves again",
                            }
                        ));
                    }
                    None => {}
                }
            }
            for r in &plan.regions {
                let interval = r
                    .endpoints
                    .first()
                    .map_or(Duration::from_secs(2), |e| e.interval)
                    .max(tick);
                if !t.as_millis().is_multiple_of(interval.as_millis()) {
                    continue;
                }
                let timeout = r
                    .endpoints
                    .first()
                    .map_or(Duration::from_secs(1), |e| e.timeout);
                match condition.get(&r.name).copied().unwrap_or(Condition::Up) {
                    Condition::Down => sim.sample(&r.name, false, timeout),
                    Condition::Slow => sim.sample(
                        &r.name,
                        true,
                        r.thresholds.fail_latency + Duration::from_millis(100),
                    ),
                    _ => sim.sample(&r.name, true, Duration::from_millis(5)),
                }
            }
            sim.publish();
            for tr in sim.drain_transitions() {
                if !tr.key.contains('/') {
                    notes.push(format!("{} {}→{} ({})", tr.key, tr.from, tr.to, tr.cause));
                }
            }
            if t.as_millis()
                .is_multiple_of(scenario.step.as_millis().max(1))
            {
                steps.push(row(&sim, set, &capacities, t, std::mem::take(&mut notes)));
            }
            if t >= scenario.duration {
                break;
            }
            tokio::time::advance(tick).await;
            t += tick;
        }
        let overloaded_steps = steps.iter().filter(|s| !s.overloaded.is_empty()).count();
        let max_overflow = steps.iter().map(|s| s.overflow).fold(0.0, f64::max);
        Ok(Report {
            spill,
            clients: scenario.clients.len(),
            demand,
            steps,
            overloaded_steps,
            max_overflow,
        })
    })
}

fn row(
    sim: &Simulator,
    set: &crate::policy::PolicySet,
    capacities: &[Option<f64>],
    t: Duration,
    events: Vec<String>,
) -> Step {
    let view = sim.view();
    let outcome = sim.outcome();
    let regions: Vec<RegionRow> = set
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let h = view.region(r.id);
            RegionRow {
                region: r.name.clone(),
                state: h.state,
                load: outcome
                    .as_ref()
                    .and_then(|o| o.load.get(i).copied())
                    .unwrap_or(0.0),
                capacity: capacities.get(i).copied().flatten(),
                keep: h.keep.fraction(),
            }
        })
        .collect();
    let overloaded = regions
        .iter()
        .filter(|r| r.capacity.is_some_and(|c| r.load > c * 1.000_001))
        .map(|r| r.region.clone())
        .collect();
    Step {
        at_s: t.as_secs(),
        overflow: outcome.as_ref().map_or(0.0, |o| o.overflow),
        regions,
        overloaded,
        events,
    }
}

fn clock(s: u64) -> String {
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The report for the terminal: a line per step.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} clients, {:.0} req/s of demand, {}",
        r.clients,
        r.demand,
        if r.spill {
            "spill by spare capacity"
        } else {
            "plain failover (capacities ignored)"
        }
    );
    let names: Vec<&str> = r
        .steps
        .first()
        .map(|st| st.regions.iter().map(|x| x.region.as_str()).collect())
        .unwrap_or_default();
    let _ = write!(s, "{:>7}", "time");
    for n in &names {
        let _ = write!(s, "  {n:<24}");
    }
    let _ = writeln!(s, "  events");
    for st in &r.steps {
        let _ = write!(s, "{:>7}", clock(st.at_s));
        for x in &st.regions {
            let cell = match x.capacity {
                Some(c) => format!(
                    "{} {:.0}/{:.0}{}",
                    x.state.name(),
                    x.load,
                    c,
                    if x.load > c * 1.000_001 { " OVER" } else { "" }
                ),
                None => format!("{} {:.0}", x.state.name(), x.load),
            };
            let cell = if x.keep < 1.0 && x.state != Effective::Down {
                format!("{cell} keep {:.0}%", x.keep * 100.0)
            } else {
                cell
            };
            let _ = write!(s, "  {cell:<24}");
        }
        let mut events = st.events.clone();
        if st.overflow > 0.5 {
            // Demand no region could take within its capacity (served past it with
            // `overflow: spill`, unserved with `all_down`).
            events.push(format!("{:.0} req/s beyond every capacity", st.overflow));
        }
        let _ = writeln!(s, "  {}", events.join("; "));
    }
    let _ = writeln!(
        s,
        "overloaded at {} of {} steps; most load beyond every capacity: {:.0} req/s",
        r.overloaded_steps,
        r.steps.len(),
        r.max_overflow
    );
    s
}

/// Region load over time as an SVG line chart, with capacity lines and event markers.
pub fn render_svg(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 70.0, 160.0, 30.0, 40.0);
    let end = r.steps.last().map_or(1, |s| s.at_s.max(1)) as f64;
    let peak = r
        .steps
        .iter()
        .flat_map(|s| {
            s.regions
                .iter()
                .map(|x| x.load.max(x.capacity.unwrap_or(0.0)))
        })
        .fold(1.0, f64::max)
        * 1.1;
    let x = |t: f64| left + (w - left - right) * t / end;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / peak);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18">region load (req/s) over time, {}</text>"#,
        if r.spill {
            "spill by spare capacity"
        } else {
            "plain failover"
        }
    );
    for i in 0..=4 {
        let v = peak / 1.1 * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let names: Vec<&str> = r
        .steps
        .first()
        .map(|st| st.regions.iter().map(|x| x.region.as_str()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let color = colors.get(i % colors.len()).copied().unwrap_or("black");
        let points: Vec<String> = r
            .steps
            .iter()
            .filter_map(|st| {
                st.regions
                    .get(i)
                    .map(|row| format!("{:.1},{:.1}", x(st.at_s as f64), y(row.load)))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let caps: Vec<String> = r
            .steps
            .iter()
            .filter_map(|st| {
                let c = st.regions.get(i)?.capacity?;
                Some(format!("{:.1},{:.1}", x(st.at_s as f64), y(c)))
            })
            .collect();
        if !caps.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-dasharray="6 4" points="{}"/>"#,
                caps.join(" ")
            );
        }
        let ly = top + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name} (dashed: capacity)</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0
        );
    }
    for st in r.steps.iter().filter(|st| !st.events.is_empty()) {
        let ex = x(st.at_s as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{ex:.1}" x2="{ex:.1}" y1="{top}" y2="{}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" font-size="10" transform="rotate(-90 {:.1} {})">{}</text>"##,
            h - bottom,
            ex - 3.0,
            h - bottom - 4.0,
            ex - 3.0,
            h - bottom - 4.0,
            xml(&st.events.join("; "))
        );
    }
    for i in 0..=4 {
        let t = end * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            h - bottom + 18.0,
            clock(t as u64)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
