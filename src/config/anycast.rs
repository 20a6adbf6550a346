//! `anycast:`: the prefixes this instance announces over BGP while it (or the region
//! behind a prefix) is healthy, and the router daemon that announces them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnycastSpec {
    driver: S<String>,
    bird: Option<S<BirdSpec>>,
    #[serde(default)]
    prefixes: Vec<S<PrefixSpec>>,
    rise: Option<S<u32>>,
    fall: Option<S<u32>>,
    interval: Option<S<String>>,
    on_unhealthy: Option<S<OnUnhealthySpec>>,
    min_announcing: Option<S<usize>>,
    drain_on_stop: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BirdSpec {
    socket: Option<S<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixSpec {
    prefix: S<String>,
    when: S<WhenSpec>,
    bird_protocol: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WhenSpec {
    Word(String),
    Region { region: String },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OnUnhealthySpec {
    Word(String),
    Med { med: u32 },
    Prepend { prepend: u8 },
}

/// Which daemon speaks BGP for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// BIRD 2: Meridian enables and disables a `protocol static` per prefix over
    /// BIRD's control socket; the BGP export stays in the operator's bird.conf.
    Bird { socket: PathBuf },
    /// ExaBGP runs `meridian anycast exabgp` and reads its announcements.
    Exabgp,
}

impl Driver {
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Bird { .. } => "bird",
            Driver::Exabgp => "exabgp",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Driver::Bird { socket } => format!("bird ({})", socket.display()),
            Driver::Exabgp => "exabgp (routes read by `meridian anycast exabgp`)".into(),
        }
    }
}

/// What a prefix's announcement follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// This instance: first probe round done, and it answers a DNS query to itself.
    Serving,
    /// The region's state in the shared (quorum) view: announced unless down.
    Region(String),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Serving => f.write_str("serving"),
            Kind::Region(r) => write!(f, "region {r}"),
        }
    }
}

/// What becomes of a route when its prefix is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnhealthy {
    Withdraw,
    /// Still announced, with this MED (routers prefer the lower).
    Med(u32),
    /// Still announced, with our AS prepended this many times.
    Prepend(u8),
}

impl OnUnhealthy {
    pub fn describe(self) -> String {
        match self {
            OnUnhealthy::Withdraw => "withdraw".into(),
            OnUnhealthy::Med(m) => format!("announce with med {m}"),
            OnUnhealthy::Prepend(n) => format!("announce with {n} prepends"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPlan {
    pub prefix: ipnet::IpNet,
    pub kind: Kind,
    /// With the bird driver: the `protocol static` holding the route.
    pub bird_protocol: Option<String>,
    /// Where `when:` is in the configuration (an unknown region is reported there).
    pub at: (usize, usize),
}

impl PrefixPlan {
    /// What `meridian check` prints for the prefix.
    pub fn describe(&self) -> String {
        match &self.bird_protocol {
            Some(p) => format!("{} when {} (bird protocol {p})", self.prefix, self.kind),
            None => format!("{} when {}", self.prefix, self.kind),
        }
    }
}

/// `anycast:`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AnycastConfig {
    pub driver: Driver,
    pub prefixes: Vec<PrefixPlan>,
    pub rise: u32,
    pub fall: u32,
    pub interval: Duration,
    pub on_unhealthy: OnUnhealthy,
    pub min_announcing: usize,
    pub drain_on_stop: Duration,
}

/// BIRD's control socket where Debian's bird2 puts it.
const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";

pub(super) fn anycast(
    c: &S<AnycastSpec>,
    base: &Path,
    r: &mut Report<'_>,
) -> Option<AnycastConfig> {
    let spec = &c.value;
    let errors = r.errors.len();
    let driver = match spec.driver.value.as_str() {
        "bird" => {
            let socket = spec
                .bird
                .as_ref()
                .and_then(|b| b.value.socket.as_ref())
                .map_or_else(
                    || PathBuf::from(DEFAULT_BIRD_SOCKET),
                    |s| base.join(&s.value),
                );
            Driver::Bird { socket }
        }
        "exabgp" => {
            if let Some(b) = &spec.bird {
                r.at(b, "anycast.bird is for driver: bird (this one is exabgp)");
            }
            Driver::Exabgp
        }
        other => {
            r.at(
                &spec.driver,
                format!("anycast.driver {other:?}: expected bird or exabgp"),
            );
            Driver::Exabgp
        }
    };
    let count = |r: &mut Report<'_>, s: Option<&S<u32>>, key: &str, default: u32| match s {
        None => default,
        Some(v) if (1..=100).contains(&v.value) => v.value,
        Some(v) => {
            r.at(v, format!("anycast.{key} must be 1 to 100"));
            default
        }
    };
    let rise = count(r, spec.rise.as_ref(), "rise", 3);
    let fall = count(r, spec.fall.as_ref(), "fall", 2);
    let interval = r.duration(
        "anycast.interval",
        spec.interval.as_ref(),
        Duration::from_secs(1),
    );
    if let Some(s) = &spec.interval
        && !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval)
    {
        r.at(s, "anycast.interval must be between 100ms and 60s");
    }
    let drain_on_stop = r.duration(
        "anycast.drain_on_stop",
        spec.drain_on_stop.as_ref(),
        Duration::ZERO,
    );
    if let Some(s) = &spec.drain_on_stop
        && drain_on_stop > Duration::from_secs(600)
    {
        r.at(s, "anycast.drain_on_stop must be at most 10m");
    }
    let on_unhealthy = match spec.on_unhealthy.as_ref() {
        None => OnUnhealthy::Withdraw,
        Some(s) => match &s.value {
            OnUnhealthySpec::Word(w) if w == "withdraw" => OnUnhealthy::Withdraw,
            OnUnhealthySpec::Word(w) => {
                r.at(
                    s,
                    format!("anycast.on_unhealthy {w:?}: expected withdraw, {{ med: N }} or {{ prepend: N }}"),
                );
                OnUnhealthy::Withdraw
            }
            OnUnhealthySpec::Med { med } => OnUnhealthy::Med(*med),
            OnUnhealthySpec::Prepend { prepend } if (1..=10).contains(prepend) => {
                OnUnhealthy::Prepend(*prepend)
            }
            OnUnhealthySpec::Prepend { .. } => {
                r.at(s, "anycast.on_unhealthy.prepend must be 1 to 10");
                OnUnhealthy::Withdraw
            }
        },
    };
    if let (Driver::Bird { .. }, Some(s)) = (&driver, spec.on_unhealthy.as_ref())
        && on_unhealthy != OnUnhealthy::Withdraw
    {
        r.at(
            s,
            "anycast.on_unhealthy: the bird driver enables and disables the operator's static protocol and cannot change its MED or AS path; use withdraw, or the exabgp driver",
        );
    }
    if let (Driver::Exabgp, Some(s), OnUnhealthy::Prepend(_)) =
        (&driver, spec.on_unhealthy.as_ref(), on_unhealthy)
    {
        r.at(
            s,
            "anycast.on_unhealthy: prepend needs the AS number ExaBGP announces from, which Meridian does not know; use { med: N } (ExaBGP sends it), or prepend in the router's import filter",
        );
    }
    let min_announcing = spec.min_announcing.as_ref().map_or(1, |s| s.value);
    if spec.prefixes.is_empty() {
        r.at(
            c,
            "anycast.prefixes is empty: name at least one prefix to announce",
        );
    }
    let mut prefixes: Vec<PrefixPlan> = Vec::new();
    for p in &spec.prefixes {
        let ps = &p.value;
        let prefix = match ps.prefix.value.parse::<ipnet::IpNet>() {
            Ok(n) if n.trunc() == n => n,
            Ok(n) => {
                r.at(
                    &ps.prefix,
                    format!(
                        "anycast prefix {}: host bits are set (the network is {})",
                        ps.prefix.value,
                        n.trunc()
                    ),
                );
                continue;
            }
            Err(_) => {
                r.at(
                    &ps.prefix,
                    format!("anycast prefix {:?} is not a CIDR prefix", ps.prefix.value),
                );
                continue;
            }
        };
        let kind = match &ps.when.value {
            WhenSpec::Word(w) if w == "serving" => Kind::Serving,
            WhenSpec::Region { region } if !region.is_empty() => Kind::Region(region.clone()),
            _ => {
                r.at(
                    &ps.when,
                    "anycast when: expected serving or { region: NAME }",
                );
                continue;
            }
        };
        let bird_protocol = ps.bird_protocol.as_ref().map(|s| s.value.clone());
        match (&driver, &bird_protocol) {
            (Driver::Bird { .. }, None) => r.at(
                p,
                format!("anycast prefix {prefix}: the bird driver needs bird_protocol (the protocol static holding this route)"),
            ),
            (Driver::Bird { .. }, Some(name)) if !is_bird_symbol(name) => r.at(
                ps.bird_protocol.as_ref().unwrap_or(&ps.prefix),
                format!("anycast bird_protocol {name:?} is not a BIRD protocol name (letters, digits, _)"),
            ),
            _ => {}
        }
        if let Some(other) = prefixes.iter().find(|o| o.prefix == prefix) {
            r.at(
                &ps.prefix,
                format!(
                    "anycast prefix {prefix} is listed twice (the first: when {})",
                    other.kind
                ),
            );
            continue;
        }
        if let Some(other) = prefixes
            .iter()
            .find(|o| o.prefix.contains(&prefix) || prefix.contains(&o.prefix))
        {
            r.warn_at(
                &ps.prefix,
                format!(
                    "anycast prefix {prefix} overlaps {}: routers prefer the longer one while both are announced, whichever health it follows",
                    other.prefix
                ),
            );
        }
        prefixes.push(PrefixPlan {
            prefix,
            kind,
            bird_protocol,
            at: (
                ps.when.referenced.line() as usize,
                ps.when.referenced.column() as usize,
            ),
        });
    }
    if r.errors.len() > errors {
        return None;
    }
    Some(AnycastConfig {
        driver,
        prefixes,
        rise,
        fall,
        interval,
        on_unhealthy,
        min_announcing,
        drain_on_stop,
    })
}

/// What BIRD's grammar takes as a symbol unquoted.
fn is_bird_symbol(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}
