//! `transfer:`: who may copy the zones (AXFR, IXFR answered as AXFR), with which TSIG
//! keys, and whom to tell when a zone's serial changes (NOTIFY). Applied on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferSpec {
    #[serde(default)]
    tsig_keys: std::collections::BTreeMap<String, S<TsigKeySpec>>,
    #[serde(default)]
    allow: Vec<S<TransferAllowSpec>>,
    #[serde(default)]
    notify: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TsigKeySpec {
    algorithm: S<String>,
    secret_file: S<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferAllowSpec {
    from: Vec<S<String>>,
    key: Option<S<String>>,
}

/// `transfer:`: who may copy the zones (AXFR, IXFR answered as AXFR) and whom to tell
/// when a zone's serial changes (NOTIFY). Applied on reload.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// By the name the configuration gives them (also the TSIG key name on the wire).
    pub keys: Vec<(String, domain::tsig::Key)>,
    pub allow: Vec<TransferAllow>,
    pub notify: Vec<SocketAddr>,
}

/// Sources that may transfer, and the TSIG key they must sign with (`None`: the
/// source address alone admits them).
#[derive(Debug, Clone)]
pub struct TransferAllow {
    pub from: Vec<ipnet::IpNet>,
    pub key: Option<String>,
}

impl TransferConfig {
    /// The rules admitting `peer`.
    pub fn rules_for(&self, peer: std::net::IpAddr) -> impl Iterator<Item = &TransferAllow> {
        self.allow
            .iter()
            .filter(move |a| a.from.iter().any(|n| n.contains(&peer)))
    }

    pub fn key(&self, name: &str) -> Option<&domain::tsig::Key> {
        self.keys.iter().find(|(n, _)| n == name).map(|(_, k)| k)
    }
}

pub(super) fn transfer(
    t: &S<TransferSpec>,
    base: &Path,
    r: &mut Report<'_>,
) -> Option<TransferConfig> {
    let spec = &t.value;
    let errors = r.errors.len();
    let mut keys = Vec::new();
    for (name, k) in &spec.tsig_keys {
        let key_name = match domain::tsig::KeyName::from_str(name) {
            Ok(n) => Some(n),
            Err(e) => {
                r.at(
                    k,
                    format!("transfer.tsig_keys {name:?}: not a key name ({e})"),
                );
                None
            }
        };
        let algorithm = match domain::tsig::Algorithm::from_str(&k.value.algorithm.value) {
            Ok(a) => Some(a),
            Err(_) => {
                r.at(
                    &k.value.algorithm,
                    format!(
                        "transfer.tsig_keys.{name}.algorithm {:?}: hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1",
                        k.value.algorithm.value
                    ),
                );
                None
            }
        };
        let path = base.join(&k.value.secret_file.value);
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => {
                // The secret as BIND's `secret "..."` and `tsig-keygen` write it: base64.
                let text = text.trim();
                let text = text
                    .strip_prefix("secret")
                    .map(|t| t.trim().trim_end_matches(';').trim().trim_matches('"'))
                    .unwrap_or(text);
                match domain::utils::base64::decode::<Vec<u8>>(text) {
                    Ok(b) if b.is_empty() => {
                        r.at(
                            &k.value.secret_file,
                            format!(
                                "transfer.tsig_keys.{name}.secret_file {}: the secret is empty",
                                path.display()
                            ),
                        );
                        None
                    }
                    Ok(b) => Some(b),
                    Err(e) => {
                        r.at(&k.value.secret_file, format!("transfer.tsig_keys.{name}.secret_file {}: the secret is not base64 ({e}); make one with `head -c 32 /dev/urandom | base64`", path.display()));
                        None
                    }
                }
            }
            Err(e) => {
                r.at(
                    &k.value.secret_file,
                    format!(
                        "transfer.tsig_keys.{name}.secret_file {}: {e}",
                        path.display()
                    ),
                );
                None
            }
        };
        if let (Some(n), Some(a), Some(s)) = (key_name, algorithm, secret) {
            match domain::tsig::Key::new(a, &s, n, None, None) {
                Ok(key) => keys.push((name.clone(), key)),
                Err(e) => r.at(k, format!("transfer.tsig_keys.{name}: {e}")),
            }
        }
    }
    let mut allow = Vec::new();
    for a in &spec.allow {
        let mut from = Vec::new();
        for f in &a.value.from {
            let net = f.value.parse::<ipnet::IpNet>().ok().or_else(|| {
                f.value
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            match net {
                Some(n) if n.trunc() == n => from.push(n),
                Some(_) => r.at(
                    f,
                    format!("transfer.allow.from: {} has host bits set", f.value),
                ),
                None => r.at(
                    f,
                    format!(
                        "transfer.allow.from: {:?} is not an address or CIDR",
                        f.value
                    ),
                ),
            }
        }
        if from.is_empty() && a.value.from.is_empty() {
            r.at(a, "transfer.allow: `from` lists no source");
        }
        if let Some(k) = &a.value.key
            && !spec.tsig_keys.contains_key(&k.value)
        {
            r.at(
                k,
                format!(
                    "transfer.allow.key {:?} is not in transfer.tsig_keys",
                    k.value
                ),
            );
        }
        if a.value.key.is_none() {
            r.warn_at(
                a,
                "transfer.allow without `key`: these sources transfer on their address alone (no TSIG)",
            );
        }
        allow.push(TransferAllow {
            from,
            key: a.value.key.as_ref().map(|k| k.value.clone()),
        });
    }
    let mut notify = Vec::new();
    for n in &spec.notify {
        match n.value.parse::<SocketAddr>() {
            Ok(a) => notify.push(a),
            Err(_) => match n.value.parse::<std::net::IpAddr>() {
                Ok(ip) => notify.push(SocketAddr::new(ip, 53)),
                Err(_) => r.at(
                    n,
                    format!("transfer.notify: {:?} is not IP or IP:PORT", n.value),
                ),
            },
        }
    }
    if r.errors.len() > errors {
        return None;
    }
    Some(TransferConfig {
        keys,
        allow,
        notify,
    })
}
