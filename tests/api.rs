//! The credentials API (`[api]`) end to end: tokens added with the CLI into a
//! SQLite store, the real binary serving the API on loopback port 0, and a real
//! HTTP client (hyper's). A minted credential must authenticate an Allocate on
//! the same server; a revoked one must not.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use support::{
    eventually_async, ferroturn_cli, http_request, http_request_on, pki, spawn_binary,
    turn_client_as, wait_for_metrics, Binary, HttpAnswer, Transport, REALM,
};

/// The store, the configuration file and the server's API token.
struct Setup {
    _dir: tempfile::TempDir,
    db: String,
    config: PathBuf,
    token: String,
}

const URL: &str = "turn:turn.example.test:3478?transport=udp";
const ORIGIN: &str = "https://app.example.test";

/// A store with a REST secret and an API token `app` (both by the CLI), and a
/// configuration with `[api]` whose extra lines are `api_extra`.
fn setup(api_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db").to_str().unwrap().to_owned();
    ferroturn_cli(&["secret", "add", "--generate", "--db", &db], None).ok();
    let out = ferroturn_cli(&["api-token", "add", "app", "--db", &db], None).ok();
    let token = out.stdout.trim().to_owned();
    assert!(token.starts_with("ftk_") && token.len() == 44, "{out:?}");
    let config = dir.path().join("ferroturn.toml");
    write_config(&config, &db, &format!("urls = [\"{URL}\"]\n{api_extra}"));
    Setup {
        _dir: dir,
        db,
        config,
        token,
    }
}

fn write_config(path: &Path, db: &str, api: &str) {
    std::fs::write(
        path,
        format!(
            "[server]\nrealm = \"{REALM}\"\n[store]\nurl = \"{db}\"\n[admin]\nsocket = \"\"\n\
             [api]\n{api}\n"
        ),
    )
    .unwrap();
}

fn serve(s: &Setup, extra: &[&str]) -> Binary {
    let mut args = vec![
        "--config",
        s.config.to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn_binary(&args)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn post(bin: &Binary, auth: Option<&str>, body: &str) -> HttpAnswer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    http_request(
        bin.api.unwrap(),
        "POST",
        "/v1/credentials",
        &headers,
        Some(body),
    )
    .await
}

async fn delete(bin: &Binary, auth: &str, username: &str) -> HttpAnswer {
    http_request(
        bin.api.unwrap(),
        "DELETE",
        &format!("/v1/credentials/{username}"),
        &[("authorization", auth)],
        None,
    )
    .await
}

/// The one iceServers entry of a 201: (urls, username, credential).
fn entry(a: &HttpAnswer) -> (Vec<String>, String, String) {
    assert_eq!(a.status, 201, "{a:?}");
    let v = a.json();
    let servers = v["iceServers"].as_array().expect("iceServers");
    assert_eq!(servers.len(), 1, "{v}");
    let s = &servers[0];
    let urls = s["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    (
        urls,
        s["username"].as_str().unwrap().to_owned(),
        s["credential"].as_str().unwrap().to_owned(),
    )
}

async fn allocate_as(bin: &Binary, user: &str, pass: &str) -> Result<(), Option<u16>> {
    let mut c = turn_client_as(bin, Transport::Udp, user, pass).await;
    c.allocate().await.map(|_| ()).map_err(|e| e.code())
}

#[tokio::test]
async fn minted_credential_allocates_and_revoking_it_refuses_it() {
    let s = setup("default-ttl = 600\nmax-ttl = 7200\n");
    let bin = serve(&s, &[]);
    let auth = bearer(&s.token);

    let a = post(&bin, Some(&auth), r#"{"name": "bob", "ttl": 3600}"#).await;
    let (urls, username, credential) = entry(&a);
    assert_eq!(urls, [URL]);
    assert_eq!(a.json()["ttl"], 3600);
    let (expiry, name) = username.split_once(':').unwrap();
    assert_eq!(name, "bob");
    let now = ferroturn::time::unix_now();
    let expiry: i64 = expiry.parse().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expiry), "{username}");
    allocate_as(&bin, &username, &credential)
        .await
        .expect("the minted credential authenticates");

    // Defaults: name "api", default-ttl.
    let a = post(&bin, Some(&auth), "").await;
    let (_, username2, credential2) = entry(&a);
    assert!(username2.ends_with(":api"), "{username2}");
    assert_eq!(a.json()["ttl"], 600);

    // Revoked through the API: refused once the server sees the store change.
    let d = delete(&bin, &auth, &username).await;
    assert_eq!(d.status, 204, "{d:?}");
    eventually_async(
        Duration::from_secs(5),
        "the revoked credential refused",
        async || match allocate_as(&bin, &username, &credential).await {
            Err(Some(401)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // Only that one: the other credential still works.
    allocate_as(&bin, &username2, &credential2).await.unwrap();

    // Not a REST username: 400 naming it; already expired: 404.
    let d = delete(&bin, &auth, "alice").await;
    assert_eq!(
        (d.status, d.json()["field"].as_str()),
        (400, Some("username"))
    );
    let d = delete(&bin, &auth, "1000:old").await;
    assert_eq!(d.status, 404, "{d:?}");
    // Wrong method on the collection.
    let g = http_request(
        bin.api.unwrap(),
        "GET",
        "/v1/credentials",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!((g.status, g.header("allow")), (405, Some("POST, OPTIONS")));

    // Every answer above is counted by code.
    wait_for_metrics(
        bin.metrics.unwrap(),
        &[
            r#"ferroturn_api_requests_total{code="201"} 2"#,
            r#"ferroturn_api_requests_total{code="204"} 1"#,
            r#"ferroturn_api_requests_total{code="400"} 1"#,
            r#"ferroturn_api_requests_total{code="404"} 1"#,
            r#"ferroturn_api_requests_total{code="405"} 1"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_missing_or_removed_tokens_get_401_and_tokens_are_stored_hashed() {
    let s = setup("");
    let bin = serve(&s, &[]);

    let a = post(&bin, None, "{}").await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(
        a.header("www-authenticate").unwrap().starts_with("Bearer"),
        "{a:?}"
    );
    for wrong in [
        bearer("ftk_0000000000000000000000000000000000000000"),
        bearer(&s.token[..s.token.len() - 1]),
        format!("Basic {}", s.token),
        s.token.clone(),
    ] {
        let a = post(&bin, Some(&wrong), "{}").await;
        assert_eq!(a.status, 401, "{wrong}: {a:?}");
        assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    assert_eq!(post(&bin, Some(&bearer(&s.token)), "{}").await.status, 201);

    // The token is nowhere in the database, its SHA-256 is; `list` shows names.
    let raw = std::fs::read(&s.db).unwrap();
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(s.token.as_bytes()),
        "plaintext token in the store"
    );
    assert!(
        contains(&ferroturn::api::tokens::hash(&s.token)),
        "hash not stored"
    );
    let list = ferroturn_cli(&["api-token", "list", "--json", "--db", &s.db], None).ok();
    assert!(!list.stdout.contains(&s.token[4..]), "{list:?}");
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], "app");
    assert!(rows[0]["last_used"].as_i64().is_some(), "{rows}");
    let dup = ferroturn_cli(&["api-token", "add", "app", "--db", &s.db], None);
    assert!(
        !dup.success() && dup.stderr.contains("already exists"),
        "{dup:?}"
    );

    // Removed: refused at once (tokens are read per request).
    ferroturn_cli(&["api-token", "remove", "app", "--db", &s.db], None).ok();
    let a = post(&bin, Some(&bearer(&s.token)), "{}").await;
    assert_eq!(a.status, 401, "{a:?}");
    let gone = ferroturn_cli(&["api-token", "remove", "app", "--db", &s.db], None);
    assert!(
        !gone.success() && gone.stderr.contains("no such API token"),
        "{gone:?}"
    );
    wait_for_metrics(
        bin.metrics.unwrap(),
        &[r#"ferroturn_api_requests_total{code="401"} 6"#],
    )
    .await;
}

#[tokio::test]
async fn over_ttl_and_bad_bodies_get_400_naming_the_field() {
    let s = setup("max-ttl = 7200\n");
    let bin = serve(&s, &[]);
    let auth = bearer(&s.token);
    let a = post(&bin, Some(&auth), r#"{"ttl": 7201}"#).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.json()["field"], "ttl");
    assert!(
        a.json()["error"].as_str().unwrap().contains("7200"),
        "{a:?}"
    );
    assert_eq!(
        entry(&post(&bin, Some(&auth), r#"{"ttl": 7200}"#).await).0,
        [URL]
    );
    for (body, field) in [
        (r#"{"ttl": 0}"#, Some("ttl")),
        (r#"{"name": ""}"#, Some("name")),
        (r#"{"user": "x"}"#, Some("user")),
        ("not json", None),
    ] {
        let a = post(&bin, Some(&auth), body).await;
        assert_eq!(
            (a.status, a.json()["field"].as_str()),
            (400, field),
            "{body}"
        );
    }
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(5000));
    assert_eq!(post(&bin, Some(&auth), &big).await.status, 413);
}

#[tokio::test]
async fn rate_limit_per_token_answers_429_with_retry_after_and_reload_applies() {
    let s = setup("rate-per-minute = 3\n");
    // A second token has a bucket of its own.
    let other = ferroturn_cli(&["api-token", "add", "other", "--db", &s.db], None).ok();
    let other = bearer(other.stdout.trim());
    let bin = serve(&s, &[]);
    let auth = bearer(&s.token);
    for _ in 0..3 {
        assert_eq!(post(&bin, Some(&auth), "").await.status, 201);
    }
    let a = post(&bin, Some(&auth), "").await;
    assert_eq!(a.status, 429, "{a:?}");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{a:?}");
    assert_eq!(post(&bin, Some(&other), "").await.status, 201);
    wait_for_metrics(
        bin.metrics.unwrap(),
        &[r#"ferroturn_api_requests_total{code="429"} 1"#],
    )
    .await;

    // SIGHUP with new urls and a higher rate: both apply without a restart (the
    // emptied bucket then refills at the new rate).
    write_config(
        &s.config,
        &s.db,
        "urls = [\"turns:turn.example.test:5349?transport=tcp\"]\nrate-per-minute = 600\n",
    );
    bin.signal(libc::SIGHUP);
    bin.wait_log("configuration reloaded", Duration::from_secs(5));
    let a = eventually_async(Duration::from_secs(5), "the reloaded rate", async || {
        let a = post(&bin, Some(&auth), "").await;
        if a.status == 201 {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    assert_eq!(entry(&a).0, ["turns:turn.example.test:5349?transport=tcp"]);
}

#[tokio::test]
async fn cors_preflight_answers_allowed_origins_only() {
    let s = setup(&format!("cors-origins = [\"{ORIGIN}\"]\n"));
    let bin = serve(&s, &[]);
    let preflight = |origin: &'static str| {
        let addr = bin.api.unwrap();
        async move {
            http_request(
                addr,
                "OPTIONS",
                "/v1/credentials",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                None,
            )
            .await
        }
    };
    let ok = preflight(ORIGIN).await;
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(ok
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let headers = ok
        .header("access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"));

    let no = preflight("https://evil.example.test").await;
    assert_eq!(no.status, 403, "{no:?}");
    for h in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert_eq!(no.header(h), None, "{no:?}");
    }

    // The actual request from the allowed origin can be read by the page.
    let a = http_request(
        bin.api.unwrap(),
        "POST",
        "/v1/credentials",
        &[("origin", ORIGIN), ("authorization", &bearer(&s.token))],
        None,
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
}

#[tokio::test]
async fn https_with_the_tls_certificate() {
    let p = pki();
    let s = setup("tls = true\n");
    let bin = serve(
        &s,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--cert",
            p.cert.to_str().unwrap(),
            "--key",
            p.key.to_str().unwrap(),
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = bin.api.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake with the [tls] certificate");
    let a = http_request_on(
        tls,
        addr,
        "POST",
        "/v1/credentials",
        &[("authorization", &bearer(&s.token))],
        Some(r#"{"name": "carol"}"#),
    )
    .await;
    let (_, username, credential) = entry(&a);
    allocate_as(&bin, &username, &credential).await.unwrap();
}
