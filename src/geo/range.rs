//! Address ranges → values: the [`RangeTable`] the query path searches (one per address
//! family, shared by every policy), and ECS scopes over its ranges (`scope_within`).

pub(super) fn mask(width: u8, prefix: u8) -> u128 {
    let full = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        (full >> (width - prefix.min(width))) << (width - prefix.min(width)) & full
    }
}

pub(super) fn last_of(width: u8, start: u128, prefix: u8) -> u128 {
    let full = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    start | (!mask(width, prefix) & full)
}

/// The widest prefix around `addr` that lies entirely inside `[lo, hi]`: the ECS scope
/// over which an answer decided by that range cannot change (RFC 7871 7.2.1).
pub fn scope_within(width: u8, addr: u128, lo: u128, hi: u128) -> u8 {
    for p in 0..=width {
        let start = addr & mask(width, p);
        if start >= lo && last_of(width, start, p) <= hi {
            return p;
        }
    }
    width
}

/// An address family's key in a [`RangeTable`]: IPv4 tables use `u32`, a quarter of the
/// memory and of the cache lines a lookup touches.
pub trait Key: Copy + Ord + std::fmt::Debug + Default {
    const WIDTH: u8;
    /// Top address bits that pick a block of the index (see `RangeTable::buckets`).
    const BUCKET_BITS: u8;
    /// The key of an address given as bits (IPv4 in the low 32).
    fn from_bits(bits: u128) -> Self;
    fn bits(self) -> u128;
}

impl Key for u32 {
    const WIDTH: u8 = 32;
    /// /20 blocks: 4 MB of index, and a lookup lands on about one entry, where /16 blocks
    /// left hundreds in the dense parts of the address space (a miss per search step).
    const BUCKET_BITS: u8 = 20;
    fn from_bits(bits: u128) -> Self {
        bits as u32
    }
    fn bits(self) -> u128 {
        u128::from(self)
    }
}

impl Key for u128 {
    const WIDTH: u8 = 128;
    const BUCKET_BITS: u8 = 16;
    fn from_bits(bits: u128) -> Self {
        bits
    }
    fn bits(self) -> u128 {
        self
    }
}

/// A range `RangeTable::find` landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    index: usize,
    pub value: u32,
}

/// Contiguous ranges covering a whole address family: entry `i` is (first address,
/// value), and its range runs to the next entry's start - 1.
///
/// Start and value sit side by side, so the entry a lookup lands on brings its value in
/// the same cache line: on the query path this table is the one data structure too big
/// for the caches (a million-network database), and misses on it were most of the
/// decision's time.
#[derive(Debug, Clone, Default)]
pub struct RangeTable<K: Key> {
    entries: Vec<(K, u32)>,
    /// `buckets[b]` is the first range starting in the block whose top
    /// `K::BUCKET_BITS` address bits are `b`. A lookup searches only its block: a cache
    /// line or two instead of ~20 misses over a table of a million networks.
    buckets: Vec<u32>,
}

impl<K: Key> RangeTable<K> {
    pub fn width(&self) -> u8 {
        K::WIDTH
    }

    fn max() -> u128 {
        last_of(K::WIDTH, 0, 0)
    }

    fn bucket(addr: K) -> usize {
        (addr.bits() >> (K::WIDTH - K::BUCKET_BITS)) as usize
    }

    pub(super) fn push(&mut self, start: u128, value: u32) {
        if self.entries.last().map(|e| e.1) != Some(value) {
            self.entries.push((K::from_bits(start), value));
        }
    }

    /// Builds the block index; call once the ranges are complete.
    pub(super) fn index(mut self) -> Self {
        self.entries.shrink_to_fit();
        let n = 1usize << K::BUCKET_BITS;
        let mut buckets = Vec::with_capacity(n + 1);
        let mut i = 0usize;
        for b in 0..=n {
            while self.entries.get(i).is_some_and(|e| Self::bucket(e.0) < b) {
                i += 1;
            }
            buckets.push(i as u32);
        }
        self.buckets = buckets;
        self
    }

    /// The value for `addr` and the range it lies in.
    pub fn lookup(&self, addr: u128) -> Option<(u32, u128, u128)> {
        let found = self.find(addr)?;
        let (lo, hi) = self.widen(found, 0, |_| false);
        Some((found.value, lo, hi))
    }

    /// The range `addr` lies in: its position and value (see `widen` for its extent).
    pub fn find(&self, addr: u128) -> Option<Found> {
        let key = K::from_bits(addr);
        let b = Self::bucket(key);
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.entries.len()),
        };
        // The containing range is the last one starting at or before `addr`: inside this
        // block, or the one that began in an earlier block.
        let within = self.entries.get(lo..hi)?.partition_point(|e| e.0 <= key);
        let index = (lo + within).checked_sub(1)?;
        let value = self.entries.get(index)?.1;
        Some(Found { index, value })
    }

    /// The addresses of a found range, widened over up to `reach` neighbours on each side
    /// whose values `same` accepts: the ECS scope of an answer can then span neighbouring
    /// networks that get the same answer (as a per-policy merged table would give)
    /// without a table per policy. Past `reach` the range is narrower than it could be,
    /// never wrong.
    pub fn widen(&self, found: Found, reach: usize, same: impl Fn(u32) -> bool) -> (u128, u128) {
        let i = found.index;
        let ok = |j: usize| self.entries.get(j).is_some_and(|e| same(e.1));
        let mut first = i;
        while first > 0 && i - first < reach && ok(first - 1) {
            first -= 1;
        }
        let mut last = i;
        while last - i < reach && ok(last + 1) {
            last += 1;
        }
        let lo = self.entries.get(first).map_or(0, |e| e.0.bits());
        let hi = self
            .entries
            .get(last + 1)
            .map(|n| n.0.bits() - 1)
            .unwrap_or_else(Self::max);
        (lo, hi)
    }

    /// The ECS scope for `addr` in a found range: the widest prefix around it over which
    /// every range has a value `same` accepts, looking at no more than `reach`
    /// neighbours on each side. The same result as `scope_within` over `widen`, but it
    /// asks about a neighbour only when the next wider prefix needs it and stops at the
    /// first refusal: `same` may rank a policy's regions for the neighbour (a `Nearest`
    /// route), and most of the 32 neighbours `widen` would ask about cannot widen the
    /// prefix anyway.
    pub fn scope(&self, found: Found, addr: u128, reach: usize, same: impl Fn(u32) -> bool) -> u8 {
        let width = K::WIDTH;
        let i = found.index;
        let start = |j: usize| self.entries.get(j).map_or(0, |e| e.0.bits());
        let end = |j: usize| {
            self.entries
                .get(j + 1)
                .map_or_else(Self::max, |n| n.0.bits() - 1)
        };
        let ok = |j: usize| self.entries.get(j).is_some_and(|e| same(e.1));
        let (mut first, mut last) = (i, i);
        let mut p = scope_within(width, addr, start(first), end(last));
        while p > 0 {
            let block = addr & mask(width, p - 1);
            let block_end = last_of(width, block, p - 1);
            while start(first) > block {
                if first == 0 || i - first >= reach || !ok(first - 1) {
                    return p;
                }
                first -= 1;
            }
            while end(last) < block_end {
                if last - i >= reach || !ok(last + 1) {
                    return p;
                }
                last += 1;
            }
            p = scope_within(width, addr, start(first), end(last)).min(p - 1);
        }
        p
    }

    /// Loads the cache lines that lookups of `addrs` will read: first every address's
    /// index block, then every block's entries. The loads of one pass do not depend on
    /// each other, so their cache misses overlap instead of queueing one after another
    /// as they do inside a lookup (index, then entries). Returns a value derived from the
    /// loads, for the caller to pass to `std::hint::black_box`.
    pub fn warm(&self, addrs: impl Iterator<Item = u128>) -> u32 {
        let mut sink = 0u32;
        let blocks = addrs.map(|a| {
            let b = Self::bucket(K::from_bits(a));
            let lo = self.buckets.get(b).copied().unwrap_or(0);
            let hi = self.buckets.get(b + 1).copied().unwrap_or(lo);
            (lo, hi)
        });
        let mut spans = [(0u32, 0u32); 64];
        let mut n = 0;
        for (slot, span) in spans.iter_mut().zip(blocks) {
            *slot = span;
            n += 1;
        }
        for &(lo, hi) in spans.iter().take(n) {
            // A block's entries span a line or two: its first and its last.
            let first = self.entries.get(lo as usize).map_or(0, |e| e.1);
            let last = self
                .entries
                .get((hi as usize).saturating_sub(1))
                .map_or(0, |e| e.1);
            sink ^= first ^ last;
        }
        sink
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
