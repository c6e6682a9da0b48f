//! `[relay]`: relay addresses, 1:1 NAT mappings, the port range and the
//! lifetimes of allocations, permissions and channels.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{invalid, seconds, Result};
use super::ConfigError;

/// `[relay]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRelay {
    /// `relay-ips`
    pub relay_ips: Vec<String>,
    /// `external-ips`: `PUBLIC` or `PUBLIC/PRIVATE`.
    pub external_ips: Vec<String>,
    /// `port-range`: `MIN-MAX`.
    pub port_range: String,
    /// `default-lifetime` in seconds.
    pub default_lifetime: i64,
    /// `max-lifetime` in seconds.
    pub max_lifetime: i64,
    /// `permission-lifetime` in seconds.
    pub permission_lifetime: i64,
    /// `channel-lifetime` in seconds.
    pub channel_lifetime: i64,
    /// `tcp-allocations`: RFC 6062 TCP allocations (Connect, ConnectionBind).
    pub tcp_allocations: bool,
    /// `tcp-connection-timeout` in seconds: how long a peer connection of a
    /// TCP allocation waits for its ConnectionBind.
    pub tcp_connection_timeout: i64,
}

impl Default for RawRelay {
    fn default() -> Self {
        RawRelay {
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            // IANA dynamic/private range, as RFC 8656 §5 recommends.
            port_range: "49152-65535".into(),
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: 300,
            channel_lifetime: 600,
            tcp_allocations: false,
            tcp_connection_timeout: 30,
        }
    }
}

/// Relay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Addresses relay sockets bind to: at most one IPv4 and one IPv6.
    /// Empty = bind the wildcard address and advertise the address the
    /// client reached.
    pub relay_ips: Vec<IpAddr>,
    /// 1:1 NAT mappings advertised in XOR-RELAYED-ADDRESS; at most one per
    /// family.
    pub external_ips: Vec<ExternalIp>,
    /// Lowest relay port (inclusive), >= 1.
    pub port_min: u16,
    /// Highest relay port (inclusive), >= `port_min`.
    pub port_max: u16,
    /// Allocation lifetime when the client requests none.
    pub default_lifetime: Duration,
    /// Cap on requested allocation lifetimes; >= `default_lifetime`.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 fixes 300 s; configurable for tests).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime.
    pub channel_lifetime: Duration,
    /// RFC 6062 TCP allocations; off by default (Allocate TCP gets 442).
    pub tcp_allocations: bool,
    /// How long a TCP allocation's peer connection (and a new client
    /// connection that holds nothing) waits for a ConnectionBind: 1..=3600 s.
    pub tcp_connection_timeout: Duration,
}

/// One 1:1 NAT mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// The address clients and peers see.
    pub public: IpAddr,
    /// The local address that maps to `public`; `None` = whatever local
    /// address of the same family the relay socket has.
    pub private: Option<IpAddr>,
}

impl fmt::Display for ExternalIp {
    /// The configuration syntax: `PUBLIC` or `PUBLIC/PRIVATE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{private}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}

pub(super) fn validate_relay(relay: &RawRelay) -> Result<RelayConfig> {
    let mut relay_ips: Vec<IpAddr> = Vec::new();
    for (i, value) in relay.relay_ips.iter().enumerate() {
        let key = format!("relay.relay-ips[{i}]");
        let Ok(ip) = value.trim().parse::<IpAddr>() else {
            return invalid(key, format!("{value:?} is not an IP address"));
        };
        check_unicast(&key, "address", ip)?;
        if let Some(j) = relay_ips.iter().position(|r| r.is_ipv4() == ip.is_ipv4()) {
            return invalid(
                key,
                format!(
                    "second {} address (relay.relay-ips[{j}] is {}); at most one IPv4 and one IPv6 address are allowed",
                    family(&ip),
                    relay_ips[j]
                ),
            );
        }
        relay_ips.push(ip);
    }

    let mut external_ips: Vec<ExternalIp> = Vec::new();
    for (i, value) in relay.external_ips.iter().enumerate() {
        let key = format!("relay.external-ips[{i}]");
        let ext = parse_external_ip(&key, value)?;
        if let Some(j) = external_ips
            .iter()
            .position(|e| e.public.is_ipv4() == ext.public.is_ipv4())
        {
            return invalid(
                key,
                format!(
                    "second {} mapping (relay.external-ips[{j}] is one); at most one per address family",
                    family(&ext.public)
                ),
            );
        }
        // With both a relay IP and a private address for a family, the
        // relay socket is bound to the relay IP, so that is the only
        // address that can be the private side of the mapping.
        if let Some(private) = ext.private {
            if let Some(relay_ip) = relay_ips.iter().find(|r| r.is_ipv4() == private.is_ipv4()) {
                if *relay_ip != private {
                    return invalid(
                        key,
                        format!(
                            "PRIVATE {private} is not the {} relay address {relay_ip} from relay.relay-ips",
                            family(&private)
                        ),
                    );
                }
            }
        }
        external_ips.push(ext);
    }

    let (port_min, port_max) = parse_port_range(&relay.port_range).ok_or_else(|| {
        ConfigError::invalid(
            "relay.port-range",
            format!(
                "{:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535",
                relay.port_range
            ),
        )
    })?;

    let default_lifetime = seconds("relay.default-lifetime", relay.default_lifetime)?;
    let max_lifetime = seconds("relay.max-lifetime", relay.max_lifetime)?;
    if max_lifetime < default_lifetime {
        return invalid(
            "relay.max-lifetime",
            format!(
                "{} is less than relay.default-lifetime ({})",
                relay.max_lifetime, relay.default_lifetime
            ),
        );
    }
    Ok(RelayConfig {
        relay_ips,
        external_ips,
        port_min,
        port_max,
        default_lifetime,
        max_lifetime,
        permission_lifetime: seconds("relay.permission-lifetime", relay.permission_lifetime)?,
        channel_lifetime: seconds("relay.channel-lifetime", relay.channel_lifetime)?,
        tcp_allocations: relay.tcp_allocations,
        tcp_connection_timeout: Duration::from_secs(super::validate::int_in(
            "relay.tcp-connection-timeout",
            relay.tcp_connection_timeout,
            1,
            3600,
        )?),
    })
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A unicast address we can bind to or advertise: the wildcard means "no
/// address" (leave the list empty for that) and multicast cannot carry a
/// relayed transport address.
fn check_unicast(key: &str, what: &str, ip: IpAddr) -> Result<()> {
    if ip.is_unspecified() {
        return invalid(
            key,
            format!("{what} {ip} is the wildcard address; leave relay.relay-ips empty to bind the wildcard"),
        );
    }
    if ip.is_multicast() {
        return invalid(key, format!("{what} {ip} is a multicast address"));
    }
    Ok(())
}

fn parse_external_ip(key: &str, value: &str) -> Result<ExternalIp> {
    let text = value.trim();
    let (public_text, private_text) = match text.split_once('/') {
        Some((public, private)) => (public.trim(), Some(private.trim())),
        None => (text, None),
    };
    let bad = || {
        ConfigError::invalid(
            key,
            format!("{value:?} is not PUBLIC or PUBLIC/PRIVATE (two IP addresses, not a CIDR)"),
        )
    };
    let public: IpAddr = public_text.parse().map_err(|_| bad())?;
    let private: Option<IpAddr> = match private_text {
        Some(p) => Some(p.parse().map_err(|_| bad())?),
        None => None,
    };
    check_unicast(key, "PUBLIC", public)?;
    if let Some(private) = private {
        check_unicast(key, "PRIVATE", private)?;
        if private.is_ipv4() != public.is_ipv4() {
            return invalid(
                key,
                format!(
                    "PUBLIC {public} is {} but PRIVATE {private} is {}; both must be the same family",
                    family(&public),
                    family(&private)
                ),
            );
        }
    }
    Ok(ExternalIp { public, private })
}

/// `MIN-MAX` with `1 <= MIN <= MAX <= 65535`; `None` otherwise.
pub fn parse_port_range(value: &str) -> Option<(u16, u16)> {
    let (min, max) = value.trim().split_once('-')?;
    let min: u16 = min.trim().parse().ok()?;
    let max: u16 = max.trim().parse().ok()?;
    (min >= 1 && min <= max).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn port_range_parsing() {
        assert_eq!(parse_port_range("1-65535"), Some((1, 65535)));
        assert_eq!(parse_port_range("5000-5000"), Some((5000, 5000)));
        assert_eq!(parse_port_range("0-10"), None);
        assert_eq!(parse_port_range("10-9"), None);
        assert_eq!(parse_port_range("70000-1"), None);
        assert_eq!(parse_port_range("5000"), None);
    }

    #[test]
    fn external_ip_displays_in_config_syntax() {
        let config = Config::from_toml_str(
            "[relay]\nexternal-ips = [\"203.0.113.7/10.0.0.5\", \"2001:db8::7\"]\n",
        )
        .expect("valid");
        let shown: Vec<String> = config
            .relay
            .external_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["203.0.113.7/10.0.0.5", "2001:db8::7"]);
    }
}
