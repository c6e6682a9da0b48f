//! Process-wide logging setup with `tracing-subscriber`.
//!
//! The filter comes from `server.log-level` (or `--log-level`), not from
//! `RUST_LOG`: a server's verbosity belongs in its configuration, where the
//! operator can see and review it, rather than in an environment variable
//! that differs between a shell and a service manager.
//!
//! Logs go to stderr so that stdout stays free for command output, and both
//! end up in the journal under systemd.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::filter::{EnvFilter, ParseError};

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogInitError {
    /// The level string is not a valid `EnvFilter` directive. Validated
    /// configurations never produce this.
    #[error("server.log-level: {0}")]
    Filter(#[from] ParseError),
    /// Something already installed a global subscriber (e.g. a test
    /// harness); `init` must be called once per process.
    #[error("cannot install the log subscriber: {0}")]
    AlreadyInstalled(String),
}

/// Parses a level (`trace`, `debug`, `info`, `warn`, `error`) or any
/// `EnvFilter` directive string (`info,ferroturn::relay=debug`).
///
/// Used by configuration validation too, so a bad level is reported when
/// the configuration is checked, not when the server starts logging.
///
/// Field values in directives (`target[span{field=value}]`) match literally,
/// not as regexes: compiling one into a DFA can take minutes for a crafted
/// value (the config_toml fuzz target found one), and a level is no place for
/// patterns.
pub fn env_filter(level: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder().with_regex(false).parse(level.trim())
}

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Swaps the installed subscriber's filter (a reload changes the level).
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber: human-readable lines (colored only when
/// stderr is a terminal) or one JSON object per line. Its level can be changed
/// later with [`set_level`].
pub fn init(config: &LogConfig) -> Result<(), LogInitError> {
    let filter = env_filter(&config.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Human => {
            let builder = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
        LogFormat::Json => {
            let builder = builder.json().with_ansi(false).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
    };
    result.map_err(|e| LogInitError::AlreadyInstalled(e.to_string()))
}

/// Changes the level of the subscriber [`init`] installed (no-op when
/// logging was never initialised, as in tests that start servers in-process).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = env_filter(level).map_err(|e| format!("server.log-level: {e}"))?;
    match SET_FILTER.get() {
        Some(set) => set(filter),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        for ok in [
            "trace",
            "debug",
            "info",
            "warn",
            "error",
            "off",
            "info,ferroturn=debug",
            "ferroturn::relay=trace",
        ] {
            assert!(env_filter(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["info,ferroturn=loud", "=debug=", "[{"] {
            assert!(env_filter(bad).is_err(), "{bad} should not parse");
        }
    }
}
