//! Peer address policy: which peers a TURN allocation may talk to.
//!
//! A TURN relay is an open proxy into whatever network the server sits in.
//! Without a policy, any authenticated client can reach loopback services,
//! cloud metadata endpoints (169.254.169.254), RFC 1918 networks and so on
//! (the classic TURN SSRF). The policy is therefore **secure by default**:
//! a built-in list of special-purpose ranges is denied unless the operator
//! explicitly allows it.
//!
//! # Decision order
//!
//! For an address `ip`, with `canon = canonical_ip(ip)`:
//!
//! 1. operator `deny` matching `ip` **or** `canon` → [`DenyReason::OperatorDeny`];
//! 2. the original form: if `ip` is in the default list and no operator
//!    `allow` rule matches `ip` → [`DenyReason::DefaultRange`];
//! 3. the canonical form (only if it differs): if `canon` is in the default
//!    list and it is not opened — see below → [`DenyReason::DefaultRange`];
//! 4. otherwise allowed.
//!
//! # Why both the canonical and the original form are checked
//!
//! IPv6 has several ways to carry an IPv4 address (mapped, compatible,
//! 6to4, NAT64, Teredo). On a dual-stack host, sending to `::ffff:127.0.0.1`
//! *is* sending to `127.0.0.1`, and 6to4/NAT64/Teredo gateways on the path
//! may likewise deliver to the embedded IPv4 address. So a decision made only
//! on the original form would let `::ffff:10.0.0.1` bypass a `10.0.0.0/8`
//! rule. Conversely a decision made only on the canonical form would make
//! IPv6-level rules on the *encoding* (operator `deny 2002::/16`, or the
//! default `2002::/16`, `64:ff9b::/96`, `2001::/32` entries, which exist
//! because those are translation/tunnelling prefixes) silently stop
//! applying, since the address would have been rewritten to IPv4 before the
//! rule is consulted. Checking both and denying if either is denied keeps
//! both kinds of rule effective.
//!
//! # Which allow rules open an embedded address
//!
//! An address whose canonical IPv4 form is in the default list is opened
//! only by an allow rule that
//! * matches the canonical IPv4 address (e.g. `allow 127.0.0.0/8` opens
//!   `::ffff:127.0.0.1` as well as `127.0.0.1` — intended, it is the same
//!   destination), or
//! * is *explicitly* about the encoding: it matches the original IPv6
//!   address **and** lies entirely inside the embedding prefix
//!   (e.g. `allow ::ffff:10.0.0.0/104` or `allow 2002:a00::/24`).
//!
//! A broad IPv6 allow such as `allow 2000::/3` or `allow ::/0` therefore
//! does not open `2002:a00:1::` (6to4 for 10.0.0.1), because the operator
//! was not thinking about the IPv4 inside it.
//!
//! # Cost
//!
//! [`PeerPolicy::check`] runs on every CreatePermission, ChannelBind and
//! Send indication. It performs no allocation: the default list is a
//! `const` table of (network, mask) integer pairs, operator rules are
//! precomputed to the same form at construction, and matching is a linear
//! scan with one AND + compare per prefix.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a peer address was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The address (or the IPv4 address it carries) is in the built-in
    /// special-purpose list and no operator allow rule opened it.
    DefaultRange,
    /// An operator `deny` rule matched the address or its canonical form.
    OperatorDeny,
}

/// Result of [`PeerPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerVerdict {
    /// The relay may send to / accept from this peer.
    Allowed,
    /// The relay must refuse this peer (TURN error 403 Forbidden).
    Denied(DenyReason),
}

impl PeerVerdict {
    /// `true` for [`PeerVerdict::Allowed`].
    pub fn is_allowed(self) -> bool {
        matches!(self, PeerVerdict::Allowed)
    }
}

const fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

const fn v6_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// An IPv4 prefix as a precomputed (network, mask) pair.
#[derive(Debug, Clone, Copy)]
struct V4Prefix {
    net: u32,
    mask: u32,
}

impl V4Prefix {
    const fn new(addr: Ipv4Addr, len: u8) -> Self {
        let mask = v4_mask(len);
        V4Prefix {
            net: addr.to_bits() & mask,
            mask,
        }
    }

    #[inline]
    fn contains(&self, ip: u32) -> bool {
        ip & self.mask == self.net
    }
}

/// An IPv6 prefix as a precomputed (network, mask, length) triple.
#[derive(Debug, Clone, Copy)]
struct V6Prefix {
    net: u128,
    mask: u128,
    len: u8,
}

impl V6Prefix {
    const fn new(addr: Ipv6Addr, len: u8) -> Self {
        let mask = v6_mask(len);
        V6Prefix {
            net: addr.to_bits() & mask,
            mask,
            len,
        }
    }

    #[inline]
    fn contains(&self, ip: u128) -> bool {
        ip & self.mask == self.net
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> V4Prefix {
    V4Prefix::new(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> V6Prefix {
    V6Prefix::new(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Built-in IPv4 default-deny list (IANA special-purpose registry:
/// "this network", private, CGN shared, loopback, link-local, protocol
/// assignments, documentation, 6to4 relay anycast, benchmarking,
/// multicast, reserved incl. limited broadcast).
const DEFAULT_DENY_V4: [V4Prefix; 15] = [
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 0, 0, 0, 24),
    v4(192, 0, 2, 0, 24),
    v4(192, 88, 99, 0, 24),
    v4(192, 168, 0, 0, 16),
    v4(198, 18, 0, 0, 15),
    v4(198, 51, 100, 0, 24),
    v4(203, 0, 113, 0, 24),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
];

/// Built-in IPv6 default-deny list (unspecified, loopback, NAT64 prefixes,
/// discard-only, TEREDO, documentation, 6to4, ULA, link-local, deprecated
/// site-local, multicast).
const DEFAULT_DENY_V6: [V6Prefix; 12] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The built-in default-deny list as [`IpNet`]s, for logging, `--help`
/// output and tests. Allocates; not used on the hot path.
pub fn default_deny_list() -> Vec<IpNet> {
    let v4s = DEFAULT_DENY_V4.iter().map(|p| {
        let len = p.mask.count_ones() as u8;
        IpNet::new(IpAddr::V4(Ipv4Addr::from_bits(p.net)), len)
    });
    let v6s = DEFAULT_DENY_V6
        .iter()
        .map(|p| IpNet::new(IpAddr::V6(Ipv6Addr::from_bits(p.net)), p.len));
    v4s.chain(v6s).filter_map(Result::ok).collect()
}

/// An IPv4 address found inside an IPv6 address, and the length of the
/// IPv6 prefix that identifies the embedding (used to decide whether an
/// IPv6 allow rule is "explicitly" about that encoding).
#[derive(Debug, Clone, Copy)]
struct Embedded {
    v4: u32,
    prefix_len: u8,
}

/// `::ffff:0:0/96` in the upper 96 bits.
const MAPPED_HI: u128 = 0xffff;
/// `64:ff9b::/96` in the upper 96 bits.
const NAT64_WKP_HI: u128 = 0x0064_ff9b_0000_0000_0000_0000;
/// `64:ff9b:1::/48` in the upper 48 bits.
const NAT64_LOCAL_HI: u128 = 0x0064_ff9b_0001;
/// `2002::/16` in the upper 16 bits.
const SIX_TO_FOUR_HI: u128 = 0x2002;
/// `2001:0::/32` in the upper 32 bits.
const TEREDO_HI: u128 = 0x2001_0000;

/// Find the IPv4 address carried by an IPv6 address, if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Embedded> {
    let bits = ip.to_bits();
    let low32 = bits as u32;
    let hi96 = bits >> 32;
    if hi96 == MAPPED_HI {
        // IPv4-mapped ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
        return Some(Embedded {
            v4: low32,
            prefix_len: 96,
        });
    }
    if hi96 == 0 {
        // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1); `::`
        // and `::1` are the IPv6 unspecified/loopback addresses, not IPv4.
        return (bits > 1).then_some(Embedded {
            v4: low32,
            prefix_len: 96,
        });
    }
    if hi96 == NAT64_WKP_HI {
        // NAT64 well-known prefix, /96 layout (RFC 6052 §2.2).
        return Some(Embedded {
            v4: low32,
            prefix_len: 96,
        });
    }
    if bits >> 80 == NAT64_LOCAL_HI {
        // Local-use NAT64 prefix (RFC 8215). Operators carve a /96 out of
        // it in practice, so the RFC 6052 /96 layout (last 32 bits) is
        // used. The whole /48 is default-denied anyway; this only matters
        // for operator rules written in IPv4 terms.
        return Some(Embedded {
            v4: low32,
            prefix_len: 48,
        });
    }
    if bits >> 112 == SIX_TO_FOUR_HI {
        // 6to4 2002:AABB:CCDD::/48 (RFC 3056 §2).
        return Some(Embedded {
            v4: (bits >> 80) as u32,
            prefix_len: 16,
        });
    }
    if bits >> 96 == TEREDO_HI {
        // Teredo (RFC 4380 §4): the client's public address is the
        // bitwise NOT of the last 32 bits (bits 32..64 are the server).
        return Some(Embedded {
            v4: !low32,
            prefix_len: 32,
        });
    }
    None
}

/// The address a peer address actually designates: the IPv4 address carried
/// by an IPv4-mapped, IPv4-compatible (except `::` and `::1`), 6to4, NAT64
/// (`64:ff9b::/96`, and `64:ff9b:1::/48` with the /96 layout) or Teredo
/// (client part) IPv6 address; any other address unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(e) => IpAddr::V4(Ipv4Addr::from_bits(e.v4)),
            None => ip,
        },
    }
}

fn default_denied_v4(ip: u32) -> bool {
    DEFAULT_DENY_V4.iter().any(|p| p.contains(ip))
}

fn default_denied_v6(ip: u128) -> bool {
    DEFAULT_DENY_V6.iter().any(|p| p.contains(ip))
}

/// A set of operator prefixes split by family, with masks precomputed.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    v4: Vec<V4Prefix>,
    v6: Vec<V6Prefix>,
}

impl RuleSet {
    fn new(nets: &[IpNet]) -> Self {
        let mut set = RuleSet::default();
        for net in nets {
            match net {
                IpNet::V4(n) => set.v4.push(V4Prefix::new(n.network(), n.prefix_len())),
                IpNet::V6(n) => set.v6.push(V6Prefix::new(n.network(), n.prefix_len())),
            }
        }
        set
    }

    fn matches_v4(&self, ip: u32) -> bool {
        self.v4.iter().any(|p| p.contains(ip))
    }

    fn matches_v6(&self, ip: u128) -> bool {
        self.v6.iter().any(|p| p.contains(ip))
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.matches_v4(a.to_bits()),
            IpAddr::V6(a) => self.matches_v6(a.to_bits()),
        }
    }

    /// A rule matching `ip` that lies entirely inside the embedding prefix
    /// of length `embed_len` (i.e. is at least as specific as it).
    fn matches_v6_within(&self, ip: u128, embed_len: u8) -> bool {
        self.v6.iter().any(|p| p.len >= embed_len && p.contains(ip))
    }
}

/// Operator allow/deny rules layered over the built-in default-deny list.
/// See the [module documentation](self) for the decision order.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: RuleSet,
    deny: RuleSet,
}

impl PeerPolicy {
    /// Build a policy from operator `allow` and `deny` prefixes. Host bits
    /// in the prefixes are ignored (`10.1.2.3/8` means `10.0.0.0/8`).
    /// With both empty the result is the secure default.
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> PeerPolicy {
        PeerPolicy {
            allow: RuleSet::new(allow),
            deny: RuleSet::new(deny),
        }
    }

    /// Decide whether the relay may exchange traffic with `ip`.
    /// Allocation-free.
    pub fn check(&self, ip: IpAddr) -> PeerVerdict {
        let embedded = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_v4(v6),
        };

        // 1. Operator deny wins over everything, on either form.
        if self.deny.matches(ip) || embedded.is_some_and(|e| self.deny.matches_v4(e.v4)) {
            return PeerVerdict::Denied(DenyReason::OperatorDeny);
        }

        // 2. The original form against the default list; any allow rule
        //    matching the original opens it.
        let orig_default_denied = match ip {
            IpAddr::V4(a) => default_denied_v4(a.to_bits()),
            IpAddr::V6(a) => default_denied_v6(a.to_bits()),
        };
        if orig_default_denied && !self.allow.matches(ip) {
            return PeerPolicy::default_deny();
        }

        // 3. The carried IPv4 address against the default list; opened by
        //    an allow on the IPv4 address or an allow explicitly on the
        //    encoding (see module docs).
        if let (IpAddr::V6(orig), Some(e)) = (ip, embedded) {
            if default_denied_v4(e.v4)
                && !self.allow.matches_v4(e.v4)
                && !self.allow.matches_v6_within(orig.to_bits(), e.prefix_len)
            {
                return PeerPolicy::default_deny();
            }
        }

        PeerVerdict::Allowed
    }

    fn default_deny() -> PeerVerdict {
        PeerVerdict::Denied(DenyReason::DefaultRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn denied_default(p: &PeerPolicy, s: &str) {
        assert_eq!(
            p.check(ip(s)),
            PeerVerdict::Denied(DenyReason::DefaultRange),
            "{s} should be default-denied"
        );
    }

    fn allowed(p: &PeerPolicy, s: &str) {
        assert_eq!(
            p.check(ip(s)),
            PeerVerdict::Allowed,
            "{s} should be allowed"
        );
    }

    #[test]
    fn default_list_is_exactly_the_documented_one() {
        let expected = [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "::/128",
            "::1/128",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "2001::/32",
            "2001:db8::/32",
            "2002::/16",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        ];
        let got: Vec<IpNet> = default_deny_list();
        let want: Vec<IpNet> = expected.iter().map(|s| net(s)).collect();
        assert_eq!(got, want);
    }

    /// One address inside and one just outside (where meaningful) each
    /// default range.
    #[test]
    fn each_default_range_inside_and_just_outside() {
        let p = PeerPolicy::default();
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("0.0.0.0/8", &["0.0.0.0", "0.255.255.255"], &["1.0.0.0"]),
            (
                "10.0.0.0/8",
                &["10.0.0.1", "10.255.255.255"],
                &["9.255.255.255", "11.0.0.0"],
            ),
            (
                "100.64.0.0/10",
                &["100.64.0.0", "100.127.255.255"],
                &["100.63.255.255", "100.128.0.0"],
            ),
            (
                "127.0.0.0/8",
                &["127.0.0.1", "127.255.255.255"],
                &["126.255.255.255", "128.0.0.0"],
            ),
            (
                "169.254.0.0/16",
                &["169.254.169.254"],
                &["169.253.255.255", "169.255.0.0"],
            ),
            (
                "172.16.0.0/12",
                &["172.16.0.1", "172.31.255.255"],
                &["172.15.255.255", "172.32.0.0"],
            ),
            ("192.0.0.0/24", &["192.0.0.8"], &["192.0.1.0"]),
            ("192.0.2.0/24", &["192.0.2.1"], &["192.0.3.0"]),
            (
                "192.88.99.0/24",
                &["192.88.99.1"],
                &["192.88.98.255", "192.88.100.0"],
            ),
            (
                "192.168.0.0/16",
                &["192.168.1.1"],
                &["192.167.255.255", "192.169.0.0"],
            ),
            (
                "198.18.0.0/15",
                &["198.18.0.1", "198.19.255.255"],
                &["198.17.255.255", "198.20.0.0"],
            ),
            (
                "198.51.100.0/24",
                &["198.51.100.7"],
                &["198.51.99.255", "198.51.101.0"],
            ),
            (
                "203.0.113.0/24",
                &["203.0.113.9"],
                &["203.0.112.255", "203.0.114.0"],
            ),
            (
                "224.0.0.0/4",
                &["224.0.0.1", "239.255.255.255"],
                &["223.255.255.255"],
            ),
            ("240.0.0.0/4", &["240.0.0.1", "255.255.255.255"], &[]),
            ("::/128", &["::"], &[]),
            ("::1/128", &["::1"], &[]),
            ("64:ff9b::/96", &["64:ff9b::808:808"], &["64:ff9b::1:0:0"]),
            (
                "64:ff9b:1::/48",
                &["64:ff9b:1::808:808", "64:ff9b:1:ffff::1"],
                &["64:ff9b:2::1"],
            ),
            ("100::/64", &["100::1"], &["100:0:0:1::1", "ff::1"]),
            ("2001::/32", &["2001::1", "2001:0:ffff::1"], &["2001:1::1"]),
            ("2001:db8::/32", &["2001:db8::1"], &["2001:db9::1"]),
            (
                "2002::/16",
                &["2002:808:808::1"],
                &["2003::1", "2001:ffff::1"],
            ),
            ("fc00::/7", &["fc00::1", "fdff::1"], &["fbff::1", "fe00::1"]),
            ("fe80::/10", &["fe80::1", "febf::1"], &[]),
            ("fec0::/10", &["fec0::1", "feff::1"], &["fe7f::1"]),
            ("ff00::/8", &["ff02::1", "ffff::1"], &["feff:ffff::1"]),
        ];
        for (range, inside, outside) in cases {
            for a in *inside {
                assert!(net(range).contains(&ip(a)), "test data: {a} in {range}");
                denied_default(&p, a);
            }
            for a in *outside {
                assert!(
                    !net(range).contains(&ip(a)),
                    "test data: {a} not in {range}"
                );
                // Not in this range; some "just outside" addresses are in a
                // neighbouring default range (feff:ffff::1 is outside
                // ff00::/8 but inside fec0::/10) — only assert allowed
                // when no default range covers it.
                let covered = default_deny_list().iter().any(|n| n.contains(&ip(a)));
                if !covered {
                    allowed(&p, a);
                }
            }
        }
        // Ordinary public addresses.
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            allowed(&p, a);
        }
    }

    #[test]
    fn issue_must_deny_list() {
        let p = PeerPolicy::default();
        for a in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::1",
            "169.254.169.254",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "2002:0a00:0001::",
            "64:ff9b::a00:1",
        ] {
            assert!(!p.check(ip(a)).is_allowed(), "{a} must be denied");
        }
    }

    #[test]
    fn canonicalisation() {
        let c = |s: &str| canonical_ip(ip(s));
        assert_eq!(c("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(c("::10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(c("::"), ip("::"));
        assert_eq!(c("::1"), ip("::1"));
        assert_eq!(c("::2"), ip("0.0.0.2"));
        assert_eq!(c("2002:0a00:0001:1234::5"), ip("10.0.0.1"));
        assert_eq!(c("64:ff9b::a00:1"), ip("10.0.0.1"));
        assert_eq!(c("64:ff9b:1::a00:1"), ip("10.0.0.1"));
        // Teredo: server 65.54.227.120, client 192.0.2.45 obfuscated.
        assert_eq!(c("2001:0:4136:e378:8000:63bf:3fff:fdd2"), ip("192.0.2.45"));
        assert_eq!(c("10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(c("2606:4700::1"), ip("2606:4700::1"));
        // 2001:db8::/32 is not Teredo.
        assert_eq!(c("2001:db8::a00:1"), ip("2001:db8::a00:1"));
    }

    #[test]
    fn mapped_and_compatible_public_addresses_are_allowed() {
        let p = PeerPolicy::default();
        allowed(&p, "::ffff:8.8.8.8");
        allowed(&p, "::8.8.8.8");
        // The translation prefixes themselves stay denied even for
        // public payloads.
        denied_default(&p, "2002:808:808::");
        denied_default(&p, "64:ff9b::808:808");
    }

    #[test]
    fn operator_deny_beats_allow_and_default() {
        let p = PeerPolicy::new(&[net("0.0.0.0/0"), net("::/0")], &[net("8.8.8.0/24")]);
        let od = PeerVerdict::Denied(DenyReason::OperatorDeny);
        assert_eq!(p.check(ip("8.8.8.8")), od);
        assert_eq!(p.check(ip("::ffff:8.8.8.8")), od);
        assert_eq!(p.check(ip("::8.8.8.8")), od);
        assert_eq!(p.check(ip("2002:808:808::1")), od);
        assert_eq!(p.check(ip("64:ff9b::808:808")), od);
        // Deny on the encoding prefix bites even for a public payload.
        let p = PeerPolicy::new(&[net("2002::/16")], &[net("2002:808:808::/48")]);
        assert_eq!(p.check(ip("2002:808:808::1")), od);
        let p = PeerPolicy::new(&[], &[net("::ffff:0:0/96")]);
        assert_eq!(p.check(ip("::ffff:8.8.8.8")), od);
        allowed(&p, "8.8.8.8");
        // Deny of a more specific range inside an allowed one.
        let p = PeerPolicy::new(&[net("10.0.0.0/8")], &[net("10.1.0.0/16")]);
        allowed(&p, "10.2.0.1");
        assert_eq!(p.check(ip("10.1.0.1")), od);
        assert_eq!(p.check(ip("::ffff:10.1.0.1")), od);
    }

    #[test]
    fn operator_allow_opens_default_ranges() {
        // How tests open loopback.
        let p = PeerPolicy::new(&[net("127.0.0.0/8"), net("::1/128")], &[]);
        allowed(&p, "127.0.0.1");
        allowed(&p, "::1");
        allowed(&p, "::ffff:127.0.0.1");
        // 6to4 / NAT64 prefixes themselves are still default-denied.
        denied_default(&p, "2002:7f00:1::");
        denied_default(&p, "64:ff9b::7f00:1");
        denied_default(&p, "10.0.0.1");
        denied_default(&p, "::ffff:10.0.0.1");
    }

    #[test]
    fn broad_v6_allow_does_not_open_embedded_private_v4() {
        let p = PeerPolicy::new(&[net("::/0")], &[]);
        // The v6 ranges themselves are opened...
        allowed(&p, "fe80::1");
        allowed(&p, "2002:808:808::");
        // ...but not the private IPv4 carried inside.
        denied_default(&p, "::ffff:10.0.0.1");
        denied_default(&p, "::10.0.0.1");
        denied_default(&p, "2002:a00:1::");
        denied_default(&p, "64:ff9b::a00:1");
        denied_default(&p, "2001:0:4136:e378:8000:63bf:f5ff:fffe"); // Teredo 10.0.0.1
        denied_default(&p, "::ffff:127.0.0.1");
    }

    #[test]
    fn explicit_allow_on_encoding_opens_embedded() {
        let p = PeerPolicy::new(&[net("::ffff:10.0.0.0/104")], &[]);
        allowed(&p, "::ffff:10.0.0.1");
        denied_default(&p, "10.0.0.1");
        denied_default(&p, "::10.0.0.1");
        let p = PeerPolicy::new(&[net("2002:a00::/24")], &[]);
        allowed(&p, "2002:a00:1::");
        denied_default(&p, "2002:c0a8:1::"); // 192.168.0.1, not covered
        let p = PeerPolicy::new(&[net("64:ff9b::/96")], &[]);
        allowed(&p, "64:ff9b::a00:1");
        let p = PeerPolicy::new(&[net("2001::/32")], &[]);
        allowed(&p, "2001:0:4136:e378:8000:63bf:f5ff:fffe");
        // A /15 covering 2002::/16 is not "explicit" about 6to4.
        let p = PeerPolicy::new(&[net("2002::/15")], &[]);
        allowed(&p, "2002:808:808::");
        denied_default(&p, "2002:a00:1::");
    }

    #[test]
    fn host_bits_in_rules_are_ignored() {
        let p = PeerPolicy::new(&[net("10.1.2.3/8")], &[net("8.8.8.8/16")]);
        allowed(&p, "10.200.0.1");
        assert_eq!(
            p.check(ip("8.8.1.1")),
            PeerVerdict::Denied(DenyReason::OperatorDeny)
        );
    }

    // ---- property tests -------------------------------------------------

    fn v4_default_nets() -> Vec<ipnet::Ipv4Net> {
        default_deny_list()
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect()
    }

    /// An address inside a randomly chosen IPv4 default range.
    fn denied_v4() -> impl Strategy<Value = Ipv4Addr> {
        let nets = v4_default_nets();
        (0..nets.len(), any::<u32>()).prop_map(move |(i, r)| {
            let n = nets[i];
            let mask = n.netmask().to_bits();
            Ipv4Addr::from_bits(n.network().to_bits() | (r & !mask))
        })
    }

    fn encodings(a: Ipv4Addr, low80: u128, teredo_server: u64) -> Vec<IpAddr> {
        let a32 = a.to_bits() as u128;
        vec![
            IpAddr::V4(a),
            IpAddr::V6(a.to_ipv6_mapped()),
            IpAddr::V6(a.to_ipv6_compatible()),
            // 6to4: 2002:AABB:CCDD + random subnet/interface bits.
            IpAddr::V6(Ipv6Addr::from_bits(
                (0x2002u128 << 112) | (a32 << 80) | (low80 & ((1u128 << 80) - 1)),
            )),
            IpAddr::V6(Ipv6Addr::from_bits((NAT64_WKP_HI << 32) | a32)),
            // Teredo: 2001:0:server(32):flags(16):port(16):!client(32).
            IpAddr::V6(Ipv6Addr::from_bits(
                (TEREDO_HI << 96) | ((teredo_server as u128) << 32) | (!a.to_bits()) as u128,
            )),
        ]
    }

    proptest! {
        #[test]
        fn every_encoding_of_default_denied_v4_is_denied(
            a in denied_v4(),
            low80 in any::<u128>(),
            server in any::<u64>(),
        ) {
            let p = PeerPolicy::default();
            for e in encodings(a, low80, server) {
                prop_assert!(!p.check(e).is_allowed(), "{} (for {}) allowed", e, a);
            }
        }

        #[test]
        fn every_encoding_canonicalises_to_the_v4(
            a in any::<u32>().prop_map(Ipv4Addr::from_bits).prop_filter("not :: / ::1", |a| a.to_bits() > 1),
            low80 in any::<u128>(),
            server in any::<u64>(),
        ) {
            for e in encodings(a, low80, server) {
                prop_assert_eq!(canonical_ip(e), IpAddr::V4(a), "{}", e);
            }
        }

        #[test]
        fn public_v4_is_allowed(a in any::<u32>().prop_map(Ipv4Addr::from_bits)) {
            let nets = v4_default_nets();
            prop_assume!(!nets.iter().any(|n| n.contains(&a)));
            let p = PeerPolicy::default();
            prop_assert_eq!(p.check(IpAddr::V4(a)), PeerVerdict::Allowed);
            prop_assert_eq!(p.check(IpAddr::V6(a.to_ipv6_mapped())), PeerVerdict::Allowed);
        }
    }
}
