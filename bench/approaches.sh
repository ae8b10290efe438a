#!/bin/bash
# Per approach, against the mock at a fixed latency: upstream calls per request, sequential
# rounds (wall time / latency), and requests per second at 64 concurrent clients (wrk).
# Appends a section to bench/RESULTS.md. Usage: bench/approaches.sh [latency ms, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
# Tools used beyond the build, installed when missing (scripts/deps.sh; root or sudo).
need=""
for t in wrk:wrk curl:curl ss:iproute2; do command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"; done
# shellcheck disable=SC2086
[ -z "$need" ] || scripts/deps.sh $need
LAT=${1:-200}
DUR=${DUR:-10}
BUILD=${PX_BUILD:-build}
make -s all
OUT=$(mktemp -d)
trap 'kill $MOCK_PID $PX_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")
"$BUILD/optillm" --port 0 --base-url "http://127.0.0.1:$MOCK/v1" --log error 2> "$OUT/px.log" &
PX_PID=$!
PX=""
for _ in $(seq 100); do
    PX=$(ss -ltnp 2>/dev/null | awk -v pid="pid=$PX_PID," '$0 ~ pid {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$PX" ] && break
    sleep 0.05
done
[ -n "$PX" ] || { echo "proxy did not start" >&2; exit 1; }

stat() { curl -s "http://127.0.0.1:$MOCK/mock/stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
body() { printf '{"model":"%s-mock@noisy=1,latency=%s","messages":[{"role":"user","content":"What is 12 + 7 * 3?"}]}' "$1" "$LAT"; }

{
    echo
    echo "## Approaches ($(date -u +%Y-%m-%d), mock latency ${LAT} ms, $(nproc) cores, wrk -c64 ${DUR}s)"
    echo
    echo "| approach | upstream calls | prompt / completion tokens | wall ms | rounds (wall ÷ latency) | req/s at 64 clients | ideal req/s | p50 / p99 ms |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$OUT/section.md"
# Every registered approach (GET /v1/approaches), after the passthrough.
APPROACHES="none $(curl -s -H 'Authorization: Bearer sk-bench' "http://127.0.0.1:$PX/v1/approaches" |
    grep -o '"id":"[a-z0-9_]*"' | cut -d'"' -f4 | tr '\n' ' ')"
for a in $APPROACHES; do
    model=$a
    [ "$a" = none ] && model=none
    # The last approach's wrk run leaves calls in flight at the mock (its clients hung up):
    # they must end before the reset, or those finishing after it count as this approach's.
    for _ in $(seq 300); do [ "$(stat in_flight)" = 0 ] && break; sleep 0.1; done
    curl -s -o /dev/null -X POST "http://127.0.0.1:$MOCK/mock/reset"
    t0=$(date +%s%N)
    curl -s -o "$OUT/resp.json" -H 'Authorization: Bearer sk-bench' -H 'Content-Type: application/json' \
        -d "$(body "$model")" "http://127.0.0.1:$PX/v1/chat/completions"
    t1=$(date +%s%N)
    wall=$(( (t1 - t0) / 1000000 ))
    calls=$(stat calls)
    pt=$(stat prompt_tokens)
    ct=$(stat completion_tokens)
    rounds=$(awk -v w="$wall" -v l="$LAT" 'BEGIN { printf "%.2f", w / l }')
    b=$(body "$model")
    cat > "$OUT/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$b'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
LUA
    wrk -t2 -c64 -d"${DUR}s" --latency --timeout 30s -s "$OUT/post.lua" \
        "http://127.0.0.1:$PX/v1/chat/completions" > "$OUT/wrk.txt"
    read -r rps p50 p99 < <(awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        END { printf "%.0f %.0f %.0f\n", rps, p50, p99 }' "$OUT/wrk.txt")
    ideal=$(awk -v r="$rounds" -v l="$LAT" 'BEGIN { printf "%.0f", 64 / (int(r + 0.5) * l / 1000) }')
    echo "| $a | $calls | $pt / $ct | $wall | $rounds | $rps | $ideal | $p50 / $p99 |" >> "$OUT/section.md"
done
cat "$OUT/section.md"
cat "$OUT/section.md" >> bench/RESULTS.md
