//! CLI wiring and signals only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info, warn};

use meridian::admin::AdminState;
use meridian::config::{Config, Overrides};
use meridian::dns::server;
use meridian::health::RegionIds;
use meridian::health::checker::HealthHandle;
use meridian::metrics::Metrics;
use meridian::name;
use meridian::reload::Reloader;
use meridian::snapshot::{Shared, Snapshot};

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Authoritative geo-DNS server and global traffic manager"
)]
struct Cli {
    /// Configuration file; paths inside it are relative to its folder.
    #[arg(long, global = true, default_value = "meridian.yaml")]
    config: PathBuf,
    /// DNS listen address (UDP and TCP), repeatable; replaces the file's list.
    #[arg(long = "dns-listen", global = true, value_name = "ADDR:PORT")]
    dns_listen: Vec<SocketAddr>,
    /// HTTP listen address.
    #[arg(long = "http-listen", global = true, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// Log format on stderr.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum AdminAction {
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
}

#[derive(clap::Args)]
struct Target {
    region: String,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    /// Drain only this share of the region's clients (0 < F <= 1; a stable hash of the
    /// client subnet picks which): a progressive rollout or a partial game day.
    #[arg(long)]
    fraction: Option<f64>,
    /// End the override by itself after this long, e.g. 30m (kept across restarts).
    #[arg(long = "for", value_name = "DURATION")]
    lasts: Option<String>,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        dns_listen: cli.dns_listen.clone(),
        http_listen: cli.http_listen,
    };
    match cli.command {
        Command::Check => check(&cli, &overrides),
        Command::Keygen {
            ref zone,
            ref algorithm,
            ksk,
            zsk,
            ref publish,
            ref activate,
            ref inactive,
            ref delete,
        } => keygen(
            &cli,
            zone,
            algorithm,
            (ksk, zsk),
            [publish, activate, inactive, delete],
        ),
        Command::Admin {
            ref action,
            ref token,
        } => admin(&cli, &overrides, action, token.clone()),
        Command::Query {
            ref name,
            ref qtype,
            ref client,
            ref down,
            json,
        } => query(&cli, &overrides, name, qtype, client.as_deref(), down, json),
        Command::Simulate {
            ref scenario,
            ref svg,
            json,
            no_spill,
        } => simulate(&cli, &overrides, scenario, svg.as_deref(), json, !no_spill),
        Command::Demo => {
            init_logging(cli.log_format);
            match demo(&cli, &overrides) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            init_logging(cli.log_format);
            match serve(&cli, &overrides) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `now`, `+DURATION` or `YYYYMMDDHHMMSS`, as dnssec-keygen takes them.
fn key_time(flag: &str, s: &str, now: u64) -> Result<u64, String> {
    use meridian::dnssec::keys::parse_timestamp;
    if s == "now" {
        return Ok(now);
    }
    if let Some(d) = s.strip_prefix('+') {
        return humantime::parse_duration(d)
            .map(|d| now + d.as_secs())
            .map_err(|e| format!("--{flag} {s:?}: {e}"));
    }
    parse_timestamp(s)
        .ok_or_else(|| format!("--{flag} {s:?}: now, +DURATION (e.g. +2d) or YYYYMMDDHHMMSS"))
}

fn keygen(
    cli: &Cli,
    zone: &str,
    algorithm: &str,
    (ksk, zsk): (bool, bool),
    times: [&Option<String>; 4],
) -> ExitCode {
    use meridian::dnssec::keys::{self, Algorithm, Role, Timing};
    let fail = |m: String| {
        eprintln!("{m}");
        ExitCode::FAILURE
    };
    let Some(alg) = Algorithm::from_name(algorithm) else {
        return fail(format!(
            "--algorithm {algorithm:?}: ecdsap256sha256 (13) or ed25519 (15)"
        ));
    };
    // The keys folder from the configuration when it loads; `keys/` beside it else.
    let keys_dir = match Config::load(&cli.config, &Overrides::default()) {
        Ok(c) => c.dnssec.keys_dir,
        Err(_) => cli
            .config
            .parent()
            .map_or_else(|| PathBuf::from("keys"), |p| p.join("keys")),
    };
    let now = meridian::dnssec::now();
    let mut parsed = [None; 4];
    for ((slot, given), flag) in parsed
        .iter_mut()
        .zip(times)
        .zip(["publish", "activate", "inactive", "delete"])
    {
        if let Some(s) = given {
            match key_time(flag, s, now) {
                Ok(t) => *slot = Some(t),
                Err(e) => return fail(e),
            }
        }
    }
    let [publish, activate, inactive, delete] = parsed;
    let timing = Timing {
        // As dnssec-keygen: published and active now unless told otherwise.
        publish: publish.or(Some(now)),
        activate: activate.or(Some(now)),
        inactive,
        delete,
    };
    let role = match (ksk, zsk) {
        (true, _) => Role::Ksk,
        (_, true) => Role::Zsk,
        _ => Role::Combined,
    };
    let generated = match keys::generate(zone, alg, role, timing, now) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(&keys_dir) {
        return fail(format!("{}: {e}", keys_dir.display()));
    }
    let public = keys_dir.join(format!("{}.key", generated.base));
    let private = keys_dir.join(format!("{}.private", generated.base));
    let written = std::fs::write(&public, &generated.public_text).and_then(|()| {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&private)?
            .write_all(generated.private_text.as_bytes())
    });
    if let Err(e) = written {
        return fail(format!("{}: {e}", private.display()));
    }
    println!("{}", public.display());
    println!("{}", private.display());
    let apex = name::from_text(zone, &[0])
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !matches!(role, Role::Zsk) {
        println!("; DS for the parent zone of {zone}:");
        println!(
            "{}",
            keys::ds_text(&apex, generated.tag, alg.number(), &generated.dnskey)
        );
    }
    ExitCode::SUCCESS
}

fn check(cli: &Cli, overrides: &Overrides) -> ExitCode {
    let config = match Config::load(&cli.config, overrides) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
            return ExitCode::FAILURE;
        }
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

fn admin(
    cli: &Cli,
    overrides: &Overrides,
    action: &AdminAction,
    token: Option<String>,
) -> ExitCode {
    let config = match Config::load(&cli.config, overrides) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", config.startup.http_listen);
    let token = token.or_else(|| config.startup.admin_token.clone());
    let (method_post, path, body) = match action {
        AdminAction::Reload => (true, "/api/v1/reload".to_string(), None),
        AdminAction::Status => (false, "/api/v1/status".to_string(), None),
        AdminAction::Drain(t)
        | AdminAction::Undrain(t)
        | AdminAction::ForceUp(t)
        | AdminAction::ForceDown(t) => {
            let verb = match action {
                AdminAction::Drain(_) => "drain",
                AdminAction::Undrain(_) => "undrain",
                AdminAction::ForceUp(_) => "force-up",
                _ => "force-down",
            };
            let path = match &t.endpoint {
                Some(e) => format!("/api/v1/regions/{}/endpoints/{e}/{verb}", t.region),
                None => format!("/api/v1/regions/{}/{verb}", t.region),
            };
            // Absent options go as null, which the API reads as not given.
            let body =
                serde_json::json!({ "reason": t.reason, "fraction": t.fraction, "for": t.lasts });
            (true, path, Some(body))
        }
    };
    let run = async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = if method_post {
            client.post(format!("{base}{path}"))
        } else {
            client.get(format!("{base}{path}"))
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("{base}: {e}"))?;
        let ok = resp.status().is_success();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((ok, text))
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run) {
        Ok((true, text)) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Ok((false, text)) => {
            eprintln!("{}", text.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration and a snapshot of it for the offline commands (`query`,
/// `simulate`); every error printed, `None` when there were any.
fn load_snapshot(cli: &Cli, overrides: &Overrides) -> Option<(Config, Snapshot)> {
    let print = |errors: &[meridian::diag::Diagnostic]| {
        for e in errors {
            eprintln!("{e}");
        }
    };
    let config = Config::load(&cli.config, overrides)
        .map_err(|e| print(&e))
        .ok()?;
    let built = Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
        .map_err(|e| print(&e))
        .ok()?;
    Some((config, built.snapshot))
}

fn simulate(
    cli: &Cli,
    overrides: &Overrides,
    scenario: &std::path::Path,
    svg: Option<&std::path::Path>,
    json: bool,
    spill: bool,
) -> ExitCode {
    let Some((_, snapshot)) = load_snapshot(cli, overrides) else {
        return ExitCode::FAILURE;
    };
    let scenario = match meridian::simulate::Scenario::load(scenario, &snapshot) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let report = match meridian::simulate::run(&snapshot, &scenario, spill) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = svg
        && let Err(e) = std::fs::write(path, meridian::simulate::render_svg(&report))
    {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", meridian::simulate::render_text(&report));
    }
    ExitCode::SUCCESS
}

fn query(
    cli: &Cli,
    overrides: &Overrides,
    name: &str,
    qtype: &str,
    client: Option<&str>,
    down: &[String],
    json: bool,
) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("{msg}");
        ExitCode::FAILURE
    };
    let Some(qtype) = meridian::explain::qtype_from_str(qtype) else {
        return fail(format!("unknown query type {qtype}"));
    };
    let client = match client.map(|c| {
        c.parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
    }) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return fail(format!(
                "--client {}: not an IP or IP/LEN",
                client.unwrap_or_default()
            ));
        }
    };
    let Some((config, snapshot)) = load_snapshot(cli, overrides) else {
        return ExitCode::FAILURE;
    };
    let health =
        meridian::explain::last_known_view(&snapshot, config.startup.state_file.as_deref());
    match meridian::explain::explain(&snapshot, &health, name, qtype, client, down) {
        Ok(e) if json => match serde_json::to_string_pretty(&e) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(err.to_string()),
        },
        Ok(e) => {
            print!("{}", meridian::explain::render_text(&e));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

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

/// `meridian demo`: see `meridian::demo`.
fn demo(cli: &Cli, overrides: &Overrides) -> anyhow::Result<()> {
    use meridian::demo;
    let config = Config::load(&cli.config, overrides).map_err(|errors| {
        for e in &errors {
            error!("{e}");
        }
        anyhow::anyhow!("{} errors in {}", errors.len(), cli.config.display())
    })?;
    let dir = std::env::temp_dir().join(format!("meridian-demo-{}", std::process::id()));
    let (path, regions) = demo::write_config(&config, &dir).map_err(|e| anyhow::anyhow!(e))?;
    let backends = regions
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let port = demo::BASE_PORT + k as u16;
            demo::Backend::start(r, port).map_err(|e| {
                anyhow::anyhow!("cannot listen on 127.0.0.1:{port} for {r}'s backend: {e}")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dns = config
        .startup
        .dns
        .listen
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no DNS listen address"))?;
    let http = config.startup.http_listen;
    info!(config = %path.display(), "demo: serving the example deployment with local backends");
    std::thread::spawn(move || demo::play(dns, http, &backends, "eu-west"));
    serve_config(&path, &Overrides::default())
}

fn serve(cli: &Cli, overrides: &Overrides) -> anyhow::Result<()> {
    serve_config(&cli.config, overrides)
}

fn serve_config(config_path: &std::path::Path, overrides: &Overrides) -> anyhow::Result<()> {
    let config = Config::load(config_path, overrides).map_err(|errors| {
        for e in &errors {
            error!("{e}");
        }
        anyhow::anyhow!("{} errors in {}", errors.len(), config_path.display())
    })?;
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
    metrics
        .last_reload_success
        .set(meridian::reload::now_secs());
    metrics
        .geoip_build_epoch
        .set(snapshot.geo.build_epoch as i64);
    let shared: Shared = Arc::new(ArcSwap::new(snapshot.clone()));
    if let Some(c) = &config.startup.cluster {
        meridian::health::probe::set_instance(&c.instance);
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
        let (cluster, side) = match &config.startup.cluster {
            None => (None, None),
            Some(c) => {
                use meridian::health::peers::{Local, Peers, Policy};
                let (local_tx, local_rx) = watch::channel(Arc::new(Local::default()));
                let (peers_tx, peers_rx) = watch::channel(Arc::new(Peers::default()));
                let running =
                    meridian::cluster::start(c, local_rx, peers_tx, metrics.clone()).await?;
                let side = meridian::health::checker::ClusterSide {
                    policy: Policy {
                        instance: c.instance.clone(),
                        quorum: c.quorum,
                        isolation_timeout: c.isolation_timeout,
                    },
                    peers: peers_rx,
                    local: local_tx,
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
        let (tx, rx) = watch::channel(false);
        if config.startup.admin_token.is_none() {
            info!("no admin token configured: admin API writes are disabled");
        }
        let admin_state = Arc::new(AdminState {
            reloader: reloader.clone(),
            token: config.startup.admin_token.clone(),
        });
        info!(listen = %http.local_addr()?, "serving HTTP: /metrics /status /api/v1");
        let admin = tokio::spawn(meridian::admin::serve(http, admin_state, rx.clone()));
        // Serve DNS only once every region has been probed (bounded): answering from
        // guesses right after a restart is how a dead region gets traffic.
        health.wait_ready().await;
        server::log_listening(&bound.local_addrs());
        let rrl = config
            .startup
            .rrl
            .clone()
            .and_then(meridian::dns::rrl::Rrl::new)
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
        meridian::dns::notify::spawn(None, &ctx.shared.load(), ctx.metrics.clone());
        let dns = tokio::spawn(server::run(bound, ctx, config.startup.dns.clone(), rx));
        signals(&reloader).await?;
        info!("shutting down: finishing open exchanges");
        let _ = tx.send(true);
        let _ = dns.await;
        let _ = admin.await;
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

/// Per zone: signed or not, with which keys in which state, when signatures expire.
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

/// Renews signatures before `refresh` runs out and applies key timing events, by
/// rebuilding the snapshot as a reload does. A configuration broken on disk makes the
/// rebuild fail: the running one keeps serving, retried every minute and logged, and
/// `meridian_dnssec_signature_expiry_seconds` shows the clock running down.
async fn resign(reloader: Arc<Reloader>, shared: Shared) {
    loop {
        let due = shared.load().dnssec.next_resign;
        let now = meridian::dnssec::now();
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
