//! `http:`: the admin listener and the token its writes need (startup settings).

use std::net::SocketAddr;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSpec {
    listen: Option<S<String>>,
    /// Bearer token for the admin API's writes; MERIDIAN_ADMIN_TOKEN overrides it.
    admin_token: Option<String>,
}

/// The admin listener (`--http-listen` replaces `http.listen`) and the admin token
/// (`MERIDIAN_ADMIN_TOKEN` replaces `http.admin_token`; empty: writes disabled).
pub(super) fn validate(
    http: &HttpSpec,
    listen_flag: Option<SocketAddr>,
    r: &mut Report<'_>,
) -> (SocketAddr, Option<String>) {
    let default = SocketAddr::from(([127, 0, 0, 1], 9153));
    let listen = match &http.listen {
        None => default,
        Some(s) => s.value.parse().unwrap_or_else(|_| {
            r.at(s, format!("http.listen: {:?} is not IP:PORT", s.value));
            default
        }),
    };
    let token = std::env::var("MERIDIAN_ADMIN_TOKEN")
        .ok()
        .or_else(|| http.admin_token.clone())
        .filter(|t| !t.is_empty());
    (listen_flag.unwrap_or(listen), token)
}
