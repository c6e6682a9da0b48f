//! Fuzz the configuration loader: arbitrary bytes as the text of a configuration
//! file, through the same parse-then-validate path as `ferroturn check --config` and
//! `ferroturn serve --config` (`RawConfig::load` reads the file and calls the same
//! parser as `RawConfig::from_toml_str`; `Config::load` then calls `validate`).
//!
//! The input is taken as UTF-8, lossily: `load` refuses a file that is not UTF-8
//! before TOML sees it (`ConfigError::Read`), so only text reaches the parser.
//!
//! Properties:
//! - parsing and validating never panic (nor does `summary` on what validated);
//! - `Config::from_toml_str` and `RawConfig::from_toml_str(..).validate()` agree;
//! - a parse error is toml's report with a location (`TOML parse error at line L,
//!   column C`), which covers both syntax errors and schema errors (unknown key,
//!   wrong type);
//! - a validation error names a key path under one of the file's sections
//!   (`relay.port-range`, `server.listen[1]`, `auth.users.alice`), and its message
//!   shows that key;
//! - no error is a `Read` error (no file is involved) and none is empty;
//! - validation is deterministic: validating the same text twice gives the same
//!   `Config` (or the same error text).
#![no_main]

use ferroturn::config::{Config, ConfigError, RawConfig};
use libfuzzer_sys::fuzz_target;

/// The top-level tables of the configuration file (`RawConfig`'s fields).
const SECTIONS: &[&str] = &[
    "server", "relay", "auth", "peers", "quota", "store", "metrics", "tls", "drain", "usage",
    "admin",
];

fn check_error(e: &ConfigError) {
    let shown = e.to_string();
    assert!(!shown.trim().is_empty(), "empty error: {e:?}");
    match e {
        ConfigError::Parse { file, message } => {
            assert!(file.is_none(), "a file named for text: {e:?}");
            assert!(
                message.starts_with("TOML parse error at line "),
                "parse error without a location: {message:?}"
            );
        }
        ConfigError::Invalid { key, message, .. } => {
            assert!(!message.is_empty(), "no message for {key}");
            let section = key.split(['.', '[']).next().unwrap_or_default();
            assert!(
                SECTIONS.contains(&section),
                "invalid key {key:?} is not under a section of the file"
            );
            assert!(
                shown.contains(key.as_str()),
                "{shown:?} does not show {key:?}"
            );
            assert_eq!(e.key(), Some(key.as_str()));
        }
        ConfigError::Read { .. } => panic!("a Read error without a file: {e:?}"),
        // ConfigError is non_exhaustive; a new variant should be added here.
        #[allow(unreachable_patterns)]
        other => panic!("unexpected error kind: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let direct = Config::from_toml_str(&text);
    let raw = RawConfig::from_toml_str(&text);
    match &raw {
        Ok(raw) => {
            let again = raw.clone().validate();
            let twice = raw.clone().validate();
            match (&direct, &again, &twice) {
                (Ok(a), Ok(b), Ok(c)) => {
                    assert_eq!(a, b);
                    assert_eq!(b, c);
                    let _ = a.summary();
                    assert!(a.effective_threads() >= 1);
                    assert!(!a.listen.is_empty(), "validated with no listen address");
                    assert!(!a.realm.is_empty(), "validated with an empty realm");
                }
                (Err(a), Err(b), Err(c)) => {
                    assert_eq!(a.to_string(), b.to_string());
                    assert_eq!(b.to_string(), c.to_string());
                    check_error(b);
                }
                _ => panic!("the two paths disagree: {direct:?} vs {again:?} vs {twice:?}"),
            }
        }
        Err(e) => {
            check_error(e);
            let d = direct
                .as_ref()
                .expect_err("raw parse failed but Config parsed");
            assert_eq!(d.to_string(), e.to_string());
        }
    }
});
