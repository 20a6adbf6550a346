//! DNS on the wire: request parsing, response encoding, the per-query handler and the
//! UDP/TCP sockets that feed it.
//!
//! ```text
//!  socket ─► request::parse ─► handler::handle ─► zone::lookup::resolve ─► response::encode ─► socket
//!                                   ▲ snapshot (one ArcSwap load per query)
//! ```

pub mod handler;
pub mod request;
pub mod response;
pub mod server;
