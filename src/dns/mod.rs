//! DNS on the wire: request parsing, response encoding, the per-query handler and the
//! UDP/TCP sockets that feed it.
//!
//! ```text
//!  socket ─► request::parse ─► handler::handle_parsed ─► zone::lookup::resolve ─► response::encode ─► socket
//!  (UDP: a recvmmsg batch,       ▲ snapshot and health view, loaded once per batch
//!   read ahead by handler::warm)
//! ```

pub mod handler;
pub mod notify;
pub mod request;
pub mod response;
pub mod rrl;
pub mod server;
pub mod transfer;
