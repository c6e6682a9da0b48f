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
    /// `native-on-veth`: let `native` and `auto` attach natively to veth
    /// interfaces too. A veth's native `XDP_TX` reaches the other end of the
    /// pair only when that end runs an XDP program of its own; the operator
    /// vouches for it here (see docs/offload.md).
    pub native_on_veth: bool,
}

impl Default for RawOffload {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: Vec::new(),
            mode: "generic".into(),
            native_on_veth: false,
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
    pub native_on_veth: bool,
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
        native_on_veth: raw.native_on_veth,
    })
}

impl Default for OffloadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: Vec::new(),
            mode: OffloadMode::Generic,
            native_on_veth: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn off_by_default_in_generic_mode_without_native_on_veth() {
        let cfg = Config::from_toml_str("").unwrap().offload;
        assert_eq!(cfg, OffloadConfig::default());
        assert!(!cfg.enabled && !cfg.native_on_veth);
        assert_eq!(cfg.mode, OffloadMode::Generic);
    }

    #[test]
    fn native_on_veth_is_read_and_a_wrong_type_names_the_key() {
        let cfg = Config::from_toml_str(
            "[offload]\nenabled = true\ninterfaces = [\"eth0\"]\nmode = \"native\"\nnative-on-veth = true\n",
        )
        .unwrap()
        .offload;
        assert_eq!(cfg.mode, OffloadMode::Native);
        assert!(cfg.native_on_veth);
        let err = Config::from_toml_str("[offload]\nnative-on-veth = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("native-on-veth"), "{err}");
        let err = Config::from_toml_str("[offload]\nmode = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("offload.mode") && err.contains("fast"),
            "{err}"
        );
    }
}
