//! `cluster:`: the instances of the NS set share health through authenticated gossip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::report::{Report, S};
use crate::health::peers::Quorum;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterSpec {
    instance: Option<S<String>>,
    listen: S<String>,
    /// The address peers reach this one at; default: `listen`.
    advertise: Option<S<String>>,
    #[serde(default)]
    peers: Vec<S<String>>,
    secret_file: S<PathBuf>,
    quorum: Option<S<QuorumSpec>>,
    isolation_timeout: Option<S<String>>,
    gossip_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum QuorumSpec {
    Count(usize),
    Word(String),
}

/// `cluster:`: the instances of the NS set share health through gossip.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    pub instance: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    /// Seed addresses (`IP:PORT` or `HOST:PORT`); more are learnt from them.
    pub peers: Vec<String>,
    /// The shared key every gossip datagram is authenticated with.
    pub secret: Vec<u8>,
    pub quorum: Quorum,
    pub isolation_timeout: Duration,
    pub gossip_interval: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("instance", &self.instance)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .field("quorum", &self.quorum)
            .field("isolation_timeout", &self.isolation_timeout)
            .field("gossip_interval", &self.gossip_interval)
            .finish_non_exhaustive()
    }
}

/// Shortest shared key accepted: 128 bits.
const MIN_SECRET: usize = 16;

pub(super) fn cluster(
    c: &S<ClusterSpec>,
    base: &Path,
    r: &mut Report<'_>,
) -> Option<ClusterConfig> {
    let spec = &c.value;
    let errors = r.errors.len();
    let instance = match &spec.instance {
        Some(i)
            if i.value.is_empty()
                || i.value.len() > 63
                || !i
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            r.at(
                i,
                format!(
                    "cluster.instance {:?}: 1 to 63 letters, digits, '-', '_' or '.'",
                    i.value
                ),
            );
            String::new()
        }
        Some(i) => i.value.clone(),
        None => crate::host::name(),
    };
    let addr = |r: &mut Report<'_>, s: &S<String>, key: &str| match s.value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.at(s, format!("{key}: {:?} is not IP:PORT", s.value));
            None
        }
    };
    let listen = addr(r, &spec.listen, "cluster.listen");
    let advertise = match &spec.advertise {
        Some(a) => addr(r, a, "cluster.advertise"),
        None => listen,
    };
    if let (Some(a), None) = (advertise, &spec.advertise)
        && a.ip().is_unspecified()
    {
        r.at(&spec.listen, "cluster.listen is a wildcard address: set cluster.advertise to the address peers reach this instance at");
    }
    let mut peers = Vec::new();
    for p in &spec.peers {
        let ok = p.value.parse::<SocketAddr>().is_ok()
            || p.value
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if ok {
            peers.push(p.value.clone());
        } else {
            r.at(
                p,
                format!("cluster.peers: {:?} is not IP:PORT or HOST:PORT", p.value),
            );
        }
    }
    let secret_path = base.join(&spec.secret_file.value);
    let secret = match std::fs::read(&secret_path) {
        Ok(bytes) => {
            let key = bytes.trim_ascii().to_vec();
            if key.len() < MIN_SECRET {
                r.at(&spec.secret_file, format!("cluster.secret_file {}: the key is {} bytes, at least {MIN_SECRET} are needed (e.g. `head -c 32 /dev/urandom | base64 > {}`)", secret_path.display(), key.len(), spec.secret_file.value.display()));
            }
            key
        }
        Err(e) => {
            r.at(
                &spec.secret_file,
                format!("cluster.secret_file {}: {e}", secret_path.display()),
            );
            Vec::new()
        }
    };
    let quorum = match &spec.quorum {
        None => Quorum::Majority,
        Some(q) => match &q.value {
            QuorumSpec::Count(0) => {
                r.at(
                    q,
                    "cluster.quorum: a number of vantage points must be at least 1",
                );
                Quorum::Majority
            }
            QuorumSpec::Count(n) => Quorum::Count(*n),
            QuorumSpec::Word(w) => match w.as_str() {
                "majority" => Quorum::Majority,
                "all" => Quorum::All,
                "any" => Quorum::Any,
                other => {
                    r.at(
                        q,
                        format!("cluster.quorum {other:?}: majority, all, any or a number"),
                    );
                    Quorum::Majority
                }
            },
        },
    };
    let isolation_timeout = r.duration(
        "cluster.isolation_timeout",
        spec.isolation_timeout.as_ref(),
        Duration::from_secs(30),
    );
    let gossip_interval = r.duration(
        "cluster.gossip_interval",
        spec.gossip_interval.as_ref(),
        Duration::from_secs(1),
    );
    if let Some(g) = &spec.gossip_interval
        && !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&gossip_interval)
    {
        r.at(g, "cluster.gossip_interval must be between 10ms and 60s");
    }
    if let Some(t) = &spec.isolation_timeout
        && isolation_timeout < gossip_interval * 3
    {
        r.at(
            t,
            "cluster.isolation_timeout must be at least three gossip intervals",
        );
    }
    if r.errors.len() > errors {
        return None;
    }
    Some(ClusterConfig {
        instance,
        listen: listen?,
        advertise: advertise?,
        peers,
        secret,
        quorum,
        isolation_timeout,
        gossip_interval,
    })
}
