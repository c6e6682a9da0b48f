//! [`FakeBinder`]: relay sockets in memory.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::turn::{BindError, Bound, PortRequest, RelayBinder, RelayId};

/// Hands out relay sockets from a port range, lowest free port (per IP) first,
/// and records what it was asked and what was released. Releasing or
/// discarding a socket it did not open (or twice) panics.
#[derive(Debug)]
pub struct FakeBinder {
    pub range: RangeInclusive<u16>,
    next_id: u32,
    /// Open sockets (parked ones included), in the order they were opened.
    pub open: Vec<(RelayId, SocketAddr)>,
    pub released: Vec<RelayId>,
    /// Every address ever opened.
    pub ever: BTreeSet<SocketAddr>,
    /// Make binds of that family fail.
    pub fail_v4: Option<BindError>,
    pub fail_v6: Option<BindError>,
    /// At most this many open sockets; more is `BindError::Exhausted`.
    pub capacity: usize,
    /// When set, a bind on any other IP panics.
    pub allowed_ips: Option<Vec<IpAddr>>,
    /// (ip, port request, dont_fragment) of every bind call.
    pub calls: Vec<(IpAddr, PortRequest, bool)>,
    /// Reserved sockets waiting to be adopted.
    pub parked: Vec<(RelayId, SocketAddr)>,
}

impl FakeBinder {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            next_id: 1,
            open: Vec::new(),
            released: Vec::new(),
            ever: BTreeSet::new(),
            fail_v4: None,
            fail_v6: None,
            capacity: usize::MAX,
            allowed_ips: None,
            calls: Vec::new(),
            parked: Vec::new(),
        }
    }

    fn used(&self, ip: IpAddr, port: u16) -> bool {
        self.open
            .iter()
            .any(|(_, a)| a.ip() == ip && a.port() == port)
    }

    fn open_one(&mut self, addr: SocketAddr) -> RelayId {
        let id = RelayId::new(self.next_id, 0);
        self.next_id += 1;
        self.open.push((id, addr));
        self.ever.insert(addr);
        id
    }

    /// The address of open socket `id`.
    pub fn addr_of(&self, id: RelayId) -> Option<SocketAddr> {
        self.open.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
    }

    /// The id of the open socket on `addr`.
    pub fn id_of(&self, addr: SocketAddr) -> Option<RelayId> {
        self.open.iter().find(|(_, a)| *a == addr).map(|(i, _)| *i)
    }
}

impl RelayBinder for FakeBinder {
    fn bind(&mut self, ip: IpAddr, port: PortRequest, df: bool) -> Result<Bound, BindError> {
        self.calls.push((ip, port, df));
        if let Some(allowed) = &self.allowed_ips {
            assert!(
                allowed.contains(&ip),
                "relay bound on {ip}, which is not a relay or server address"
            );
        }
        let fail = if ip.is_ipv4() {
            self.fail_v4
        } else {
            self.fail_v6
        };
        if let Some(e) = fail {
            return Err(e);
        }
        let need = if port == PortRequest::EvenPair { 2 } else { 1 };
        if self.open.len() + need > self.capacity {
            return Err(BindError::Exhausted);
        }
        let pick = self.range.clone().find(|&p| match port {
            PortRequest::Any => !self.used(ip, p),
            PortRequest::Even => p % 2 == 0 && !self.used(ip, p),
            PortRequest::EvenPair => {
                p % 2 == 0 && p < *self.range.end() && !self.used(ip, p) && !self.used(ip, p + 1)
            }
        });
        let p = pick.ok_or(BindError::Exhausted)?;
        let addr = SocketAddr::new(ip, p);
        let id = self.open_one(addr);
        // The reserved socket is parked: listed in `open` (it holds its port) but
        // not relaying until adopted.
        let reserved = (port == PortRequest::EvenPair).then(|| {
            let raddr = SocketAddr::new(ip, p + 1);
            let rid = self.open_one(raddr);
            self.parked.push((rid, raddr));
            raddr
        });
        Ok(Bound { id, addr, reserved })
    }

    fn adopt(&mut self, addr: SocketAddr) -> Result<Bound, BindError> {
        let i = self
            .parked
            .iter()
            .position(|(_, a)| *a == addr)
            .ok_or(BindError::Exhausted)?;
        let (id, addr) = self.parked.remove(i);
        Ok(Bound {
            id,
            addr,
            reserved: None,
        })
    }

    fn discard(&mut self, addr: SocketAddr) {
        let i = self
            .parked
            .iter()
            .position(|(_, a)| *a == addr)
            .unwrap_or_else(|| panic!("discard of {addr}, which is not parked"));
        let (id, _) = self.parked.remove(i);
        self.release(id);
    }

    fn release(&mut self, id: RelayId) {
        let before = self.open.len();
        self.open.retain(|(i, _)| *i != id);
        assert_eq!(
            before,
            self.open.len() + 1,
            "release of relay {id:?}, which is not open"
        );
        self.released.push(id);
    }
}
