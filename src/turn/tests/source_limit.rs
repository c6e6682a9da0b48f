//! The per-source limit on error answers to unauthenticated requests
//! (`rate-limit.unauthenticated-per-second` / `-burst`): the burst is held, the
//! budget refills at the rate, sources are independent (and share a budget only
//! when they share a bucket), authenticated requests and Binding successes are
//! never limited, and a reload changes the rate.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::turn::source_limit::{SourceRate, BUCKETS};

/// An unauthenticated Allocate (no credentials): answered 401, or dropped.
fn bare_allocate() -> Vec<u8> {
    hand_built(Method::Allocate, Class::Request, |b| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
    })
    .to_vec()
}

/// Sends `n` unauthenticated Allocates from `client`; how many were answered
/// (each answer must be a 401).
fn flood(h: &mut H, client: &str, n: usize) -> usize {
    let req = bare_allocate();
    let mut answered = 0;
    for _ in 0..n {
        match h.send_raw(udp(client), &req) {
            (Output::Reply, Some(r)) => {
                r.expect_error(401);
                answered += 1;
            }
            (Output::None, None) => {}
            (o, _) => panic!("unexpected {o:?}"),
        }
    }
    answered
}

fn limited() -> DropReason {
    DropReason::UnauthenticatedRateLimit
}

fn with_rate(per_second: u32, burst: u32) -> ServerConfig {
    let mut c = base_config();
    c.unauthenticated_rate = SourceRate { per_second, burst };
    c
}

#[test]
fn the_default_is_ten_a_second_with_bursts_of_twenty() {
    let c = ServerConfig::with_realm(REALM);
    assert_eq!(
        c.unauthenticated_rate,
        SourceRate {
            per_second: 10,
            burst: 20
        }
    );
}

#[test]
fn two_hundred_unauthenticated_allocates_at_once_get_the_burst_only() {
    let mut h = H::new();
    assert_eq!(flood(&mut h, "192.0.2.10:1000", 200), 20);
    assert_eq!(h.drops(limited()), 180);
    // Only what was sent is counted as answered.
    let allocate_401 = h.srv.stats().requests[1][3];
    assert_eq!(allocate_401, 20);
    // Other source ports of the same address share its budget.
    assert_eq!(flood(&mut h, "192.0.2.10:1001", 5), 0);
    assert_eq!(h.drops(limited()), 185);
}

#[test]
fn the_budget_refills_at_the_rate_and_never_beyond_the_burst() {
    let mut h = H::new();
    let src = "192.0.2.10:1000";
    assert_eq!(flood(&mut h, src, 50), 20);
    // One answer per 100 ms.
    h.advance(Duration::from_millis(100));
    assert_eq!(flood(&mut h, src, 5), 1);
    h.advance(Duration::from_millis(50));
    assert_eq!(flood(&mut h, src, 5), 0);
    h.advance(Duration::from_millis(50));
    assert_eq!(flood(&mut h, src, 5), 1);
    h.advance(secs(1));
    assert_eq!(flood(&mut h, src, 50), 10);
    // A flood spread over 2 s at 100 a second gets the rate, not more.
    let mut answered = 0;
    for _ in 0..200 {
        h.advance(Duration::from_millis(10));
        answered += flood(&mut h, src, 1);
    }
    assert_eq!(answered, 20, "2 s at 10 a second");
    // Idle for a minute: the bucket is full again, but holds only the burst.
    h.advance(secs(60));
    assert_eq!(flood(&mut h, src, 100), 20);
}

#[test]
fn many_sources_each_have_their_own_budget() {
    let mut h = H::new();
    // 2,000 distinct sources, 3 requests each: all within their own burst.
    let mut answered = 0;
    for i in 0..2000u32 {
        let ip = Ipv4Addr::from(0xC633_0000 + i); // 198.51.0.0/16
        answered += flood(&mut h, &format!("{ip}:4000"), 3);
    }
    assert_eq!(answered, 6000);
    assert_eq!(h.drops(limited()), 0);
    // One of them flooding does not touch the others' budgets.
    assert_eq!(flood(&mut h, "198.51.0.1:4000", 100), 17);
    assert_eq!(flood(&mut h, "198.51.0.2:4000", 3), 3);
}

#[test]
fn authenticated_requests_from_a_limited_source_are_never_slowed() {
    let mut h = H::new();
    // The client got its nonce before the flood.
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    assert_eq!(flood(&mut h, "192.0.2.10:2000", 100), 19);
    for _ in 0..100 {
        h.refresh(&mut c, Some(600)).expect_success();
        h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    }
    // Signed errors are answered too: they went to a verified client.
    let r = h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
    });
    r.expect_error(437);
    assert!(r.msg().has_integrity());
}

#[test]
fn errors_before_integrity_is_verified_are_limited_too() {
    let mut h = H::with_config(with_rate(10, 2));
    let src = "192.0.2.10:1000";
    // A wrong password (401), a nonce that is not ours (438) and an unknown
    // method (400): each unsigned, each from the same budget.
    let mut c = Client::udp("alice", "wrong", src);
    c.nonce = Some(b"obviously-not-a-nonce".to_vec());
    let signed = c.build(Method::Allocate, TransactionId::random(), &|b| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
    });
    h.request(udp(src), &signed).expect_error(438);
    let mut other = BytesMut::new();
    MessageBuilder::new(
        &mut other,
        Method::Other(0x0FF),
        Class::Request,
        TransactionId::random(),
    )
    .finish();
    h.request(udp(src), &other).expect_error(400);
    assert_eq!(h.send_raw(udp(src), &signed), (Output::None, None));
    assert_eq!(h.send_raw(udp(src), &other), (Output::None, None));
    assert_eq!(h.drops(limited()), 2);
}

#[test]
fn binding_keeps_working_for_a_limited_source_and_its_answer_stays_small() {
    let mut h = H::new();
    let src = "192.0.2.10:1000";
    assert_eq!(flood(&mut h, src, 100), 20);
    let buf = hand_built(Method::Binding, Class::Request, |_| {});
    for _ in 0..100 {
        let r = h.request(udp(src), &buf);
        r.expect_success();
        // Header and XOR-MAPPED-ADDRESS only: no SOFTWARE, no padding.
        assert_eq!(r.0.len(), 20 + 12);
        assert_eq!(r.attr_types(), vec![attr::XOR_MAPPED_ADDRESS]);
    }
    // A Binding that gets an error (420) is an unauthenticated error like any.
    let mut bad = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut bad,
        Method::Binding,
        Class::Request,
        TransactionId::random(),
    );
    b.add_raw(0x0031, &[]);
    b.finish();
    assert_eq!(h.send_raw(udp(src), &bad), (Output::None, None));
    h.request(udp("192.0.2.11:1000"), &bad).expect_error(420);
}

#[test]
fn reload_changes_the_rate_and_zero_turns_it_off() {
    let mut h = H::new();
    let src = "192.0.2.10:1000";
    assert_eq!(flood(&mut h, src, 30), 20);
    h.srv.reconfigure(Arc::new(with_rate(0, 1)));
    assert_eq!(flood(&mut h, src, 500), 500, "off");
    // A tighter limit applies at once; the bucket is still empty.
    h.srv.reconfigure(Arc::new(with_rate(1, 1)));
    assert_eq!(flood(&mut h, src, 10), 0);
    h.advance(secs(10));
    assert_eq!(flood(&mut h, src, 10), 1, "a burst of 1");
    h.advance(secs(1));
    assert_eq!(flood(&mut h, src, 10), 1, "1 a second");
    // A looser one: bursts of 100.
    h.srv.reconfigure(Arc::new(with_rate(50, 100)));
    h.advance(secs(10));
    assert_eq!(flood(&mut h, src, 300), 100);
}

#[test]
fn ipv6_sources_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
    let l = SourceLimiter::new(7);
    let a: IpAddr = ip("2001:db8:1:2::1");
    let b: IpAddr = ip("2001:db8:1:2:ffff::9");
    let other: IpAddr = ip("2001:db8:1:3::1");
    assert_eq!(l.bucket(a), l.bucket(b));
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    assert_eq!(l.bucket(mapped), l.bucket(ip("192.0.2.1")));
    let clock = FakeClock::new(UNIX0);
    let rate = SourceRate {
        per_second: 1,
        burst: 3,
    };
    let taken = (0..10).filter(|_| l.allow(clock.now, a, rate)).count();
    assert_eq!(taken, 3);
    assert!(!l.allow(clock.now, b, rate), "same /64");
    if l.bucket(other) != l.bucket(a) {
        assert!(l.allow(clock.now, other, rate), "another /64");
    }
}

#[test]
fn sources_in_one_bucket_share_its_budget_and_the_table_never_grows() {
    // Four buckets: collisions are certain among a few sources.
    let l = SourceLimiter::with_buckets(4, 99);
    assert_eq!(l.bucket_count(), 4);
    let ips: Vec<IpAddr> = (1..=64u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
        .collect();
    let first = ips[0];
    let twin = *ips[1..]
        .iter()
        .find(|i| l.bucket(**i) == l.bucket(first))
        .expect("a collision among 64 sources in 4 buckets");
    let apart = *ips
        .iter()
        .find(|i| l.bucket(**i) != l.bucket(first))
        .expect("another bucket");
    let clock = FakeClock::new(UNIX0);
    let rate = SourceRate {
        per_second: 10,
        burst: 5,
    };
    assert_eq!(
        (0..5).filter(|_| l.allow(clock.now, first, rate)).count(),
        5
    );
    assert!(
        !l.allow(clock.now, twin, rate),
        "a collision shares the budget"
    );
    assert!(
        l.allow(clock.now, apart, rate),
        "other buckets are untouched"
    );
    // A million sources later the table is the same four buckets.
    for i in 0..1_000_000u32 {
        l.allow(clock.now, IpAddr::V4(Ipv4Addr::from(i)), rate);
    }
    assert_eq!(l.bucket_count(), 4);
    assert_eq!(SourceLimiter::new(1).bucket_count(), BUCKETS);
    // Different keys place sources differently (an attacker cannot know where).
    let k1 = SourceLimiter::new(1);
    let k2 = SourceLimiter::new(2);
    let moved = (0..1000u32)
        .map(|i| IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64)))
        .filter(|i| k1.bucket(*i) != k2.bucket(*i))
        .count();
    assert!(moved > 900, "{moved} of 1000 moved");
}
