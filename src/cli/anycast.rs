//! `meridian anycast exabgp`: ExaBGP's process. It polls the running server's
//! decisions every `anycast.interval` and prints the announce/withdraw lines that move
//! ExaBGP to them (all of them at start: ExaBGP starts knowing nothing). Logs go to
//! stderr, which ExaBGP passes through; stdout carries only commands. It stops when
//! ExaBGP closes the pipe (stdin at its end, or stdout no longer writable).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use meridian::anycast::Route;
use meridian::anycast::exabgp::{Polled, changes, mirror};
use meridian::config::Overrides;
use serde::Deserialize;
use tracing::{error, info, warn};

use super::{Cli, load_config};

#[derive(Deserialize)]
struct Status {
    prefixes: Vec<Polled>,
}

pub fn exabgp(cli: &Cli, overrides: &Overrides, url: Option<String>) -> ExitCode {
    let config = match load_config(&cli.config, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(anycast) = config.startup.anycast.clone() else {
        error!("{}: no anycast: section", cli.config.display());
        return ExitCode::FAILURE;
    };
    let url =
        url.unwrap_or_else(|| format!("http://{}/api/v1/anycast", config.startup.http_listen));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let client = match reqwest::Client::builder()
            .no_proxy()
            .user_agent(format!(
                "{}/{}",
                meridian::anycast::exabgp::USER_AGENT,
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(anycast.interval.max(std::time::Duration::from_millis(500)))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // ExaBGP writes acknowledgements ("done") to our stdin: read them so its pipe
        // never fills, and stop when it closes.
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
            let _ = closed_tx.send(());
        });
        info!(url, prefixes = anycast.prefixes.len(), "anycast exabgp: following the server's decisions");
        let mut held: BTreeMap<ipnet::IpNet, Route> = BTreeMap::new();
        let mut failed = 0u32;
        let mut tick = tokio::time::interval(anycast.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut closed => {
                    info!("anycast exabgp: ExaBGP closed the pipe; stopping");
                    return ExitCode::SUCCESS;
                }
            }
            let polled = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => serde_json::from_slice::<Status>(&b).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            let polled = match polled {
                Ok(s) => {
                    if failed > 0 {
                        info!("anycast exabgp: the server answers again");
                    }
                    failed = 0;
                    Some(s.prefixes)
                }
                Err(e) => {
                    failed = failed.saturating_add(1);
                    if failed == 1 {
                        warn!("anycast exabgp: cannot read {url}: {e}; serving prefixes withdrawn, region prefixes after {} failed polls", anycast.fall);
                    }
                    None
                }
            };
            let next = mirror(&anycast.prefixes, &held, polled.as_deref(), failed, anycast.fall);
            let mut out = std::io::stdout().lock();
            for line in changes(&held, &next, anycast.on_unhealthy) {
                info!("anycast exabgp: {line}");
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    info!("anycast exabgp: ExaBGP closed the pipe; stopping");
                    return ExitCode::SUCCESS;
                }
            }
            held = next;
        }
    })
}
