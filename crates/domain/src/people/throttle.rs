//! Growing delays after failed logins, per account and per source address.
//!
//! Guarantees:
//! - No permanent lockout: a lockout would let anyone who knows a colleague's
//!   email lock them out. Failures only make the next attempt wait, and the
//!   wait stops growing at a cap.
//! - Failures count within a sliding window ([`THROTTLE_WINDOW_MS`], 15
//!   minutes): a failure older than that no longer counts.
//! - Pure: the caller supplies failure times and `now_ms`; nothing here reads
//!   the clock or stores anything.
//!
//! With the policies below, an attacker who always waits exactly the
//! required delay gets at most 67 guesses in the first hour against one
//! account (3 free, 6 while the delay grows, then one a minute) and 133 from
//! one address (10 free, 5 while it grows, then one every 30 s); see
//! [`guesses_per_hour`] and the tests that pin these numbers.

use std::collections::VecDeque;

/// Failures older than this no longer count (15 minutes).
pub const THROTTLE_WINDOW_MS: i64 = 15 * 60 * 1000;

const HOUR_MS: i64 = 60 * 60 * 1000;

/// Most attempts [`guesses_per_hour`] simulates.
pub const SIMULATION_LIMIT: u32 = 100_000;

/// How failures turn into a wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures within the window that cost nothing (typos happen).
    pub free_failures: u32,
    /// Wait after the first failure past the free ones; doubles after each
    /// further failure.
    pub first_delay_ms: i64,
    /// The wait never grows beyond this.
    pub max_delay_ms: i64,
    /// Failures older than this no longer count.
    pub window_ms: i64,
}

impl ThrottlePolicy {
    /// For one account: 3 free failures, then 1 s doubling to at most 60 s.
    pub const PER_ACCOUNT: ThrottlePolicy = ThrottlePolicy {
        free_failures: 3,
        first_delay_ms: 1_000,
        max_delay_ms: 60_000,
        window_ms: THROTTLE_WINDOW_MS,
    };

    /// For one source address, more lenient because many people may share
    /// one (a care home's network, a hospital's proxy): 10 free failures,
    /// then 1 s doubling to at most 30 s.
    pub const PER_SOURCE_ADDRESS: ThrottlePolicy = ThrottlePolicy {
        free_failures: 10,
        first_delay_ms: 1_000,
        max_delay_ms: 30_000,
        window_ms: THROTTLE_WINDOW_MS,
    };

    /// Milliseconds to wait after the latest failure, given how many
    /// failures fall within the window (that one included).
    pub fn required_delay_ms(&self, recent_failures: u32) -> i64 {
        let Some(doublings) = recent_failures.checked_sub(self.free_failures) else {
            return 0;
        };
        // 2^31 s is far past any cap; stop doubling there to avoid overflow.
        let factor = 1_i64 << doublings.min(31);
        self.first_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
            .max(0)
    }

    /// How many of `failure_times_ms` fall within the window ending at `now_ms`.
    pub fn recent_failures(&self, failure_times_ms: &[i64], now_ms: i64) -> u32 {
        let count = failure_times_ms
            .iter()
            .filter(|&&at| at <= now_ms && now_ms - at < self.window_ms)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Milliseconds the caller must still wait at `now_ms` before another
    /// attempt is evaluated (0: go ahead). Answer a too-early attempt the
    /// same way whether or not the account exists.
    pub fn retry_after_ms(&self, failure_times_ms: &[i64], now_ms: i64) -> i64 {
        let Some(&latest) = failure_times_ms.iter().filter(|&&at| at <= now_ms).max() else {
            return 0;
        };
        let delay = self.required_delay_ms(self.recent_failures(failure_times_ms, now_ms));
        (latest.saturating_add(delay) - now_ms).max(0)
    }
}

/// Attempts in one hour by an attacker who starts fresh and, after each
/// failure, waits exactly the delay [`ThrottlePolicy::retry_after_ms`]
/// demands: the figure quoted in the documentation. A policy that never
/// delays is reported as [`SIMULATION_LIMIT`] rather than looping forever.
pub fn guesses_per_hour(policy: &ThrottlePolicy) -> u32 {
    let mut window: VecDeque<i64> = VecDeque::new();
    let mut attempts = 0_u32;
    let mut now_ms = 0_i64;
    while now_ms < HOUR_MS && attempts < SIMULATION_LIMIT {
        attempts += 1;
        window.push_back(now_ms);
        while window
            .front()
            .is_some_and(|&oldest| now_ms - oldest >= policy.window_ms)
        {
            window.pop_front();
        }
        // The failure just made is the latest, so this equals
        // `retry_after_ms(window, now_ms)` without rescanning the window.
        let recent = u32::try_from(window.len()).unwrap_or(u32::MAX);
        now_ms += policy.required_delay_ms(recent);
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_delays_start_after_three_failures_and_cap_at_a_minute() {
        let policy = ThrottlePolicy::PER_ACCOUNT;
        let delays: Vec<i64> = (0..12).map(|n| policy.required_delay_ms(n)).collect();
        assert_eq!(
            delays,
            [
                0, 0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(policy.required_delay_ms(u32::MAX), 60_000);
    }

    #[test]
    fn address_delays_start_after_ten_failures_and_cap_at_thirty_seconds() {
        let policy = ThrottlePolicy::PER_SOURCE_ADDRESS;
        assert_eq!(policy.required_delay_ms(9), 0);
        assert_eq!(policy.required_delay_ms(10), 1_000);
        assert_eq!(policy.required_delay_ms(14), 16_000);
        assert_eq!(policy.required_delay_ms(15), 30_000);
        assert_eq!(policy.required_delay_ms(1_000), 30_000);
    }

    #[test]
    fn retry_after_counts_only_the_window() {
        let policy = ThrottlePolicy::PER_ACCOUNT;
        let now = 10_000_000;
        // Four failures in the last minute: the fourth costs 2 s from the latest.
        let failures = [now - 60_000, now - 50_000, now - 40_000, now - 500];
        assert_eq!(policy.recent_failures(&failures, now), 4);
        assert_eq!(policy.retry_after_ms(&failures, now), 1_500);
        assert_eq!(policy.retry_after_ms(&failures, now + 1_500), 0);
        // The same failures 15 minutes later no longer count.
        let later = now + THROTTLE_WINDOW_MS + 60_000;
        assert_eq!(policy.recent_failures(&failures, later), 0);
        assert_eq!(policy.retry_after_ms(&failures, later), 0);
        assert_eq!(policy.retry_after_ms(&[], now), 0);
    }

    #[test]
    fn guesses_per_hour_figures_for_the_documentation() {
        // Account: 3 at t=0, then at 1, 3, 7, 15, 31, 63 s, then every 60 s:
        // 63 + 58 * 60 = 3543 s is the last start inside the hour; 9 + 58 = 67.
        assert_eq!(guesses_per_hour(&ThrottlePolicy::PER_ACCOUNT), 67);
        // Address: 10 at t=0, then at 1, 3, 7, 15, 31 s, then every 30 s:
        // 31 + 118 * 30 = 3571 s; 15 + 118 = 133.
        assert_eq!(guesses_per_hour(&ThrottlePolicy::PER_SOURCE_ADDRESS), 133);
    }

    #[test]
    fn a_policy_without_delays_is_reported_as_unbounded_not_hung() {
        let open = ThrottlePolicy {
            free_failures: u32::MAX,
            ..ThrottlePolicy::PER_ACCOUNT
        };
        assert_eq!(guesses_per_hour(&open), SIMULATION_LIMIT);
    }
}
