//! One test kit for the sans-IO core, shared by the unit tests and the fuzz
//! target (enable the `testing` feature to use it outside this crate):
//!
//! - [`FakeBinder`]: an in-memory [`RelayBinder`](super::RelayBinder) that
//!   records what it is asked and checks every release;
//! - [`FakeClock`]: an `Instant` base moved forward by hand, with the unix time
//!   it stands for;
//! - [`Client`]: a signing client that does the 401 → retry (and 438 → retry)
//!   dance against a core, signing with the same
//!   [`RequestAuth`](super::auth::RequestAuth) as [`crate::client`].

mod binder;
mod client;

use std::time::{Duration, Instant};

pub use binder::FakeBinder;
pub use client::{Client, Mac, Resp, Sec};

/// A fake clock: `t0` is a real `Instant` taken once, `now` only moves when a
/// test moves it, and `unix0` is the unix time `t0` stands for.
#[derive(Clone, Copy, Debug)]
pub struct FakeClock {
    pub t0: Instant,
    pub now: Instant,
    pub unix0: u64,
}

impl FakeClock {
    pub fn new(unix0: u64) -> Self {
        let t0 = Instant::now();
        Self { t0, now: t0, unix0 }
    }

    /// Moves `now` forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Moves `now` to `t0 + d`; the clock only moves forward.
    pub fn set(&mut self, d: Duration) {
        assert!(self.t0 + d >= self.now, "the clock only moves forward");
        self.now = self.t0 + d;
    }

    /// Time since `t0`.
    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.t0)
    }

    /// The unix time (seconds) `now` stands for.
    pub fn unix(&self) -> u64 {
        self.unix0 + self.elapsed().as_secs()
    }
}
