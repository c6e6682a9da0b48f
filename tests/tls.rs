//! TURN over TLS (`turns:`): Binding and relaying with the in-repo client over TLS,
//! coturn's `turnutils_uclient -S` with 0 lost packets, the handshake timeout, and
//! clear start-up errors for a missing file or a key that does not match.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferroturn::client::{Client, Received};
use ferroturn::config::TlsConfig;
use support::*;

fn tls_server(p: &Pki, handshake: Duration) -> ferroturn::net::Running {
    let mut opts = options("127.0.0.1:0");
    opts.tls = Some(TlsConfig {
        handshake_timeout: handshake,
        ..p.tls_config()
    });
    ferroturn::net::start(opts).expect("server with TLS starts")
}

fn roots(p: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.der.clone()).unwrap();
    roots
}

#[tokio::test]
async fn binding_and_relaying_over_tls() {
    let p = pki();
    let srv = tls_server(&p, Duration::from_secs(10));
    let mut c = Client::tls(srv.tls[0], "localhost", roots(&p))
        .await
        .unwrap();
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());

    let peer = echo_peer("127.0.0.1:0", 100).await;
    let mut c = Client::tls(srv.tls[0], "127.0.0.1", roots(&p))
        .await
        .unwrap()
        .credentials(USER, PASS);
    c.allocate().await.unwrap();
    c.create_permission(&[peer]).await.unwrap();
    c.send_indication(peer, b"over tls").await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer,
            data: b"over tls".to_vec()
        }
    );
    c.channel_bind(0x4000, peer).await.unwrap();
    for len in [1usize, 5, 100, 1200] {
        let payload = vec![0xA5; len];
        c.send_channel_data(0x4000, &payload).await.unwrap();
        assert_eq!(
            c.recv_data(WAIT).await.unwrap(),
            Received::Channel {
                channel: 0x4000,
                data: payload
            }
        );
    }
    // Both connections are counted as TLS, not TCP.
    let metrics = srv.metrics.expect("metrics on");
    let want = [
        r#"ferroturn_tcp_connections_active{transport="tls"} 2"#,
        r#"ferroturn_tcp_connections_total{transport="tls"} 2"#,
        r#"ferroturn_tcp_connections_total{transport="tcp"} 0"#,
    ];
    wait_for_metrics(metrics, &want).await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_finish_the_handshake_is_dropped() {
    use tokio::io::AsyncReadExt;
    let p = pki();
    let srv = tls_server(&p, Duration::from_secs(1));
    let mut s = tokio::net::TcpStream::connect(srv.tls[0]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within the handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Counted, and not as a connection.
    let metrics = srv.metrics.expect("metrics on");
    wait_for_metrics(
        metrics,
        &[
            "ferroturn_tls_handshake_failures_total 1",
            r#"ferroturn_tcp_connections_total{transport="tls"} 0"#,
        ],
    )
    .await;
    srv.stop().unwrap();
}

/// Runs the real binary with TLS and returns it with its TLS address.
fn ferroturn_tls(cert: &Path, key: &Path) -> (Binary, SocketAddr) {
    let srv = spawn_tls_binary(
        cert,
        key,
        "north.gov",
        "ninefingers:youhavetoberealistic",
        &["--allow-peer", "127.0.0.0/8"],
    );
    let tls = srv.tls.expect("a TLS listener");
    (srv, tls)
}

#[test]
fn turnutils_uclient_over_tls_loses_nothing() {
    let p = pki();
    let (srv, addr) = ferroturn_tls(&p.cert, &p.key);
    let (peer, peer_port) = turnutils_peer();
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let text = turnutils_uclient(&[
        "-t",
        "-S",
        "-u",
        "ninefingers",
        "-w",
        "youhavetoberealistic",
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-n",
        "40",
        "-m",
        "6",
        "-l",
        "170",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    drop(peer);
    drop(srv);
    // uclient picks its TLS method at random per connection, among them TLS 1.0 and
    // 1.1, which ferroturn refuses (TLS 1.2 and 1.3 only): those connections fail
    // their handshake, so how many sessions run varies. Every session that did
    // connect must have had every message echoed.
    let sent = uclient_total(&text, "tot_send_msgs=");
    let received = uclient_total(&text, "tot_recv_msgs=");
    assert!(sent >= 40, "no session completed over TLS:\n{text}");
    assert_eq!(sent, received, "{text}");
}

fn serve_fails(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroturn"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Ok(status) = poll_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().ok_or(())
    }) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve {args:?} did not fail");
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn missing_files_and_mismatched_keys_stop_startup_with_a_clear_error() {
    let p = pki();
    let other = pki();
    let err = serve_fails(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--cert",
        "/nonexistent/cert.pem",
        "--key",
        p.key.to_str().unwrap(),
    ]);
    assert!(
        err.contains("tls.cert") && err.contains("/nonexistent/cert.pem"),
        "{err}"
    );
    let err = serve_fails(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--cert",
        p.cert.to_str().unwrap(),
    ]);
    assert!(err.contains("tls.key"), "{err}");
    let err = serve_fails(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--cert",
        p.cert.to_str().unwrap(),
        "--key",
        other.key.to_str().unwrap(),
    ]);
    assert!(err.contains("tls.key does not match tls.cert"), "{err}");
}

/// SIGHUP re-reads the certificate: new handshakes get the new one, a connection
/// made before keeps working, and a bad replacement is refused while the previous
/// pair stays in force.
#[test]
fn sighup_reloads_the_certificate_without_dropping_live_connections() {
    let (a, b) = (pki(), pki());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let (srv, addr) = ferroturn_tls(&cert, &key);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut live = Client::tls(addr, "localhost", roots(&a)).await.unwrap();
        live.binding().await.unwrap();

        std::fs::copy(&b.cert, &cert).unwrap();
        std::fs::copy(&b.key, &key).unwrap();
        srv.signal(libc::SIGHUP);
        let what = "the new certificate taken up";
        eventually_async(Duration::from_secs(5), what, async || {
            let mut c = Client::tls(addr, "localhost", roots(&b)).await?;
            c.binding().await.map_err(std::io::Error::other)
        })
        .await;
        assert!(
            Client::tls(addr, "localhost", roots(&a)).await.is_err(),
            "new handshakes still get the old certificate"
        );
        // The connection made before the reload is untouched.
        live.binding().await.unwrap();

        // A key that does not match: refused, the current pair stays.
        std::fs::copy(&a.key, &key).unwrap();
        srv.signal(libc::SIGHUP);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = Client::tls(addr, "localhost", roots(&b)).await.unwrap();
        c.binding().await.unwrap();
    });
    drop(srv);
}
