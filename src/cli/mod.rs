//! The command line: the options every command shares, one file per command, and
//! the one place a configuration is loaded and its errors reported.

mod admin;
mod anycast;
mod check;
mod keygen;
mod query;
mod serve;
mod simulate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::error;

use meridian::config::{Config, Overrides};
use meridian::health::RegionIds;
use meridian::snapshot::Snapshot;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Authoritative geo-DNS server and global traffic manager"
)]
pub struct Cli {
    /// Configuration file; paths inside it are relative to its folder.
    #[arg(long, global = true, default_value = "meridian.yaml")]
    pub config: PathBuf,
    /// DNS listen address (UDP and TCP), repeatable; replaces the file's list.
    #[arg(long = "dns-listen", global = true, value_name = "ADDR:PORT")]
    pub dns_listen: Vec<SocketAddr>,
    /// HTTP listen address.
    #[arg(long = "http-listen", global = true, value_name = "ADDR:PORT")]
    pub http_listen: Option<SocketAddr>,
    /// Log format on stderr.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum AdminAction {
    /// Take a region (or one endpoint) out of answers, e.g. for a game day.
    Drain(Target),
    /// Clear a region's (or endpoint's) override.
    Undrain(Target),
    /// Keep a region (or endpoint) in answers whatever the probes say.
    ForceUp(Target),
    /// Keep a region (or endpoint) out of answers whatever the probes say.
    ForceDown(Target),
    /// Reload the configuration, zones, policies and GeoIP data.
    Reload,
    /// Print the health status as JSON.
    Status,
    /// Print the failover events (each phase against the target) as JSON.
    Failovers {
        #[arg(long)]
        region: Option<String>,
    },
    /// Withdraw an anycast prefix by hand, put it back, or show every prefix.
    #[command(subcommand)]
    Anycast(AnycastAction),
    /// Change one tenant of a `method: home` map (the file is rewritten and reloaded),
    /// show it, or list the maps and the tenants away from home.
    #[command(subcommand)]
    Tenant(TenantAction),
}

#[derive(Subcommand)]
pub enum TenantAction {
    /// Set a tenant's home (now, or from --at on) and optionally its allowed regions.
    Set {
        name: String,
        #[arg(long)]
        home: String,
        /// The regions its data may be served from (space- or comma-separated; "" for any).
        #[arg(long)]
        allowed: Option<String>,
        /// A planned move: the new home answers from this time (RFC 3339).
        #[arg(long)]
        at: Option<String>,
        /// Which map, when the server has several.
        #[arg(long)]
        map: Option<String>,
    },
    /// Remove a tenant from its map.
    Delete {
        name: String,
        #[arg(long)]
        map: Option<String>,
    },
    /// A tenant's home, allowed regions, move, and the region answering now (JSON).
    Show { name: String },
    /// The maps with their counts and the tenants away from home (JSON).
    List,
}

#[derive(Subcommand)]
pub enum AnycastAction {
    /// Withdraw PREFIX whatever its health (kept across restarts).
    Withdraw {
        prefix: String,
        #[arg(long)]
        reason: Option<String>,
        /// Announce again by itself after this long, e.g. 30m.
        #[arg(long = "for", value_name = "DURATION")]
        lasts: Option<String>,
    },
    /// Clear an operator's withdrawal: PREFIX follows its health again.
    Announce { prefix: String },
    /// Print every prefix's route, reason and the driver's state as JSON.
    Show,
}

#[derive(Subcommand)]
pub enum SloCommand {
    /// The rules for two objectives: failovers within their target, and answers that
    /// named a healthy region.
    Rules {
        /// Share of failovers whose cache bound stays within the region's failover_target.
        #[arg(long, default_value_t = 0.99)]
        failover_objective: f64,
        /// Share of policy answers that name a healthy region.
        #[arg(long, default_value_t = 0.999)]
        answer_objective: f64,
    },
}

#[derive(Subcommand)]
pub enum AnycastCommand {
    /// Run as ExaBGP's process (`process ... { run meridian anycast exabgp --config
    /// FILE; encoder text; }`): print ExaBGP's announce/withdraw lines for the running
    /// server's decisions.
    Exabgp {
        /// The server's `/api/v1/anycast` (default: from the configuration's http.listen).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct Target {
    pub region: String,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Drain only this share of the region's clients (0 < F <= 1; a stable hash of the
    /// client subnet picks which): a progressive rollout or a partial game day.
    #[arg(long)]
    pub fraction: Option<f64>,
    /// End the override by itself after this long, e.g. 30m (kept across restarts).
    #[arg(long = "for", value_name = "DURATION")]
    pub lasts: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve DNS in the foreground until SIGTERM or SIGINT; SIGHUP reloads.
    Serve,
    /// Validate the configuration and every zone without serving.
    Check,
    /// Drive a running server's admin API (drains, forced states, reload, status).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
        /// Bearer token (default: MERIDIAN_ADMIN_TOKEN).
        #[arg(long, global = true)]
        token: Option<String>,
    },
    /// Serve the example deployment with three local HTTP backends as its regions' health
    /// endpoints, and play a short game day against eu-west while showing the answers.
    Demo,
    /// Replay a game-day scenario against the configuration on a virtual clock: region
    /// loads against capacities, transitions, overloads, per step.
    Simulate {
        /// The scenario (YAML: duration, step, clients, demand, events).
        #[arg(long)]
        scenario: PathBuf,
        /// Also draw region load over time as an SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Plain failover for comparison: capacities ignored when moving clients.
        #[arg(long)]
        no_spill: bool,
    },
    /// Make a DNSSEC key pair for ZONE in the keys folder (BIND's format) and print
    /// the DS records to give the parent zone.
    Keygen {
        /// The zone, e.g. example.com
        zone: String,
        /// ecdsap256sha256 (13) or ed25519 (15).
        #[arg(long, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// A key-signing key (flags 257) that signs only the DNSKEY RRset once the zone
        /// has a ZSK; default: one combined signing key.
        #[arg(long, conflicts_with = "zsk")]
        ksk: bool,
        /// A zone-signing key (flags 256).
        #[arg(long)]
        zsk: bool,
        /// When the key enters the DNSKEY RRset: now, +DURATION (e.g. +2d) or
        /// YYYYMMDDHHMMSS (UTC), as dnssec-keygen -P.
        #[arg(long)]
        publish: Option<String>,
        /// When it starts signing (dnssec-keygen -A).
        #[arg(long)]
        activate: Option<String>,
        /// When it stops signing (dnssec-keygen -I).
        #[arg(long)]
        inactive: Option<String>,
        /// When it leaves the DNSKEY RRset (dnssec-keygen -D).
        #[arg(long)]
        delete: Option<String>,
    },
    /// Service-level objectives: print Prometheus recording and multi-window,
    /// multi-burn-rate alerting rules.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Anycast helpers (the ExaBGP process).
    Anycast {
        #[command(subcommand)]
        command: AnycastCommand,
    },
    /// Print the answer the configuration gives a client, and why.
    Query {
        /// The name to ask about.
        name: String,
        /// Query type (A, AAAA, CNAME, TXT, MX, ...).
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// The client, as an address or a prefix as ECS carries it (IP or IP/LEN).
        #[arg(long)]
        client: Option<String>,
        /// Take this region out, as if it were down (repeatable).
        #[arg(long)]
        down: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Loads the configuration, printing every error (`FILE:LINE:COL: message`) and
/// their count when it does not load.
pub fn load_config(path: &Path, overrides: &Overrides) -> Result<Config, ExitCode> {
    Config::load(path, overrides).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{} errors in {}", errors.len(), path.display());
        ExitCode::FAILURE
    })
}

/// The configuration and a snapshot of it for the offline commands (`query`,
/// `simulate`); every error printed, `None` when there were any.
pub fn load_snapshot(cli: &Cli, overrides: &Overrides) -> Option<(Config, Snapshot)> {
    let config = load_config(&cli.config, overrides).ok()?;
    let built = Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
        .map_err(|errors| {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
        })
        .ok()?;
    Some((config, built.snapshot))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> ExitCode {
    let overrides = Overrides {
        dns_listen: cli.dns_listen.clone(),
        http_listen: cli.http_listen,
    };
    match cli.command {
        Command::Check => check::run(&cli, &overrides),
        Command::Keygen {
            ref zone,
            ref algorithm,
            ksk,
            zsk,
            ref publish,
            ref activate,
            ref inactive,
            ref delete,
        } => keygen::run(
            &cli,
            zone,
            algorithm,
            (ksk, zsk),
            [publish, activate, inactive, delete],
        ),
        Command::Admin {
            ref action,
            ref token,
        } => admin::run(&cli, &overrides, action, token.clone()),
        Command::Slo {
            command:
                SloCommand::Rules {
                    failover_objective,
                    answer_objective,
                },
        } => {
            for (name, v) in [
                ("--failover-objective", failover_objective),
                ("--answer-objective", answer_objective),
            ] {
                if !(v > 0.0 && v < 1.0) {
                    eprintln!("{name} {v}: an objective is a fraction between 0 and 1, e.g. 0.999");
                    return ExitCode::FAILURE;
                }
            }
            print!(
                "{}",
                meridian::slo::rules(failover_objective, answer_objective)
            );
            ExitCode::SUCCESS
        }
        Command::Anycast {
            command: AnycastCommand::Exabgp { ref url },
        } => {
            init_logging(cli.log_format);
            anycast::exabgp(&cli, &overrides, url.clone())
        }
        Command::Query {
            ref name,
            ref qtype,
            ref client,
            ref down,
            json,
        } => query::run(&cli, &overrides, name, qtype, client.as_deref(), down, json),
        Command::Simulate {
            ref scenario,
            ref svg,
            json,
            no_spill,
        } => simulate::run(&cli, &overrides, scenario, svg.as_deref(), json, !no_spill),
        Command::Demo => {
            init_logging(cli.log_format);
            match serve::demo(&cli, &overrides) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            init_logging(cli.log_format);
            match serve::serve(&cli, &overrides) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
