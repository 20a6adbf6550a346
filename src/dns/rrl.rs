//! Response rate limiting on UDP, as BIND, Knot and NSD do it: a spoofed-source flood
//! turns an authoritative server into a reflector, so responses to one client prefix
//! of one kind are limited to `responses_per_second`; of the limited ones every
//! `slip`-th goes out truncated (an empty TC=1 answer: a real client behind that
//! prefix retries over TCP, which is never limited) and the rest are dropped.
//!
//! Accounting: a token bucket per (client prefix, response kind), refilled at the rate
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

    /// Accounts one response of `kind` to `peer` at second `now`: whether it may go out.
    pub fn allow(&self, peer: IpAddr, kind: Kind, now: u32) -> bool {
        let h = mix(mix(self.prefix_key(peer) ^ self.key.0) ^ (kind.index() as u64) ^ self.key.1);
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
    pub fn action(&self, peer: IpAddr, kind: Kind, now: u32, limited: &mut u64) -> Action {
        if self.exempt(peer) || self.allow(peer, kind, now) {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flood_gets_the_rate_and_its_neighbours_are_untouched() {
        let r = rrl(20, 5, 2);
        let flood = ip("192.0.2.5");
        let allowed = (0..1000)
            .filter(|_| r.allow(flood, Kind::Answer, 0))
            .count();
        assert_eq!(allowed, 20, "one second's worth");
        // The same /24, another address: the same bucket.
        assert!(!r.allow(ip("192.0.2.200"), Kind::Answer, 0));
        // Another kind, another /24: their own buckets.
        assert!(r.allow(flood, Kind::Nxdomain, 0));
        assert!(r.allow(ip("192.0.3.5"), Kind::Answer, 0));
        // The debt is capped at the window (5 s × 20): flooding on, a second later it
        // is still limited, and a pause of the window clears it.
        assert!(!r.allow(flood, Kind::Answer, 1));
        let after = (0..40).filter(|_| r.allow(flood, Kind::Answer, 7)).count();
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
            .map(|_| r.action(ip("198.51.100.1"), Kind::Answer, 0, &mut limited))
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
        assert!(
            (0..100)
                .all(|_| r.action(ip("127.0.5.5"), Kind::Answer, 0, &mut limited) == Action::Send)
        );
        let r = rrl(1, 1, 0);
        let mut limited = 0;
        r.action(ip("198.51.100.1"), Kind::Answer, 0, &mut limited);
        assert_eq!(
            r.action(ip("198.51.100.1"), Kind::Answer, 0, &mut limited),
            Action::Drop
        );
    }

    #[test]
    fn a_debt_is_not_found_again_after_eighteen_hours() {
        let r = rrl(1, 5, 0);
        let ip = ip("192.0.2.9");
        for _ in 0..10 {
            r.allow(ip, Kind::Answer, 100);
        }
        // 65 536 s later (where 16 bits of seconds wrapped to "no time at all").
        assert!(r.allow(ip, Kind::Answer, 100 + 65_536));
        assert_eq!(unpack(pack(0xabc, 0x12345, -7)), (0xabc, 0x12345, -7));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_56() {
        let r = rrl(1, 1, 0);
        assert!(r.allow(ip("2001:db8:0:100::1"), Kind::Answer, 0));
        assert!(
            !r.allow(ip("2001:db8:0:1ff::9"), Kind::Answer, 0),
            "same /56"
        );
        assert!(
            r.allow(ip("2001:db8:0:200::1"), Kind::Answer, 0),
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
