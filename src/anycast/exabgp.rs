//! ExaBGP's text process API, and `meridian anycast exabgp`: ExaBGP runs it as a
//! `process` and reads one command per line from its stdout (`announce route P
//! next-hop self [med N]`, `withdraw route P next-hop self`). The routes come from the
//! running server's decisions (`GET /api/v1/anycast`), so one server and any number of
//! ExaBGP processes agree. When the server cannot be reached, its `serving` prefixes
//! are withdrawn at once (a server that does not answer must not attract traffic) and
//! its region prefixes keep their last route for `fall` more failed polls.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Kind, OnUnhealthy, PrefixPlan, Route};

/// What `meridian anycast exabgp` sends as its User-Agent: the server shows when such a
/// process last read the routes.
pub const USER_AGENT: &str = "meridian-anycast-exabgp";

/// The command that tells ExaBGP `route` for `prefix`.
pub fn line(prefix: &ipnet::IpNet, route: Route, on_unhealthy: OnUnhealthy) -> String {
    match (route, on_unhealthy) {
        (Route::Withdrawn, _) => format!("withdraw route {prefix} next-hop self"),
        (Route::Depreferred, OnUnhealthy::Med(med)) => {
            format!("announce route {prefix} next-hop self med {med}")
        }
        _ => format!("announce route {prefix} next-hop self"),
    }
}

/// One prefix as `/api/v1/anycast` gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Polled {
    pub prefix: String,
    pub route: Route,
}

/// The routes to hold after a poll: the server's when it answered (`Some`), else the
/// last ones with `serving` prefixes withdrawn, and region prefixes too once `failed`
/// polls in a row reach `fall`. A prefix the server does not list is withdrawn.
pub fn mirror(
    plan: &[PrefixPlan],
    last: &BTreeMap<ipnet::IpNet, Route>,
    polled: Option<&[Polled]>,
    failed: u32,
    fall: u32,
) -> BTreeMap<ipnet::IpNet, Route> {
    plan.iter()
        .map(|p| {
            let route = match polled {
                Some(list) => list
                    .iter()
                    .find(|x| x.prefix.parse::<ipnet::IpNet>().ok() == Some(p.prefix))
                    .map_or(Route::Withdrawn, |x| x.route),
                None => match (&p.kind, last.get(&p.prefix)) {
                    (Kind::Serving, _) => Route::Withdrawn,
                    (Kind::Region(_), _) if failed >= fall => Route::Withdrawn,
                    (Kind::Region(_), Some(r)) => *r,
                    (Kind::Region(_), None) => Route::Withdrawn,
                },
            };
            (p.prefix, route)
        })
        .collect()
}

/// The lines that move ExaBGP from `before` to `after` (all of `after` when `before`
/// is empty: ExaBGP starts knowing nothing).
pub fn changes(
    before: &BTreeMap<ipnet::IpNet, Route>,
    after: &BTreeMap<ipnet::IpNet, Route>,
    on_unhealthy: OnUnhealthy,
) -> Vec<String> {
    after
        .iter()
        .filter(|(p, r)| before.get(p) != Some(r))
        // Nothing was announced yet: a withdrawal would only be noise.
        .filter(|(p, r)| before.contains_key(p) || r.is_announced())
        .map(|(p, r)| line(p, *r, on_unhealthy))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<PrefixPlan> {
        vec![
            PrefixPlan {
                prefix: "198.51.100.53/32".parse().unwrap(),
                kind: Kind::Serving,
                bird_protocol: None,
                at: (0, 0),
            },
            PrefixPlan {
                prefix: "203.0.113.0/24".parse().unwrap(),
                kind: Kind::Region("eu-west".into()),
                bird_protocol: None,
                at: (0, 0),
            },
        ]
    }

    fn polled(ns: Route, web: Route) -> Vec<Polled> {
        vec![
            Polled {
                prefix: "198.51.100.53/32".into(),
                route: ns,
            },
            Polled {
                prefix: "203.0.113.0/24".into(),
                route: web,
            },
        ]
    }

    #[test]
    fn lines_exabgp_reads() {
        let p: ipnet::IpNet = "203.0.113.0/24".parse().unwrap();
        assert_eq!(
            line(&p, Route::Announced, OnUnhealthy::Withdraw),
            "announce route 203.0.113.0/24 next-hop self"
        );
        assert_eq!(
            line(&p, Route::Depreferred, OnUnhealthy::Med(500)),
            "announce route 203.0.113.0/24 next-hop self med 500"
        );
        assert_eq!(
            line(&p, Route::Withdrawn, OnUnhealthy::Med(500)),
            "withdraw route 203.0.113.0/24 next-hop self"
        );
        let v6: ipnet::IpNet = "2001:db8::53/128".parse().unwrap();
        assert_eq!(
            line(&v6, Route::Announced, OnUnhealthy::Withdraw),
            "announce route 2001:db8::53/128 next-hop self"
        );
    }

    #[test]
    fn an_unreachable_server_withdraws_serving_at_once_and_regions_after_fall() {
        let plan = plan();
        let up = mirror(
            &plan,
            &BTreeMap::new(),
            Some(&polled(Route::Announced, Route::Announced)),
            0,
            2,
        );
        assert!(up.values().all(|r| *r == Route::Announced));
        let first = mirror(&plan, &up, None, 1, 2);
        let routes: Vec<Route> = first.values().copied().collect();
        assert_eq!(routes, vec![Route::Withdrawn, Route::Announced]);
        let second = mirror(&plan, &first, None, 2, 2);
        assert!(second.values().all(|r| *r == Route::Withdrawn));
        // Lines: only what changed; nothing for a prefix never announced.
        assert_eq!(
            changes(&up, &first, OnUnhealthy::Withdraw),
            vec!["withdraw route 198.51.100.53/32 next-hop self"]
        );
        let start = mirror(
            &plan,
            &BTreeMap::new(),
            Some(&polled(Route::Withdrawn, Route::Announced)),
            0,
            2,
        );
        assert_eq!(
            changes(&BTreeMap::new(), &start, OnUnhealthy::Withdraw),
            vec!["announce route 203.0.113.0/24 next-hop self"]
        );
    }
}
