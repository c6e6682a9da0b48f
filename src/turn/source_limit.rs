//! Per-source limits on error answers to unauthenticated requests.
//!
//! A 401 (or a 400, a 438, a 420) answers a request nobody has authenticated,
//! so its source address may be spoofed: without a limit, a flood of
//! unauthenticated Allocates "from" a victim turns the server into a
//! reflector aimed at the victim (coturn has `--401-ratelimit` for the same
//! reason). [`SourceLimiter`] gives every source IP a token bucket; an
//! unauthenticated error beyond it is not sent (the request is dropped and
//! counted as `DropReason::UnauthenticatedRateLimit`). Authenticated requests
//! and Binding successes never consult it.
//!
//! Memory is fixed however many sources a spoofed flood uses: the buckets are
//! a power-of-two array allocated once ([`BUCKETS`] × 8 bytes, 512 KiB), indexed
//! by a keyed hash of the source. Two sources that hash to the same slot share
//! its budget; the key is random per server, so an attacker cannot aim
//! collisions at a chosen victim. A map keyed by address would be exact but
//! would grow with every spoofed address.
//!
//! One limiter is shared by all shards (it sits in [`Shared`]), so a source
//! gets one budget however its packets spread over the shards' sockets. Each
//! bucket is one atomic word updated by compare-and-swap: no lock, and it is
//! only touched on the path of unauthenticated errors, never per relayed packet.
//!
//! Each bucket is kept as GCRA (the "generic cell rate algorithm"): the
//! theoretical arrival time (TAT) of the next answer, in nanoseconds since the
//! limiter's epoch. An answer is allowed while the TAT is at most
//! `(burst - 1) / rate` seconds ahead of `now`, and moves the TAT on by
//! `1 / rate`. That is a token bucket of `burst` tokens refilled at `rate` per
//! second, in one word, without a refill step; and the rate and burst are
//! parameters of each call, so a reload changes them without touching the table.
//!
//! IPv6 sources are keyed by their /64: a host owns a whole /64, so a per-address
//! limit would be no limit for one who rotates addresses (or for a flood spoofing
//! a victim's /64). IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! [`Shared`]: super::Shared

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Buckets in a limiter: 2^16. A flood must reach `rate × BUCKETS` requests per
/// second (655,360 at the default 10/s) before every bucket is empty and
/// unauthenticated errors stop for everyone; below that, a new client's first
/// 401 finds budget in its bucket.
pub const BUCKETS: usize = 1 << 16;

/// The limit in force: `per_second` answers per second per source, with bursts
/// of up to `burst`. `per_second == 0` turns the limit off.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SourceRate {
    pub per_second: u32,
    pub burst: u32,
}

impl SourceRate {
    /// No limit.
    pub const OFF: SourceRate = SourceRate {
        per_second: 0,
        burst: 0,
    };

    pub const fn is_off(self) -> bool {
        self.per_second == 0
    }
}

/// The per-source token buckets (see the module documentation).
pub struct SourceLimiter {
    buckets: Box<[AtomicU64]>,
    mask: usize,
    hasher: foldhash::quality::FixedState,
    /// Time zero of the TATs: the `now` of the first call. An `Instant` a shard
    /// read a moment before another's counts as the epoch itself.
    epoch: OnceLock<Instant>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl SourceLimiter {
    /// A limiter of [`BUCKETS`] buckets whose hash is keyed with `key`: drivers
    /// pass a random key (an attacker who knew it could aim collisions), tests a
    /// constant.
    pub fn new(key: u64) -> Self {
        Self::with_buckets(BUCKETS, key)
    }

    /// A limiter of `buckets` buckets (rounded up to a power of two, at least
    /// one), for tests of collisions.
    pub fn with_buckets(buckets: usize, key: u64) -> Self {
        let n = buckets.max(1).next_power_of_two();
        Self {
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            hasher: foldhash::quality::FixedState::with_seed(key),
            epoch: OnceLock::new(),
        }
    }

    /// How many buckets there are.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// The bucket `ip` is counted in.
    pub fn bucket(&self, ip: IpAddr) -> usize {
        let key: u128 = match ip.to_canonical() {
            IpAddr::V4(v4) => u32::from(v4).into(),
            // The /64, marked so that it never equals an IPv4 key.
            IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 64),
        };
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// Takes one answer from `ip`'s budget at `now`: `true` if the answer may
    /// be sent, `false` if the source is over `rate` (the budget is unchanged
    /// then, so a source that keeps flooding regains nothing until it slows
    /// down below the rate). Always `true` when `rate` is off.
    pub fn allow(&self, now: Instant, ip: IpAddr, rate: SourceRate) -> bool {
        if rate.is_off() {
            return true;
        }
        let epoch = *self.epoch.get_or_init(|| now);
        let now =
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
        // Nanoseconds per answer, and how far ahead of `now` the TAT may run:
        // `burst - 1` answers' worth (the answer being decided is the burst's last).
        let interval = 1_000_000_000 / u64::from(rate.per_second);
        let tolerance = interval.saturating_mul(u64::from(rate.burst.max(1) - 1));
        let slot = &self.buckets[self.bucket(ip)];
        let mut tat = slot.load(Ordering::Relaxed);
        loop {
            let from = tat.max(now);
            if from - now > tolerance {
                return false;
            }
            match slot.compare_exchange_weak(
                tat,
                from.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}
