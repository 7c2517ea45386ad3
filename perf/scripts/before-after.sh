#!/usr/bin/env bash
# Before/after: an old porto binary beside the new one, interleaved (old, new, old, new, ...)
# so both see the same machine noise; each run measures its own kernel baseline, and the
# table compares each porto row's ratios to that baseline (never raw figures across runs).
# The spread column is the run-to-run range of the same binary: a change smaller than it is
# noise.
#
#   perf/scripts/before-after.sh OLD_PORTO NEW_PORTO [reps] [scenario ...]
#     scenarios default: latency tcp throughput xdp-rx fanout
#
# Example: git worktree add /tmp/old <rev> && cargo build --release -p porto-perf
#   --manifest-path /tmp/old/Cargo.toml && perf/scripts/before-after.sh
#   /tmp/old/target/release/porto target/release/porto 3
set -euo pipefail
OLD=${1:?old porto binary}
NEW=${2:?new porto binary}
REPS=${3:-3}
shift $(( $# >= 3 ? 3 : $# ))
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(latency tcp throughput xdp-rx fanout)
OUT=${OUT:-target/before-after}
mkdir -p "$OUT"

servers_for() {
    case "$1" in
        latency|throughput|tcp) echo "--servers kernel,porto-port,porto-poll" ;;
        *) echo "" ;;
    esac
}

# SUMMARY_ONLY=1: tabulate the runs already in $OUT.
for s in "${SCENARIOS[@]}"; do
    [ "${SUMMARY_ONLY:-0}" = 1 ] && break
    for r in $(seq 1 "$REPS"); do
        for which in old new; do
            bin=$OLD
            [ "$which" = new ] && bin=$NEW
            dir="$OUT/$s/$which-$r"
            mkdir -p "$dir"
            cmd="$bin bench $s $(servers_for "$s") --rounds 1 --no-plots --out $dir"
            echo "[$s rep $r/$REPS $which] $cmd" >&2
            # shellcheck disable=SC2086
            $cmd >"$dir/stdout.txt" 2>"$dir/stderr.txt" || echo "  failed: see $dir/stderr.txt" >&2
        done
    done
done

python3 - "$OUT" "${SCENARIOS[@]}" <<'EOF'
import json, os, statistics, sys
out, scenarios = sys.argv[1], sys.argv[2:]
def rows(path):
    try:
        d = json.load(open(path))
    except Exception:
        return []
    if "summary" in d:
        return d["summary"]
    # Scenarios that report whole-run ratios (xdp-rx, fanout): one row of them.
    flat = {k: v for k, v in d.items() if isinstance(v, (int, float)) and ("ratio" in k or "per_added_subscriber" in k)}
    return [dict(flat, server="porto", label="whole run")] if flat else []
print("| scenario | row | metric | old (median) | new (median) | new/old | old spread | new spread |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    base = os.path.join(out, s)
    if not os.path.isdir(base):
        continue
    runs = {"old": [], "new": []}
    for d in sorted(os.listdir(base)):
        which = d.split("-")[0]
        j = [f for f in os.listdir(os.path.join(base, d)) if f.endswith(".json")]
        for f in j:
            runs[which].append(rows(os.path.join(base, d, f)))
    def key(r):
        return tuple((k, r[k]) for k in sorted(r) if not isinstance(r[k], (int, float, list, dict)) or k in ("size", "conns", "subscribers"))
    keys = []
    for rs in runs["old"] + runs["new"]:
        for r in rs:
            k = key(r)
            if k not in keys:
                keys.append(k)
    for k in keys:
        label = " ".join(str(v) for n, v in k if n not in ("server",))
        if "kernel" == dict(k).get("server"):
            continue
        metrics = ["p50_vs_kernel", "p99_vs_kernel", "rate_vs_kernel", "cpu_vs_kernel"]
        metrics += sorted(m for rs in runs["old"] + runs["new"] for r in rs for m in r if "ratio" in m or "per_added_subscriber" in m)
        metrics = list(dict.fromkeys(metrics))
        for m in metrics:
            vals = {w: [r[m] for rs in runs[w] for r in rs if key(r) == k and isinstance(r.get(m), (int, float))] for w in runs}
            if not vals["old"] or not vals["new"]:
                continue
            mo, mn = statistics.median(vals["old"]), statistics.median(vals["new"])
            so = max(vals["old"]) - min(vals["old"])
            sn = max(vals["new"]) - min(vals["new"])
            ratio = mn / mo if mo else float("nan")
            print(f"| {s} | {label} | {m} | {mo:.3f} | {mn:.3f} | {ratio:.2f} | {so:.3f} | {sn:.3f} |")
EOF
