#!/usr/bin/env bash
# sockperf (the external client) against every server, interleaved rounds, exact commands
# printed before each run. Servers pinned to CPU 0, sockperf to CPU 1.
#
#   perf/scripts/sockperf-compare.sh [seconds] [rounds] [mode]
#     mode: ping-pong (default) | under-load (--mps 50000) | throughput
#
# Needs sockperf (apt-get install sockperf) and a release build of porto-perf; tokio and
# monoio rows need `--features peers` (they are skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-5}
R=${2:-3}
MODE=${3:-ping-pong}
PORTO=target/release/porto
[ -x "$PORTO" ] || { echo "build first: cargo build --release -p porto-perf --features peers" >&2; exit 1; }
command -v sockperf >/dev/null || { echo "sockperf is missing (apt-get install sockperf)" >&2; exit 1; }

servers=("sockperf server" "kernel" "tokio" "monoio" "porto port" "porto poll")
server_cmd() { # name port
    case "$1" in
        "sockperf server") echo "taskset -c 0 sockperf server -i 127.0.0.1 -p $2" ;;
        kernel|tokio|monoio) echo "$PORTO serve $1 --udp --port $2 --core 0" ;;
        "porto port") echo "$PORTO echo --udp --port $2 --cores 0" ;;
        "porto poll") echo "$PORTO echo --udp --port $2 --cores 0 --poll" ;;
    esac
}
client_cmd() { # port
    case "$MODE" in
        ping-pong) echo "taskset -c 1 sockperf ping-pong -i 127.0.0.1 -p $1 -m 64 -t $T --full-rtt" ;;
        under-load) echo "taskset -c 1 sockperf under-load -i 127.0.0.1 -p $1 -m 64 -t $T --mps 50000 --full-rtt" ;;
        throughput) echo "taskset -c 1 sockperf throughput -i 127.0.0.1 -p $1 -m 64 -t $T" ;;
        *) echo "unknown mode $MODE" >&2; exit 2 ;;
    esac
}
summarize() { # name < sockperf output
    awk -v n="$1" '
        /percentile 50.000/ {p50=$NF} /percentile 99.000/ {p99=$NF} /percentile 99.900/ {p999=$NF}
        /<MAX>/ {mx=$NF} /Message Rate is/ {for (i=1;i<=NF;i++) if ($i=="is") rate=$(i+1)}
        /Valid Duration/ {split($0,a,"ReceivedMessages="); rm=a[2]+0}
        /ERROR/ {err=1}
        END {printf "%-16s p50 %9s  p99 %9s  p99.9 %9s  max %10s  received %8s  rate %9s %s\n",
             n, p50, p99, p999, mx, rm, rate, err ? "ERROR" : ""}'
}
for round in $(seq "$R"); do
    echo "== round $round ($MODE, $T s)"
    for s in "${servers[@]}"; do
        port=$((20000 + RANDOM % 20000))
        cmd=$(server_cmd "$s" "$port")
        $cmd >/dev/null 2>&1 &
        pid=$!
        sleep 0.5
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$s: not available ($cmd exited)"
            continue
        fi
        client=$(client_cmd "$port")
        echo "  \$ $cmd & $client"
        $client 2>&1 | summarize "$s"
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
done
