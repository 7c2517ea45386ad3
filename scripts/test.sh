#!/usr/bin/env bash
# porto's test command: installs the Debian packages the tests use when they are missing
# (scripts/test-packages.txt says which and why), then runs every test, with the peer runtimes
# (tokio, monoio) built in so the benchmark smoke runs cover them.
# CI (.ci/run) calls this same script with PORTO_REQUIRE_NETNS=1, which turns every
# "tool or privilege missing, skipping" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is missing; install a Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi

# The packages come from one list (scripts/test-packages.txt), checked as packages with
# dpkg -s rather than as commands, so a header-only package (libbpf-dev) cannot be missed.
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/test-packages.txt | awk '{print $1}')
need=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "scripts/test.sh: installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || { echo "scripts/test.sh: $p is still not installed" >&2; exit 1; }
done

# Every suite on io_uring, then the engine's suites (loopback, fan-out, QoS, RIO, no-alloc,
# exactly-once, AF_XDP in namespaces) and the CLI's (porto echo against sockperf, AF_XDP
# echo, doctor, stats) again on the epoll provider: the same tests, parameterised by
# PORTO_PROVIDER (the default of Config::provider).
PORTO_PROVIDER="${PORTO_PROVIDER:-io-uring}" cargo test --workspace --all-features "$@"
echo "scripts/test.sh: the engine's and the CLI's suites again on the epoll provider"
PORTO_PROVIDER=epoll cargo test -p porto-engine -p porto-perf --all-features "$@"
