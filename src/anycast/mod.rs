//! Anycast with health: each prefix in `anycast:` is announced over BGP (through the
//! operator's router daemon) while this instance serves, or while the region behind
//! the prefix serves in the shared view, and withdrawn when not, with rise/fall
//! counters and guards against a broken checker withdrawing everything.
//!
//! ```text
//!  decide    the pure decision: one prefix's health, counters, guards → its route
//!  bird      BIRD 2's control socket: enable/disable the operator's static protocol
//!  exabgp    ExaBGP's text process API, and `meridian anycast exabgp`
//!  run       the server's loop: health in, decisions, the driver, metrics, status
//! ```
//!
//! Nothing here is on the DNS query path: the loop reads the health view and sends one
//! DNS query to itself per interval.

pub mod bird;
pub mod decide;
pub mod exabgp;
pub mod run;

pub use crate::config::anycast::{Driver, Kind, OnUnhealthy, PrefixPlan};
pub use decide::{Route, Why};
