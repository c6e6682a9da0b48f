//! `[api]`: the credentials API for apps (`POST /v1/credentials`), off unless
//! `listen` is set. See `docs/api.md`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::validate::{int_in, invalid, Result};

/// `[api]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawApi {
    /// `listen`: IP:PORT of the HTTP(S) listener; empty = off.
    pub listen: String,
    /// `urls`: the `urls` of the iceServers entry the API answers with.
    pub urls: Vec<String>,
    /// `default-ttl`: seconds a credential is valid when the request names no `ttl`.
    pub default_ttl: i64,
    /// `max-ttl`: the longest `ttl` a request may ask for, in seconds.
    pub max_ttl: i64,
    /// `rate-per-minute`: requests per token per minute; 0 = unlimited.
    pub rate_per_minute: i64,
    /// `cors-origins`: browser origins allowed to call the API, or `"*"`.
    pub cors_origins: Vec<String>,
    /// `tls`: serve HTTPS with the `[tls]` certificate.
    pub tls: bool,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: String::new(),
            urls: Vec::new(),
            default_ttl: 3600,
            max_ttl: 86_400,
            rate_per_minute: 60,
            cors_origins: Vec::new(),
            tls: false,
        }
    }
}

/// The credentials API, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `None` = no API listener.
    pub listen: Option<SocketAddr>,
    /// `stun:`/`turn:`/`turns:` URLs for the answer's iceServers entry.
    pub urls: Vec<String>,
    /// Seconds, 1..=`max_ttl`.
    pub default_ttl: u64,
    /// Seconds, at least 1.
    pub max_ttl: u64,
    /// Requests per token per minute; 0 = unlimited.
    pub rate_per_minute: u32,
    /// Exact origins (`https://app.example.com`) or `*`.
    pub cors_origins: Vec<String>,
    /// HTTPS with the `[tls]` certificate (requires `[tls]`).
    pub tls: bool,
}

impl ApiConfig {
    /// Whether a browser at `origin` may call the API.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// A TTL longer than this (10 years) is no ephemeral credential any more.
const MAX_TTL_LIMIT: i64 = 10 * 365 * 86_400;

pub(super) fn validate_api(api: &RawApi) -> Result<ApiConfig> {
    let listen = match api.listen.trim() {
        "" => None,
        value => match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                return invalid(
                    "api.listen",
                    format!(
                        "{value:?} is not IP:PORT (write IPv6 as [ADDR]:PORT), or \"\" for off"
                    ),
                )
            }
        },
    };
    for (i, url) in api.urls.iter().enumerate() {
        if let Err(problem) = check_ice_url(url) {
            return invalid(format!("api.urls[{i}]"), problem);
        }
    }
    if listen.is_some() && api.urls.is_empty() {
        return invalid(
            "api.urls",
            "required when api.listen is set: the turn:/turns: URLs apps are to use",
        );
    }
    let max_ttl: u64 = int_in("api.max-ttl", api.max_ttl, 1, MAX_TTL_LIMIT)?;
    let default_ttl: u64 = int_in("api.default-ttl", api.default_ttl, 1, MAX_TTL_LIMIT)?;
    if default_ttl > max_ttl {
        return invalid(
            "api.default-ttl",
            format!("{default_ttl} is over api.max-ttl ({max_ttl})"),
        );
    }
    for (i, origin) in api.cors_origins.iter().enumerate() {
        if let Err(problem) = check_origin(origin) {
            return invalid(format!("api.cors-origins[{i}]"), problem);
        }
    }
    Ok(ApiConfig {
        listen,
        urls: api.urls.clone(),
        default_ttl,
        max_ttl,
        rate_per_minute: int_in("api.rate-per-minute", api.rate_per_minute, 0, 1_000_000)?,
        cors_origins: api.cors_origins.clone(),
        tls: api.tls,
    })
}

/// A URL for an iceServers entry: `stun:`, `turn:` or `turns:` and a host.
/// The one check for `credential mint --url` and `api.urls`; the message
/// quotes the URL.
pub fn check_ice_url(url: &str) -> std::result::Result<(), String> {
    let rest = ["stun:", "turn:", "turns:"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('?')
                && !rest.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        Some(_) => Err(format!("{url:?} has no host")),
        None => Err(format!("{url:?} must start with stun:, turn: or turns:")),
    }
}

/// A browser origin as it sends it in `Origin:` (`scheme://host[:port]`, no
/// path), or `*`: anything else would never match and is a typo.
fn check_origin(origin: &str) -> std::result::Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty()
                && !host.contains('/')
                && !host.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        Some(_) => Err(format!(
            "{origin:?} is not an origin: scheme://host[:port] with no path or trailing slash"
        )),
        None => Err(format!(
            "{origin:?} must start with https:// or http:// (or be \"*\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawApi {
        RawApi {
            listen: "127.0.0.1:0".into(),
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            ..RawApi::default()
        }
    }

    fn key_of(api: RawApi) -> String {
        match validate_api(&api) {
            Err(super::super::ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_valid_when_on() {
        let off = validate_api(&RawApi::default()).unwrap();
        assert_eq!(off.listen, None);
        let on = validate_api(&raw()).unwrap();
        assert!(on.listen.is_some());
        assert_eq!(
            (on.default_ttl, on.max_ttl, on.rate_per_minute),
            (3600, 86_400, 60)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            key_of(RawApi {
                listen: "nope".into(),
                ..raw()
            }),
            "api.listen"
        );
        assert_eq!(
            key_of(RawApi {
                urls: vec![],
                ..raw()
            }),
            "api.urls"
        );
        assert_eq!(
            key_of(RawApi {
                urls: vec!["turn:a".into(), "http://x".into()],
                ..raw()
            }),
            "api.urls[1]"
        );
        assert_eq!(
            key_of(RawApi {
                default_ttl: 100_000,
                ..raw()
            }),
            "api.default-ttl"
        );
        assert_eq!(
            key_of(RawApi {
                max_ttl: 0,
                ..raw()
            }),
            "api.max-ttl"
        );
        assert_eq!(
            key_of(RawApi {
                rate_per_minute: -1,
                ..raw()
            }),
            "api.rate-per-minute"
        );
        for bad in ["https://a.example/", "a.example", "https://", "ftp://a"] {
            assert_eq!(
                key_of(RawApi {
                    cors_origins: vec!["*".into(), bad.into()],
                    ..raw()
                }),
                "api.cors-origins[1]",
                "{bad}"
            );
        }
    }

    #[test]
    fn origins_match_exactly_or_by_star() {
        let mut api = validate_api(&RawApi {
            cors_origins: vec!["https://app.example.com".into()],
            ..raw()
        })
        .unwrap();
        assert!(api.allows_origin("https://app.example.com"));
        assert!(!api.allows_origin("https://app.example.com.evil.test"));
        assert!(!api.allows_origin("http://app.example.com"));
        api.cors_origins = vec!["*".into()];
        assert!(api.allows_origin("https://anything.test"));
    }
}
