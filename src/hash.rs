//! The non-cryptographic hashes the server uses to spread things, in one place: each
//! is a few instructions, stable across releases and platforms (answers, buckets and
//! signature expiries must not move when the binary changes), and never keyed by a
//! secret. Nothing here is for authentication: that is `ring`'s HMAC.

/// The golden-ratio increment of SplitMix64.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser (Stafford's variant 13): every input bit reaches every
/// output bit.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One SplitMix64 step from `x`: the stream `splitmix64(s), splitmix64(s + GOLDEN), …`
/// is SplitMix64 seeded with `s`.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    mix64(x.wrapping_add(GOLDEN))
}

/// 64-bit FNV-1a over `bytes`.
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashes_keep_their_published_values() {
        // Reference values: SplitMix64 seeded with 0 (Vigna's splitmix64.c) and FNV-1a
        // of "a" (the FNV test suite); a change here moves answers and buckets.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(fnv1a64(*b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(fnv1a64(*b""), 0xCBF2_9CE4_8422_2325);
    }
}
