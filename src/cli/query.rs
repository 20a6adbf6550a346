//! `meridian query`: the answer the configuration gives a client, and why.

use std::process::ExitCode;

use meridian::config::Overrides;

use super::{Cli, load_snapshot};

pub fn run(
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
