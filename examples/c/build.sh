#!/usr/bin/env bash
# Builds the C examples against the release static library into target/c/ (what
# `porto bench latency --servers c-iocp,c-rio` runs): cargo build --release -p porto-ffi, then cc.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p porto-ffi --lib
mkdir -p target/c
for ex in iocp_udp_echo iocp_tcp_echo rio_udp_echo; do
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -Iinclude "examples/c/$ex.c" \
        target/release/libporto_c.a -lpthread -ldl -lm -o "target/c/$ex"
    echo "built target/c/$ex"
done
