#!/bin/bash
# The cost-accuracy sweep on the noisy mock: none, self_consistency with fixed k and adaptive,
# majority_voting, bon and moa, each on ITEMS arithmetic questions (right with probability P,
# wrong answers spread over truth +-1..9), each run from a freshly reset mock (so both
# self_consistency runs see the same draws). The runs are merged into one report whose
# cost_accuracy.svg plots accuracy (95% Wilson interval) against mean tokens per item with the
# Pareto front marked; the chart and report.md are copied to OUT_DIR.
# Usage: bench/cost_accuracy.sh [items, default 600] [p, default 0.6] [OUT_DIR, default bench/cost_accuracy]
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${1:-600}
P=${2:-0.6}
DEST=${3:-bench/cost_accuracy}
BUILD=${PX_BUILD:-build}
make -s all
OUT=$(mktemp -d)
trap 'kill $MOCK_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")

awk -v n="$ITEMS" 'BEGIN { srand(13); for (i = 1; i <= n; i++) {
    a = int(rand() * 90) + 10; b = int(rand() * 20) + 2; c = int(rand() * 20) + 2;
    printf "{\"id\":\"q%d\",\"question\":\"What is %d + %d * %d?\",\"answer\":%d}\n", i, a, b, c, a + b * c } }' \
    > "$OUT/q.jsonl"

export OPENAI_API_KEY=sk-bench
dirs=()
# label approach [flags...]: one run, its results relabelled as 'label'
for spec in "none none" "self_consistency_fixed self_consistency --adaptive 0" \
    "self_consistency self_consistency --adaptive 1" "majority_voting majority_voting" \
    "bon bon" "moa moa"; do
    read -r label appr flags <<< "$spec"
    curl -s -X POST "http://127.0.0.1:$MOCK/mock/reset" > /dev/null
    # shellcheck disable=SC2086
    "$BUILD/optillm-eval" --dataset "$OUT/q.jsonl" --approaches "$appr" \
        --model "mock@noisy=1,p=$P" --out "$OUT/$label" --base-url "http://127.0.0.1:$MOCK/v1" \
        --progress off --concurrency 32 --overwrite $flags > "$OUT/$label.stdout" 2> "$OUT/$label.stderr"
    if [ "$label" != "$appr" ]; then
        sed -i "s/\"approach\":\"$appr\"/\"approach\":\"$label\"/" "$OUT/$label/results.jsonl"
    fi
    dirs+=("$OUT/$label")
done
"$BUILD/optillm-eval" merge --out "$OUT/all" --baseline none "${dirs[@]}" > "$OUT/merge.stdout"
mkdir -p "$DEST"
cp "$OUT/all/cost_accuracy.svg" "$OUT/all/report.md" "$DEST/"
sed -n '/^| approach/,/^$/p' "$OUT/all/report.md"
echo "chart: $DEST/cost_accuracy.svg"
