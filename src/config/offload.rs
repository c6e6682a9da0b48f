//! `[offload]`: the opt-in in-kernel fast path for ChannelData (XDP; see
//! docs/offload.md). Off by default: it needs root (CAP_BPF and CAP_NET_ADMIN),
//! a kernel with BPF, and the interfaces the traffic arrives on.

use serde::Deserialize;

use super::validate::Result;
use super::ConfigError;

/// `[offload]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOffload {
    /// `enabled`: load the XDP program and relay bound channels in the kernel.
    pub enabled: bool,
    /// `interfaces`: the network interfaces clients and peers reach the relay on.
    pub interfaces: Vec<String>,
    /// `mode`: "generic" (XDP in the kernel's stack, works on every interface),
    /// "native" (in the driver, faster, needs driver support) or "auto"
    /// (native, else generic). Default "generic".
    pub mode: String,
}

impl Default for RawOffload {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: Vec::new(),
            mode: "generic".into(),
        }
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadMode {
    Generic,
    Native,
    Auto,
}

/// `[offload]`, validated (the default: off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadConfig {
    pub enabled: bool,
    pub interfaces: Vec<String>,
    pub mode: OffloadMode,
}

/// Interface names as the kernel accepts them: 1–15 bytes, no '/', no
/// whitespace, not "." or "..".
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

pub(super) fn validate_offload(raw: &RawOffload) -> Result<OffloadConfig> {
    let mode = match raw.mode.trim() {
        "generic" => OffloadMode::Generic,
        "native" => OffloadMode::Native,
        "auto" => OffloadMode::Auto,
        other => {
            return Err(ConfigError::invalid(
                "offload.mode",
                format!("'{other}' is not one of generic, native, auto"),
            ))
        }
    };
    for (i, name) in raw.interfaces.iter().enumerate() {
        if !valid_interface_name(name) {
            return Err(ConfigError::invalid(
                format!("offload.interfaces[{i}]"),
                format!("'{name}' is not a network interface name"),
            ));
        }
    }
    if raw.enabled && raw.interfaces.is_empty() {
        return Err(ConfigError::invalid(
            "offload.interfaces",
            "offload is enabled but names no interface to attach to",
        ));
    }
    Ok(OffloadConfig {
        enabled: raw.enabled,
        interfaces: raw.interfaces.clone(),
        mode,
    })
}

impl Default for OffloadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: Vec::new(),
            mode: OffloadMode::Generic,
        }
    }
}
