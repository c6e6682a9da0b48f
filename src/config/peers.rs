//! `[peers]`: networks opened or closed on top of the built-in deny list.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::validate::{invalid, Result};

/// `[peers]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPeers {
    /// `allow`: CIDRs or bare IPs exempted from the default deny list.
    pub allow: Vec<String>,
    /// `deny`: extra denied CIDRs or bare IPs.
    pub deny: Vec<String>,
}

/// Peer filtering on top of the server's built-in deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Networks opened even though the default deny list covers them.
    pub allow: Vec<IpNet>,
    /// Additional denied networks.
    pub deny: Vec<IpNet>,
}

pub(super) fn validate_peers(peers: &RawPeers) -> Result<PeerConfig> {
    Ok(PeerConfig {
        allow: validate_nets("peers.allow", &peers.allow)?,
        deny: validate_nets("peers.deny", &peers.deny)?,
    })
}

/// Parses a CIDR or a bare IP (meaning a single host). A CIDR with host bits
/// set (`10.1.2.3/8`) is rejected rather than silently widened or narrowed:
/// in an access list the operator should see exactly what is opened.
fn parse_net(key: &str, value: &str) -> Result<IpNet> {
    let text = value.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return invalid(
                key,
                format!(
                    "{value:?} has host bits set; write the network {} or a bare IP",
                    net.trunc()
                ),
            );
        }
        return Ok(net);
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => invalid(
            key,
            format!("{value:?} is not a CIDR (ADDR/PREFIX) or an IP address"),
        ),
    }
}

fn validate_nets(list: &str, values: &[String]) -> Result<Vec<IpNet>> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| parse_net(&format!("{list}[{i}]"), value))
        .collect()
}
