//! The server as `meridian serve` runs it: the snapshot built, sockets bound, the
//! health checker, gossip, admin API, DNS listeners and the DNSSEC re-sign loop
//! started, and signals handled, until a stop signal. Here rather than in the binary
//! so tests and `meridian demo` reach it.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::config::{Config, Overrides};
use crate::dns::server;
use crate::health::RegionIds;
use crate::health::checker::HealthHandle;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::{Shared, Snapshot};

fn build_or_report(
    config: &Config,
    ids: &mut RegionIds,
    metrics: &Metrics,
) -> Result<Snapshot, anyhow::Error> {
    match Snapshot::build(config, ids, &metrics.policies) {
        Ok(built) => {
            for w in &built.warnings {
                warn!("{w}");
            }
            Ok(built.snapshot)
        }
        Err(errors) => {
            for e in &errors {
                error!("{e}");
            }
            Err(anyhow::anyhow!(
                "{} errors in the configuration",
                errors.len()
            ))
        }
    }
}

/// Serves `config` (loaded from `config_path`, which reloads read again) until SIGTERM
/// or SIGINT; SIGHUP reloads. Binds every socket before probing, serves DNS once the
/// first probe round is in.
pub fn run(config: Config, config_path: &Path, overrides: &Overrides) -> anyhow::Result<()> {
    let mut ids = RegionIds::default();
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(build_or_report(&config, &mut ids, &metrics)?);
    info!(
        zones = snapshot.zones.len(),
        policies = snapshot.policies.policies.len(),
        regions = snapshot.policies.regions.len(),
        "configuration loaded"
    );
    metrics.reloads.with_label_values(&["success"]).inc();
    metrics.last_reload_success.set(crate::reload::now_secs());
    metrics
        .geoip_build_epoch
        .set(snapshot.geo.build_epoch as i64);
    let shared: Shared = Arc::new(ArcSwap::new(snapshot.clone()));
    if let Some(c) = &config.startup.cluster {
        crate::health::probe::set_instance(&c.instance);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Bind first: a port in use fails now, not after the probe round.
        let bound = server::bind(&config.startup.dns)?;
        let http = tokio::net::TcpListener::bind(config.startup.http_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen on HTTP {}: {e}", config.startup.http_listen)
            })?;
        // Gossip binds before probing starts: a taken port fails now.
        let mut anycast_gossip = None;
        let (cluster, side) = match &config.startup.cluster {
            None => (None, None),
            Some(c) => {
                use crate::health::peers::{Local, Peers, Policy};
                let (local_tx, local_rx) = watch::channel(Arc::new(Local::default()));
                let (peers_tx, peers_rx) = watch::channel(Arc::new(Peers::default()));
                let announcing = config.startup.anycast.as_ref().map(|_| {
                    let (mine_tx, mine_rx) = watch::channel(Arc::default());
                    let (theirs_tx, theirs_rx) = watch::channel(Arc::default());
                    anycast_gossip = Some(crate::anycast::run::Gossip {
                        mine: mine_tx,
                        theirs: theirs_rx,
                        peers: peers_rx.clone(),
                        isolation_timeout: c.isolation_timeout,
                    });
                    crate::cluster::AnycastGossip {
                        mine: mine_rx,
                        theirs: theirs_tx,
                    }
                });
                let running =
                    crate::cluster::start(c, local_rx, peers_tx, announcing, metrics.clone())
                        .await?;
                let side = crate::health::checker::ClusterSide {
                    policy: Policy {
                        instance: c.instance.clone(),
                        quorum: c.quorum,
                        isolation_timeout: c.isolation_timeout,
                    },
                    peers: peers_rx,
                    local: Arc::new(local_tx),
                };
                (Some(running), Some(side))
            }
        };
        let health = HealthHandle::start(
            Arc::new(snapshot.health_plan_serving(&shared)),
            config.startup.state_file.clone(),
            config.startup.startup_wait,
            metrics.clone(),
            side,
        );
        let reloader = Arc::new(Reloader::new(
            config_path.to_path_buf(),
            overrides.clone(),
            config.startup.clone(),
            ids,
            shared.clone(),
            health.clone(),
            metrics.clone(),
        ));
        metrics.set_dnssec_expiry(&snapshot.dnssec.earliest_expiry);
        tokio::spawn(resign(reloader.clone(), shared.clone()));
        tokio::spawn(watch_tenant_files(reloader.clone(), shared.clone()));
        let (tx, rx) = watch::channel(false);
        if config.startup.admin_token.is_none() {
            info!("no admin token configured: admin API writes are disabled");
        }
        // Announces nothing before it has risen: started with the checker, so that
        // `rise` counts from the first probe round.
        let anycast = match (
            &config.startup.anycast,
            crate::anycast::run::self_query_target(&bound.local_addrs()),
        ) {
            (Some(a), Some(dns)) => {
                info!(
                    driver = a.driver.name(),
                    prefixes = a.prefixes.len(),
                    "anycast: announcing by health"
                );
                Some(crate::anycast::run::start(crate::anycast::run::Deps {
                    config: a.clone(),
                    ready: health.ready_watch(),
                    view: health.view.clone(),
                    shared: shared.clone(),
                    dns,
                    gossip: anycast_gossip,
                    metrics: metrics.clone(),
                    store: config
                        .startup
                        .state_file
                        .as_ref()
                        .map(|f| f.with_file_name("anycast.json")),
                }))
            }
            _ => None,
        };
        let admin_state = Arc::new(AdminState {
            reloader: reloader.clone(),
            token: config.startup.admin_token.clone(),
            anycast: anycast.clone(),
            exabgp_polled: std::sync::Mutex::new(None),
            tenant_writes: tokio::sync::Mutex::new(()),
        });
        info!(listen = %http.local_addr()?, "serving HTTP: /metrics /status /api/v1");
        let admin = tokio::spawn(crate::admin::serve(http, admin_state, rx.clone()));
        // Serve DNS only once every region has been probed (bounded): answering from
        // guesses right after a restart is how a dead region gets traffic.
        health.wait_ready().await;
        server::log_listening(&bound.local_addrs());
        let rrl = config
            .startup
            .rrl
            .clone()
            .and_then(crate::dns::rrl::Rrl::new)
            .map(Arc::new);
        if let Some(r) = &rrl {
            let c = r.config();
            info!(
                responses_per_second = c.responses_per_second,
                window_seconds = c.window_seconds,
                slip = c.slip,
                "response rate limiting on UDP"
            );
        }
        let ctx = server::Ctx {
            shared,
            health: health.view.clone(),
            metrics,
            rrl,
        };
        // Secondaries learn of a restart with a new serial at once.
        crate::dns::notify::spawn(None, &ctx.shared.load(), ctx.metrics.clone());
        let dns = tokio::spawn(server::run(bound, ctx, config.startup.dns.clone(), rx));
        signals(&reloader).await?;
        if let (Some(a), Some(cfg)) = (&anycast, &config.startup.anycast) {
            // Routers move clients away while this instance still answers the ones
            // in flight. A driver that cannot be told does not hold the stop up.
            info!(drain = ?cfg.drain_on_stop, "anycast: withdrawing every prefix before stopping");
            if tokio::time::timeout(std::time::Duration::from_secs(5), a.stop())
                .await
                .is_err()
            {
                warn!("anycast: the driver was not told of every withdrawal within 5s");
            }
            tokio::time::sleep(cfg.drain_on_stop).await;
        }
        info!("shutting down: finishing open exchanges");
        let _ = tx.send(true);
        let _ = dns.await;
        let _ = admin.await;
        health.flush().await;
        drop(cluster);
        info!("stopped");
        Ok(())
    })
}

/// Waits for SIGTERM/SIGINT; SIGHUP reloads (everything or nothing).
async fn signals(reloader: &Arc<Reloader>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                reloader.reload().await;
            }
        }
    }
}

/// The tenant map files of the snapshot being served, with what identifies a version
/// (modification time and length).
fn tenant_files(
    shared: &Shared,
) -> Vec<(std::path::PathBuf, Option<(std::time::SystemTime, u64)>)> {
    let snap = shared.load();
    let mut files: Vec<std::path::PathBuf> = snap
        .policies
        .policies
        .iter()
        .filter_map(|p| p.home.as_ref().map(|h| h.file.clone()))
        .collect();
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|f| {
            let v = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, v)
        })
        .collect()
}

/// Reloads when a tenant map file changes on disk (looked at every 2 s), so a map
/// written by a deploy tool takes effect without a signal; a broken file is reported
/// and the running map kept, as any reload.
async fn watch_tenant_files(reloader: Arc<Reloader>, shared: Shared) {
    let mut seen = tenant_files(&shared);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = tenant_files(&shared);
        let changed = now.iter().any(|(f, v)| {
            seen.iter()
                .find(|(g, _)| g == f)
                .is_some_and(|(_, w)| w != v)
        });
        if changed {
            info!("a tenant map changed on disk: reloading");
            reloader.reload().await;
            seen = tenant_files(&shared);
        } else {
            seen = now;
        }
    }
}

/// Renews signatures before `refresh` runs out and applies key timing events, by
/// rebuilding the snapshot as a reload does. A configuration broken on disk makes the
/// rebuild fail: the running one keeps serving, retried every minute and logged, and
/// `meridian_dnssec_signature_expiry_seconds` shows the clock running down.
async fn resign(reloader: Arc<Reloader>, shared: Shared) {
    loop {
        let due = shared.load().dnssec.next_resign;
        let now = crate::dnssec::now();
        // Looked at every second: a reload in between (a new key) may have moved it,
        // and reading the snapshot's field costs nothing.
        if due.is_none_or(|at| at > now) {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        info!("DNSSEC: re-signing (signature refresh or key timing event)");
        let report = reloader.reload().await;
        if !report.ok {
            error!("DNSSEC: re-signing failed, the current signatures stay; retrying in a minute");
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    }
}
