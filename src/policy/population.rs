//! The client population the traffic split models: client /24s spread evenly over the
//! IPv4 space the GeoIP database locates (address space is the estimate of where a
//! name's demand comes from), each policy with a `demand` spreading it evenly over
//! them, each client with the list its policy gives it. Built with the snapshot; the
//! health checker runs `traffic::split` over it whenever a region's share changes.

use std::net::{IpAddr, Ipv4Addr};

use super::PolicySet;
use super::decide;
use crate::geo::{Family, GeoTable};
use crate::traffic::demand::PolicyDemand;
use crate::traffic::{Client, subnet_of};

/// Client subnets per policy: enough that a share of a few percent is a few dozen of
/// them, few enough that the split over a dozen policies takes milliseconds.
pub const SAMPLE: u32 = 2048;

/// `n` located IPv4 /24s, evenly spaced over the address space (deterministic).
pub fn sample(geo: &GeoTable, n: u32) -> Vec<Ipv4Addr> {
    let trials = u64::from(n) * 4;
    let stride = (1u64 << 32) / trials.max(1);
    let mut out = Vec::new();
    for i in 0..trials {
        // A fixed odd offset inside each stride keeps off network and broadcast edges.
        let addr = (i * stride + ((stride / 2) | 0x101)) as u32 & 0xFFFF_FF00;
        let ip = Ipv4Addr::from(addr);
        if ip.is_private() || ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
            continue;
        }
        let located = geo
            .classify(Family::V4, u128::from(addr))
            .and_then(|(c, ..)| geo.class(c))
            .is_some_and(|c| c.location.is_some());
        if located {
            out.push(ip);
        }
        if out.len() >= n as usize {
            break;
        }
    }
    out
}

/// The policies with a `demand`, in the order [`model`]'s clients number them.
pub fn demands(set: &PolicySet) -> Vec<PolicyDemand> {
    set.policies
        .iter()
        .filter_map(|p| {
            Some(PolicyDemand {
                name: p.display.clone(),
                demand: p.demand?,
                candidates: p.candidates.clone(),
            })
        })
        .collect()
}

/// The modelled clients of every policy with a `demand` (lists index `set.regions`;
/// `policy` numbers them as [`demands`] lists them).
pub fn model(set: &PolicySet, geo: &GeoTable) -> Vec<Client> {
    let policies: Vec<_> = set.policies.iter().filter(|p| p.demand.is_some()).collect();
    if policies.is_empty() {
        return Vec::new();
    }
    let subnets = sample(geo, SAMPLE);
    let mut clients = Vec::with_capacity(subnets.len() * policies.len());
    for (at, p) in policies.into_iter().enumerate() {
        let weight = p.demand.unwrap_or(0.0) / subnets.len().max(1) as f64;
        for &ip in &subnets {
            let ip = IpAddr::V4(ip);
            let (list, _) = decide::order(set, &p.route, Some(ip));
            clients.push(Client {
                weight,
                subnet: subnet_of(ip).0,
                list,
                spill: p.spill_overflow,
                policy: at as u32,
            });
        }
    }
    clients
}
