// SPDX-License-Identifier: GPL-2.0
// weir's local acceleration: the hop between weir and an application on the same host.
//
// Opt-in and scoped to one cgroup v2 directory (weir's `--local-accel-cgroup`): user space
// (host/src/accel/local.rs) attaches `local_sockops` to that cgroup and `local_redirect` to
// `local_socks`. Only sockets made by processes in that cgroup (weir, and the app the operator
// put there) ever reach these programs.
//
//  - `local_sockops` runs when such a TCP socket becomes established (either end) and adds it
//    to `local_socks`, keyed by its own 4-tuple, when both ends are loopback addresses
//    (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), and its key to `local_members`. The sockhash
//    drops a socket by itself on close; `local_members` is cleaned by the TCP_CLOSE state
//    callback.
//  - `local_redirect` runs on every sendmsg of a member socket. It looks up the peer by the
//    reversed 4-tuple and, where the peer is a member too, puts the message straight onto the
//    peer's receive queue (BPF_F_INGRESS): the bytes skip TCP/IP and loopback entirely.
//    Anything else goes the normal way (SK_PASS without a redirect):
//      - no peer entry: the other end is outside the cgroup (a client, another process) or
//        not established yet;
//      - a socket in `local_bypass`: weir's kernel splice (splice.bpf.c) carries that socket's
//        bytes with its sk_skb program, which sees only what arrives through TCP; user space
//        marks both ends of a spliced pair here before it links them (and first hands over
//        what sk_msg already delivered to a socket whose peer is in `local_members`);
//      - a sender that has sent through TCP once (`local_passed`): its peer may still hold
//        those bytes in its TCP receive queue, and a reader takes the redirected queue first,
//        so redirecting now could reorder the stream. This happens when the active side
//        sends before the passive side's socket exists (its ACK not yet processed).
//
// `local_stats` (per CPU): [0] sockets added, [1] bytes redirected, [2] messages redirected.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

// One end of a connection as seen from a socket: its own address and port, then the
// peer's. The peer's key is the same with the two halves swapped. Addresses are in network
// byte order as the kernel stores them (an IPv4 address in `local_ip[0]`, the rest zero;
// an IPv4-mapped IPv6 address is stored as IPv4), ports in host byte order.
struct local_key {
	__u32 family;
	__u32 local_ip[4];
	__u32 remote_ip[4];
	__u32 local_port;
	__u32 remote_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct local_key);
	__type(value, __u32);
} local_socks SEC(".maps");

// The keys of `local_socks`, readable from user space (a sockhash with 4-byte values answers
// every user-space lookup with ENOSPC, found or not). Added with the socket, removed when it
// reaches TCP_CLOSE (the state callback turned on for members only).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct local_key);
	__type(value, __u8);
} local_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct local_key);
	__type(value, __u8);
} local_bypass SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} local_passed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} local_stats SEC(".maps");

enum { STAT_SOCKETS = 0, STAT_BYTES = 1, STAT_MESSAGES = 2 };

static __always_inline void count(__u32 index, __u64 by)
{
	__u64 *value = bpf_map_lookup_elem(&local_stats, &index);
	if (value)
		*value += by;
}

static __always_inline int loopback4(__u32 ip)
{
	// 127.0.0.0/8: the first byte in memory (network order) is 127.
	return (bpf_ntohl(ip) >> 24) == 127;
}

// Fills `key` from a socket's addresses; 0 when both ends are loopback, else -1.
static __always_inline int make_key(struct local_key *key, __u32 family, __u32 local_ip4,
				    __u32 remote_ip4, const __u32 *local_ip6,
				    const __u32 *remote_ip6, __u32 local_port,
				    __u32 remote_port_net)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->local_port = local_port;
	key->remote_port = bpf_ntohl(remote_port_net);
	if (family == AF_INET) {
		if (!loopback4(local_ip4) || !loopback4(remote_ip4))
			return -1;
		key->family = AF_INET;
		key->local_ip[0] = local_ip4;
		key->remote_ip[0] = remote_ip4;
		return 0;
	}
	if (family != AF_INET6)
		return -1;
	__u32 l0 = local_ip6[0], l1 = local_ip6[1], l2 = local_ip6[2], l3 = local_ip6[3];
	__u32 r0 = remote_ip6[0], r1 = remote_ip6[1], r2 = remote_ip6[2], r3 = remote_ip6[3];
	__u32 mapped = bpf_htonl(0xffff);
	if (l0 == 0 && l1 == 0 && l2 == mapped && r0 == 0 && r1 == 0 && r2 == mapped) {
		if (!loopback4(l3) || !loopback4(r3))
			return -1;
		key->family = AF_INET;
		key->local_ip[0] = l3;
		key->remote_ip[0] = r3;
		return 0;
	}
	__u32 one = bpf_htonl(1);
	if (l0 || l1 || l2 || l3 != one || r0 || r1 || r2 || r3 != one)
		return -1;
	key->family = AF_INET6;
	key->local_ip[3] = one;
	key->remote_ip[3] = one;
	return 0;
}

static __always_inline void reverse(struct local_key *peer, const struct local_key *key)
{
	peer->family = key->family;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		peer->local_ip[i] = key->remote_ip[i];
		peer->remote_ip[i] = key->local_ip[i];
	}
	peer->local_port = key->remote_port;
	peer->remote_port = key->local_port;
}

SEC("sockops")
int local_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    !(op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == BPF_TCP_CLOSE))
		return 1;
	__u32 local_ip6[4] = { skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
			       skops->local_ip6[3] };
	__u32 remote_ip6[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
				skops->remote_ip6[3] };
	struct local_key key;
	if (make_key(&key, skops->family, skops->local_ip4, skops->remote_ip4, local_ip6,
		     remote_ip6, skops->local_port, skops->remote_port) != 0)
		return 1;
	if (op == BPF_SOCK_OPS_STATE_CB) {
		bpf_map_delete_elem(&local_members, &key);
		return 1;
	}
	if (bpf_sock_hash_update(skops, &local_socks, &key, BPF_ANY) == 0) {
		__u8 one = 1;
		bpf_map_update_elem(&local_members, &key, &one, BPF_ANY);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		count(STAT_SOCKETS, 1);
	}
	return 1;
}

SEC("sk_msg")
int local_redirect(struct sk_msg_md *msg)
{
	__u32 local_ip6[4] = { msg->local_ip6[0], msg->local_ip6[1], msg->local_ip6[2],
			       msg->local_ip6[3] };
	__u32 remote_ip6[4] = { msg->remote_ip6[0], msg->remote_ip6[1], msg->remote_ip6[2],
				msg->remote_ip6[3] };
	struct local_key key, peer;
	if (make_key(&key, msg->family, msg->local_ip4, msg->remote_ip4, local_ip6, remote_ip6,
		     msg->local_port, msg->remote_port) != 0)
		return SK_PASS;
	if (!msg->sk)
		return SK_PASS;
	if (bpf_sk_storage_get(&local_passed, msg->sk, 0, 0))
		return SK_PASS;
	reverse(&peer, &key);
	if (bpf_map_lookup_elem(&local_bypass, &key) || bpf_map_lookup_elem(&local_bypass, &peer))
		return SK_PASS;
	__u32 size = msg->size;
	if (bpf_msg_redirect_hash(msg, &local_socks, &peer, BPF_F_INGRESS) != SK_PASS) {
		// No peer (yet): this message goes through TCP, so every later one must too.
		bpf_sk_storage_get(&local_passed, msg->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		return SK_PASS;
	}
	count(STAT_BYTES, size);
	count(STAT_MESSAGES, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
