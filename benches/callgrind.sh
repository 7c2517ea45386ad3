#!/usr/bin/env bash
# Instructions per operation under callgrind (valgrind): stable where wall-clock time is not.
# Usage: benches/callgrind.sh [n]   (default n = 100000 operations per case)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p porto-benches --bin instr
out=$(mktemp -d)
printf '%-22s %14s %10s\n' case instructions per-op
for case in pool_alloc_drop pool_alloc_from_64 port_post_dequeue port_batch64; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$case.out" --toggle-collect="instr::case_$case" \
        target/release/instr "$case" "$n" >/dev/null 2>&1
    total=$(grep -E '^(summary|totals):' "$out/$case.out" | tail -1 | awk '{print $2}')
    printf '%-22s %14s %10.1f\n' "$case" "$total" "$(echo "$total / $n" | bc -l)"
done
rm -rf "$out"
