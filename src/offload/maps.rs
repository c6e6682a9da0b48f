//! The BPF maps' keys and values as bytes, laid out exactly like the structs
//! in `bpf/channel_offload.c` (addresses, ports and the channel number in
//! network byte order; counters in host order). Plain byte arrays are `Pod`
//! for aya without an `unsafe impl`.

use crate::turn::offload::OffloadChannel;

/// `struct c2p_key`: client IP, listener IP, client port, listener port,
/// channel, padding.
pub type C2pKey = [u8; 16];
/// `struct p2c_key`: peer IP, relay IP, peer port, relay port.
pub type P2cKey = [u8; 12];
/// `struct c2p_value` and `struct p2c_value`: 16 bytes of addresses, then
/// packets and bytes (u64 each).
pub type Value = [u8; 32];

pub fn c2p_key(c: &OffloadChannel) -> C2pKey {
    let mut k = [0; 16];
    k[0..4].copy_from_slice(&c.client.ip().octets());
    k[4..8].copy_from_slice(&c.server.ip().octets());
    k[8..10].copy_from_slice(&c.client.port().to_be_bytes());
    k[10..12].copy_from_slice(&c.server.port().to_be_bytes());
    k[12..14].copy_from_slice(&c.channel.to_be_bytes());
    k
}

pub fn c2p_value(c: &OffloadChannel) -> Value {
    let mut v = [0; 32];
    v[0..4].copy_from_slice(&c.relay.ip().octets());
    v[4..8].copy_from_slice(&c.peer.ip().octets());
    v[8..10].copy_from_slice(&c.relay.port().to_be_bytes());
    v[10..12].copy_from_slice(&c.peer.port().to_be_bytes());
    v
}

pub fn p2c_key(c: &OffloadChannel) -> P2cKey {
    let mut k = [0; 12];
    k[0..4].copy_from_slice(&c.peer.ip().octets());
    k[4..8].copy_from_slice(&c.relay.ip().octets());
    k[8..10].copy_from_slice(&c.peer.port().to_be_bytes());
    k[10..12].copy_from_slice(&c.relay.port().to_be_bytes());
    k
}

pub fn p2c_value(c: &OffloadChannel) -> Value {
    let mut v = [0; 32];
    v[0..4].copy_from_slice(&c.client.ip().octets());
    v[4..8].copy_from_slice(&c.server.ip().octets());
    v[8..10].copy_from_slice(&c.client.port().to_be_bytes());
    v[10..12].copy_from_slice(&c.server.port().to_be_bytes());
    v[12..14].copy_from_slice(&c.channel.to_be_bytes());
    v
}

/// (packets, payload bytes) of a value.
pub fn counts(v: &Value) -> (u64, u64) {
    let packets = u64::from_ne_bytes(v[16..24].try_into().unwrap_or_default());
    let bytes = u64::from_ne_bytes(v[24..32].try_into().unwrap_or_default());
    (packets, bytes)
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
}
