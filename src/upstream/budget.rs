//! The retry budget of a backend: retries may add at most `ratio` of the requests plus
//! `min_per_second`, so that a struggling or dead backend never receives a retry storm.
//!
//! A token bucket in milli-tokens, lock-free: every request deposits `ratio` of a token, the
//! floor adds `min_per_second` tokens per elapsed second (refilled lazily when a retry asks),
//! a retry withdraws one. The balance is capped at ten seconds' worth of floor (at least 100
//! tokens), so a quiet period cannot bank an unbounded burst. Over any run of N requests in T
//! seconds, retries are at most `ratio * N + min_per_second * T + cap`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::config::BudgetConfig;
use crate::runtime::clock::now_ms;

const MILLI: i64 = 1000;

pub struct RetryBudget {
    balance: AtomicI64,
    deposit: i64,
    floor_per_sec: i64,
    cap: i64,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> RetryBudget {
        let floor_per_sec = config.min_per_second as i64 * MILLI;
        RetryBudget {
            balance: AtomicI64::new(floor_per_sec),
            deposit: (config.ratio * MILLI as f64) as i64,
            floor_per_sec,
            cap: (floor_per_sec * 10).max(100 * MILLI),
            last_refill_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Every request (first attempt) earns a share of a retry.
    pub fn deposit(&self) {
        if self.deposit > 0 && self.balance.load(Ordering::Relaxed) < self.cap {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
        }
    }

    /// Ask for one retry; `false` means the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.refill();
        if self.balance.fetch_sub(MILLI, Ordering::Relaxed) >= MILLI {
            true
        } else {
            self.balance.fetch_add(MILLI, Ordering::Relaxed);
            false
        }
    }

    fn refill(&self) {
        if self.floor_per_sec == 0 {
            return;
        }
        let now = now_ms();
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(last);
        if elapsed < 10 {
            return;
        }
        if self
            .last_refill_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let add = self.floor_per_sec * elapsed as i64 / 1000;
            let balance = self.balance.fetch_add(add, Ordering::Relaxed) + add;
            if balance > self.cap {
                self.balance.fetch_min(self.cap, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_ratio_plus_floor() {
        let budget = RetryBudget::new(BudgetConfig {
            ratio: 0.2,
            min_per_second: 0,
        });
        // no floor: nothing banked at start
        assert!(!budget.withdraw());
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn floor_allows_retries_at_low_traffic() {
        let budget = RetryBudget::new(BudgetConfig {
            ratio: 0.0,
            min_per_second: 5,
        });
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 5);
    }
}
