//! [`ConfigError`]: every error names where the problem is (the file, the
//! TOML location, or the key path) and, for a value set on the command line,
//! the flag.

use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
///
/// Every variant says where the problem is: the file, the TOML location, or
/// the key path (`relay.port-range`, `peers.allow[2]`, `auth.users.alice`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{}: cannot read configuration file: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or does not fit the schema (unknown key,
    /// wrong type). `message` is toml's own report, which names the key and
    /// shows the offending line.
    #[error("{}{message}", file_prefix(.file.as_deref()))]
    Parse {
        /// The file the text came from, if any.
        file: Option<PathBuf>,
        /// toml's error message (may span several lines).
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}{key}{}: {message}", invalid_prefix(.file.as_deref(), *.flag), flag_suffix(*.flag))]
    Invalid {
        /// Key path in the TOML schema, e.g. `relay.port-range` or
        /// `server.listen[1]`.
        key: String,
        /// What is wrong with the value.
        message: String,
        /// The command-line flag the value came from, if it was overridden.
        flag: Option<&'static str>,
        /// The file the value came from (only when not from a flag).
        file: Option<PathBuf>,
    },
}

impl ConfigError {
    /// The offending key path, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Builds an [`ConfigError::Invalid`] without origin information; the
    /// origin is attached by
    /// [`RawConfig::validate`](super::RawConfig::validate).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            flag: None,
            file: None,
        }
    }
}

fn file_prefix(file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("{}: ", path.display()),
        None => String::new(),
    }
}

/// A value that came from a flag did not come from the file, so the file is
/// only named when no flag is.
fn invalid_prefix(file: Option<&Path>, flag: Option<&'static str>) -> String {
    match flag {
        Some(_) => String::new(),
        None => file_prefix(file),
    }
}

fn flag_suffix(flag: Option<&'static str>) -> String {
    match flag {
        Some(flag) => format!(" (from {flag})"),
        None => String::new(),
    }
}
