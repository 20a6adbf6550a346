//! `meridian admin`: a running server's admin API from the command line (drains,
//! forced states, reload, status), with the address and token of the configuration.

use std::process::ExitCode;

use meridian::config::Overrides;

use super::{AdminAction, AnycastAction, Cli, TenantAction, load_config};

const GET: &str = "GET";
const POST: &str = "POST";

pub fn run(
    cli: &Cli,
    overrides: &Overrides,
    action: &AdminAction,
    token: Option<String>,
) -> ExitCode {
    let config = match load_config(&cli.config, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let base = format!("http://{}", config.startup.http_listen);
    let token = token.or_else(|| config.startup.admin_token.clone());
    let (method, path, body) = match action {
        AdminAction::Reload => (POST, "/api/v1/reload".to_string(), None),
        AdminAction::Status => (GET, "/api/v1/status".to_string(), None),
        AdminAction::Tenant(TenantAction::List) => (GET, "/api/v1/tenants".to_string(), None),
        AdminAction::Tenant(TenantAction::Show { name }) => {
            (GET, format!("/api/v1/tenants/{name}"), None)
        }
        AdminAction::Tenant(TenantAction::Delete { name, map }) => (
            "DELETE",
            match map {
                Some(m) => format!("/api/v1/tenants/{name}?map={m}"),
                None => format!("/api/v1/tenants/{name}"),
            },
            None,
        ),
        AdminAction::Tenant(TenantAction::Set {
            name,
            home,
            allowed,
            at,
            map,
        }) => {
            let allowed: Option<Vec<&str>> = allowed
                .as_deref()
                .map(|a| a.split([' ', ',']).filter(|x| !x.is_empty()).collect());
            (
                "PUT",
                format!("/api/v1/tenants/{name}"),
                Some(serde_json::json!({ "home": home, "allowed": allowed, "at": at, "map": map })),
            )
        }
        AdminAction::Failovers { region } => (
            GET,
            match region {
                Some(r) => format!("/api/v1/failovers?region={r}"),
                None => "/api/v1/failovers".to_string(),
            },
            None,
        ),
        AdminAction::Anycast(AnycastAction::Show) => (GET, "/api/v1/anycast".to_string(), None),
        AdminAction::Anycast(AnycastAction::Withdraw {
            prefix,
            reason,
            lasts,
        }) => (
            POST,
            "/api/v1/anycast/withdraw".to_string(),
            Some(serde_json::json!({ "prefix": prefix, "reason": reason, "for": lasts })),
        ),
        AdminAction::Anycast(AnycastAction::Announce { prefix }) => (
            POST,
            "/api/v1/anycast/announce".to_string(),
            Some(serde_json::json!({ "prefix": prefix })),
        ),
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
            (POST, path, Some(body))
        }
    };
    let run = async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = client.request(method, format!("{base}{path}"));
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
