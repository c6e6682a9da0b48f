//! Checks shared by several sections. Each names the key it checks, so an
//! error always says which key (and, once [`RawConfig::validate`] attaches
//! the origin, which file or flag) is wrong.
//!
//! [`RawConfig::validate`]: super::RawConfig::validate

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;

pub(super) type Result<T, E = ConfigError> = std::result::Result<T, E>;

pub(super) fn invalid<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError::invalid(key, message))
}

/// Converts a raw integer to the target type if it is within
/// `min..=max`, naming `key` otherwise.
pub(super) fn int_in<T: TryFrom<i64>>(key: &str, value: i64, min: i64, max: i64) -> Result<T> {
    if !(min..=max).contains(&value) {
        return invalid(key, format!("{value} is out of range {min}..={max}"));
    }
    T::try_from(value).or_else(|_| invalid(key, format!("{value} is out of range")))
}

/// A lifetime in whole seconds: at least 1 (0 would expire immediately),
/// at most what the 32-bit LIFETIME attribute can carry.
pub(super) fn seconds(key: &str, value: i64) -> Result<Duration> {
    let secs: u32 = int_in(key, value, 1, u32::MAX.into())?;
    Ok(Duration::from_secs(secs.into()))
}

/// Parses a list of IP:PORT, naming `list[i]` in errors; no duplicates.
pub(super) fn parse_addresses(list: &str, values: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let key = format!("{list}[{i}]");
        let Ok(addr) = value.trim().parse::<SocketAddr>() else {
            return invalid(
                key,
                format!("{value:?} is not IP:PORT (write IPv6 as [ADDR]:PORT)"),
            );
        };
        if let Some(j) = addrs.iter().position(|a| *a == addr) {
            return invalid(key, format!("{value:?} duplicates {list}[{j}]"));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}
