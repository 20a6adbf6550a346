//! `limits:`: what one zone may hold.

use serde::Deserialize;

use super::report::{Report, S};
use crate::zone::ZoneLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSpec {
    zone_records: Option<S<usize>>,
    records_per_name: Option<S<usize>>,
}

pub(super) fn validate(limits: &LimitsSpec, r: &mut Report<'_>) -> ZoneLimits {
    let defaults = ZoneLimits::default();
    let mut at_least_one = |s: Option<&S<usize>>, default: usize, key: &str| match s {
        Some(v) if v.value == 0 => {
            r.at(v, format!("{key} must be at least 1"));
            default
        }
        Some(v) => v.value,
        None => default,
    };
    ZoneLimits {
        records: at_least_one(
            limits.zone_records.as_ref(),
            defaults.records,
            "limits.zone_records",
        ),
        records_per_name: at_least_one(
            limits.records_per_name.as_ref(),
            defaults.records_per_name,
            "limits.records_per_name",
        ),
    }
}
