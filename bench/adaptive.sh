#!/bin/bash
# Adaptive against fixed-k sampling (self_consistency k=5 and 10, majority_voting k=6) on the noisy
# mock: ITEMS arithmetic questions answered right with probability p (wrong answers spread over
# truth +-1..S: S = 3, the issue's set-up where wrong answers often collide, and S = 9), p = 0.45,
# 0.6, 0.8 (SPREADS="3 9" to choose). The mock is reset before every run, so each question's
# samples are the same sequence in both runs (adaptive sees a prefix of fixed k's draws).
# Reports accuracy, the paired accuracy difference with its 95% interval (normal, paired per
# question), completion tokens and upstream calls per item, rounds per item (latency / mock
# latency) and wall time. Appends a section to bench/RESULTS.md.
# Usage: bench/adaptive.sh [items, default 800] [mock latency ms, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${1:-800}
LAT=${2:-50}
CONC=64
BUILD=${PX_BUILD:-build}
make -s all
OUT=$(mktemp -d)
trap 'kill $MOCK_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")

awk -v n="$ITEMS" 'BEGIN { srand(11); for (i = 1; i <= n; i++) {
    a = int(rand() * 90) + 10; b = int(rand() * 20) + 2; c = int(rand() * 20) + 2;
    printf "{\"id\":\"q%d\",\"question\":\"What is %d + %d * %d?\",\"answer\":%d}\n", i, a, b, c, a + b * c } }' \
    > "$OUT/q.jsonl"

export OPENAI_API_KEY=sk-bench
run() { # approach p adaptive out [extra flags...]
    local extra=("${@:5}")
    curl -s -X POST "http://127.0.0.1:$MOCK/mock/reset" > /dev/null
    local t0 t1
    t0=$(date +%s%N)
    "$BUILD/optillm-eval" --dataset "$OUT/q.jsonl" --approaches "$1" \
        --model "mock@noisy=1,p=$2,latency=$LAT,spread=$SPREAD" --adaptive "$3" --out "$4" \
        --base-url "http://127.0.0.1:$MOCK/v1" --progress off --concurrency "$CONC" --overwrite "${extra[@]}" \
        > "$4.stdout" 2> "$4.stderr"
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }' > "$4.wall"
}
# per-run means: accuracy, completion tokens, calls, rounds
means() {
    awk -v lat="$LAT" -F'"' '{
        c = ($0 ~ /"correct":true/); n++; acc += c
        match($0, /"completion_tokens":[0-9]+/); ct += substr($0, RSTART + 20, RLENGTH - 20)
        match($0, /"upstream_calls":[0-9]+/); uc += substr($0, RSTART + 17, RLENGTH - 17)
        match($0, /"latency_ms":[0-9]+/); r = int(substr($0, RSTART + 13, RLENGTH - 13) / lat + 0.5)
        rounds += r < 1 ? 1 : r
        match($0, /"prompt_tokens":[0-9]+/); pt += substr($0, RSTART + 16, RLENGTH - 16)
    } END { printf "%.4f %.2f %.2f %.2f %.2f", acc / n, ct / n, uc / n, rounds / n, pt / n }' "$1/results.jsonl"
}
# paired difference adaptive - fixed: mean and 95% half-width
paired() {
    awk '
    FNR == 1 { f++ }
    { match($0, /"id":"[^"]*"/); id = substr($0, RSTART + 6, RLENGTH - 7); c = ($0 ~ /"correct":true/) }
    f == 1 { fx[id] = c; next }
    { d = c - fx[id]; n++; s += d; ss += d * d }
    END { m = s / n; v = (ss - n * m * m) / (n - 1); printf "%+.4f %.4f", m, 1.96 * sqrt(v / n) }' \
        "$1/results.jsonl" "$2/results.jsonl"
}

{
    echo
    echo "## Adaptive sampling ($(date -u +%Y-%m-%d), $ITEMS questions, noisy mock, latency ${LAT} ms, --concurrency $CONC)"
    echo
    echo "| approach (budget) | wrong ± | p | accuracy fixed | accuracy adaptive | difference [95% CI] | completion tokens / item fixed → adaptive | saved | prompt tokens / item fixed → adaptive | calls / item | rounds / item | wall s fixed → adaptive |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$OUT/section.md"
for SPREAD in ${SPREADS:-3 9}; do
for spec in self_consistency:5 majority_voting:6 self_consistency:10; do
    appr=${spec%%:*}
    k=${spec##*:}
    flag=$([ "$appr" = self_consistency ] && echo --samples || echo --mv-samples)
    for p in 0.45 0.6 0.8; do
        run "$appr" "$p" 0 "$OUT/fixed" "$flag" "$k"
        run "$appr" "$p" 1 "$OUT/adaptive" "$flag" "$k"
        read -r fa ft fc fr fp <<< "$(means "$OUT/fixed")"
        read -r aa at ac ar ap <<< "$(means "$OUT/adaptive")"
        read -r d hw <<< "$(paired "$OUT/fixed" "$OUT/adaptive")"
        saved=$(awk -v a="$at" -v f="$ft" 'BEGIN { printf "%.1f%%", 100 * (1 - a / f) }')
        echo "| $appr ($k) | 1..$SPREAD | $p | $fa | $aa | $d [$(awk -v d="$d" -v h="$hw" 'BEGIN { printf "%+.4f, %+.4f", d - h, d + h }')] | $ft → $at | $saved | $fp → $ap | $fc → $ac | $fr → $ar | $(cat "$OUT/fixed.wall") → $(cat "$OUT/adaptive.wall") |" >> "$OUT/section.md"
    done
done
done
{
    echo
    echo "Adaptive at the default risk (optillm_adaptive_risk 0.2)."
    echo "Paired per question (the same draws in both runs: adaptive sees a prefix of them);"
    echo "rounds = latency / ${LAT} ms, rounded; wall = the whole optillm-eval run."
} >> "$OUT/section.md"
cat "$OUT/section.md"
[ "${NO_APPEND:-0}" = 1 ] || cat "$OUT/section.md" >> bench/RESULTS.md
