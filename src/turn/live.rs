//! Which relay ports are live, shared by all shards without a lock.
//!
//! A peer address on one of this host's own IPs is only a legitimate destination when
//! it is another allocation's relay socket (client-to-client relaying through one
//! server). Anything else on this host (a DNS resolver, a database, the listeners) is
//! off limits. The check runs per Send indication, so it is a plain atomic bitmap of
//! the 65,536 ports: 8 KiB, read with one relaxed load.

use std::sync::atomic::{AtomicU64, Ordering};

/// A bitmap of relay ports that have a live relay socket on some relay IP.
pub struct LiveRelayPorts {
    bits: Box<[AtomicU64]>,
}

impl Default for LiveRelayPorts {
    fn default() -> Self {
        Self {
            bits: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for LiveRelayPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRelayPorts").finish_non_exhaustive()
    }
}

impl LiveRelayPorts {
    pub fn set(&self, port: u16, live: bool) {
        let (word, bit) = (usize::from(port) / 64, port % 64);
        if live {
            self.bits[word].fetch_or(1 << bit, Ordering::Relaxed);
        } else {
            self.bits[word].fetch_and(!(1 << bit), Ordering::Relaxed);
        }
    }

    pub fn is_live(&self, port: u16) -> bool {
        let (word, bit) = (usize::from(port) / 64, port % 64);
        self.bits[word].load(Ordering::Relaxed) & (1 << bit) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_clear() {
        let l = LiveRelayPorts::default();
        for p in [0u16, 63, 64, 49152, 65535] {
            assert!(!l.is_live(p));
            l.set(p, true);
            assert!(l.is_live(p));
        }
        l.set(64, false);
        assert!(!l.is_live(64));
        assert!(l.is_live(63));
    }
}
