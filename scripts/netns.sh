#!/usr/bin/env bash
# The AF_XDP test topology by hand: two namespaces joined by a multi-queue veth pair,
# 198.18.0.1 / 2001:2::1 (porto-a, va) <-> 198.18.0.2 / 2001:2::2 (porto-b, vb), multicast routed
# out of the veth. The Rust tests use the same layout
# through porto_engine::netns::Topology, which deletes everything when it drops.
#   scripts/netns.sh up [queues]    create
#   scripts/netns.sh down           delete
set -euo pipefail
case "${1:-}" in
    up)
        q=${2:-4}
        ip netns add porto-a
        ip netns add porto-b
        ip -n porto-a link add va numtxqueues "$q" numrxqueues "$q" type veth peer name vb netns porto-b numtxqueues "$q" numrxqueues "$q"
        ip -n porto-a addr add 198.18.0.1/24 dev va
        ip -n porto-b addr add 198.18.0.2/24 dev vb
        ip -n porto-a addr add 2001:2::1/64 dev va nodad
        ip -n porto-b addr add 2001:2::2/64 dev vb nodad
        for ns in porto-a porto-b; do ip -n "$ns" link set lo up; done
        # Full UDP checksums on the "wire" (veth would leave them partial for XDP to see).
        ip netns exec porto-a ethtool -K va tx off >/dev/null
        ip netns exec porto-b ethtool -K vb tx off >/dev/null
        ip -n porto-a link set va up
        ip -n porto-b link set vb up
        ip -n porto-a route add 224.0.0.0/4 dev va
        ip -n porto-b route add 224.0.0.0/4 dev vb
        echo "porto-a/va 198.18.0.1 <-> porto-b/vb 198.18.0.2 ($q queues)"
        ;;
    down)
        ip netns del porto-a 2>/dev/null || true
        ip netns del porto-b 2>/dev/null || true
        ;;
    *)
        echo "usage: $0 up [queues] | down" >&2
        exit 2
        ;;
esac
