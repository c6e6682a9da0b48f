//! The BPF maps' keys and values as bytes, laid out exactly like the structs
//! in `bpf/channel_offload.c` (addresses, ports and the channel number in
//! network byte order; counters in host order). Plain byte arrays are `Pod`
//! for aya without an `unsafe impl`.

use std::net::{IpAddr, SocketAddr};

use crate::turn::offload::OffloadChannel;

/// `struct c2p_key`: client IP, listener IP, client port, listener port,
/// channel, padding.
pub type C2pKey = [u8; 16];
/// `struct p2c_key`: peer IP, relay IP, peer port, relay port.
pub type P2cKey = [u8; 12];
/// `struct c2p_value` and `struct p2c_value`: 16 bytes of addresses, then
/// packets and bytes (u64 each).
pub type Value = [u8; 32];

/// `struct c2p_key6`: the same with 16-byte addresses.
pub type C2pKey6 = [u8; 40];
/// `struct p2c_key6`.
pub type P2cKey6 = [u8; 36];
/// `struct c2p_value6` and `struct p2c_value6`: 40 bytes of addresses, then
/// packets and bytes.
pub type Value6 = [u8; 56];

/// Writes `a`'s address bytes (4 or 16, network order) at `at` of `out`;
/// returns how many.
fn put_ip(out: &mut [u8], at: usize, a: &SocketAddr) -> usize {
    match a.ip() {
        IpAddr::V4(ip) => {
            out[at..at + 4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[at..at + 16].copy_from_slice(&ip.octets());
            16
        }
    }
}

/// Two addresses, then their two ports, then `channel` if given: the common
/// head of every key and value, for either family (no allocation: the
/// counters of every entry are read once a second).
fn head<const N: usize>(a: &SocketAddr, b: &SocketAddr, channel: Option<u16>) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = put_ip(&mut out, 0, a);
    at += put_ip(&mut out, at, b);
    out[at..at + 2].copy_from_slice(&a.port().to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&b.port().to_be_bytes());
    if let Some(ch) = channel {
        out[at + 4..at + 6].copy_from_slice(&ch.to_be_bytes());
    }
    out
}

pub fn c2p_key6(c: &OffloadChannel) -> C2pKey6 {
    head(&c.client, &c.server, Some(c.channel))
}

pub fn c2p_value6(c: &OffloadChannel) -> Value6 {
    head(&c.relay, &c.peer, None)
}

pub fn p2c_key6(c: &OffloadChannel) -> P2cKey6 {
    head(&c.peer, &c.relay, None)
}

pub fn p2c_value6(c: &OffloadChannel) -> Value6 {
    head(&c.client, &c.server, Some(c.channel))
}

/// (packets, payload bytes) of an IPv6 value.
pub fn counts6(v: &Value6) -> (u64, u64) {
    counters(v)
}

pub fn c2p_key(c: &OffloadChannel) -> C2pKey {
    head(&c.client, &c.server, Some(c.channel))
}

pub fn c2p_value(c: &OffloadChannel) -> Value {
    head(&c.relay, &c.peer, None)
}

pub fn p2c_key(c: &OffloadChannel) -> P2cKey {
    head(&c.peer, &c.relay, None)
}

pub fn p2c_value(c: &OffloadChannel) -> Value {
    head(&c.client, &c.server, Some(c.channel))
}

/// (packets, payload bytes) of a value.
pub fn counts(v: &Value) -> (u64, u64) {
    counters(v)
}

/// The two u64 counters (packets, bytes) that end every value, in host order.
fn counters(v: &[u8]) -> (u64, u64) {
    let n = v.len();
    let word = |at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().unwrap_or_default());
    (word(n - 16), word(n - 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        let c = OffloadChannel {
            client: "192.0.2.1:1000".parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
            channel: 0x4001,
            relay: "192.0.2.2:50000".parse().unwrap(),
            peer: "198.51.100.7:9".parse().unwrap(),
        };
        assert_eq!(
            c2p_key(&c),
            [192, 0, 2, 1, 192, 0, 2, 2, 0x03, 0xe8, 0x0d, 0x96, 0x40, 0x01, 0, 0]
        );
        assert_eq!(
            p2c_key(&c),
            [198, 51, 100, 7, 192, 0, 2, 2, 0, 9, 0xc3, 0x50]
        );
        let mut v = p2c_value(&c);
        assert_eq!(&v[12..14], &[0x40, 0x01]);
        v[16..24].copy_from_slice(&5u64.to_ne_bytes());
        v[24..32].copy_from_slice(&500u64.to_ne_bytes());
        assert_eq!(counts(&v), (5, 500));
    }

    #[test]
    fn ipv6_layouts_match_the_c_structs() {
        let c = OffloadChannel {
            client: "[2001:db8::1]:1000".parse().unwrap(),
            server: "[2001:db8::2]:3478".parse().unwrap(),
            channel: 0x4001,
            relay: "[2001:db8::2]:50000".parse().unwrap(),
            peer: "[2001:db8:1::7]:9".parse().unwrap(),
        };
        let k = c2p_key6(&c);
        assert_eq!(
            &k[..16],
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            &k[16..32],
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&k[32..40], &[0x03, 0xe8, 0x0d, 0x96, 0x40, 0x01, 0, 0]);
        let k = p2c_key6(&c);
        assert_eq!(&k[..2], &[0x20, 0x01]);
        assert_eq!(&k[15], &7);
        assert_eq!(&k[32..36], &[0, 9, 0xc3, 0x50]);
        let mut v = p2c_value6(&c);
        assert_eq!(&v[36..38], &[0x40, 0x01]);
        v[40..48].copy_from_slice(&5u64.to_ne_bytes());
        v[48..56].copy_from_slice(&500u64.to_ne_bytes());
        assert_eq!(counts6(&v), (5, 500));
        assert_eq!(&c2p_value6(&c)[32..36], &[0xc3, 0x50, 0, 9]);
    }
}
