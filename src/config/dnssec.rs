//! `dnssec:`: where the zones' keys are and how long signatures last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::report::{Report, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DnssecSpec {
    keys: Option<PathBuf>,
    signature_validity: Option<S<String>>,
    refresh: Option<S<String>>,
    max_online_signatures_per_second: Option<S<u32>>,
}

/// The default of `dnssec.max_online_signatures_per_second`: an ECDSA P-256 signature
/// is tens of microseconds, so online signing stays a fraction of one core.
pub const DEFAULT_ONLINE_SIGNATURES_PER_SECOND: u32 = 2_000;

/// `dnssec:` in meridian.yaml, as the signer uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnssecSettings {
    pub keys_dir: PathBuf,
    pub signature_validity: Duration,
    pub refresh: Duration,
    /// New denial signatures a second for UDP answers; past it they are answered
    /// truncated (a retry over TCP is signed). 0: no bound.
    pub max_online_signatures_per_second: u32,
}

pub(super) fn dnssec(d: Option<&S<DnssecSpec>>, base: &Path, r: &mut Report<'_>) -> DnssecSettings {
    let spec = d.map(|d| &d.value);
    let validity = r.duration(
        "dnssec.signature_validity",
        spec.and_then(|s| s.signature_validity.as_ref()),
        Duration::from_secs(14 * 86_400),
    );
    let refresh = r.duration(
        "dnssec.refresh",
        spec.and_then(|s| s.refresh.as_ref()),
        Duration::from_secs(7 * 86_400),
    );
    if let Some(d) = d
        && refresh >= validity
    {
        r.at(
            d,
            format!(
                "dnssec.refresh ({}) must be shorter than dnssec.signature_validity ({}): signatures would expire before they are renewed",
                humantime::format_duration(refresh),
                humantime::format_duration(validity)
            ),
        );
    }
    if let Some(d) = d
        && refresh < Duration::from_secs(3600)
    {
        r.at(
            d,
            "dnssec.refresh must be at least 1h: every refresh re-signs every zone",
        );
    }
    DnssecSettings {
        keys_dir: base.join(
            spec.and_then(|s| s.keys.as_deref())
                .unwrap_or(Path::new("keys")),
        ),
        signature_validity: validity,
        refresh,
        max_online_signatures_per_second: spec
            .and_then(|s| s.max_online_signatures_per_second.as_ref())
            .map_or(DEFAULT_ONLINE_SIGNATURES_PER_SECOND, |s| s.value),
    }
}
