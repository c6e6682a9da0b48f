//! TURN over DTLS (RFC 7350, `tls.dtls-listen`), over the wire on loopback: a
//! DTLS client (the `dimpl` engine's client side) bridged to the in-repo UDP
//! client does Binding, Allocate and relaying; close_notify ends the allocation;
//! a reloaded certificate is served to new sessions while old ones go on (DTLS
//! 1.2 throughout, DTLS 1.3 for the session after the reload); a key
//! DTLS cannot sign with is refused at start; stray datagrams open nothing.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, DtlsCertificate, Output};
use ferroturn::client::{Client, Received};
use ferroturn::config::TlsConfig;
use ferroturn::turn::Transport;
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
    /// The server's leaf certificate (DER).
    peer_cert: Vec<u8>,
    close: mpsc::UnboundedSender<()>,
}

fn client_cert() -> DtlsCertificate {
    let ck = rcgen::generate_simple_self_signed(vec!["client".to_owned()]).unwrap();
    DtlsCertificate {
        certificate: ck.cert.der().to_vec(),
        private_key: ck.signing_key.serialize_der(),
    }
}

/// [`bridge_with`] DTLS 1.2, what OpenSSL clients (coturn's among them) speak.
async fn bridge(server: SocketAddr) -> Result<Bridge, String> {
    bridge_with(server, false).await
}

/// A [`Bridge`] over DTLS 1.2, or with `auto` dimpl's hybrid ClientHello, which
/// the server answers with DTLS 1.3.
async fn bridge_with(server: SocketAddr, auto: bool) -> Result<Bridge, String> {
    let inner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let outer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    outer.connect(server).await.unwrap();
    let (addr, outer_addr) = (inner.local_addr().unwrap(), outer.local_addr().unwrap());
    let config = Arc::new(dimpl::Config::builder().mtu(1400).build().unwrap());
    let mut dtls = if auto {
        Dtls::new_auto(config, client_cert(), Instant::now())
    } else {
        Dtls::new_12(config, client_cert(), Instant::now())
    };
    dtls.set_active(true);
    let (ready_tx, ready_rx) = oneshot::channel::<Vec<u8>>();
    let (close_tx, mut close_rx) = mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(async move {
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut out = vec![0u8; 4096];
        let mut buf = vec![0u8; 65536];
        let mut buf2 = vec![0u8; 65536];
        let mut client: Option<SocketAddr> = None;
        let mut peer_cert = Vec::new();
        let mut ready = Some(ready_tx);
        // Data the client sent before the handshake finished.
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut connected = false;
        loop {
            let mut wake = Instant::now() + Duration::from_secs(1);
            for _ in 0..1000 {
                match dtls.poll_output(&mut out) {
                    Output::Packet(p) => {
                        let _ = outer.try_send(p);
                    }
                    Output::BufferTooSmall { needed } => out.resize(needed, 0),
                    Output::Timeout(t) => {
                        wake = t;
                        break;
                    }
                    Output::Connected => connected = true,
                    Output::PeerCert(der) => peer_cert = der.to_vec(),
                    Output::ApplicationData(d) => {
                        if let Some(c) = client {
                            let _ = inner.try_send_to(d, c);
                        }
                    }
                    Output::CloseNotify => return,
                    _ => {}
                }
            }
            if connected {
                if let Some(r) = ready.take() {
                    let _ = r.send(peer_cert.clone());
                }
                for d in held.drain(..) {
                    let _ = dtls.send_application_data(&d);
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(end) => return,
                r = outer.recv(&mut buf) => {
                    let Ok(n) = r else { continue };
                    if dtls.handle_timeout(Instant::now()).is_err()
                        || dtls.handle_packet(&buf[..n]).is_err()
                    {
                        return;
                    }
                }
                r = inner.recv_from(&mut buf2) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    if connected {
                        if dtls.send_application_data(&buf2[..n]).is_err() {
                            return;
                        }
                    } else {
                        held.push(buf2[..n].to_vec());
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if dtls.handle_timeout(Instant::now()).is_err() {
                        return;
                    }
                }
                Some(()) = close_rx.recv() => {
                    let _ = dtls.close();
                    for _ in 0..16 {
                        match dtls.poll_output(&mut out) {
                            Output::Packet(p) => {
                                let _ = outer.try_send(p);
                            }
                            Output::Timeout(_) => break,
                            _ => {}
                        }
                    }
                    return;
                }
            }
        }
    });
    let peer_cert = match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
        Ok(Ok(der)) => der,
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
        peer_cert,
        close: close_tx,
    })
}

#[tokio::test]
async fn binding_and_relaying_over_dtls() {
    let p = pki();
    let srv = dtls_server(&p);
    assert_eq!(srv.dtls.len(), 1);
    let b = bridge(srv.dtls[0]).await.unwrap();
    assert_eq!(b.peer_cert, p.der.to_vec(), "the configured certificate");
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
    assert_eq!(old.peer_cert, p.der.to_vec());
    let mut c_old = Client::udp(old.addr).await.unwrap();

    let new_der = write_pair(&p.cert, &p.key);
    srv.tls_certs.as_ref().unwrap().reload().unwrap();
    // DTLS 1.3 this time (the hybrid ClientHello).
    let new = bridge_with(srv.dtls[0], true).await.unwrap();
    assert_eq!(
        new.peer_cert, new_der,
        "a new session gets the new certificate"
    );
    let mut c_new = Client::udp(new.addr).await.unwrap();
    assert_eq!(c_new.binding().await.unwrap(), new.outer);
    // The session made before the reload goes on.
    assert_eq!(c_old.binding().await.unwrap(), old.outer);
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_key_dtls_cannot_sign_with_is_refused_at_start() {
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
    assert!(err.contains("tls.key") && err.contains("ECDSA"), "{err}");
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
