#!/usr/bin/env bash
# porto's test command: installs the system packages the tests use when they are missing
# (sockperf as the external client and reference server, iproute2 for network namespaces,
# a TrueType font for benchmark plots, clang to check the committed XDP objects), then runs
# every test, with the peer runtimes
# (tokio, monoio) built in so the benchmark smoke runs cover them.
# CI (.ci/run) calls this same script with PORTO_REQUIRE_NETNS=1, which turns every
# "tool or privilege missing, skipping" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is missing; install a Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi

need=()
command -v sockperf >/dev/null 2>&1 || need+=(sockperf)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ethtool >/dev/null 2>&1 || [ -x /usr/sbin/ethtool ] || need+=(ethtool)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# clang + make rebuild the committed XDP objects to prove them fresh (cargo build never needs it).
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v make >/dev/null 2>&1 || need+=(make)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "scripts/test.sh: installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo test --workspace --all-features "$@"
