//! Response rate limiting on UDP, as BIND, Knot and NSD do it: a spoofed-source flood
//! turns an authoritative server into a reflector, so responses to one client prefix
//! of one kind are limited to `responses_per_second`; of the limited ones every
//! `slip`-th goes out truncated (an empty TC=1 answer: a real client behind that
//! prefix retries over TCP, which is never limited) and the rest are dropped.
//!
//! Buckets are keyed as BIND, Knot and NSD key them: by client prefix, response kind and
//! name: an answer or a no-data answer by its qname and qtype, an NXDOMAIN or a referral
//! by the zone (the owner of the authority section's first record: the SOA or the
//! delegation), an error by the prefix alone. So a /24 of busy resolvers asking for many
//! different names is not throttled, while one name asked again and again is.
//!
//! Accounting: a token bucket per (client prefix, response kind, name), refilled at the rate
//! up to one second's worth, and allowed a debt of up to `window` seconds' worth, so a
//! source that floods stays limited for as long as the window after it stops. Buckets
//! live in one fixed table of 64-bit words (65 536 of them, 512 KiB, whatever the
//! number of sources, as Knot's), updated with compare-and-swap: no lock on the query
//! path. A bucket is found by a keyed hash (a per-process random key, so an attacker
//! cannot aim collisions) and carries a 12-bit tag of it; a different tag takes the
//! slot over (the older source's debt is forgotten, as in Knot).

use crate::hash::mix64 as mix;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use crate::config::RrlConfig;

const SLOTS: usize = 1 << 16;

/// What a response is, for accounting: each kind has its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Answer,
    Nodata,
    Referral,
    Nxdomain,
    Error,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Answer,
        Kind::Nodata,
        Kind::Referral,
        Kind::Nxdomain,
        Kind::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Answer => "answer",
            Kind::Nodata => "nodata",
            Kind::Referral => "referral",
            Kind::Nxdomain => "nxdomain",
            Kind::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Kind::Answer => 0,
            Kind::Nodata => 1,
            Kind::Referral => 2,
            Kind::Nxdomain => 3,
            Kind::Error => 4,
        }
    }

    /// The kind of an encoded response, from its header.
    pub fn of(response: &[u8]) -> Kind {
        let (Some(&flags_hi), Some(&flags_lo)) = (response.get(2), response.get(3)) else {
            return Kind::Error;
        };
        let ancount = match (response.get(6), response.get(7)) {
            (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]),
            _ => 0,
        };
        let aa = flags_hi & 0x04 != 0;
        match flags_lo & 0x0f {
            0 if ancount > 0 => Kind::Answer,
            0 if aa => Kind::Nodata,
            0 => Kind::Referral,
            3 => Kind::Nxdomain,
            _ => Kind::Error,
        }
    }
}

/// The name part of a response's bucket key (see the module docs), read from the
/// encoded response: its question, and for NXDOMAIN and referrals the owner of the
/// first authority record (a compression pointer into the question, as our encoder
/// writes it, or a name written out). Case-folded. 0 for errors.
pub fn name_key(response: &[u8], kind: Kind) -> u64 {
    const QNAME: usize = 12;
    let Some(qname_end) = name_end(response, QNAME) else {
        return 0;
    };
    let fold = |bytes: &[u8], seed: u64| {
        crate::hash::fnv1a64(bytes.iter().map(u8::to_ascii_lowercase)) ^ seed
    };
    match kind {
        Kind::Error => 0,
        Kind::Answer | Kind::Nodata => {
            let qtype = response.get(qname_end..qname_end + 2).unwrap_or_default();
            fold(response.get(QNAME..qname_end).unwrap_or_default(), 0)
                ^ mix(u64::from(u16::from_be_bytes([
                    qtype.first().copied().unwrap_or(0),
                    qtype.get(1).copied().unwrap_or(0),
                ])))
        }
        Kind::Nxdomain | Kind::Referral => {
            // The first authority record follows the question (qtype, qclass); these
            // kinds have no answers.
            let owner = qname_end + 4;
            let zone = match (response.get(owner), response.get(owner + 1)) {
                (Some(&hi), Some(&lo)) if hi & 0xC0 == 0xC0 => {
                    let at = usize::from(u16::from_be_bytes([hi & 0x3F, lo]));
                    (QNAME..qname_end)
                        .contains(&at)
                        .then(|| response.get(at..qname_end))
                }
                (Some(_), _) => name_end(response, owner).map(|end| response.get(owner..end)),
                _ => None,
            };
            match zone.flatten() {
                Some(z) => fold(z, 1),
                None => fold(response.get(QNAME..qname_end).unwrap_or_default(), 1),
            }
        }
    }
}

/// Where the uncompressed or pointer-ended name at `at` ends (past its last byte).
fn name_end(wire: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *wire.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l < 64 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    /// Send it cut to the question with TC set.
    Slip,
    Drop,
}

pub struct Rrl {
    config: RrlConfig,
    table: Box<[AtomicU64]>,
    key: (u64, u64),
    start: Instant,
}

/// Seconds a bucket remembers, as 20 bits: they wrap every 12 days, so a bucket left
/// alone that long (to within the window) could find an old debt again; 16 bits wrapped
/// every 18 hours.
const SECOND_BITS: u32 = 20;
const SECOND_MASK: u32 = (1 << SECOND_BITS) - 1;

/// `tag (12 bits) | second (20 bits) | balance (32 bits)`.
fn pack(tag: u16, second: u32, balance: i32) -> u64 {
    (u64::from(tag & 0x0fff) << 52)
        | (u64::from(second & SECOND_MASK) << 32)
        | u64::from(balance as u32)
}

fn unpack(word: u64) -> (u16, u32, i32) {
    (
        (word >> 52) as u16,
        (word >> 32) as u32 & SECOND_MASK,
        word as u32 as i32,
    )
}

impl Rrl {
    /// `None` when limiting is off (`responses_per_second: 0`).
    pub fn new(config: RrlConfig) -> Option<Rrl> {
        if config.responses_per_second == 0 {
            return None;
        }
        let table = (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        // A key per process, from the OS's randomness via std's hasher seeds.
        let seed = |i: u64| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            h.finish()
        };
        Some(Rrl {
            config,
            table,
            key: (seed(1), seed(2)),
            start: Instant::now(),
        })
    }

    pub fn config(&self) -> &RrlConfig {
        &self.config
    }

    /// Seconds since start, for `check` (read once per batch).
    pub fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    fn prefix_key(&self, peer: IpAddr) -> u64 {
        match peer {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let p = u32::from(self.config.ipv4_prefix.min(32));
                let masked = if p == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - p))
                };
                u64::from(masked)
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let p = u32::from(self.config.ipv6_prefix.min(128));
                let masked = if p == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - p))
                };
                (masked >> 64) as u64 ^ mix(masked as u64) ^ (1 << 63)
            }
        }
    }

    pub fn exempt(&self, peer: IpAddr) -> bool {
        self.config.exempt.iter().any(|n| n.contains(&peer))
    }

    /// Accounts one response of `kind` about `name` (`name_key`) to `peer` at second
    /// `now`: whether it may go out.
    pub fn allow(&self, peer: IpAddr, kind: Kind, name: u64, now: u32) -> bool {
        let h = mix(mix(self.prefix_key(peer) ^ self.key.0)
            ^ (kind.index() as u64)
            ^ mix(name ^ self.key.1));
        let Some(slot) = self.table.get((h as usize) & (SLOTS - 1)) else {
            return true;
        };
        let tag = ((h >> 52) as u16 & 0x0fff) | 1; // never 0: 0 marks an empty slot
        let rate = self.config.responses_per_second.min(1 << 20) as i64;
        let floor = -(rate * i64::from(self.config.window_seconds.max(1)));
        let second = now & SECOND_MASK;
        let mut word = slot.load(Ordering::Relaxed);
        for _ in 0..4 {
            let (t, last, balance) = unpack(word);
            let balance = if t != tag {
                rate
            } else {
                let elapsed = i64::from(second.wrapping_sub(last) & SECOND_MASK);
                (i64::from(balance) + elapsed * rate).min(rate)
            };
            let allowed = balance > 0;
            let next = (balance - 1).max(floor);
            match slot.compare_exchange_weak(
                word,
                pack(tag, second, next as i32),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return allowed,
                Err(w) => word = w,
            }
        }
        // Contended past four tries: let it go rather than spin on the query path.
        true
    }

    /// What to do with a response: `limited` counts this thread's limited responses,
    /// for the slip.
    /// What to do with `response` (of `kind`) to `peer`: `limited` counts this
    /// thread's limited responses, for the slip.
    pub fn action(
        &self,
        peer: IpAddr,
        kind: Kind,
        response: &[u8],
        now: u32,
        limited: &mut u64,
    ) -> Action {
        self.action_named(peer, kind, name_key(response, kind), now, limited)
    }

    /// `action` for a response not yet composed, keyed by `name` (see `name_key`).
    pub fn action_named(
        &self,
        peer: IpAddr,
        kind: Kind,
        name: u64,
        now: u32,
        limited: &mut u64,
    ) -> Action {
        if self.exempt(peer) || self.allow(peer, kind, name, now) {
            return Action::Send;
        }
        *limited += 1;
        match self.config.slip {
            0 => Action::Drop,
            s if (*limited).is_multiple_of(u64::from(s)) => Action::Slip,
            _ => Action::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u32, window: u32, slip: u32) -> Rrl {
        Rrl::new(RrlConfig {
            responses_per_second: rate,
            window_seconds: window,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
        })
        .unwrap()
    }

    /// An encoded response to a query for `qname` (wire) of type 1, with `rcode`, and
    /// one authority record owned by `authority` (wire, or a pointer).
    fn response(qname: &[u8], rcode: u8, answers: u16, authority: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 1, 0x84, rcode, 0, 1];
        r.extend_from_slice(&answers.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0]);
        r.extend_from_slice(qname);
        r.extend_from_slice(&[0, 1, 0, 1]);
        r.extend_from_slice(authority);
        r.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 60, 0, 0]);
        r
    }

    #[test]
    fn buckets_are_keyed_by_name_as_bind_knot_and_nsd_key_them() {
        let a = response(b"\x01a\x07example\x03com\x00", 0, 1, b"");
        let b = response(b"\x01b\x07example\x03com\x00", 0, 1, b"");
        let a_upper = response(b"\x01A\x07EXAMPLE\x03com\x00", 0, 1, b"");
        assert_ne!(name_key(&a, Kind::Answer), name_key(&b, Kind::Answer));
        assert_eq!(name_key(&a, Kind::Answer), name_key(&a_upper, Kind::Answer));
        // NXDOMAIN for two names of one zone: one bucket, the zone's (the SOA owner is
        // a pointer to `example.com` inside the question, at offset 14).
        let nx1 = response(b"\x01x\x07example\x03com\x00", 3, 0, &[0xC0, 14]);
        let nx2 = response(b"\x02yy\x07example\x03com\x00", 3, 0, &[0xC0, 15]);
        assert_eq!(
            name_key(&nx1, Kind::Nxdomain),
            name_key(&nx2, Kind::Nxdomain)
        );
        // Written out rather than pointed to: the same zone.
        let nx3 = response(
            b"\x01z\x07example\x03com\x00",
            3,
            0,
            b"\x07example\x03com\x00",
        );
        assert_eq!(
            name_key(&nx1, Kind::Nxdomain),
            name_key(&nx3, Kind::Nxdomain)
        );
        assert_eq!(name_key(&a, Kind::Error), 0);
        // Garbage never panics.
        for cut in 0..a.len() {
            let _ = name_key(&a[..cut], Kind::Nxdomain);
            let _ = name_key(&a[..cut], Kind::Answer);
        }
    }

    #[test]
    fn many_names_from_one_prefix_are_not_limited_one_name_is() {
        let r = rrl(20, 15, 2);
        let peer = ip("192.0.2.10");
        // 50 names, 10 each in one second: 500 responses, each name under its rate.
        let names: Vec<Vec<u8>> = (0..50u8)
            .map(|i| {
                response(
                    &[
                        &[1, b'a' + i % 26, 1, b'0' + i / 26][..],
                        b"\x07example\x03com\x00",
                    ]
                    .concat(),
                    0,
                    1,
                    b"",
                )
            })
            .collect();
        let mut limited = 0;
        let sent = names
            .iter()
            .flat_map(|n| std::iter::repeat_n(n, 10))
            .filter(|n| r.action(peer, Kind::Answer, n, 0, &mut limited) == Action::Send)
            .count();
        assert_eq!(sent, 500);
        // One name 200 times: 20 go out.
        let one = &names[0];
        let sent = (0..200)
            .filter(|_| {
                r.action(ip("192.0.3.10"), Kind::Answer, one, 0, &mut limited) == Action::Send
            })
            .count();
        assert_eq!(sent, 20);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flood_gets_the_rate_and_its_neighbours_are_untouched() {
        let r = rrl(20, 5, 2);
        let flood = ip("192.0.2.5");
        let allowed = (0..1000)
            .filter(|_| r.allow(flood, Kind::Answer, 7, 0))
            .count();
        assert_eq!(allowed, 20, "one second's worth");
        // The same /24, another address: the same bucket.
        assert!(!r.allow(ip("192.0.2.200"), Kind::Answer, 7, 0));
        // Another kind, another /24: their own buckets.
        assert!(r.allow(flood, Kind::Nxdomain, 7, 0));
        assert!(r.allow(ip("192.0.3.5"), Kind::Answer, 7, 0));
        // The debt is capped at the window (5 s × 20): flooding on, a second later it
        // is still limited, and a pause of the window clears it.
        assert!(!r.allow(flood, Kind::Answer, 7, 1));
        let after = (0..40)
            .filter(|_| r.allow(flood, Kind::Answer, 7, 7))
            .count();
        assert_eq!(
            after, 20,
            "debt gone after the window: a second's worth again"
        );
    }

    #[test]
    fn every_slip_th_limited_response_is_truncated_and_exempt_clients_never_limited() {
        let r = rrl(1, 1, 2);
        let mut limited = 0;
        let actions: Vec<Action> = (0..7)
            .map(|_| r.action(ip("198.51.100.1"), Kind::Answer, &[], 0, &mut limited))
            .collect();
        assert_eq!(
            actions,
            [
                Action::Send,
                Action::Drop,
                Action::Slip,
                Action::Drop,
                Action::Slip,
                Action::Drop,
                Action::Slip
            ]
        );
        assert!((0..100).all(
            |_| r.action(ip("127.0.5.5"), Kind::Answer, &[], 0, &mut limited) == Action::Send
        ));
        let r = rrl(1, 1, 0);
        let mut limited = 0;
        r.action(ip("198.51.100.1"), Kind::Answer, &[], 0, &mut limited);
        assert_eq!(
            r.action(ip("198.51.100.1"), Kind::Answer, &[], 0, &mut limited),
            Action::Drop
        );
    }

    #[test]
    fn a_debt_is_not_found_again_after_eighteen_hours() {
        let r = rrl(1, 5, 0);
        let ip = ip("192.0.2.9");
        for _ in 0..10 {
            r.allow(ip, Kind::Answer, 7, 100);
        }
        // 65 536 s later (where 16 bits of seconds wrapped to "no time at all").
        assert!(r.allow(ip, Kind::Answer, 7, 100 + 65_536));
        assert_eq!(unpack(pack(0xabc, 0x12345, -7)), (0xabc, 0x12345, -7));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_56() {
        let r = rrl(1, 1, 0);
        assert!(r.allow(ip("2001:db8:0:100::1"), Kind::Answer, 7, 0));
        assert!(
            !r.allow(ip("2001:db8:0:1ff::9"), Kind::Answer, 7, 0),
            "same /56"
        );
        assert!(
            r.allow(ip("2001:db8:0:200::1"), Kind::Answer, 7, 0),
            "next /56"
        );
    }

    #[test]
    fn the_kind_comes_from_the_header() {
        let h = |flags: u16, an: u16| {
            let mut b = vec![0u8; 12];
            b[2..4].copy_from_slice(&flags.to_be_bytes());
            b[6..8].copy_from_slice(&an.to_be_bytes());
            b
        };
        assert_eq!(Kind::of(&h(0x8400, 1)), Kind::Answer);
        assert_eq!(Kind::of(&h(0x8400, 0)), Kind::Nodata);
        assert_eq!(Kind::of(&h(0x8000, 0)), Kind::Referral);
        assert_eq!(Kind::of(&h(0x8403, 0)), Kind::Nxdomain);
        assert_eq!(Kind::of(&h(0x8005, 0)), Kind::Error);
        assert_eq!(Kind::of(&[0u8; 2]), Kind::Error);
    }
}
