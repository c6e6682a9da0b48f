//! `[drain]`: what draining does (where new clients go, how long to wait).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{int_in, parse_addresses, Result};

/// `[drain]` as written: what draining does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDrain {
    /// `alternate-server`: IP:PORT of servers to send new clients to (300 Try
    /// Alternate, in turn); empty = refuse them with 403.
    pub alternate_server: Vec<String>,
    /// `deadline`: seconds a drain started by SIGUSR1 waits for allocations
    /// to end before the process exits anyway.
    pub deadline: i64,
}

impl Default for RawDrain {
    fn default() -> Self {
        RawDrain {
            alternate_server: Vec::new(),
            deadline: 600,
        }
    }
}

/// `[drain]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// Where new clients are sent while draining; empty = 403.
    pub alternate_servers: Vec<SocketAddr>,
    /// How long a SIGUSR1 drain waits before exiting anyway.
    pub deadline: Duration,
}

pub(super) fn validate_drain(drain: &RawDrain) -> Result<DrainConfig> {
    Ok(DrainConfig {
        alternate_servers: parse_addresses("drain.alternate-server", &drain.alternate_server)?,
        deadline: Duration::from_secs(int_in("drain.deadline", drain.deadline, 1, 7 * 86_400)?),
    })
}
