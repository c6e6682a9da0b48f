//! Bearer tokens of the credentials API and the per-token rate limit.
//!
//! A token is `ftk_` and 40 random alphanumerics from the OS's CSPRNG (about
//! 238 bits; the prefix lets secret scanners and people recognise one). The
//! store keeps only its SHA-256: `ferroturn api-token add` prints the token
//! once, and a copy of the database lets nobody call the API. With that much
//! entropy a fast unsalted hash is enough; there is no dictionary to try.
//!
//! A presented token is hashed and compared with *every* stored hash in
//! constant time, so neither the comparison nor which token matched shows in
//! the answer's timing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString as _};
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "ftk_";
/// Random characters after the prefix.
const TOKEN_RANDOM_CHARS: usize = 40;

/// A new token, from the OS's CSPRNG.
pub fn generate() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        Alphanumeric.sample_string(&mut OsRng, TOKEN_RANDOM_CHARS)
    )
}

/// What the store keeps of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The name of the stored token whose hash is `hash(presented)`, if any. Every
/// stored hash is compared, each in constant time, whatever matched.
pub fn find<'a>(presented: &str, stored: &'a [(String, [u8; 32])]) -> Option<&'a str> {
    let want = hash(presented);
    let mut found = None;
    for (name, h) in stored {
        if bool::from(h.ct_eq(&want)) {
            found = Some(name.as_str());
        }
    }
    found
}

/// At most this many tokens are tracked by the limiter; past it, buckets that
/// are full again are forgotten (they would grant the same as a new one).
const MAX_TRACKED: usize = 10_000;

/// A token bucket per token name: `per_minute` requests a minute, in bursts of
/// up to `per_minute`. Off the data path (the API thread only), so a plain map.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one request from `name`'s bucket at `now`: `Ok`, or `Err` with how
    /// long until the next request would be allowed (for Retry-After).
    /// `per_minute` 0 = unlimited.
    pub fn check(&mut self, name: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(name) {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(name.to_owned())
            .or_insert((capacity, now));
        // A reload may lower the rate under what a bucket holds.
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_found_by_hash() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 44, "{a}");
        let stored = vec![("one".to_owned(), hash(&a)), ("two".to_owned(), hash(&b))];
        assert_eq!(find(&a, &stored), Some("one"));
        assert_eq!(find(&b, &stored), Some("two"));
        assert_eq!(find("ftk_wrong", &stored), None);
        assert_eq!(find("", &stored), None);
        assert_ne!(hash(&a)[..], *a.as_bytes());
    }

    #[test]
    fn rate_limit_per_token_with_retry_after() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check("a", 3, t0).is_ok());
        }
        let wait = r.check("a", 3, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another token has its own bucket.
        assert!(r.check("b", 3, t0).is_ok());
        // 20 s later one more request is allowed, not two.
        let t1 = t0 + Duration::from_secs(20);
        assert!(r.check("a", 3, t1).is_ok());
        assert!(r.check("a", 3, t1).is_err());
        // 0 = unlimited.
        for _ in 0..100 {
            assert!(r.check("c", 0, t0).is_ok());
        }
    }
}
