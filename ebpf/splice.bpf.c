// SPDX-License-Identifier: GPL-2.0
// weir's kernel splice: every byte a spliced socket receives is sent out of its peer socket.
//
// User space (host/src/accel/kernel.rs) puts both sockets of a tunnel into `socks` (keyed by
// their SO_COOKIE), writes `peers[a] = b` and `peers[b] = a`, and `bytes[a] = bytes[b] = 0`.
// `splice_verdict` then runs for each skb a socket receives and redirects it to the egress of
// the peer. What it cannot redirect it passes up to user space (SK_PASS), which copies it:
//  - a socket without a peer entry (not spliced yet, or being unspliced);
//  - a peer not (or no longer) in `socks`.
// A zero-length skb (a pure FIN) is dropped, neither redirected nor passed: the kernel's
// psock backlog treats a zero-length skb as a broken pipe (`sk_psock_backlog` in
// net/core/skmsg.c: a send or an ingress queueing of 0 bytes is a hard error, EPIPE on the
// socket, and every later redirect to it is dropped). A redirected one meets that at once;
// a passed one meets it when bytes redirected *to* the same socket are still queued in its
// backlog (the passed skb then waits behind them; the worker also keeps the skb it is
// sending queued until sent, so a FIN answering it can land there): the socket errors with
// EPIPE, and user space resets the tunnel if it reads that error, which is the teardown race
// seen once in a few thousand short tunnels. Dropping it loses nothing: TCP has already
// marked the socket's receive side shut down, so user space reads EOF once nothing is left to
// read (as it does for a FIN that came in the same skb as data, which the redirect carries
// away) and half-closes the peer once the redirected bytes have drained (the FIN itself is
// never redirected).
// `bytes[cookie]` counts the bytes redirected away from that socket, which is what user space
// compares with the peer's send sequence before it forwards a FIN.
// `wake_at[cookie]`, where user space sets one (a tunnel with a backlog limit), is a count at
// which the program pushes the cookie into the `wakes` ring buffer and deletes the entry:
// user space then looks at how much of what this socket sent still waits in the kernel,
// without polling a tunnel that moves nothing.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} wake_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} wakes SEC(".maps");

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	if (len == 0)
		return SK_DROP;
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *peer = bpf_map_lookup_elem(&peers, &cookie);
	if (!peer)
		return SK_PASS;
	__u64 peer_cookie = *peer;
	if (bpf_sk_redirect_hash(skb, &socks, &peer_cookie, 0) != SK_PASS)
		return SK_PASS;
	__u64 *count = bpf_map_lookup_elem(&bytes, &cookie);
	if (!count)
		return SK_PASS;
	__sync_fetch_and_add(count, len);
	__u64 *at = bpf_map_lookup_elem(&wake_at, &cookie);
	// Two CPUs may both get here for one threshold: a second wake-up costs one look. A full
	// ring buffer keeps the entry, so the next skb tries again.
	if (at && *count >= *at && bpf_ringbuf_output(&wakes, &cookie, sizeof(cookie), 0) == 0)
		bpf_map_delete_elem(&wake_at, &cookie);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
