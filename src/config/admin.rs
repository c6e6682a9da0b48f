//! `[admin]`: the admin Unix socket.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::{invalid, Result};

/// `[admin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAdmin {
    /// `socket`: the admin Unix socket (mode 0600); "" = none.
    pub socket: String,
}

/// Where the admin socket is unless told otherwise (systemd's
/// `RuntimeDirectory=ferroturn` creates the directory).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ferroturn/admin.sock";

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            socket: DEFAULT_ADMIN_SOCKET.into(),
        }
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin socket's path; `None` = no admin socket.
    pub socket: Option<PathBuf>,
}

pub(super) fn validate_admin(admin: &RawAdmin) -> Result<AdminConfig> {
    Ok(AdminConfig {
        socket: match admin.socket.trim() {
            "" => None,
            path if !path.starts_with('/') => {
                return invalid(
                    "admin.socket",
                    format!("{path:?} is not an absolute path (or \"\" for none)"),
                )
            }
            path => Some(PathBuf::from(path)),
        },
    })
}
