//! Health: probes → per-endpoint windows and state machines → region health, combined
//! with operator overrides into the [`HealthView`] the query path reads.
//!
//! ```text
//!  HealthPlan (built by the snapshot: endpoints, thresholds, ids, config overrides)
//!     │
//!  probe tasks (one per endpoint, own interval, timeout, jitter)
//!     │ Sample over a channel
//!     ▼
//!  checker core (one task owns all state: no locks)
//!     window → state::observe (pure) → endpoint state + Cause
//!     → aggregate::region (pure: MinUp, metric veto, override precedence)
//!     → HealthView → ArcSwap  (read once per query batch)
//!     → export: gauges, transitions counted by Cause::label, state file
//! ```
//!
//! `model`, `view` and `cause` are leaves: they import nothing else of the crate, so the
//! policy model and the query path can use them without depending on the checker.

pub mod aggregate;
pub mod cause;
pub mod checker;
pub mod http1;
pub mod model;
pub mod peers;
pub mod plan;
pub mod probe;
pub mod simulator;
pub mod state;
pub mod status;
pub mod store;
pub mod view;

pub use cause::Cause;
pub use model::{Endpoint, LoadQuery, MinUp, Probe, Thresholds};
pub use plan::{HealthPlan, PlanRegion};
pub use view::{Effective, HealthView, Override, OverrideKind, RegionHealth, RegionIds};
