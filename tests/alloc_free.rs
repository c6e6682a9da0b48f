//! The relay data path allocates nothing per packet.
//!
//! A counting global allocator counts every heap allocation in this process while
//! 2,000 ChannelData round trips go client → ferroturn → UDP echo peer → ferroturn →
//! client through the real drivers (UDP listener, core, relay socket, relay reader).
//! During that phase the client and the peer use fixed buffers, so what is counted is
//! the server's. A handful of allocations (a timer wheel slot, a tracing span) may
//! happen once; one per packet would show up as thousands.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use ferroturn::stun::ChannelData;
use support::*;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUND_TRIPS: u64 = 2000;

/// The counter is process-wide: tests in one process (plain `cargo test`) take
/// turns, so that one's setup is never counted in another's window.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "current_thread")]
async fn relaying_channel_data_does_not_allocate_per_packet() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // With a byte budget per user on (far above what is relayed), so that its
    // check and charge on each packet are counted too.
    let mut opts = options("127.0.0.1:0");
    opts.core.max_bytes_per_user = 1 << 40;
    let srv = ferroturn::net::start(opts).expect("server starts");
    // An echo peer on a plain thread with one fixed buffer.
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..ROUND_TRIPS + 10 {
            let Ok((n, from)) = peer.recv_from(&mut buf) else {
                return;
            };
            let _ = peer.send_to(&buf[..n], from);
        }
    });

    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    c.channel_bind(0x4000, peer_addr).await.unwrap();
    let sock = c.into_udp_socket().unwrap();
    let mut frame = BytesMut::new();
    ChannelData {
        channel: 0x4000,
        payload: &[0x5a; 100],
    }
    .write(&mut frame, false);
    let mut buf = [0u8; 2048];

    // Warm up: the first packets may grow buffers and start the relay reader.
    for _ in 0..10 {
        sock.send(&frame).await.unwrap();
        tokio::time::timeout(WAIT, sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUND_TRIPS {
        sock.send(&frame).await.unwrap();
        let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &frame[..]);
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("heap allocations during {ROUND_TRIPS} relayed round trips: {during}");
    assert!(
        during < ROUND_TRIPS / 20,
        "{during} allocations for {ROUND_TRIPS} round trips: the relay path allocates per packet"
    );
    srv.stop().unwrap();
    let _ = echo.join();
}

/// Client to client on one shard (the in-process hand-over): A's ChannelData
/// reaches B as ChannelData, B sends it back the same way, 2,000 times.
#[tokio::test(flavor = "current_thread")]
async fn client_to_client_in_process_does_not_allocate_per_packet() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut opts = options("127.0.0.1:0");
    opts.threads = 1;
    let srv = ferroturn::net::start(opts).unwrap();
    let (mut a, alloc_a) = allocated_client(&srv, Transport::Udp).await;
    let (mut b, alloc_b) = allocated_client(&srv, Transport::Udp).await;
    let (ra, rb) = (alloc_a.relayed[0], alloc_b.relayed[0]);
    a.channel_bind(0x4000, rb).await.unwrap();
    b.channel_bind(0x4001, ra).await.unwrap();
    let (a, b) = (a.into_udp_socket().unwrap(), b.into_udp_socket().unwrap());
    let frame = |channel| {
        let mut f = BytesMut::new();
        ChannelData {
            channel,
            payload: &[0x5a; 100],
        }
        .write(&mut f, false);
        f
    };
    let (to_b, to_a) = (frame(0x4000), frame(0x4001));
    let mut buf = [0u8; 2048];
    let mut round_trip = async || {
        a.send(&to_b).await.unwrap();
        let n = tokio::time::timeout(WAIT, b.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        // B receives on its channel to A: the same payload, channel 0x4001.
        assert_eq!(&buf[..n], &to_a[..]);
        b.send(&to_a).await.unwrap();
        let n = tokio::time::timeout(WAIT, a.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &to_b[..]);
    };
    for _ in 0..10 {
        round_trip().await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUND_TRIPS {
        round_trip().await;
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("heap allocations during {ROUND_TRIPS} client-to-client round trips: {during}");
    assert!(
        during < ROUND_TRIPS / 20,
        "{during} allocations for {ROUND_TRIPS} round trips: the in-process path allocates per packet"
    );
    srv.stop().unwrap();
}
