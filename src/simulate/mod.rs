//! `meridian simulate`: a game day rehearsed before it happens. A scenario (a timeline
//! of outages, recoveries, drains, slowdowns and capacity changes) is replayed against a
//! client population on tokio's paused clock, through the server's own pieces: the
//! policies' compiled routes give each client its ranked list, the health checker's core
//! (`health::simulator`) turns synthetic probe outcomes into region states with the
//! configured thresholds, cooldowns and failback ramps, and `traffic::split` moves the
//! displaced clients. An hour of scenario takes a fraction of a second.
//!
//! `scenario` reads the scenario file (every mistake at `FILE:LINE:COL`), `replay` runs
//! it through the checker's core and the split, `render` draws the report as text and
//! SVG.

mod render;
mod replay;
mod scenario;

pub use render::{render_svg, render_text};
pub use replay::{RegionRow, Report, Step, run};
pub use scenario::{Condition, Event, Scenario};
