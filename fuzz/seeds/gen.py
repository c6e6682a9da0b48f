#!/usr/bin/env python3
"""Regenerates the seed inputs in this directory (they are committed; run this only
after changing an input format). Usage: python3 fuzz/seeds/gen.py"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


with open(os.path.join(ROOT, "tests", "data", "rfc5769_vectors.json")) as f:
    vectors = {v["name"]: bytes.fromhex(v["hex"]) for v in json.load(f)["vectors"]}

# stun_message: the RFC 5769 vectors, and a Binding request with no attributes.
for name, msg in vectors.items():
    write("stun_message", name, msg)
write("stun_message", "binding_request", struct.pack(">HHI", 1, 0, 0x2112A442) + b"\x01" * 12)

# channel_data_framing: byte 0 = number of split sizes, then the sizes, then the stream.
cd = struct.pack(">HH", 0x4001, 5) + b"hello" + b"\0\0\0"
two = vectors["sample_request"] + vectors["sample_ipv4_response"]
write("channel_data_framing", "channel_data", bytes([0]) + cd)
write("channel_data_framing", "tcp_two_messages", bytes([3, 0, 6, 19]) + two)
write("channel_data_framing", "tcp_mixed", bytes([2, 2, 31]) + vectors["sample_ipv6_response"] + cd + two)


# turn_core: config byte, then ops (see fuzz_targets/turn_core.rs for the encoding).
def req(ci, sel, attrs, user=0, nonce=0, flags=0, tid=1, adv=0):
    out = [0, adv, ci, sel, user, nonce, flags] + [tid] * 12 + [len(attrs)]
    for a in attrs:
        out += a
    return out


RT_UDP = [0]
LIFETIME0 = [128, 0, 0, 0, 0]


def peer(i):
    return [3, i]


def chan(i):
    return [5, i]


def data(b):
    return [12] + list(struct.pack(">H", len(b))) + list(b)


def chandata(ci, ch, payload, pad=False):
    return [4, 0, ci, ch | (0x40 if pad else 0)] + list(struct.pack(">H", len(payload))) + list(payload)


def peer_dgram(relay_sel, frm, payload, adv=0):
    return [5, adv, relay_sel, frm, 0] + list(struct.pack(">H", len(payload))) + list(payload)


udp = [0x01]
udp += req(0, 0, [RT_UDP], flags=0x04)            # Allocate without credentials: 401
udp += req(0, 0, [RT_UDP], flags=0x01, tid=2)     # Allocate (with FINGERPRINT)
udp += req(0, 0, [RT_UDP], flags=0x02)            # retransmitted Allocate
udp += req(0, 3, [peer(0)], tid=3)                # CreatePermission
udp += req(0, 4, [chan(0), peer(0)], tid=4)       # ChannelBind 0x4000
udp += req(0, 6, [peer(0), data(b"hello")])       # Send indication
udp += chandata(0, 0, b"ping")                    # ChannelData
udp += peer_dgram(0, 0, b"pong")                  # from the peer, over the channel
udp += peer_dgram(0, 1, b"nope")                  # from a peer without permission
udp += [7, 0xC0 | 6]                              # six minutes later: permission expiry
udp += req(0, 2, [LIFETIME0], tid=5)              # Refresh 0: delete
write("turn_core", "udp_lifecycle", udp)

tcp = [0x0F]
tcp += req(2, 0, [RT_UDP, [7 + 14 * 9]], tid=6)   # Allocate with EVEN-PORT R=1
tcp += req(1, 0, [RT_UDP, [10, 0]], tid=7)        # Allocate with the RESERVATION-TOKEN
tcp += req(2, 3, [peer(0), peer(2)], tid=8)       # CreatePermission, two peers
tcp += req(2, 4, [chan(1), peer(0)], tid=9)
tcp += chandata(2, 1, b"stream", pad=True)
tcp += peer_dgram(0, 0, b"back")
tcp += req(3, 0, [RT_UDP, [9, 2]], user=1, tid=10)  # IPv6 client, ADDITIONAL-ADDRESS-FAMILY
tcp += [8, 0, 2]                                  # the TCP connection closes
tcp += [7, 0xC0 | 63]                             # everything expires
write("turn_core", "tcp_even_port_dual_stack", tcp)

bad = [0x22]
bad += req(0, 0, [RT_UDP], nonce=2 | 0x40)        # stale nonce: 438
bad += req(0, 0, [RT_UDP], user=3)                # wrong password: 401
bad += req(5, 0, [RT_UDP], tid=11)                # wildcard server address: 440
bad += [3, 0, 0, 0, 20] + list(vectors["sample_request"][:20])  # raw Binding-ish datagram
write("turn_core", "errors", bad)


# stream_framing: byte 0 = number of u16 read sizes, then the sizes (big-endian, 0 =
# as much as fits), then the stream as a TCP client would send it.
def sizes(*s):
    return bytes([len(s)]) + b"".join(struct.pack(">H", x) for x in s)


big_cd = struct.pack(">HH", 0x4002, 5000) + bytes(range(256)) * 19 + bytes(136)
write("stream_framing", "stun_then_channel_data", sizes(7, 1, 0) + two + cd + cd)
write("stream_framing", "large_channel_data", sizes(100, 4000, 3) + vectors["sample_request"] + big_cd + two)
write("stream_framing", "channel_data_first", sizes() + cd + two)
write("stream_framing", "http_probe", sizes(3) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

# config_toml: the sample configuration, the documentation's examples, and a few
# files that fail validation with a key named.
with open(os.path.join(ROOT, "turnserver.toml"), "rb") as f:
    write("config_toml", "turnserver.toml", f.read())
write("config_toml", "nat_vm.toml", b"""[server]
listen = ["0.0.0.0:3478"]
realm = "turn.example.com"

[relay]
relay-ips = ["10.0.0.5"]
external-ips = ["203.0.113.7/10.0.0.5"]
port-range = "49152-65535"

[auth]
secrets = ["shared"]
""")
write("config_toml", "loopback_tests.toml", b"""[server]
listen = ["127.0.0.1:3478", "[::1]:3478"]
log-level = "debug"

[relay]
port-range = "40000-40099"
permission-lifetime = 5
channel-lifetime = 5

[auth.users]
test = "test"
"two words" = "x"

[peers]
allow = ["127.0.0.0/8", "::1"]

[quota]
max-allocations-per-user = 100000

[tls]
cert = "/etc/ferroturn/fullchain.pem"
key = "/etc/ferroturn/privkey.pem"
listen = ["0.0.0.0:443", "[::]:443"]

[drain]
alternate-server = ["192.0.2.1:3478"]
deadline = 60

[metrics]
listen = ""

[usage]
file = "-"

[admin]
socket = ""

[store]
url = "sqlite:///var/lib/ferroturn/credentials.db"
""")
write("config_toml", "bad_port_range.toml", b'[relay]\nport-range = "60000-50000"\n')
write("config_toml", "bad_listen.toml", b'[server]\nlisten = ["0.0.0.0:3478", "nonsense"]\n')
write("config_toml", "unknown_key.toml", b'[server]\nlisten = ["0.0.0.0:3478"]\nrelm = "typo"\n')
