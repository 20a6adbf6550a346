//! A game-day scenario file: duration, step, clients and demand, and a timeline of
//! events, validated against the deployment with every mistake at its position.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, parse_yaml};
use crate::policy::population;
use crate::snapshot::Snapshot;

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
