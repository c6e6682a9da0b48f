//! coturn's peer ranges (`denied-peer-ip`, `allowed-peer-ip`, and the
//! `denied_peer_ip`/`allowed_peer_ip` tables): `IP`, `IP1-IP2` or a CIDR,
//! rewritten as the CIDR lists of ferroturn's `[peers]`, with coturn's
//! meaning (an allowed range overrides a denied one).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// An inclusive range of addresses of one family, as coturn writes them
/// (`IP`, `IP1-IP2`, or a CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// IPv4 (then both ends fit in 32 bits).
    pub v4: bool,
    /// First address.
    pub start: u128,
    /// Last address.
    pub end: u128,
}

impl IpRange {
    /// Parses coturn's syntax; `None` when it is not a range of one family
    /// with start <= end.
    pub fn parse(s: &str) -> Option<IpRange> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Some(IpRange::from_net(net.trunc()));
        }
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse::<IpAddr>().ok()?, b.trim().parse().ok()?),
            None => {
                let a: IpAddr = s.parse().ok()?;
                (a, a)
            }
        };
        let (v4, start, end) = match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (true, u128::from(u32::from(a)), u128::from(u32::from(b)))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (false, u128::from(a), u128::from(b)),
            _ => return None,
        };
        (start <= end).then_some(IpRange { v4, start, end })
    }

    /// The addresses of a network.
    pub fn from_net(net: IpNet) -> IpRange {
        match net {
            IpNet::V4(n) => IpRange {
                v4: true,
                start: u128::from(u32::from(n.network())),
                end: u128::from(u32::from(n.broadcast())),
            },
            IpNet::V6(n) => IpRange {
                v4: false,
                start: u128::from(n.network()),
                end: u128::from(n.broadcast()),
            },
        }
    }

    /// The fewest CIDRs that cover exactly this range.
    pub fn to_cidrs(self) -> Vec<IpNet> {
        if self.v4 {
            let (Ok(a), Ok(b)) = (u32::try_from(self.start), u32::try_from(self.end)) else {
                return Vec::new();
            };
            Ipv4Subnets::new(a.into(), b.into(), 0)
                .map(IpNet::V4)
                .collect()
        } else {
            Ipv6Subnets::new(self.start.into(), self.end.into(), 0)
                .map(IpNet::V6)
                .collect()
        }
    }

    /// This range without the addresses of `other` (zero, one or two
    /// pieces).
    fn minus(self, other: IpRange) -> Vec<IpRange> {
        if self.v4 != other.v4 || other.end < self.start || other.start > self.end {
            return vec![self];
        }
        let mut out = Vec::new();
        if other.start > self.start {
            out.push(IpRange {
                end: other.start - 1,
                ..self
            });
        }
        if other.end < self.end {
            out.push(IpRange {
                start: other.end + 1,
                ..self
            });
        }
        out
    }
}

/// coturn lets `allowed-peer-ip` override `denied-peer-ip`; in ferroturn an
/// operator `deny` wins over `allow`. So the allowed ranges are cut out of
/// the denied ones, and both become CIDR lists with coturn's meaning:
/// `(allow, deny)`.
pub fn peer_rules(allow: &[IpRange], deny: &[IpRange]) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut denied: Vec<IpRange> = deny.to_vec();
    for a in allow {
        denied = denied.into_iter().flat_map(|d| d.minus(*a)).collect();
    }
    let cidrs = |ranges: &[IpRange]| -> Vec<IpNet> {
        let mut out: Vec<IpNet> = ranges.iter().flat_map(|r| r.to_cidrs()).collect();
        out.sort();
        out.dedup();
        out
    };
    (cidrs(allow), cidrs(&denied))
}
