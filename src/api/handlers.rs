//! The API's requests: routing, CORS, bearer authentication, the rate limit,
//! and the two operations (mint, revoke). Every answer is JSON; an error is
//! `{"error": "what is wrong"}`, with `"field"` naming the request field at
//! fault when there is one.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{tokens, ApiState};
use crate::commands::credentials::{mint_ice_server, rest_expiry, rest_name_problem};
use crate::config::ApiConfig;
use crate::time::unix_now;

/// The collection path; a credential is `PREFIX/{username}`.
const CREDENTIALS: &str = "/v1/credentials";
/// The largest request body taken: `{"name": ..., "ttl": ...}` is far smaller.
const MAX_BODY: usize = 4096;
/// The name minted credentials get when the request names none.
pub const DEFAULT_NAME: &str = "api";
/// How long a browser may cache a preflight answer, seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: &Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    answer(status, &json!({ "error": message.into() }))
}

fn field_error(field: &str, message: impl Into<String>) -> Answer {
    answer(
        StatusCode::BAD_REQUEST,
        &json!({ "error": message.into(), "field": field }),
    )
}

/// Answers one request; never panics on input.
pub async fn handle(state: &ApiState, req: Request<Incoming>) -> Answer {
    let config = state.config();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let allowed_origin = origin.as_deref().filter(|o| config.allows_origin(o));
    let mut response = route(state, &config, origin.as_deref(), req).await;
    // Browsers read an answer (errors included) only with these.
    if let Some(o) = allowed_origin {
        cors_headers(response.headers_mut(), o);
    }
    response
}

async fn route(
    state: &ApiState,
    config: &ApiConfig,
    origin: Option<&str>,
    req: Request<Incoming>,
) -> Answer {
    let path = req.uri().path().to_owned();
    let tail = match path.strip_prefix(CREDENTIALS) {
        Some("") => None,
        Some(rest) if rest.starts_with('/') && rest.len() > 1 => Some(rest[1..].to_owned()),
        _ => return error(StatusCode::NOT_FOUND, format!("no such resource {path:?}")),
    };
    let allow = if tail.is_none() {
        "POST, OPTIONS"
    } else {
        "DELETE, OPTIONS"
    };
    match (req.method(), &tail) {
        (&Method::OPTIONS, _) => preflight(config, origin, allow),
        (&Method::POST, None) | (&Method::DELETE, Some(_)) => {
            let token = match authenticate(state, req.headers()).await {
                Ok(name) => name,
                Err(a) => return a,
            };
            if let Err(wait) = state
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&token, config.rate_per_minute, std::time::Instant::now())
            {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "rate limit of {} requests per minute for this token",
                        config.rate_per_minute
                    ),
                );
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return r;
            }
            touch(state, &token).await;
            match tail {
                None => mint(state, config, &token, req).await,
                Some(username) => revoke(state, &token, &username).await,
            }
        }
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed here: {allow}", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
    }
}

/// The CORS preflight: 204 with the Access-Control-* headers for an allowed
/// origin (added by [`handle`]), 403 without them for any other.
fn preflight(config: &ApiConfig, origin: Option<&str>, allow: &'static str) -> Answer {
    match origin {
        Some(o) if !config.allows_origin(o) => error(
            StatusCode::FORBIDDEN,
            "this origin is not in api.cors-origins",
        ),
        _ => {
            let mut r = empty(StatusCode::NO_CONTENT);
            let h = r.headers_mut();
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
            if origin.is_some() {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(allow),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Authorization, Content-Type"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static(PREFLIGHT_MAX_AGE),
                );
            }
            r
        }
    }
}

/// The allowed origin, echoed (never `*`: the answer differs per origin, hence
/// `Vary`), and Retry-After readable by the page.
fn cors_headers(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
}

/// The name of the token the request bears, or the 401 (or 503 when the store
/// cannot be read) to answer with.
#[allow(clippy::result_large_err)] // as for parse_request
async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<String, Answer> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let Some(presented) = presented else {
        return Err(unauthorized(
            "Bearer realm=\"ferroturn\"",
            "missing Authorization: Bearer TOKEN",
        ));
    };
    let stored = match state.store().await {
        Ok(store) => store.api_token_hashes().await,
        Err(e) => Err(e),
    };
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "API: cannot read the tokens from the credential store");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the credential store is unreachable",
            ));
        }
    };
    match tokens::find(&presented, &stored) {
        Some(name) => Ok(name.to_owned()),
        None => Err(unauthorized(
            "Bearer realm=\"ferroturn\", error=\"invalid_token\"",
            "unknown or removed token",
        )),
    }
}

fn unauthorized(challenge: &'static str, message: &str) -> Answer {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// Records the token's use (at most once a minute per token); a failure only
/// costs the `last used` column its freshness.
async fn touch(state: &ApiState, token: &str) {
    if let Ok(store) = state.store().await {
        if let Err(e) = store.touch_api_token(token, unix_now()).await {
            tracing::debug!(error = %e, token, "API: last use not recorded");
        }
    }
}

/// `POST /v1/credentials`.
async fn mint(state: &ApiState, config: &ApiConfig, token: &str, req: Request<Incoming>) -> Answer {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes or was cut short"),
            )
        }
    };
    let (name, ttl) = match parse_request(&body, config) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Some(secret) = state.creds.minting_secret() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no TURN REST secret: add one with `ferroturn secret add` or auth.secrets",
        );
    };
    let expiry = u64::try_from(unix_now()).unwrap_or(0).saturating_add(ttl);
    let entry = mint_ice_server(&secret, &name, expiry, config.urls.clone());
    tracing::info!(token, name = %name, ttl, "API: credential minted");
    answer(
        StatusCode::CREATED,
        &json!({ "iceServers": [entry], "ttl": ttl, "expires": expiry }),
    )
}

/// The name and TTL a mint request asks for: an empty body, or a JSON object
/// with optional `name` and `ttl`; anything else is a 400 naming the field.
// The error is the answer itself, built once per bad request: boxing it would
// buy nothing off the data path.
#[allow(clippy::result_large_err)]
fn parse_request(body: &[u8], config: &ApiConfig) -> Result<(String, u64), Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((DEFAULT_NAME.to_owned(), config.default_ttl));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object: {\"name\": \"...\", \"ttl\": SECONDS}",
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "name" && *k != "ttl") {
        return Err(field_error(
            unknown,
            format!("unknown field {unknown:?}: expected \"name\" and \"ttl\""),
        ));
    }
    let name = match fields.get("name") {
        None | Some(Value::Null) => DEFAULT_NAME.to_owned(),
        Some(Value::String(n)) => match rest_name_problem(n) {
            None => n.clone(),
            Some(problem) => return Err(field_error("name", format!("name {problem}"))),
        },
        Some(_) => return Err(field_error("name", "name must be a string")),
    };
    let ttl = match fields.get("ttl") {
        None | Some(Value::Null) => config.default_ttl,
        Some(v) => match v.as_u64() {
            Some(0) | None => {
                return Err(field_error(
                    "ttl",
                    format!("ttl must be a whole number of seconds, at least 1 (got {v})"),
                ))
            }
            Some(t) if t > config.max_ttl => {
                return Err(field_error(
                    "ttl",
                    format!("ttl {t} is over the maximum of {} seconds", config.max_ttl),
                ))
            }
            Some(t) => t,
        },
    };
    Ok((name, ttl))
}

/// `DELETE /v1/credentials/{username}`.
async fn revoke(state: &ApiState, token: &str, encoded: &str) -> Answer {
    let Some(username) = percent_decode(encoded) else {
        return field_error(
            "username",
            "the username is not valid percent-encoded UTF-8",
        );
    };
    let Some(expiry) = rest_expiry(&username) else {
        return field_error(
            "username",
            format!("{username:?} is not a TURN REST username: expected EXPIRY:NAME"),
        );
    };
    if i64::try_from(expiry).is_ok_and(|e| e <= unix_now()) {
        return error(
            StatusCode::NOT_FOUND,
            format!("{username:?} already expired: there is nothing to revoke"),
        );
    }
    let result = match state.store().await {
        Ok(store) => store.revoke(&username, expiry).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!(token, username = %username, "API: credential revoked");
            empty(StatusCode::NO_CONTENT)
        }
        Err(crate::store::StoreError::Invalid { message, .. }) => field_error("username", message),
        Err(e) => {
            tracing::warn!(error = %e, "API: revocation not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the credential store is unreachable",
            )
        }
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ApiConfig {
        ApiConfig {
            listen: None,
            urls: vec!["turn:a".into()],
            default_ttl: 600,
            max_ttl: 3600,
            rate_per_minute: 60,
            cors_origins: vec![],
            tls: false,
        }
    }

    fn field_of(r: Result<(String, u64), Answer>) -> (u16, Option<String>) {
        let a = r.expect_err("an error answer");
        let status = a.status().as_u16();
        let body = futures_body(a);
        let v: Value = serde_json::from_slice(&body).unwrap();
        (status, v["field"].as_str().map(str::to_owned))
    }

    fn futures_body(a: Answer) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { a.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn requests_default_and_bound() {
        let c = config();
        assert_eq!(parse_request(b"", &c).ok(), Some(("api".into(), 600)));
        assert_eq!(parse_request(b"{}", &c).ok(), Some(("api".into(), 600)));
        assert_eq!(
            parse_request(br#"{"name":"bob","ttl":3600}"#, &c).ok(),
            Some(("bob".into(), 3600))
        );
        let over = parse_request(br#"{"ttl":3601}"#, &c);
        assert_eq!(field_of(over), (400, Some("ttl".into())));
        for bad in [
            r#"{"ttl":0}"#,
            r#"{"ttl":-5}"#,
            r#"{"ttl":1.5}"#,
            r#"{"ttl":"60"}"#,
        ] {
            assert_eq!(
                field_of(parse_request(bad.as_bytes(), &c)),
                (400, Some("ttl".into())),
                "{bad}"
            );
        }
        assert_eq!(
            field_of(parse_request(br#"{"name":""}"#, &c)),
            (400, Some("name".into()))
        );
        assert_eq!(
            field_of(parse_request(br#"{"name":5}"#, &c)),
            (400, Some("name".into()))
        );
        assert_eq!(
            field_of(parse_request(br#"{"nmae":"x"}"#, &c)),
            (400, Some("nmae".into()))
        );
        assert_eq!(field_of(parse_request(b"[1]", &c)), (400, None));
        assert_eq!(field_of(parse_request(b"{", &c)), (400, None));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("1700000000:bob").as_deref(),
            Some("1700000000:bob")
        );
        assert_eq!(
            percent_decode("1700000000%3Ab%20b").as_deref(),
            Some("1700000000:b b")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
