#!/bin/bash
# Evaluation throughput: a 500-item dataset through build/optillm-eval at --concurrency 64
# against the mock upstream at a fixed latency, one approach per run, in-process and through a
# running proxy. Prints items per second beside the ideal, latency-bound figure
# 64 / (rounds x latency), where rounds (sequential upstream rounds of the approach) is measured
# by a one-item probe. Appends a section to bench/RESULTS.md.
# Usage: bench/eval.sh [latency ms, default 200] [items, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
LAT=${1:-200}
ITEMS=${2:-500}
CONC=64
BUILD=${PX_BUILD:-build}
make -s all
OUT=$(mktemp -d)
trap 'kill $MOCK_PID ${PX_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")
"$BUILD/optillm" --port 0 --base-url "http://127.0.0.1:$MOCK/v1" --log info 2> "$OUT/px.log" &
PX_PID=$!
PX=""
for _ in $(seq 100); do
    PX=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\)\/v1.*/\1/p' "$OUT/px.log" | head -1)
    [ -n "$PX" ] && break
    sleep 0.05
done
[ -n "$PX" ] || { echo "proxy did not start" >&2; exit 1; }

# Our own arithmetic items (the noisy mock computes the truth of + - * expressions).
awk -v n="$ITEMS" 'BEGIN { srand(7); for (i = 1; i <= n; i++) {
    a = int(rand() * 90) + 10; b = int(rand() * 20) + 2; c = int(rand() * 20) + 2;
    printf "{\"id\":\"b%d\",\"question\":\"What is %d + %d * %d?\",\"answer\":%d}\n", i, a, b, c, a + b * c } }' \
    > "$OUT/bench.jsonl"

export OPENAI_API_KEY=sk-bench
MODEL="mock@noisy=1,latency=$LAT"
run() { # mode approach out [extra...]
    local mode=$1 appr=$2 out=$3
    shift 3
    local extra=()
    [ "$mode" = proxy ] && extra=(--proxy "http://127.0.0.1:$PX/v1")
    "$BUILD/optillm-eval" --dataset "$OUT/bench.jsonl" --approaches "$appr" --model "$MODEL" \
        --out "$out" --base-url "http://127.0.0.1:$MOCK/v1" --progress off "${extra[@]}" "$@" \
        > "$out.stdout" 2> "$out.stderr"
}
field() { sed -n "s/.*\"$2\":[[:space:]]*\([0-9.]*\).*/\1/p" "$1" | head -1; }

{
    echo
    echo "## Evaluation runner ($(date -u +%Y-%m-%d), $ITEMS items, --concurrency $CONC, mock latency ${LAT} ms, $(nproc) cores)"
    echo
    echo "| approach | mode | rounds (probe) | wall s | items/s | ideal items/s | of ideal | accuracy | peak RSS MB |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT/section.md"
for spec in none:inproc self_consistency:inproc bon:inproc moa:inproc none:proxy moa:proxy; do
    appr=${spec%%:*}
    mode=${spec##*:}
    run "$mode" "$appr" "$OUT/probe-$appr-$mode" --limit 1 --concurrency 1
    probe_ms=$(field "$OUT/probe-$appr-$mode/results.jsonl" latency_ms)
    rounds=$(awk -v m="$probe_ms" -v l="$LAT" 'BEGIN { r = int(m / l + 0.5); print r < 1 ? 1 : r }')
    t0=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$OUT/rss-$appr-$mode" \
        "$BUILD/optillm-eval" --dataset "$OUT/bench.jsonl" --approaches "$appr" --model "$MODEL" \
        --out "$OUT/run-$appr-$mode" --base-url "http://127.0.0.1:$MOCK/v1" --progress off \
        --concurrency "$CONC" $([ "$mode" = proxy ] && echo --proxy "http://127.0.0.1:$PX/v1") \
        > "$OUT/run.stdout" 2> "$OUT/run.stderr"
    t1=$(date +%s%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
    ips=$(awk -v n="$ITEMS" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    ideal=$(awk -v c="$CONC" -v r="$rounds" -v l="$LAT" 'BEGIN { printf "%.0f", c / (r * l / 1000) }')
    pct=$(awk -v a="$ips" -v b="$ideal" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    acc=$(field "$OUT/run-$appr-$mode/report.json" accuracy)
    acc=$(awk -v a="$acc" 'BEGIN { printf "%.1f%%", 100 * a }')
    rss=$(awk '{ printf "%.0f", $1 / 1024 }' "$OUT/rss-$appr-$mode")
    name=$([ "$mode" = proxy ] && echo "--proxy" || echo "in-process")
    echo "| $appr | $name | $rounds | $wall | $ips | $ideal | $pct | $acc | $rss |" >> "$OUT/section.md"
done
{
    echo
    echo "items/s = items / wall time of the whole run (start-up, dataset, report included); ideal ="
    echo "$CONC / (rounds x ${LAT} ms), the rate if every slot always had a request in flight."
} >> "$OUT/section.md"
cat "$OUT/section.md"
cat "$OUT/section.md" >> bench/RESULTS.md
