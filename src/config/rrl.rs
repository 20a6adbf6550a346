//! `rrl:`: response rate limiting on UDP.

use std::time::Duration;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RrlSpec {
    responses_per_second: Option<S<u32>>,
    window: Option<S<String>>,
    slip: Option<S<u32>>,
    ipv4_prefix: Option<S<u8>>,
    ipv6_prefix: Option<S<u8>>,
    exempt: Option<Vec<S<String>>>,
}

/// `rrl:` in `meridian.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct RrlConfig {
    pub responses_per_second: u32,
    pub window_seconds: u32,
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt: Vec<ipnet::IpNet>,
}

pub(super) fn rrl(c: &S<RrlSpec>, r: &mut Report<'_>) -> Option<RrlConfig> {
    let spec = &c.value;
    let errors = r.errors.len();
    let rate = spec.responses_per_second.as_ref().map_or(0, |s| s.value);
    if let Some(s) = &spec.responses_per_second
        && s.value > 100_000
    {
        r.at(
            s,
            "rrl.responses_per_second must be at most 100000 (0 turns limiting off)",
        );
    }
    let window = r.duration("rrl.window", spec.window.as_ref(), Duration::from_secs(15));
    if let Some(w) = &spec.window
        && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&window)
    {
        r.at(w, "rrl.window must be between 1s and 1h");
    }
    let slip = spec.slip.as_ref().map_or(2, |s| s.value);
    if let Some(s) = &spec.slip
        && s.value > 10
    {
        r.at(s, "rrl.slip must be 0 (drop every limited response) to 10");
    }
    let prefix = |r: &mut Report<'_>, s: Option<&S<u8>>, default: u8, max: u8, key: &str| match s {
        None => default,
        Some(p) if p.value >= 1 && p.value <= max => p.value,
        Some(p) => {
            r.at(p, format!("{key} must be 1 to {max}"));
            default
        }
    };
    let ipv4_prefix = prefix(r, spec.ipv4_prefix.as_ref(), 24, 32, "rrl.ipv4_prefix");
    let ipv6_prefix = prefix(r, spec.ipv6_prefix.as_ref(), 56, 128, "rrl.ipv6_prefix");
    let exempt = match &spec.exempt {
        // Loopback: the local resolver and monitoring.
        None => ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .collect(),
        Some(list) => list
            .iter()
            .filter_map(|e| match e.value.parse::<ipnet::IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => match e.value.parse::<std::net::IpAddr>() {
                    Ok(a) => Some(ipnet::IpNet::from(a)),
                    Err(_) => {
                        r.at(
                            e,
                            format!("rrl.exempt: {:?} is not an address or CIDR", e.value),
                        );
                        None
                    }
                },
            })
            .collect(),
    };
    if r.errors.len() > errors {
        return None;
    }
    Some(RrlConfig {
        responses_per_second: rate,
        window_seconds: window.as_secs() as u32,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt,
    })
}
