//! The DNS vocabulary every module shares: NLnet Labs `domain`'s IANA types (record
//! types, classes, response codes, EDNS option codes) and the header flag bits. One
//! definition of each; this module imports nothing else of the crate, so the zone, policy
//! and wire code all use it without depending on each other.

pub use domain::base::iana::{Class, OptRcode, OptionCode, Rcode, Rtype};

/// Header flag bits (RFC 1035 4.1.1; AD and CD from RFC 4035 3.1.6/3.2.2).
pub mod flags {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const CD: u16 = 0x0010;
    /// Where the OPCODE sits in the flags word.
    pub const OPCODE_MASK: u16 = 0x7800;
    pub const OPCODE_SHIFT: u16 = 11;
}

/// The transport a query came over (RFC 1035 4.2), for limits and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// The text of a record type as `dig` prints it: the mnemonic, else `TYPE<n>`
/// (RFC 3597).
pub fn rtype_name(t: Rtype) -> String {
    t.to_string()
}

/// A record type from its mnemonic or `TYPE<n>`, case-insensitive.
pub fn rtype_from_str(s: &str) -> Option<Rtype> {
    s.to_ascii_uppercase().parse().ok()
}
