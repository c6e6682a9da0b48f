//! `[usage]`: where usage records (one JSON line per finished allocation)
//! go.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::Result;

/// `[usage]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUsage {
    /// `file`: where usage records go, one JSON line per finished
    /// allocation; "-" = stdout, "" = nowhere.
    pub file: String,
}

/// `[usage]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    pub target: Option<UsageTarget>,
}

/// Where usage records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageTarget {
    Stdout,
    File(PathBuf),
}

pub(super) fn validate_usage(usage: &RawUsage) -> Result<UsageConfig> {
    Ok(UsageConfig {
        target: match usage.file.trim() {
            "" => None,
            "-" => Some(UsageTarget::Stdout),
            path => Some(UsageTarget::File(PathBuf::from(path))),
        },
    })
}
