//! Meridian: an authoritative DNS server and global traffic manager.
//!
//! See `ARCHITECTURE.md` for how data flows from files to the query path.

pub mod admin;
pub mod anycast;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod diag;
pub mod dns;
pub mod dnssec;
pub mod explain;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod hash;
pub mod health;
pub mod host;
pub mod iana;
pub mod metrics;
pub mod name;
pub mod policy;
pub mod reload;
pub mod serve;
pub mod simulate;
pub mod slo;
pub mod snapshot;
pub mod traffic;
pub mod zone;
