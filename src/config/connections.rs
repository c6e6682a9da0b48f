//! `[connections]`: limits on TCP and TLS client connections, against stream
//! abuse (connection floods from one address, connections that never allocate,
//! slow-loris clients).

use std::time::Duration;

use serde::Deserialize;

use super::validate::{int_in, invalid, Result};

/// `[connections]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConnections {
    /// `max-per-ip`: concurrent TCP/TLS connections from one client address
    /// (IPv6: one /64); 0 = unlimited.
    pub max_per_ip: i64,
    /// `max-total`: concurrent TCP/TLS connections server-wide; 0 = unlimited.
    pub max_total: i64,
    /// `allocate-timeout`: seconds from accept within which a connection must
    /// hold an allocation, and after its allocation ends within which it must
    /// allocate again.
    pub allocate_timeout: i64,
    /// `proxy-protocol-from`: networks of L4 load balancers whose connections
    /// open with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol_from: Vec<String>,
}

/// Each stream connection carries at most one allocation, so a per-address cap
/// equal to `quota.max-allocations-per-ip` never refuses a connection whose
/// allocation the quota would allow; the total matches the 16,384 ports of the
/// default relay range, which bounds the allocations anyway; 60 s is coturn's
/// `max-allocate-timeout`.
impl Default for RawConnections {
    fn default() -> Self {
        RawConnections {
            max_per_ip: 512,
            max_total: 16_384,
            allocate_timeout: 60,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// Limits on stream connections; all reloadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// Per client address (IPv6: per /64); 0 = unlimited.
    pub max_per_ip: u32,
    /// Server-wide; 0 = unlimited.
    pub max_total: u32,
    /// From accept to an allocation (and from an allocation's end to the next).
    pub allocate_timeout: Duration,
    /// Sources whose connections must open with a PROXY header.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        validate_connections(&RawConnections::default())
            .expect("built-in [connections] defaults are valid")
    }
}

pub(super) fn validate_connections(c: &RawConnections) -> Result<ConnectionsConfig> {
    Ok(ConnectionsConfig {
        max_per_ip: int_in("connections.max-per-ip", c.max_per_ip, 0, u32::MAX.into())?,
        max_total: int_in("connections.max-total", c.max_total, 0, u32::MAX.into())?,
        allocate_timeout: Duration::from_secs(int_in(
            "connections.allocate-timeout",
            c.allocate_timeout,
            1,
            3600,
        )?),
        proxy_protocol_from: c
            .proxy_protocol_from
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .or_else(|_| {
                        invalid(
                            format!("connections.proxy-protocol-from[{i}]"),
                            format!("{s:?} is not an IP address or network (CIDR)"),
                        )
                    })
            })
            .collect::<Result<_>>()?,
    })
}
