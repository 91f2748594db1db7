//! Cheap randomness for the request path (P2C's two choices, slow start's share, retry
//! jitter): a thread-local xorshift. Statistical quality is enough for load balancing and it
//! costs a few instructions, with no lock and no shared cache line. Not for anything secret.

use std::cell::Cell;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (addr ^ (nanos << 32) ^ 0x9E37_79B9_7F4A_7C15) | 1
}

/// A random number below `n` (n > 0).
pub fn random_below(n: usize) -> usize {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        ((x >> 32) as usize * n) >> 32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_below_stays_in_range_and_spreads() {
        let mut seen = [0usize; 5];
        for _ in 0..10_000 {
            let v = random_below(5);
            assert!(v < 5);
            seen[v] += 1;
        }
        assert!(seen.iter().all(|&c| c > 1_000), "{seen:?}");
    }
}
