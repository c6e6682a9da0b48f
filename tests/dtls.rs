//! TURN over DTLS (RFC 7350, `tls.dtls-listen`), over the wire on loopback: a
//! DTLS 1.2 client (OpenSSL's client side, through the `openssl` crate) bridged
//! to the in-repo UDP client does Binding, Allocate and relaying; close_notify
//! ends the allocation; a reloaded certificate is served to new sessions while
//! old ones go on; ALPN (RFC 7443): `stun.turn` is echoed, a client offering
//! only `h2` is refused with a fatal alert, one offering none is served; an RSA
//! key with a certificate chain is served whole; stray datagrams open nothing.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferroturn::client::{Client, DatagramIo, Received};
use ferroturn::config::TlsConfig;
use ferroturn::turn::Transport;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use support::*;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

fn dtls_options(p: &Pki) -> ferroturn::net::NetOptions {
    let mut opts = options("127.0.0.1:0");
    opts.tls = Some(TlsConfig {
        handshake_timeout: Duration::from_secs(5),
        dtls_listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..p.tls_config()
    });
    opts
}

fn dtls_server(p: &Pki) -> ferroturn::net::Running {
    ferroturn::net::start(dtls_options(p)).expect("server with DTLS starts")
}

/// A DTLS client session to the server, bridged to plain UDP: each datagram sent
/// to `addr` goes to the server as one DTLS record, and each record from the
/// server comes back as one datagram. The bridge ends after 60 s at most.
struct Bridge {
    /// Where the in-repo UDP client sends.
    addr: SocketAddr,
    /// The bridge's own address towards the server (what Binding reports).
    outer: SocketAddr,
    /// The certificates the server sent (DER), its leaf first.
    chain: Vec<Vec<u8>>,
    /// The protocol the server chose by ALPN.
    alpn: Option<Vec<u8>>,
    close: mpsc::UnboundedSender<()>,
}

impl Bridge {
    fn peer_cert(&self) -> &[u8] {
        &self.chain[0]
    }
}

/// [`bridge_alpn`] offering no ALPN, as browsers and coturn do.
async fn bridge(server: SocketAddr) -> Result<Bridge, String> {
    bridge_alpn(server, None).await
}

/// A [`Bridge`] over DTLS 1.2, offering `alpn` (wire form) if given. `Err`
/// holds OpenSSL's handshake error (naming the alert the server sent).
async fn bridge_alpn(server: SocketAddr, alpn: Option<&[u8]>) -> Result<Bridge, String> {
    let inner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let outer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    outer.connect(server).await.unwrap();
    // tokio learns a socket is writable only once asked: before that its
    // try_send says WouldBlock, and the first ClientHello would be lost.
    outer.writable().await.unwrap();
    let (addr, outer_addr) = (inner.local_addr().unwrap(), outer.local_addr().unwrap());
    let mut ctx = SslContext::builder(SslMethod::dtls_client()).unwrap();
    ctx.set_verify(SslVerifyMode::NONE);
    if let Some(p) = alpn {
        ctx.set_alpn_protos(p).unwrap();
    }
    let mut ssl = Ssl::new(&ctx.build()).unwrap();
    ssl.set_connect_state();
    let mut tls = SslStream::new(ssl, DatagramIo(outer.clone())).unwrap();
    type Ready = Result<(Vec<Vec<u8>>, Option<Vec<u8>>), String>;
    let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
    let (close_tx, mut close_rx) = mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(async move {
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        // The handshake: OpenSSL retransmits on its own timer when called again.
        loop {
            match tls.do_handshake() {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(end) => return,
                _ = outer.readable() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let chain = tls
            .ssl()
            .peer_cert_chain()
            .map(|c| c.iter().map(|x| x.to_der().unwrap()).collect())
            .unwrap_or_default();
        let chosen = tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
        let _ = ready_tx.send(Ok((chain, chosen)));
        let mut buf = vec![0u8; 65536];
        let mut client: Option<SocketAddr> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => return,
                _ = outer.readable() => {
                    for _ in 0..64 {
                        match tls.ssl_read(&mut buf) {
                            Ok(n) => {
                                if let Some(c) = client {
                                    let _ = inner.try_send_to(&buf[..n], c);
                                }
                            }
                            Err(e) if e.code() == ErrorCode::WANT_READ => break,
                            // close_notify, or a fatal error.
                            Err(_) => return,
                        }
                    }
                }
                r = inner.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    if tls.ssl_write(&buf[..n]).is_err() {
                        return;
                    }
                }
                Some(()) = close_rx.recv() => {
                    let _ = tls.shutdown();
                    return;
                }
            }
        }
    });
    let (chain, alpn) = match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
        Ok(Ok(Ok(done))) => done,
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(_)) => return Err("DTLS handshake failed".to_owned()),
        Err(_) => {
            // No more ClientHellos from this one.
            task.abort();
            return Err("DTLS handshake timed out".to_owned());
        }
    };
    Ok(Bridge {
        addr,
        outer: outer_addr,
        chain,
        alpn,
        close: close_tx,
    })
}

#[tokio::test]
async fn binding_and_relaying_over_dtls() {
    let p = pki();
    let srv = dtls_server(&p);
    assert_eq!(srv.dtls.len(), 1);
    let b = bridge(srv.dtls[0]).await.unwrap();
    assert_eq!(b.peer_cert(), &p.der[..], "the configured certificate");
    assert_eq!(b.alpn, None, "no ALPN offered, none chosen");
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);

    let peer = echo_peer("127.0.0.1:0", 100).await;
    let b = bridge(srv.dtls[0]).await.unwrap();
    let mut c = Client::udp(b.addr).await.unwrap().credentials(USER, PASS);
    c.allocate().await.unwrap();
    c.create_permission(&[peer]).await.unwrap();
    c.send_indication(peer, b"over dtls").await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer,
            data: b"over dtls".to_vec()
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
    // The allocation is a DTLS one, from the bridge's address.
    let sessions = srv.sessions().await;
    assert_eq!(sessions.len(), 1);
    let tuple = sessions[0].allocation.tuple;
    assert_eq!(tuple.transport, Transport::Dtls);
    assert_eq!(tuple.client, b.outer);

    // As over TLS, the allocation ends with the session: close_notify.
    b.close.send(()).unwrap();
    eventually_async(WAIT, "the allocation to end", async || {
        let n = srv.sessions().await.len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} allocations left"))
        }
    })
    .await;
    srv.stop().unwrap();
}

fn write_pair(cert: &Path, key: &Path) -> Vec<u8> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::write(cert, ck.cert.pem()).unwrap();
    std::fs::write(key, ck.signing_key.serialize_pem()).unwrap();
    ck.cert.der().to_vec()
}

#[tokio::test]
async fn reloaded_certificate_serves_new_sessions() {
    let p = pki();
    let srv = dtls_server(&p);
    let old = bridge(srv.dtls[0]).await.unwrap();
    assert_eq!(old.peer_cert(), &p.der[..]);
    let mut c_old = Client::udp(old.addr).await.unwrap();

    let new_der = write_pair(&p.cert, &p.key);
    srv.tls_certs.as_ref().unwrap().reload().unwrap();
    let new = bridge(srv.dtls[0]).await.unwrap();
    assert_eq!(
        new.peer_cert(),
        &new_der[..],
        "a new session gets the new certificate"
    );
    let mut c_new = Client::udp(new.addr).await.unwrap();
    assert_eq!(c_new.binding().await.unwrap(), new.outer);
    // The session made before the reload goes on.
    assert_eq!(c_old.binding().await.unwrap(), old.outer);
    srv.stop().unwrap();
}

#[tokio::test]
async fn alpn_stun_turn_is_echoed() {
    let p = pki();
    let srv = dtls_server(&p);
    let b = bridge_alpn(srv.dtls[0], Some(b"\x02h2\x09stun.turn"))
        .await
        .unwrap();
    assert_eq!(b.alpn.as_deref(), Some(&b"stun.turn"[..]));
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);
    let b = bridge_alpn(srv.dtls[0], Some(b"\x12stun.nat-discovery"))
        .await
        .unwrap();
    assert_eq!(b.alpn.as_deref(), Some(&b"stun.nat-discovery"[..]));
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_client_offering_only_other_protocols_is_refused() {
    let p = pki();
    let srv = dtls_server(&p);
    let err = match bridge_alpn(srv.dtls[0], Some(b"\x02h2")).await {
        Ok(_) => panic!("a client offering only h2 must be refused"),
        Err(e) => e,
    };
    // The client got the server's fatal alert, not a timeout.
    assert!(err.contains("no application protocol"), "{err}");
    let metrics = srv.metrics.expect("metrics on");
    wait_for_metrics(metrics, &["ferroturn_tls_handshake_failures_total 1"]).await;
    // The refusal costs nothing to others.
    let b = bridge(srv.dtls[0]).await.unwrap();
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);
    srv.stop().unwrap();
}

/// An RSA leaf signed by an intermediate signed by a root, as a CA issues
/// them: the certificate file holds leaf and intermediate. Returns the DER of
/// leaf and intermediate.
fn write_rsa_chain(cert: &Path, key: &Path) -> Vec<Vec<u8>> {
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
    };
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root_params = ca("root");
    let root = rcgen::Issuer::from_params(&root_params, &root_key);
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid_params = ca("intermediate");
    let mid = mid_params.signed_by(&mid_key, &root).unwrap();
    let mid_issuer = rcgen::Issuer::from_params(&mid_params, &mid_key);
    // ring cannot make RSA keys: OpenSSL makes it.
    let rsa = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let rsa_pem = String::from_utf8(rsa.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::from_pem(&rsa_pem).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &mid_issuer)
        .unwrap();
    std::fs::write(cert, format!("{}{}", leaf.pem(), mid.pem())).unwrap();
    std::fs::write(key, rsa_pem).unwrap();
    vec![leaf.der().to_vec(), mid.der().to_vec()]
}

#[tokio::test]
async fn an_rsa_key_and_its_chain_are_served() {
    let p = pki();
    let chain = write_rsa_chain(&p.cert, &p.key);
    let srv = dtls_server(&p);
    let b = bridge(srv.dtls[0]).await.unwrap();
    assert_eq!(b.chain, chain, "leaf and intermediate, in order");
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);
    srv.stop().unwrap();
}

#[tokio::test]
async fn an_ed25519_key_is_refused_at_start_for_dtls() {
    let p = pki();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&kp).unwrap();
    std::fs::write(&p.cert, cert.pem()).unwrap();
    std::fs::write(&p.key, kp.serialize_pem()).unwrap();
    // TLS alone takes it.
    let mut tls_only = dtls_options(&p);
    tls_only.tls.as_mut().unwrap().dtls_listen.clear();
    ferroturn::net::start(tls_only)
        .expect("TLS takes Ed25519")
        .stop()
        .unwrap();
    let err = match ferroturn::net::start(dtls_options(&p)) {
        Ok(_) => panic!("DTLS must refuse an Ed25519 key"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("tls.key") && err.contains("RSA or ECDSA"),
        "{err}"
    );
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused_at_start() {
    let p = pki();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&p.key, other.serialize_pem()).unwrap();
    let err = match ferroturn::net::start(dtls_options(&p)) {
        Ok(_) => panic!("a mismatched key must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tls.key"), "{err}");
}

#[tokio::test]
async fn stray_datagrams_open_no_session_and_do_no_harm() {
    let p = pki();
    let srv = dtls_server(&p);
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Not a handshake record; a truncated "handshake"; a plain STUN Binding.
    for d in [
        &[0x17u8, 0xfe, 0xfd, 0, 0][..],
        &[22u8, 0xfe][..],
        &[0u8, 1, 0, 0][..],
    ] {
        junk.send_to(d, srv.dtls[0]).await.unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), junk.recv_from(&mut buf))
            .await
            .is_err(),
        "no answer to junk"
    );
    let b = bridge(srv.dtls[0]).await.unwrap();
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);
    srv.stop().unwrap();
}

#[tokio::test]
async fn sessions_count_against_the_connection_caps() {
    let p = pki();
    let mut opts = dtls_options(&p);
    opts.connections.max_per_ip = 1;
    let srv = ferroturn::net::start(opts).expect("server with DTLS starts");
    let first = bridge(srv.dtls[0]).await.unwrap();
    // A second session from 127.0.0.1 is over max-per-ip: its ClientHello is
    // dropped, and its handshake never completes.
    assert!(
        bridge(srv.dtls[0]).await.is_err(),
        "over the per-address cap"
    );
    // Once the first ends (close_notify), the address may open another.
    first.close.send(()).unwrap();
    let within = Duration::from_secs(15);
    let third = eventually_async(within, "a session after the first closed", async || {
        bridge(srv.dtls[0]).await
    })
    .await;
    let mut c = Client::udp(third.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), third.outer);
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_session_without_an_allocation_is_closed_at_the_allocate_deadline() {
    let p = pki();
    let mut opts = dtls_options(&p);
    opts.connections.allocate_timeout = Duration::from_secs(1);
    let srv = ferroturn::net::start(opts).expect("server with DTLS starts");
    let b = bridge(srv.dtls[0]).await.unwrap();
    let mut c = Client::udp(b.addr).await.unwrap();
    assert_eq!(c.binding().await.unwrap(), b.outer);
    // No Allocate: the server closes the session (with close_notify, which ends
    // the bridge) and counts it.
    let metrics = srv.metrics.expect("metrics on");
    wait_for_metrics(
        metrics,
        &[r#"ferroturn_connections_closed_total{reason="allocate_timeout"} 1"#],
    )
    .await;
    eventually_async(WAIT, "the bridge to end on close_notify", async || {
        if b.close.is_closed() {
            Ok(())
        } else {
            Err("bridge still running")
        }
    })
    .await;
    srv.stop().unwrap();
}
