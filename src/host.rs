//! This machine as the server names itself: the default instance name of a cluster and
//! of the probes' User-Agent. A leaf: configuration and health both read it.

/// The kernel's host name, or `unknown` when it cannot be read or is not printable.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "unknown".into())
}
