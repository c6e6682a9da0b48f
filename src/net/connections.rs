//! Limits on TCP and TLS client connections, shared by every shard's accept
//! loop: how many may be open per client address and in total, and how long a
//! connection may go without an allocation. Also why the server closed a
//! connection ([`ConnClose`]), for `ferroturn_connections_closed_total`.
//!
//! Touched once per accepted and once per closed connection, never per packet,
//! so one mutex is fine. The map holds only addresses with a connection open
//! now, so its size is bounded by the open connections (hence by `max-total`),
//! never by the addresses ever seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::ConnectionsConfig;
use crate::turn::quota::client_key;

/// Why the server closed (or refused) a client's stream connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum ConnClose {
    /// `connections.max-per-ip` connections from that address were open.
    PerIpLimit,
    /// `connections.max-total` connections were open.
    TotalLimit,
    /// No allocation within `connections.allocate-timeout` of the accept, however
    /// many bytes trickled in meanwhile (slow-loris).
    AllocateTimeout,
    /// The connection's allocation ended (expired, deleted, killed) and no new
    /// one was made within `connections.allocate-timeout`.
    Idle,
    /// No complete first STUN message within 10 s of the accept.
    FirstMessageTimeout,
    /// The bytes were not STUN or ChannelData framing (an HTTP or TLS probe).
    NotStun,
    /// A connection from a `proxy-protocol-from` source did not open with a
    /// valid PROXY header in time.
    ProxyHeader,
}

impl ConnClose {
    pub const COUNT: usize = 7;
    pub const ALL: [ConnClose; Self::COUNT] = [
        ConnClose::PerIpLimit,
        ConnClose::TotalLimit,
        ConnClose::AllocateTimeout,
        ConnClose::Idle,
        ConnClose::FirstMessageTimeout,
        ConnClose::NotStun,
        ConnClose::ProxyHeader,
    ];

    /// The metric label value.
    pub const fn name(self) -> &'static str {
        match self {
            ConnClose::PerIpLimit => "per_ip_limit",
            ConnClose::TotalLimit => "total_limit",
            ConnClose::AllocateTimeout => "allocate_timeout",
            ConnClose::Idle => "idle",
            ConnClose::FirstMessageTimeout => "first_message_timeout",
            ConnClose::NotStun => "not_stun",
            ConnClose::ProxyHeader => "proxy_header",
        }
    }
}

/// The connection limits and counts of all shards.
#[derive(Debug)]
pub struct ConnLimits {
    /// Limits (0 = unlimited) and the timeout in milliseconds, changed by a
    /// reload: lower caps refuse new connections, open ones stay.
    per_ip: AtomicU32,
    total: AtomicU32,
    allocate_timeout_ms: AtomicU64,
    /// `proxy-protocol-from`: read once per accepted connection.
    proxy_from: RwLock<Arc<[ipnet::IpNet]>>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: u32,
    by_ip: HashMap<IpAddr, u32>,
}

impl ConnLimits {
    pub fn new(c: &ConnectionsConfig) -> Self {
        let l = Self {
            per_ip: AtomicU32::new(0),
            total: AtomicU32::new(0),
            allocate_timeout_ms: AtomicU64::new(0),
            proxy_from: RwLock::new(Arc::from([])),
            open: Mutex::new(Open::default()),
        };
        l.set(c);
        l
    }

    /// New limits, from a configuration reload.
    pub fn set(&self, c: &ConnectionsConfig) {
        self.per_ip.store(c.max_per_ip, Ordering::Relaxed);
        self.total.store(c.max_total, Ordering::Relaxed);
        let ms = u64::try_from(c.allocate_timeout.as_millis()).unwrap_or(u64::MAX);
        self.allocate_timeout_ms.store(ms, Ordering::Relaxed);
        *self.proxy_from.write().unwrap_or_else(|p| p.into_inner()) =
            c.proxy_protocol_from.as_slice().into();
    }

    /// Whether connections from `ip` come through a trusted load balancer and
    /// open with a PROXY header (see `net::proxy_protocol`).
    pub fn from_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxy_from
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n.contains(&ip))
    }

    pub fn allocate_timeout(&self) -> Duration {
        Duration::from_millis(self.allocate_timeout_ms.load(Ordering::Relaxed))
    }

    /// Counts a connection from `ip` in, unless a cap forbids it; the guard
    /// counts it out when dropped, however the connection ends.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, ConnClose> {
        let key = client_key(ip);
        let (per_ip, total) = (
            self.per_ip.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if total != 0 && open.total >= total {
            return Err(ConnClose::TotalLimit);
        }
        let n = open.by_ip.get(&key).copied().unwrap_or(0);
        if per_ip != 0 && n >= per_ip {
            return Err(ConnClose::PerIpLimit);
        }
        open.by_ip.insert(key, n + 1);
        open.total += 1;
        Ok(ConnGuard {
            limits: self.clone(),
            key,
        })
    }

    /// Connections counted now (all addresses), and addresses with one open.
    pub fn open(&self) -> (u32, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.total, open.by_ip.len())
    }
}

/// One admitted connection; dropping it counts the connection out.
#[derive(Debug)]
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    key: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, total: u32) -> Arc<ConnLimits> {
        Arc::new(ConnLimits::new(&ConnectionsConfig {
            max_per_ip: per_ip,
            max_total: total,
            allocate_timeout: Duration::from_secs(60),
            proxy_protocol_from: Vec::new(),
        }))
    }

    #[test]
    fn caps_per_address_and_in_total_and_forgets_closed_ones() {
        let l = limits(2, 5);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = ip("192.0.2.1");
        let g1 = l.admit(a).unwrap();
        let g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), ConnClose::PerIpLimit);
        // One IPv6 /64 is one client.
        let g3 = l.admit(ip("2001:db8::1")).unwrap();
        let g4 = l.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8::3")).unwrap_err(),
            ConnClose::PerIpLimit
        );
        let g5 = l.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.3")).unwrap_err(), ConnClose::TotalLimit);
        drop(g1);
        let g6 = l.admit(ip("192.0.2.3")).unwrap();
        drop((g2, g3, g4, g5, g6));
        assert_eq!(l.open(), (0, 0));
        // A reload lifts the caps.
        l.set(&ConnectionsConfig {
            max_per_ip: 0,
            max_total: 0,
            allocate_timeout: Duration::from_secs(2),
            proxy_protocol_from: vec!["10.0.0.0/8".parse().unwrap()],
        });
        assert!(l.from_trusted_proxy(ip("10.1.2.3")));
        assert!(l.from_trusted_proxy(ip("::ffff:10.1.2.3")));
        assert!(!l.from_trusted_proxy(ip("192.0.2.1")));
        let all: Vec<_> = (0..10).map(|_| l.admit(a).unwrap()).collect();
        assert_eq!(l.open(), (10, 1));
        assert_eq!(l.allocate_timeout(), Duration::from_secs(2));
        drop(all);
        assert_eq!(l.open(), (0, 0));
    }
}
