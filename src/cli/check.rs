//! `meridian check`: validate the configuration and every zone, and print what a
//! server would load (zones, policies, routes, GeoIP, cluster, DNSSEC, transfer).

use std::process::ExitCode;

use meridian::config::Overrides;
use meridian::health::RegionIds;
use meridian::name;
use meridian::snapshot::Snapshot;

use super::{Cli, load_config};

pub fn run(cli: &Cli, overrides: &Overrides) -> ExitCode {
    let config = match load_config(&cli.config, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match Snapshot::build(&config, &mut RegionIds::default(), &Default::default()) {
        Ok(built) => {
            for w in &built.warnings {
                eprintln!("warning: {w}");
            }
            let mut zones: Vec<_> = built.snapshot.zones.iter().collect();
            zones.sort_by_key(|z| name::to_text(&z.apex));
            let mut total = 0;
            for z in &zones {
                println!(
                    "zone {}: {} records ({})",
                    name::to_text(&z.apex),
                    z.record_count,
                    z.file.display()
                );
                total += z.record_count;
            }
            let snap = &built.snapshot;
            for p in &snap.policies.policies {
                println!(
                    "policy {}: {} over {} regions, ttl {} ({}:{})",
                    p.display,
                    p.method.name(),
                    p.candidates.len(),
                    p.ttl,
                    p.file.display(),
                    p.line
                );
            }
            // Each tenant map once, with the policies that use it.
            let mut maps: Vec<(
                &std::path::Path,
                &meridian::policy::tenants::TenantMap,
                Vec<&str>,
            )> = Vec::new();
            for p in &snap.policies.policies {
                let Some(h) = &p.home else { continue };
                match maps.iter_mut().find(|m| m.0 == h.file.as_path()) {
                    Some(m) => m.2.push(&p.display),
                    None => maps.push((&h.file, &h.map, vec![&p.display])),
                }
            }
            for (file, map, users) in maps {
                let homes: std::collections::BTreeSet<u16> =
                    map.sets.iter().map(|s| s.home).collect();
                let allowed: std::collections::BTreeSet<&[u16]> =
                    map.sets.iter().map(|s| &s.allowed[..]).collect();
                let now = meridian::health::store::now_unix() as i64;
                let scheduled = map.moves.iter().filter(|m| m.at > now).count();
                println!(
                    "tenants {}: {} tenants, {} homes, {} allowed sets, moves: {} scheduled, {} done; for {}",
                    file.display(),
                    map.len(),
                    homes.len(),
                    allowed.len(),
                    scheduled,
                    map.moves.len() - scheduled,
                    users.join(", ")
                );
            }
            let cs = &snap.compile_stats;
            if !snap.policies.policies.is_empty() {
                let kinds: Vec<String> = cs
                    .kinds
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| format!("{n} {}", k.name()))
                    .collect();
                println!(
                    "compiled {} policies as {} distinct routes ({}) in {:.2} s: {} KiB",
                    snap.policies.policies.len(),
                    cs.shapes,
                    kinds.join(", "),
                    cs.time.as_secs_f64(),
                    cs.bytes.div_ceil(1024)
                );
            }
            if !snap.geo.database.is_empty() {
                println!(
                    "geoip {}: {} networks, {} client classes in {} areas",
                    snap.geo.database,
                    snap.geo.networks,
                    snap.geo.classes.len(),
                    snap.policies.classes.representatives.len()
                );
            }
            if let (Some(db), Some(path)) = (&snap.asn, &config.asn_database) {
                let named = snap.policies.asns().len();
                let tagged = snap.geo.overlay_asn.iter().flatten().count();
                println!(
                    "asn database {} ({}): {named} ASNs named by geo rules, {tagged} of their networks in the class table",
                    path.display(),
                    db.database_type
                );
            }
            if let Some(c) = &config.startup.cluster {
                println!(
                    "cluster: instance {}, gossip on {} (advertised {}), {} seed peers, quorum {}, isolation after {:?}, gossip every {:?}, key {} bytes",
                    c.instance,
                    c.listen,
                    c.advertise,
                    c.peers.len(),
                    c.quorum.name(),
                    c.isolation_timeout,
                    c.gossip_interval,
                    c.secret.len()
                );
            }
            print_failover(
                snap,
                config
                    .startup
                    .cluster
                    .as_ref()
                    .map(|c| c.gossip_interval * 2),
            );
            print_dnssec(snap);
            if let Some(t) = &config.transfer {
                let keys: Vec<String> = t
                    .keys
                    .iter()
                    .map(|(n, k)| format!("{n} ({})", k.algorithm()))
                    .collect();
                let notify: Vec<String> = t.notify.iter().map(|a| a.to_string()).collect();
                println!(
                    "transfer: TSIG keys [{}], {} allow rules ({} without a key), notify [{}]",
                    keys.join(", "),
                    t.allow.len(),
                    t.allow.iter().filter(|a| a.key.is_none()).count(),
                    notify.join(", ")
                );
            }
            if let Some(a) = &config.startup.anycast {
                let guard = if config.startup.cluster.is_some() {
                    format!("never below {} announcing", a.min_announcing)
                } else {
                    "no cluster: min_announcing not applied".to_string()
                };
                println!(
                    "anycast: driver {}, rise {} fall {} every {:?}, on unhealthy {}, {guard}, drain on stop {:?}",
                    a.driver.describe(),
                    a.rise,
                    a.fall,
                    a.interval,
                    a.on_unhealthy.describe(),
                    a.drain_on_stop
                );
                for p in &a.prefixes {
                    println!("  announce {}", p.describe());
                }
            }
            println!(
                "ok: {} zones, {} records, {} regions, {} policies, configuration {}",
                zones.len(),
                total,
                snap.policies.regions.len(),
                snap.policies.policies.len(),
                config.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
            ExitCode::FAILURE
        }
    }
}

/// Per zone: signed or not, with which keys in which state, when signatures expire.
/// Policies within their target printed one per line up to this many (then counted);
/// every one over its target is printed.
const FAILOVER_LINES: usize = 20;

/// For every policy, the worst case between its regions' endpoints failing and the
/// last client leaving, against the regions' `failover_target` (`policy::failover`).
fn print_failover(snap: &Snapshot, gossip: Option<std::time::Duration>) {
    use meridian::policy::failover;
    let set = &snap.policies;
    let (mut shown, mut quiet, mut unprobed) = (0, 0, 0);
    for p in &set.policies {
        let worst = p
            .candidates
            .iter()
            .filter_map(|&i| set.regions.get(usize::from(i)))
            .filter_map(|r| {
                let d = failover::detection(&r.endpoints, &r.thresholds)?;
                let w = failover::worst_case(
                    d,
                    p.ttl,
                    r.thresholds.failover_target,
                    gossip.unwrap_or_default(),
                );
                Some((r, w))
            })
            .max_by_key(|(_, w)| w.total.as_millis() as i128 - w.target.as_millis() as i128);
        let Some((r, w)) = worst else {
            unprobed += 1;
            continue;
        };
        let line = format!(
            "failover {}: worst case {:.1} s ({}) through {}, target {} s",
            p.display,
            w.total.as_secs_f64(),
            w.explain(),
            r.name,
            w.target.as_secs()
        );
        if !w.meets_target() {
            let fix = match w.ttl_for_target() {
                Some(t) => format!("lower ttl to {t} s"),
                None => "detection alone is too slow: probe more often or fail on fewer consecutive failures".into(),
            };
            eprintln!("warning: {line}: over target, {fix}");
        } else if shown < FAILOVER_LINES {
            println!("{line}");
            shown += 1;
        } else {
            quiet += 1;
        }
    }
    if quiet > 0 {
        println!("failover: {quiet} more policies within target");
    }
    if unprobed > 0 {
        println!(
            "failover: {unprobed} policies with no probed region (their answers move only by an override)"
        );
    }
}

fn print_dnssec(snap: &Snapshot) {
    let d = &snap.dnssec;
    let now = meridian::dnssec::now();
    let when = |t: u64| {
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
        );
        let left = t.saturating_sub(now);
        format!("{at} (in {}d {}h)", left / 86_400, left % 86_400 / 3600)
    };
    let mut zones: Vec<_> = snap.zones.iter().collect();
    zones.sort_by_key(|z| name::to_text(&z.apex));
    for z in zones {
        let Some(zk) = d.zones.get(&z.apex[..]) else {
            continue;
        };
        // A key-signing key that also signs the data (no ZSK active) is a CSK.
        let zsk_active = zk
            .keys
            .iter()
            .any(|k| !k.is_ksk() && k.timing.active(zk.signed_at));
        let keys: Vec<String> = zk
            .keys
            .iter()
            .map(|k| {
                let role = if k.is_ksk() && !zsk_active {
                    "CSK"
                } else {
                    k.role()
                };
                let state = if k.timing.active(zk.signed_at) {
                    "active"
                } else if k.timing.published(zk.signed_at) {
                    "published"
                } else {
                    "not yet published"
                };
                format!("{} {role} {} {state}", k.tag, k.algorithm.mnemonic())
            })
            .collect();
        let expiry = d
            .earliest_expiry
            .get(&*z.display)
            .map_or_else(|| "-".to_string(), |&t| when(t));
        println!(
            "dnssec {}: signed, keys [{}], earliest signature expiry {expiry}",
            name::to_text(&z.apex),
            keys.join(", ")
        );
        if snap.transfer.is_some() {
            let (records, names) = meridian::dns::transfer::secondary_view(
                snap,
                &meridian::health::HealthView::default(),
                z,
            );
            let serial = zk.serial.map_or_else(
                || "-".into(),
                |(file, served)| {
                    format!("{served} (file {file} + seconds since 2026-01-01 at signing)")
                },
            );
            println!(
                "dnssec {}: a secondary gets serial {serial}, {records} records with their signatures and an NSEC chain over {names} names; each re-sign raises the serial and sends NOTIFY",
                name::to_text(&z.apex),
            );
        }
    }
    if d.is_signed() {
        for z in snap.zones.iter().filter(|z| !z.signed) {
            println!(
                "dnssec {}: unsigned (no active key in the keys folder)",
                name::to_text(&z.apex)
            );
        }
        println!(
            "dnssec: {} policy answers pre-signed, next re-sign {}",
            d.dynamic.len(),
            d.next_resign.map_or_else(|| "-".into(), when)
        );
    }
}
