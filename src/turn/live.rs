//! Which relay ports are live, shared by all shards without a lock.
//!
//! A peer address on one of this host's own IPs is only a legitimate destination when
//! it is another allocation's relay socket (client-to-client relaying through one
//! server). Anything else on this host (a DNS resolver, a database, the listeners) is
//! off limits. The check runs per Send indication, so it is a plain atomic bitmap of
//! the 65,536 ports per address family (an IPv4 and an IPv6 relay may share a port
//! number): 16 KiB, read with one relaxed load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bitmaps of relay ports that have a live relay socket on some relay IP, one for
/// IPv4 and one for IPv6.
pub struct LiveRelayPorts {
    bits: Box<[AtomicU64]>,
}

impl Default for LiveRelayPorts {
    fn default() -> Self {
        Self {
            bits: (0..2048).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn slot(addr: SocketAddr) -> (usize, u16) {
    let family = if addr.is_ipv4() { 0 } else { 1024 };
    (family + usize::from(addr.port()) / 64, addr.port() % 64)
}

impl std::fmt::Debug for LiveRelayPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRelayPorts").finish_non_exhaustive()
    }
}

impl LiveRelayPorts {
    /// Marks the relay port of `addr` (in its family) live or not.
    pub fn set(&self, addr: SocketAddr, live: bool) {
        let (word, bit) = slot(addr);
        if live {
            self.bits[word].fetch_or(1 << bit, Ordering::Relaxed);
        } else {
            self.bits[word].fetch_and(!(1 << bit), Ordering::Relaxed);
        }
    }

    /// Whether a relay socket of `addr`'s family is live on `addr`'s port.
    pub fn is_live(&self, addr: SocketAddr) -> bool {
        let (word, bit) = slot(addr);
        self.bits[word].load(Ordering::Relaxed) & (1 << bit) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_clear_per_family() {
        let l = LiveRelayPorts::default();
        let v4 = |p: u16| SocketAddr::from(([192, 0, 2, 1], p));
        let v6 = |p: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], p));
        for p in [0u16, 63, 64, 49152, 65535] {
            assert!(!l.is_live(v4(p)));
            l.set(v4(p), true);
            assert!(l.is_live(v4(p)));
            assert!(!l.is_live(v6(p)), "families are separate");
        }
        l.set(v6(64), true);
        l.set(v4(64), false);
        assert!(!l.is_live(v4(64)));
        assert!(l.is_live(v6(64)));
        assert!(l.is_live(v4(63)));
    }
}
