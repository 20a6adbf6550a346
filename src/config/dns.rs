//! `dns:`: the listeners (addresses, TCP limits, sockets per address) and the EDNS
//! UDP size. The listeners are startup settings; the EDNS size applies on reload.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DnsSpec {
    listen: Option<S<Vec<S<String>>>>,
    edns_udp_size: Option<S<u16>>,
    tcp_idle_timeout: Option<S<String>>,
    tcp_max_connections: Option<usize>,
    tcp_max_queries: Option<S<u32>>,
    udp_sockets_per_address: Option<usize>,
    nsid: Option<S<NsidSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum NsidSpec {
    On(bool),
    Text(String),
}

/// Longest NSID payload accepted: what one sees in `dig +nsid` (RFC 5001 sets none).
const MAX_NSID: usize = 128;

/// `dns.nsid`: `None` (off), or what to answer an NSID option with; `true` is this
/// instance's name (`cluster.instance`, else the host name).
pub(super) fn nsid(dns: &DnsSpec, instance: Option<&str>, r: &mut Report<'_>) -> Option<Box<[u8]>> {
    let s = dns.nsid.as_ref()?;
    let text = match &s.value {
        NsidSpec::On(false) => return None,
        NsidSpec::On(true) => instance.map_or_else(crate::host::name, str::to_string),
        NsidSpec::Text(t) => t.clone(),
    };
    if text.is_empty() || text.len() > MAX_NSID {
        r.at(s, format!("dns.nsid must be 1 to {MAX_NSID} bytes"));
        return None;
    }
    Some(text.into_bytes().into_boxed_slice())
}

/// The DNS listeners' settings (all read at startup).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    /// Queries answered on one TCP connection before it is closed (RFC 7766 6.2.3
    /// lets a server close); 0: no limit.
    pub tcp_max_queries: u32,
    /// SO_REUSEPORT sockets per UDP address; 0 means one per CPU.
    pub udp_sockets_per_address: usize,
}

/// The largest DNS payload over UDP that RFC 9715 recommends.
const MAX_UNFRAGMENTED_UDP: u16 = 1400;

/// The listeners and our EDNS UDP payload size. `listen_flags`: `--listen` given on
/// the command line, which replaces `dns.listen`.
pub(super) fn validate(
    dns: &DnsSpec,
    listen_flags: &[SocketAddr],
    r: &mut Report<'_>,
) -> (DnsConfig, u16) {
    let tcp_idle_timeout = r.duration(
        "dns.tcp_idle_timeout",
        dns.tcp_idle_timeout.as_ref(),
        Duration::from_secs(10),
    );
    // DNS flag day 2020: fits the common path MTU without fragmentation.
    let edns_udp_size = dns.edns_udp_size.as_ref().map_or(1232, |s| s.value);
    if let Some(s) = &dns.edns_udp_size {
        if s.value < 512 {
            r.at(s, "dns.edns_udp_size must be at least 512");
        } else if s.value > MAX_UNFRAGMENTED_UDP {
            // UDP answers are sent with DF and never fragmented (dns::server).
            r.warn_at(
                s,
                format!(
                    "dns.edns_udp_size {} is above {MAX_UNFRAGMENTED_UDP} (RFC 9715): UDP \
                     answers are never fragmented, so one that does not fit a path's MTU \
                     is lost there, and one that does not fit our interface's goes out \
                     truncated for a TCP retry",
                    s.value
                ),
            );
        }
    }
    let mut listen = Vec::new();
    match &dns.listen {
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 5353))),
        Some(list) => {
            for a in &list.value {
                match a.value.parse::<SocketAddr>() {
                    Ok(addr) => listen.push(addr),
                    Err(_) => r.at(a, format!("dns.listen: {:?} is not IP:PORT", a.value)),
                }
            }
            if list.value.is_empty() && listen_flags.is_empty() {
                r.at(list, "dns.listen names no address");
            }
        }
    }
    if !listen_flags.is_empty() {
        listen = listen_flags.to_vec();
    }
    let config = DnsConfig {
        listen,
        tcp_idle_timeout,
        tcp_max_connections: dns.tcp_max_connections.unwrap_or(1024).max(1),
        tcp_max_queries: dns.tcp_max_queries.as_ref().map_or(10_000, |s| s.value),
        udp_sockets_per_address: dns.udp_sockets_per_address.unwrap_or(0),
    };
    (config, edns_udp_size)
}
