// SPDX-License-Identifier: Apache-2.0
//
// ferroturn's in-kernel fast path for TURN ChannelData over UDP, IPv4 and
// IPv6 (XDP).
//
// For a channel that userspace has installed (see src/offload/ and
// docs/offload.md), this program
//
//   * turns ChannelData from the client (client -> listener) into a plain UDP
//     datagram from the relayed address to the peer (relay -> peer), and
//   * turns a datagram from the peer to the relayed address (peer -> relay) into
//     ChannelData from the listener to the client (listener -> client),
//
// rewriting the IP and UDP headers, fixing the UDP checksum incrementally and
// sending the frame back out of the interface it came in on (XDP_TX, MACs
// swapped: a single-NIC relay, where client and peer share the next hop).
// Everything else goes to the kernel's stack untouched (XDP_PASS): other
// ethertypes, IPv4 options, IPv6 extension headers, fragments, non-UDP, a
// zero IPv6 UDP checksum, STUN messages, Send/Data
// indications, unknown channels or addresses, padded ChannelData, datagrams that
// would outgrow the MTU, and anything malformed. Userspace then handles it as
// always.
//
// Every installed entry counts packets and payload bytes, which userspace folds
// into its metrics and usage records. Rules that need state beyond "bound or
// not" (expiry, permissions, bandwidth limits, byte budgets) stay in userspace,
// which removes the entry when the channel may no longer take the fast path.
//
// Built by bpf/build.sh into bpf/channel_offload.o (committed).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define CHANNEL_HEADER 4

struct eth {
	__u8 dst[6];
	__u8 src[6];
	__u16 proto;
} __attribute__((packed));

struct ip4 {
	__u8 vihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
} __attribute__((packed));

struct ip6 {
	__u32 vtcflow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u16 saddr[8];
	__u16 daddr[8];
} __attribute__((packed));

struct udp {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
} __attribute__((packed));

// Ethernet, IPv4 without options, UDP: what is rewritten, copied to the stack
// and written back at the new start of the frame.
struct headers {
	struct eth eth;
	struct ip4 ip;
	struct udp udp;
} __attribute__((packed));

// The same for IPv6 (no extension headers).
struct headers6 {
	struct eth eth;
	struct ip6 ip;
	struct udp udp;
} __attribute__((packed));

// All addresses and ports in network byte order, the channel number too: the
// keys are compared with what the packet carries, unconverted. The layouts
// are mirrored in src/offload/maps.rs.

// Client -> peer: the client's 5-tuple and the channel number.
struct c2p_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct c2p_value {
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 relay_port;
	__u16 peer_port;
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

// Peer -> client: the peer and the relayed address.
struct p2c_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct p2c_value {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

// The IPv6 twins of the four structs above: 16-byte addresses.
struct c2p_key6 {
	__u16 client_ip[8];
	__u16 server_ip[8];
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct c2p_value6 {
	__u16 relay_ip[8];
	__u16 peer_ip[8];
	__u16 relay_port;
	__u16 peer_port;
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

struct p2c_key6 {
	__u16 peer_ip[8];
	__u16 relay_ip[8];
	__u16 peer_port;
	__u16 relay_port;
};

struct p2c_value6 {
	__u16 client_ip[8];
	__u16 server_ip[8];
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

// Settings: [0] = the largest IP packet the program may produce (the MTU of
// the interfaces); 0 means the program passes everything.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} FERRO_SETTINGS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct c2p_key);
	__type(value, struct c2p_value);
} FERRO_C2P SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct p2c_key);
	__type(value, struct p2c_value);
} FERRO_P2C SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct c2p_key6);
	__type(value, struct c2p_value6);
} FERRO_C2P6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct p2c_key6);
	__type(value, struct p2c_value6);
} FERRO_P2C6 SEC(".maps");

// One's-complement arithmetic (RFC 1071, RFC 1624). Fields are summed as the
// raw 16-bit words the packet holds: the sum does not depend on byte order as
// long as every word is taken the same way.
static __always_inline __u32 add16(__u32 sum, __u16 word)
{
	return sum + word;
}

static __always_inline __u32 sub16(__u32 sum, __u16 word)
{
	return sum + (__u16)~word;
}

static __always_inline __u32 add32(__u32 sum, __u32 word)
{
	return sum + (word & 0xffff) + (word >> 16);
}

static __always_inline __u32 sub32(__u32 sum, __u32 word)
{
	return sub16(sub16(sum, (__u16)(word & 0xffff)), (__u16)(word >> 16));
}

// An IPv6 address's eight words, added to or taken from a sum.
static __always_inline __u32 add_addr6(__u32 sum, const __u16 *a)
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum = add16(sum, a[i]);
	return sum;
}

static __always_inline __u32 sub_addr6(__u32 sum, const __u16 *a)
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum = sub16(sum, a[i]);
	return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// The IPv4 header checksum, from scratch: 20 bytes, no options.
static __always_inline void ip_checksum(struct ip4 *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = (__u16)~fold(sum);
}

// The new UDP checksum from the old one (RFC 1624: HC' = ~(~HC + ~m + m')),
// given the sum of ~old words and new words. 0 stays 0 (the sender used no
// checksum); a computed 0 is sent as 0xffff (RFC 768).
static __always_inline __u16 udp_checksum(__u16 old, __u32 delta)
{
	if (old == 0)
		return 0;
	__u16 c = (__u16)~fold(add16(delta, (__u16)~old));
	return c == 0 ? 0xffff : c;
}

static __always_inline void swap_macs(struct eth *eth)
{
	__u8 tmp[6];
	__builtin_memcpy(tmp, eth->dst, 6);
	__builtin_memcpy(eth->dst, eth->src, 6);
	__builtin_memcpy(eth->src, tmp, 6);
}

// The payload length of the ChannelData at `cd` when the fast path may take
// it: a channel number (0x4000-0x4FFF; anything else here is STUN), and
// exactly header + payload (padded or short ChannelData goes to userspace,
// which handles every form). -1 otherwise.
static __always_inline int channel_payload(__u8 *cd, void *end, __u16 udp_payload)
{
	if ((void *)(cd + CHANNEL_HEADER) > end)
		return -1;
	if ((cd[0] & 0xf0) != 0x40)
		return -1;
	__u16 len = bpf_ntohs(*(__u16 *)(cd + 2));
	if ((__u32)len + CHANNEL_HEADER != udp_payload)
		return -1;
	return len;
}

// The checksum delta of the UDP header's change from `old` to the new ports
// and length (the length counted twice: header and pseudo-header).
static __always_inline __u32 udp_delta(__u32 delta, const struct udp *old, __u16 sport,
				       __u16 dport, __u16 new_len)
{
	delta = sub16(delta, old->source);
	delta = sub16(delta, old->dest);
	delta = sub16(delta, old->len);
	delta = sub16(delta, old->len);
	delta = add16(delta, sport);
	delta = add16(delta, dport);
	delta = add16(delta, new_len);
	return add16(delta, new_len);
}

// Writes the new UDP header (checksum from `delta`), swaps the MACs and
// counts the packet and its `payload` bytes in the entry.
static __always_inline void rewrite_udp(struct eth *eth, struct udp *udp, __u16 sport,
					__u16 dport, __u16 new_len, __u32 delta, __u64 *packets,
					__u64 *bytes, __u32 payload)
{
	udp->source = sport;
	udp->dest = dport;
	udp->len = new_len;
	udp->check = udp_checksum(udp->check, delta);
	swap_macs(eth);
	__sync_fetch_and_add(packets, 1);
	__sync_fetch_and_add(bytes, payload);
}

// Sends the rewritten headers `h` (of type `type`) without the 4-byte
// ChannelData header that followed them (client to peer: the frame starts 4
// bytes later).
#define EMIT_WITHOUT_CHANNEL_HEADER(ctx, h, type)                          \
	do {                                                                   \
		if (bpf_xdp_adjust_head(ctx, CHANNEL_HEADER))                  \
			return XDP_ABORTED;                                    \
		void *data = (void *)(long)(ctx)->data;                        \
		void *data_end = (void *)(long)(ctx)->data_end;                \
		if (data + sizeof(type) > data_end)                            \
			return XDP_ABORTED;                                    \
		__builtin_memcpy(data, h, sizeof(type));                       \
		return XDP_TX;                                                 \
	} while (0)

// Sends the rewritten headers `h` (of type `type`) followed by a ChannelData
// header (peer to client: the frame starts 4 bytes earlier).
#define EMIT_WITH_CHANNEL_HEADER(ctx, h, type, channel, length_field)       \
	do {                                                                   \
		if (bpf_xdp_adjust_head(ctx, -CHANNEL_HEADER))                 \
			return XDP_ABORTED;                                    \
		void *data = (void *)(long)(ctx)->data;                        \
		void *data_end = (void *)(long)(ctx)->data_end;                \
		if (data + sizeof(type) + CHANNEL_HEADER > data_end)           \
			return XDP_ABORTED;                                    \
		__builtin_memcpy(data, h, sizeof(type));                       \
		__u8 *cd = (__u8 *)data + sizeof(type);                        \
		*(__u16 *)cd = channel;                                        \
		*(__u16 *)(cd + 2) = length_field;                             \
		return XDP_TX;                                                 \
	} while (0)

// Whether a peer datagram of `udp_payload` bytes still fits the MTU as
// ChannelData behind an IP header of `ip_header` bytes.
static __always_inline int fits_mtu(__u32 ip_header, __u16 udp_payload)
{
	__u32 zero = 0;
	__u32 *mtu = bpf_map_lookup_elem(&FERRO_SETTINGS, &zero);
	return mtu && ip_header + sizeof(struct udp) + CHANNEL_HEADER + udp_payload <= *mtu;
}

// Client ChannelData -> UDP datagram to the peer. `h` holds the frame's
// headers (already checked), `cd` points at the ChannelData header.
static __always_inline int client_to_peer(struct xdp_md *ctx, struct headers *h,
					  __u8 *cd, void *end, __u16 udp_payload)
{
	int len = channel_payload(cd, end, udp_payload);
	if (len < 0)
		return XDP_PASS;
	struct c2p_key key = {
		.client_ip = h->ip.saddr,
		.server_ip = h->ip.daddr,
		.client_port = h->udp.source,
		.server_port = h->udp.dest,
		.channel = *(__u16 *)cd,
		.pad = 0,
	};
	struct c2p_value *v = bpf_map_lookup_elem(&FERRO_C2P, &key);
	if (!v)
		return XDP_PASS;

	__u16 new_udp_len = bpf_htons(sizeof(struct udp) + len);
	__u32 delta = 0;
	delta = sub32(delta, h->ip.saddr);
	delta = sub32(delta, h->ip.daddr);
	delta = sub16(delta, key.channel);
	delta = sub16(delta, *(__u16 *)(cd + 2));
	delta = add32(delta, v->relay_ip);
	delta = add32(delta, v->peer_ip);
	delta = udp_delta(delta, &h->udp, v->relay_port, v->peer_port, new_udp_len);

	h->ip.saddr = v->relay_ip;
	h->ip.daddr = v->peer_ip;
	h->ip.tot_len = bpf_htons(sizeof(struct ip4) + sizeof(struct udp) + len);
	h->ip.ttl = 64;
	ip_checksum(&h->ip);
	rewrite_udp(&h->eth, &h->udp, v->relay_port, v->peer_port, new_udp_len, delta,
		    &v->packets, &v->bytes, len);
	EMIT_WITHOUT_CHANNEL_HEADER(ctx, h, struct headers);
}

// A peer's datagram to a relayed address -> ChannelData to the client.
static __always_inline int peer_to_client(struct xdp_md *ctx, struct headers *h,
					  __u16 udp_payload)
{
	struct p2c_key key = {
		.peer_ip = h->ip.saddr,
		.relay_ip = h->ip.daddr,
		.peer_port = h->udp.source,
		.relay_port = h->udp.dest,
	};
	struct p2c_value *v = bpf_map_lookup_elem(&FERRO_P2C, &key);
	if (!v || !fits_mtu(sizeof(struct ip4), udp_payload))
		return XDP_PASS;

	__u16 new_udp_len = bpf_htons(sizeof(struct udp) + CHANNEL_HEADER + udp_payload);
	__u16 length_field = bpf_htons(udp_payload);
	__u16 channel = v->channel;
	__u32 delta = 0;
	delta = sub32(delta, h->ip.saddr);
	delta = sub32(delta, h->ip.daddr);
	delta = add32(delta, v->server_ip);
	delta = add32(delta, v->client_ip);
	delta = add16(delta, channel);
	delta = add16(delta, length_field);
	delta = udp_delta(delta, &h->udp, v->server_port, v->client_port, new_udp_len);

	h->ip.saddr = v->server_ip;
	h->ip.daddr = v->client_ip;
	h->ip.tot_len =
		bpf_htons(sizeof(struct ip4) + sizeof(struct udp) + CHANNEL_HEADER + udp_payload);
	h->ip.ttl = 64;
	ip_checksum(&h->ip);
	rewrite_udp(&h->eth, &h->udp, v->server_port, v->client_port, new_udp_len, delta,
		    &v->packets, &v->bytes, udp_payload);
	EMIT_WITH_CHANNEL_HEADER(ctx, h, struct headers, channel, length_field);
}

// Client ChannelData -> UDP datagram to the peer, over IPv6.
static __always_inline int client_to_peer6(struct xdp_md *ctx, struct headers6 *h,
					   __u8 *cd, void *end, __u16 udp_payload)
{
	int len = channel_payload(cd, end, udp_payload);
	if (len < 0)
		return XDP_PASS;
	struct c2p_key6 key = {
		.client_port = h->udp.source,
		.server_port = h->udp.dest,
		.channel = *(__u16 *)cd,
		.pad = 0,
	};
	__builtin_memcpy(key.client_ip, h->ip.saddr, 16);
	__builtin_memcpy(key.server_ip, h->ip.daddr, 16);
	struct c2p_value6 *v = bpf_map_lookup_elem(&FERRO_C2P6, &key);
	if (!v)
		return XDP_PASS;

	__u16 new_udp_len = bpf_htons(sizeof(struct udp) + len);
	__u32 delta = 0;
	delta = sub_addr6(delta, h->ip.saddr);
	delta = sub_addr6(delta, h->ip.daddr);
	delta = sub16(delta, key.channel);
	delta = sub16(delta, *(__u16 *)(cd + 2));
	delta = add_addr6(delta, v->relay_ip);
	delta = add_addr6(delta, v->peer_ip);
	delta = udp_delta(delta, &h->udp, v->relay_port, v->peer_port, new_udp_len);

	__builtin_memcpy(h->ip.saddr, v->relay_ip, 16);
	__builtin_memcpy(h->ip.daddr, v->peer_ip, 16);
	h->ip.payload_len = new_udp_len;
	h->ip.hop_limit = 64;
	rewrite_udp(&h->eth, &h->udp, v->relay_port, v->peer_port, new_udp_len, delta,
		    &v->packets, &v->bytes, len);
	EMIT_WITHOUT_CHANNEL_HEADER(ctx, h, struct headers6);
}

// A peer's datagram to a relayed address -> ChannelData to the client, over
// IPv6.
static __always_inline int peer_to_client6(struct xdp_md *ctx, struct headers6 *h,
					   __u16 udp_payload)
{
	struct p2c_key6 key = {
		.peer_port = h->udp.source,
		.relay_port = h->udp.dest,
	};
	__builtin_memcpy(key.peer_ip, h->ip.saddr, 16);
	__builtin_memcpy(key.relay_ip, h->ip.daddr, 16);
	struct p2c_value6 *v = bpf_map_lookup_elem(&FERRO_P2C6, &key);
	if (!v || !fits_mtu(sizeof(struct ip6), udp_payload))
		return XDP_PASS;

	__u16 new_udp_len = bpf_htons(sizeof(struct udp) + CHANNEL_HEADER + udp_payload);
	__u16 length_field = bpf_htons(udp_payload);
	__u16 channel = v->channel;
	__u32 delta = 0;
	delta = sub_addr6(delta, h->ip.saddr);
	delta = sub_addr6(delta, h->ip.daddr);
	delta = add_addr6(delta, v->server_ip);
	delta = add_addr6(delta, v->client_ip);
	delta = add16(delta, channel);
	delta = add16(delta, length_field);
	delta = udp_delta(delta, &h->udp, v->server_port, v->client_port, new_udp_len);

	__builtin_memcpy(h->ip.saddr, v->server_ip, 16);
	__builtin_memcpy(h->ip.daddr, v->client_ip, 16);
	h->ip.payload_len = new_udp_len;
	h->ip.hop_limit = 64;
	rewrite_udp(&h->eth, &h->udp, v->server_port, v->client_port, new_udp_len, delta,
		    &v->packets, &v->bytes, udp_payload);
	EMIT_WITH_CHANNEL_HEADER(ctx, h, struct headers6, channel, length_field);
}

// IPv6 without extension headers, UDP with a checksum (mandatory in IPv6).
static __always_inline int offload6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct headers6) > data_end)
		return XDP_PASS;
	struct headers6 h;
	__builtin_memcpy(&h, data, sizeof(struct headers6));
	if ((h.ip.vtcflow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000) ||
	    h.ip.nexthdr != IPPROTO_UDP || h.udp.check == 0)
		return XDP_PASS;
	__u16 payload_len = bpf_ntohs(h.ip.payload_len);
	__u16 udp_len = bpf_ntohs(h.udp.len);
	if (udp_len < sizeof(struct udp) || payload_len != udp_len)
		return XDP_PASS;
	if (data + sizeof(struct eth) + sizeof(struct ip6) + payload_len > data_end)
		return XDP_PASS;
	__u16 udp_payload = udp_len - sizeof(struct udp);
	__u8 *payload = (__u8 *)data + sizeof(struct headers6);
	int action = client_to_peer6(ctx, &h, payload, data_end, udp_payload);
	if (action != XDP_PASS)
		return action;
	return peer_to_client6(ctx, &h, udp_payload);
}

SEC("xdp")
int ferroturn_channel_offload(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct headers) > data_end)
		return XDP_PASS;
	struct headers h;
	__builtin_memcpy(&h, data, sizeof(struct headers));
	if (h.eth.proto == bpf_htons(ETH_P_IPV6))
		return offload6(ctx);
	if (h.eth.proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	// IPv4 with a 20-byte header (no options), UDP, not a fragment.
	if (h.ip.vihl != 0x45 || h.ip.protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (h.ip.frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	__u16 tot_len = bpf_ntohs(h.ip.tot_len);
	__u16 udp_len = bpf_ntohs(h.udp.len);
	if (udp_len < sizeof(struct udp) || tot_len != sizeof(struct ip4) + udp_len)
		return XDP_PASS;
	// The frame may carry link-layer padding after the IP packet, never less.
	if (data + sizeof(struct eth) + tot_len > data_end)
		return XDP_PASS;
	__u16 udp_payload = udp_len - sizeof(struct udp);
	__u8 *payload = (__u8 *)data + sizeof(struct headers);
	int action = client_to_peer(ctx, &h, payload, data_end, udp_payload);
	if (action != XDP_PASS)
		return action;
	return peer_to_client(ctx, &h, udp_payload);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
