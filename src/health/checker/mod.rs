//! The running checker: probe tasks feed one core task that owns every window, state
//! machine and override, and publishes a fresh [`HealthView`](super::HealthView) after
//! each change. The query path only ever loads that view; nothing here is shared
//! behind a lock.
//!
//! The core is given a [`HealthPlan`](super::HealthPlan) (what to probe, with which
//! thresholds), never the snapshot. Deciding is left to pure functions
//! (`state::observe`, `aggregate::region`, `peers::decide`, `traffic::split`). Each part
//! owns its state, and the files say which:
//!
//! ```text
//!  run       the handle, the mailbox and the loop that routes each message
//!  core      the parts joined: sample → transitions → one publication
//!  probes    probe tasks and endpoint records, restored from the state file
//!  intake    a sample into its window and state machine; the silent-task watchdog
//!  overrides operator overrides, their deadlines and their records across instances
//!  cluster   peers' verdicts in, ours out, the shared (quorum) state
//!  shifting  keeps, failback ramps, shedding and the split
//!  demand    the load estimate: answer counters sampled into the split's population
//!  loads     the Prometheus load pollers
//!  publish   TTL caps and the answered-address log of a publication
//!  release   a view to the query path, DNSSEC-prepared on a thread of its own
//!  history   transitions: logged, counted, kept for the status page
//!  failovers failover events and their phases against the target
//!  export    gauges and the state file
//!  report    the status, built on request
//! ```

mod cluster;
mod core;
mod demand;
mod export;
mod failovers;
mod history;
mod intake;
mod loads;
mod overrides;
mod probes;
mod publish;
mod release;
mod report;
mod run;
mod shifting;
#[cfg(test)]
mod tests;

pub(super) use self::core::Core;
pub use cluster::ClusterSide;
pub use overrides::MAX_OVERRIDE_DURATION;
pub use run::HealthHandle;
