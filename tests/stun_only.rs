//! STUN-only listeners on the wire: one server with a normal listener and a
//! STUN-only one (`server.stun-only-listen`); on the STUN-only one a Binding is
//! answered and an Allocate refused (400), over UDP and TCP, while the normal
//! one allocates and relays.

mod support;

use ferroturn::client::{Client, Received};
use ferroturn::turn::Transport as CoreTransport;
use support::*;

#[tokio::test]
async fn binding_answered_and_allocate_refused_on_the_stun_only_listener() {
    let mut opts = options("127.0.0.1:0");
    opts.listen.push("127.0.0.2:0".parse().unwrap());
    // As configured (port 0); the server resolves it to what it bound.
    opts.core.stun_only_listeners = vec![(CoreTransport::Udp, opts.listen[1])];
    let srv = ferroturn::net::start(opts).expect("server starts");
    let (stun_udp, stun_tcp) = (srv.udp[1], srv.tcp[1]);

    for stream in [false, true] {
        let c = if stream {
            Client::tcp(stun_tcp).await
        } else {
            Client::udp(stun_udp).await
        };
        let mut c = c.unwrap().credentials(USER, PASS);
        let mapped = c.binding().await.unwrap();
        assert_eq!(mapped, c.local_addr().unwrap(), "stream {stream}");
        let err = c.allocate().await.unwrap_err();
        assert_eq!(err.code(), Some(400), "stream {stream}: {err}");
    }
    assert_eq!(srv.allocations(), 0);

    // The normal listener allocates and relays.
    let peer = echo_peer("127.0.0.1:0", 10).await;
    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    c.create_permission(&[peer]).await.unwrap();
    c.send_indication(peer, b"through").await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer,
            data: b"through".to_vec()
        }
    );
    assert_eq!(srv.allocations(), 1);
    srv.stop().unwrap();
}
