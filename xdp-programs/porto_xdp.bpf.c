// SPDX-License-Identifier: (MIT OR Apache-2.0)
// porto's XDP program: steer UDP datagrams (IPv4, or IPv6 with UDP right after the fixed
// header) for the (address, port) pairs porto's AF_XDP sockets are bound to, to the AF_XDP
// socket of the receive queue they arrived on; pass everything else (ARP, ICMP and ICMPv6
// with neighbour discovery, other addresses or ports, non-IP) to the kernel, so services
// beside porto on the same host keep their traffic.
//
// Maps (filled by the engine):
//   xsks  : XSKMAP, rx queue index -> AF_XDP socket
//   binds : {address, port, family} -> 1 (network byte order; IPv4 in the first 4 bytes).
//           A datagram is steered if its destination (address, port) is bound, or the
//           unspecified address of its family with that port (a wildcard bind). A joined
//           multicast group is bound with the socket's port while the membership lasts.
//           IPv4 limited broadcast (255.255.255.255) is never steered, and neither are IPv4
//           fragments after the first (no UDP header: their "port" is payload bytes); a
//           first fragment is steered and counted as a fragment by the engine.
//   groups: {IPv4 multicast group, source} -> 1, source 0 = any source (all network order).
//           A multicast datagram is steered only if its group is joined, and for a
//           source-specific join only from an included source; other multicast goes to
//           the kernel (which drops what no socket joined).
//   groups6: the same for IPv6: {group, source} (16 bytes each), source :: = any source.
//   blocked / blocked6: {group, source} -> 1: sources blocked from an any-source membership
//           (exclude mode: IP_BLOCK_SOURCE / MCAST_BLOCK_SOURCE). Their datagrams go to the
//           kernel (whose membership blocks them too) and count as filtered.
//   stats : per-CPU counters, see enum stat
//
// A steered frame carries its receive time (bpf_ktime_get_ns) in the metadata area in
// front of it, see struct porto_meta — where the kernel lets XDP programs call
// bpf_xdp_adjust_meta: the loader probes that and sets porto_stamp_meta (below) before the
// load, so on a kernel that refuses the helper the verifier never reaches the call.
//
// Frames that are malformed beyond the UDP header (bad lengths, checksums, options,
// fragments) but carry a porto port are steered too: the engine validates every frame and
// counts each drop by reason. Frames whose UDP header cannot even be located go to the
// kernel, which drops and counts them itself: so do IPv6 packets with extension headers
// (the fixed header's next header is not UDP).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

enum stat {
    STAT_STEERED = 0, // matched a porto port: redirected to the XSK (if one is bound)
    STAT_PASSED = 1,  // handed to the kernel
    STAT_FILTERED = 2, // multicast for a group (or from a source) porto has not joined, or from
                       // a blocked source: passed
    STAT_MAX = 3,
};

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct bind_key {
    __u32 addr[4];
    __u16 port;
    __u16 family; // 4 or 6
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct bind_key);
    __type(value, __u8);
} binds SEC(".maps");

struct group_key {
    __u32 group;
    __u32 source;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct group_key);
    __type(value, __u8);
} groups SEC(".maps");

struct group6_key {
    struct in6_addr group;
    struct in6_addr source;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct group6_key);
    __type(value, __u8);
} groups6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct group_key);
    __type(value, __u8);
} blocked SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct group6_key);
    __type(value, __u8);
} blocked6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 which, int action)
{
    __u64 *c = bpf_map_lookup_elem(&stats, &which);
    if (c)
        *c += 1;
    return action;
}

// The receive timestamp a steered frame carries in its metadata area, just before the
// Ethernet header: { magic, CLOCK_MONOTONIC ns }. The engine reads it when the socket asked
// for timestamps and clears the magic, so a frame that comes back without metadata (a driver
// that refuses bpf_xdp_adjust_meta) is never read as stamped by a stale value.
#define PORTO_META_MAGIC 0x3153544f54524f50ULL // "PORTOTS1" as a little-endian u64

struct porto_meta {
    __u64 magic;
    __u64 rx_ns;
};

// Set by the loader (a global in .rodata, frozen before the program loads, so the verifier
// knows its value and prunes the call when it is 0). Some kernels refuse
// bpf_xdp_adjust_meta to every XDP program ("program of this type cannot use helper"); there
// the engine stamps frames when it reads the RX ring instead, and says so.
const volatile __u32 porto_stamp_meta = 0;

static __always_inline void stamp(struct xdp_md *ctx)
{
    if (!porto_stamp_meta)
        return;
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct porto_meta)))
        return;
    struct porto_meta *m = (void *)(long)ctx->data_meta;
    if ((void *)(m + 1) > (void *)(long)ctx->data)
        return;
    m->magic = PORTO_META_MAGIC;
    m->rx_ns = bpf_ktime_get_ns();
}

// No socket on this queue: the kernel gets the frame (XDP_PASS as the fallback action).
static __always_inline int steer(struct xdp_md *ctx)
{
    count(STAT_STEERED, 0);
    stamp(ctx);
    return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

// The destination (address, port) is bound, exactly or by a wildcard bind of its family.
static __always_inline int bound(struct bind_key *k)
{
    if (bpf_map_lookup_elem(&binds, k))
        return 1;
    __builtin_memset(k->addr, 0, sizeof(k->addr));
    return bpf_map_lookup_elem(&binds, k) != 0;
}

static __always_inline int porto_xdp6(struct xdp_md *ctx, struct ipv6hdr *ip, void *end)
{
    if ((void *)(ip + 1) > end || ip->nexthdr != IPPROTO_UDP)
        return count(STAT_PASSED, XDP_PASS);

    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end)
        return count(STAT_PASSED, XDP_PASS);

    struct bind_key b = { .port = udp->dest, .family = 6 };
    __builtin_memcpy(b.addr, &ip->daddr, sizeof(b.addr));
    if (!bound(&b))
        return count(STAT_PASSED, XDP_PASS);

    // ff00::/8: only joined groups, only included sources; an any-source membership takes
    // every source but those blocked.
    if (ip->daddr.in6_u.u6_addr8[0] == 0xff) {
        struct group6_key k = { .group = ip->daddr, .source = ip->saddr };
        if (!bpf_map_lookup_elem(&groups6, &k)) {
            if (bpf_map_lookup_elem(&blocked6, &k))
                return count(STAT_FILTERED, XDP_PASS);
            __builtin_memset(&k.source, 0, sizeof(k.source));
            if (!bpf_map_lookup_elem(&groups6, &k))
                return count(STAT_FILTERED, XDP_PASS);
        }
    }

    return steer(ctx);
}

SEC("xdp")
int porto_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return count(STAT_PASSED, XDP_PASS);
    if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        return porto_xdp6(ctx, (void *)(eth + 1), end);
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return count(STAT_PASSED, XDP_PASS);

    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
        return count(STAT_PASSED, XDP_PASS);

    __u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(*ip) || ihl > 60)
        return count(STAT_PASSED, XDP_PASS);

    // A fragment after the first carries no UDP header: the kernel reassembles it.
    if (ip->frag_off & bpf_htons(0x1fff))
        return count(STAT_PASSED, XDP_PASS);
    // Limited broadcast is everyone's: the kernel's sockets get it.
    if (ip->daddr == 0xffffffff)
        return count(STAT_PASSED, XDP_PASS);

    struct udphdr *udp = (void *)ip + ihl;
    if ((void *)(udp + 1) > end)
        return count(STAT_PASSED, XDP_PASS);

    struct bind_key b = { .port = udp->dest, .family = 4 };
    b.addr[0] = ip->daddr;
    if (!bound(&b))
        return count(STAT_PASSED, XDP_PASS);

    // 224.0.0.0/4: only joined groups, only included sources; an any-source membership
    // takes every source but those blocked.
    if ((ip->daddr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000)) {
        struct group_key k = { .group = ip->daddr, .source = ip->saddr };
        if (!bpf_map_lookup_elem(&groups, &k)) {
            if (bpf_map_lookup_elem(&blocked, &k))
                return count(STAT_FILTERED, XDP_PASS);
            k.source = 0;
            if (!bpf_map_lookup_elem(&groups, &k))
                return count(STAT_FILTERED, XDP_PASS);
        }
    }

    return steer(ctx);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
