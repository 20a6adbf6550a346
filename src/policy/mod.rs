//! Traffic policies: `policies/*.yaml` → validated model → per-client-class region
//! rankings compiled into range tables → `decide` on the query path.
//!
//! ```text
//!  policies/*.yaml ─spec─► load (every error, FILE:LINE:COL) ─► PolicySet { regions, policies }
//!  geoip/latency.yaml ─────────────────────────────────────────► Latency
//!                 compile::compile(set, GeoTable, Latency): rank regions per class and
//!                 pack each policy's class→list mapping and lists into a `Route`
//!  query: decide(set, health, policy, qtype, client) → Decision (pure, no allocation)
//! ```

pub mod classes;
pub mod compile;
pub mod decide;
pub mod failover;
pub mod latency;
pub mod model;
pub mod population;
pub mod route;
pub mod spec;
pub mod tenants;
pub mod validate;

pub use crate::diag::parse_yaml;
pub use latency::Latency;
pub use model::*;
pub use route::Route;
pub use spec::POLICY_VERSION;
pub use validate::load;

#[cfg(test)]
mod tests;
