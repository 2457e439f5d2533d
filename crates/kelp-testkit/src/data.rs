//! Reproducible test data.

/// Deterministic pseudo-random bytes (xorshift) for a blob or block, so a
/// reader can check content from the seed alone.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(super::blob(7, 64), super::blob(7, 64));
        assert_ne!(super::blob(7, 64), super::blob(8, 64));
    }
}
