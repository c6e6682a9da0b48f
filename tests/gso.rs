//! UDP GSO and GRO end to end, over loopback: trains of datagrams that a
//! sender coalesced with UDP_SEGMENT reach the server's GRO-enabled sockets as
//! one read, and must still be relayed datagram by datagram, each exactly as
//! sent; what the server sends a client in one batch goes out as one GSO send
//! and arrives as separate datagrams. (Loopback keeps a GSO train whole up to a
//! socket with UDP_GRO on, so these trains are real ones, not split on the way;
//! the metrics prove it.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ferroturn::client::{Client, Received};
use ferroturn::stun::ChannelData;
use quinn_udp::{Transmit, UdpSocketState};
use support::*;

const CHANNEL: u16 = 0x4000;

use support::metric_value as value;

/// Scrapes until every series has exactly its expected value (shards publish
/// every 250 ms).
async fn expect_metrics(metrics: SocketAddr, want: &[(&str, u64)]) {
    eventually_async(Duration::from_secs(3), "the GSO/GRO counters", async || {
        let (status, body) = http_get(metrics, "/metrics").await;
        assert_eq!(status, 200);
        let wrong: Vec<_> = want
            .iter()
            .filter(|(s, v)| value(&body, s) != Some(*v))
            .map(|(s, v)| format!("{s}: want {v}, got {:?}", value(&body, s)))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    })
    .await
}

/// Sends `train` to `to` from `sock` as one UDP GSO send of `segment`-byte
/// segments (the last may be shorter), as a GSO-capable client or peer would.
fn send_train(sock: &std::net::UdpSocket, to: SocketAddr, train: &[u8], segment: usize) {
    let state = UdpSocketState::new(sock.into()).unwrap();
    state
        .try_send(
            sock.into(),
            &Transmit {
                destination: to,
                ecn: None,
                contents: train,
                segment_size: Some(segment),
                src_ip: None,
            },
        )
        .unwrap();
}

/// A UDP client of `srv` with an allocation, a permission and `CHANNEL` bound to
/// `peer`, and a second handle on its socket to send raw trains from.
async fn channel_client(
    srv: &ferroturn::net::Running,
    peer: SocketAddr,
) -> (Client, std::net::UdpSocket, SocketAddr) {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_sock.connect(srv.udp[0]).unwrap();
    std_sock.set_nonblocking(true).unwrap();
    let raw = std_sock.try_clone().unwrap();
    let sock = tokio::net::UdpSocket::from_std(std_sock).unwrap();
    let mut c = Client::from_udp_socket(sock, srv.udp[0]).credentials(USER, PASS);
    let alloc = c.allocate().await.unwrap();
    c.channel_bind(CHANNEL, peer).await.unwrap();
    (c, raw, alloc.relayed[0])
}

fn gso_supported() -> bool {
    ferroturn::net::sockets::udp_gso_supported()
}

/// A client's GRO train of ChannelData whose messages differ in length (padded
/// to the 104-byte segment, as UDP ChannelData may be, and a short last one) is
/// split by the listener and each message relayed to the peer as its own
/// datagram, exactly.
#[tokio::test]
async fn a_client_train_of_mixed_size_channel_data_reaches_the_peer_message_by_message() {
    if !gso_supported() {
        eprintln!("skipped: this kernel has no UDP GSO (UDP_SEGMENT)");
        return;
    }
    let srv = server("127.0.0.1:0");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (_c, raw, _relayed) = channel_client(&srv, peer_addr).await;

    const SEGMENT: usize = 104;
    let lens = [100usize, 97, 98, 99, 100, 97, 37];
    let mut train = Vec::new();
    let mut payloads = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i * 31) as u8).collect();
        let mut msg = BytesMut::new();
        ChannelData {
            channel: CHANNEL,
            payload: &payload,
        }
        .write(&mut msg, false);
        let last = i == lens.len() - 1;
        if !last {
            // Every segment but the last is SEGMENT bytes: the message, then
            // padding (which the length field leaves out).
            msg.resize(SEGMENT, 0xee);
        }
        train.extend_from_slice(&msg);
        payloads.push(payload);
    }
    send_train(&raw, srv.udp[0], &train, SEGMENT);

    let mut buf = vec![0u8; 65536];
    for (i, want) in payloads.iter().enumerate() {
        let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} never reached the peer"))
            .unwrap();
        assert_ne!(from, peer_addr);
        assert_eq!(
            &buf[..n],
            &want[..],
            "datagram {i} ({} bytes sent)",
            want.len()
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), peer.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing more than the train's messages is relayed"
    );
    let metrics = srv.metrics.unwrap();
    expect_metrics(
        metrics,
        &[("ferroturn_udp_gro_segments_total", lens.len() as u64)],
    )
    .await;
    srv.stop().unwrap();
}

/// A peer's GRO train to the relayed address becomes one ChannelData message per
/// datagram, and those, queued together for one client, leave the listener as
/// one GSO send and reach the client as separate, exact messages.
#[tokio::test]
async fn a_peer_train_reaches_the_client_as_separate_channel_data_in_one_gso_send() {
    if !gso_supported() {
        eprintln!("skipped: this kernel has no UDP GSO (UDP_SEGMENT)");
        return;
    }
    let srv = server("127.0.0.1:0");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (mut c, _raw, relayed) = channel_client(&srv, peer_addr).await;
    let metrics = srv.metrics.unwrap();
    // Nothing so far came or went as a train.
    expect_metrics(
        metrics,
        &[
            ("ferroturn_udp_gro_segments_total", 0),
            ("ferroturn_udp_gso_sends_total", 0),
            ("ferroturn_udp_gso_segments_total", 0),
        ],
    )
    .await;

    const SEGMENT: usize = 100;
    const COUNT: usize = 9;
    let mut train = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..COUNT {
        let len = if i == COUNT - 1 { 37 } else { SEGMENT };
        let payload: Vec<u8> = (0..len).map(|b| (b * 3 + i * 17) as u8).collect();
        train.extend_from_slice(&payload);
        payloads.push(payload);
    }
    send_train(&peer, relayed, &train, SEGMENT);

    for (i, want) in payloads.iter().enumerate() {
        match c.recv_data(WAIT).await {
            Ok(Received::Channel { channel, data }) => {
                assert_eq!(channel, CHANNEL);
                assert_eq!(&data, want, "message {i}");
            }
            other => panic!("message {i}: expected ChannelData, got {other:?}"),
        }
    }
    assert!(
        c.recv_data(Duration::from_millis(200)).await.is_err(),
        "nothing more than the train's datagrams is relayed"
    );
    // One read of COUNT datagrams, and one send of COUNT ChannelData messages
    // (8 of 104 bytes and a shorter last one: a valid GSO run).
    expect_metrics(
        metrics,
        &[
            ("ferroturn_udp_gro_segments_total", COUNT as u64),
            ("ferroturn_udp_gso_sends_total", 1),
            ("ferroturn_udp_gso_segments_total", COUNT as u64),
        ],
    )
    .await;
    srv.stop().unwrap();
}

/// A burst of ChannelData through an echo peer: whatever the server batched
/// into GSO sends on the way back, the client gets every message, separately
/// and exactly, in order.
#[tokio::test]
async fn an_echo_burst_comes_back_message_by_message() {
    let srv = server("127.0.0.1:0");
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut c, _raw, _relayed) = channel_client(&srv, peer).await;
    const BURST: usize = 64;
    let payloads: Vec<Vec<u8>> = (0..BURST)
        .map(|i| vec![i as u8; if i % 16 == 15 { 50 } else { 120 }])
        .collect();
    for p in &payloads {
        c.send_channel_data(CHANNEL, p).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < BURST {
        match c.recv_data(WAIT).await {
            Ok(Received::Channel { data, .. }) => got.push(data),
            other => panic!("after {} messages: {other:?}", got.len()),
        }
    }
    // Loopback drops nothing, and one flow's datagrams keep their order.
    assert_eq!(got, payloads);
    srv.stop().unwrap();
}
