//! Traffic shifting: how much of its clients each region keeps and admits when regions
//! are out, partly drained or ramping back, so that displaced clients fill the regions
//! with spare capacity in rank order (`split`) and a recovered region takes its clients
//! back in steps (`ramp`). Pure functions over plain numbers: this module imports
//! nothing else of the crate; the health checker feeds it and publishes what it
//! returns with the health view.

pub mod demand;
pub mod ramp;
pub mod shed;
pub mod split;

pub use ramp::Failback;
pub use split::{Client, Outcome, RegionIn, Share, bucket, split, subnet_of};
