//! `meridian keygen`: a DNSSEC key pair in BIND's format, and the DS for the parent.

use std::path::PathBuf;
use std::process::ExitCode;

use meridian::config::{Config, Overrides};
use meridian::name;

use super::Cli;

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

pub fn run(
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
