//! `[quota]`: resource limits per user, per allocation and server-wide.

use serde::Deserialize;

use std::time::Duration;

use super::validate::{int_in, invalid, Result};
use crate::turn::quota::{DAY, DEFAULT_PER_IP, DEFAULT_PER_USER, HOUR};

/// RFC 8656 §12: channel numbers are 0x4000 through 0x4FFF, so an allocation
/// can never have more than 4096 channels.
const MAX_CHANNELS: i64 = 0x1000;

/// `[quota]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQuota {
    /// `max-allocations-per-user`
    pub max_allocations_per_user: i64,
    /// `max-allocations-per-ip`; 0 = unlimited.
    pub max_allocations_per_ip: i64,
    /// `max-allocations`; 0 = unlimited.
    pub max_allocations: i64,
    /// `max-permissions-per-allocation`
    pub max_permissions_per_allocation: i64,
    /// `max-channels-per-allocation`
    pub max_channels_per_allocation: i64,
    /// `max-relay-ports`; 0 = limited by the port range only.
    pub max_relay_ports: i64,
    /// `max-bps-per-allocation`: bytes per second each way; 0 = unlimited.
    pub max_bps_per_allocation: i64,
    /// `max-bytes-per-user`: relayed bytes per user and period; 0 = no budget.
    pub max_bytes_per_user: i64,
    /// `bytes-period`: `"day"` or `"hour"` (UTC).
    pub bytes_period: String,
    /// `max-tcp-connections-per-allocation`: peer connections of one TCP
    /// allocation (RFC 6062); 0 = unlimited.
    pub max_tcp_connections_per_allocation: i64,
}

impl Default for RawQuota {
    fn default() -> Self {
        RawQuota {
            max_allocations_per_user: DEFAULT_PER_USER.into(),
            max_allocations_per_ip: DEFAULT_PER_IP.into(),
            max_allocations: 0,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_relay_ports: 0,
            max_bps_per_allocation: 0,
            max_bytes_per_user: 0,
            bytes_period: "day".into(),
            max_tcp_connections_per_allocation: 64,
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Concurrent allocations per user name, >= 1.
    pub max_allocations_per_user: u32,
    /// Concurrent allocations per client address (IPv6: per /64); 0 = unlimited.
    pub max_allocations_per_ip: u32,
    /// Concurrent allocations server-wide; 0 = unlimited.
    pub max_allocations: u32,
    /// Permissions per allocation, >= 1.
    pub max_permissions_per_allocation: u32,
    /// Channels per allocation, 1..=4096.
    pub max_channels_per_allocation: u32,
    /// Relay ports in use server-wide; 0 = limited by the port range only.
    pub max_relay_ports: u32,
    /// Bytes per second an allocation may relay each way; 0 = unlimited.
    pub max_bps_per_allocation: u64,
    /// Bytes each user may relay per `bytes_period` (both directions, all of
    /// the user's allocations); 0 = no budget.
    pub max_bytes_per_user: u64,
    /// A day (from UTC midnight) or an hour (from the full hour).
    pub bytes_period: Duration,
    /// Peer connections (pending or bound) per TCP allocation; 0 = unlimited.
    pub max_tcp_connections_per_allocation: u32,
}

pub(super) fn validate_quota(quota: &RawQuota) -> Result<QuotaConfig> {
    Ok(QuotaConfig {
        max_allocations_per_user: int_in(
            "quota.max-allocations-per-user",
            quota.max_allocations_per_user,
            1,
            u32::MAX.into(),
        )?,
        max_allocations_per_ip: int_in(
            "quota.max-allocations-per-ip",
            quota.max_allocations_per_ip,
            0,
            u32::MAX.into(),
        )?,
        max_allocations: int_in(
            "quota.max-allocations",
            quota.max_allocations,
            0,
            u32::MAX.into(),
        )?,
        max_permissions_per_allocation: int_in(
            "quota.max-permissions-per-allocation",
            quota.max_permissions_per_allocation,
            1,
            u32::MAX.into(),
        )?,
        max_channels_per_allocation: int_in(
            "quota.max-channels-per-allocation",
            quota.max_channels_per_allocation,
            1,
            MAX_CHANNELS,
        )?,
        max_relay_ports: int_in(
            "quota.max-relay-ports",
            quota.max_relay_ports,
            0,
            u16::MAX.into(),
        )?,
        max_bps_per_allocation: int_in(
            "quota.max-bps-per-allocation",
            quota.max_bps_per_allocation,
            0,
            i64::MAX,
        )?,
        max_bytes_per_user: int_in(
            "quota.max-bytes-per-user",
            quota.max_bytes_per_user,
            0,
            i64::MAX,
        )?,
        max_tcp_connections_per_allocation: int_in(
            "quota.max-tcp-connections-per-allocation",
            quota.max_tcp_connections_per_allocation,
            0,
            u32::MAX.into(),
        )?,
        bytes_period: Duration::from_secs(match quota.bytes_period.as_str() {
            "day" => DAY,
            "hour" => HOUR,
            other => {
                return invalid(
                    "quota.bytes-period",
                    format!("{other:?} is not one of \"day\", \"hour\""),
                )
            }
        }),
    })
}
