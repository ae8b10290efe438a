#!/bin/bash
# Heap profile of the proxy under the soak's traffic mix (heaptrack, Debian `heaptrack`): the
# proxy runs under heaptrack for each duration in DURATIONS (default "60 300" seconds) with
# CLIENTS (default 16) clients of build/loadgen, then stops on SIGTERM. For each run: peak
# heap, heap still allocated at exit (leaked), allocation calls, and the top peak consumers.
# The same peak heap after 60 s and after 300 s means the soak's RSS rise is warm-up (pools,
# caches, arenas filling), not growth. Prints a markdown section (appended to RESULTS, default
# bench/RESULTS.md; RESULTS=/dev/null to skip).
# Usage: bench/heap.sh   (env: DURATIONS="60 300" CLIENTS=16 PX_BUILD=build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v heaptrack > /dev/null || scripts/deps.sh heaptrack
DURATIONS=${DURATIONS:-60 300}
CLIENTS=${CLIENTS:-16}
BUILD=${PX_BUILD:-build}
RESULTS=${RESULTS:-bench/RESULTS.md}
MIX=pass=25,pass_stream=20,bon=15,bon_stream=5,moa=15,moa_stream=20
make -s all
LG=$BUILD/loadgen
if [ ! -x "$LG" ] || [ bench/loadgen.c -nt "$LG" ]; then
    # shellcheck disable=SC2046
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror bench/loadgen.c -o "$LG" \
        $(pkg-config --cflags --libs libcurl libcjson)
fi
OUT=$(mktemp -d)
MOCK_PID="" HT_PID=""
cleanup() {
    for p in $HT_PID $MOCK_PID; do kill "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2> /dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")

{
    echo
    echo "## Heap profile ($(date -u +%Y-%m-%d), heaptrack, $CLIENTS clients, soak mix, mock latency 20–40 ms)"
    echo
    echo "| run | requests | peak heap MB | peak RSS MB (heaptrack's) | allocation calls | leaked at exit | top peak consumers |"
    echo "|---|---|---|---|---|---|---|"
} > "$OUT/section.md"
for dur in $DURATIONS; do
    rm -f "$OUT"/heaptrack.* "$OUT/px.log"
    env -u OPENAI_API_KEY -u OPTILLM_API_KEY heaptrack -o "$OUT/heaptrack.px" "$BUILD/optillm" \
        --port 0 --base-url "http://127.0.0.1:$MOCK/v1" --log info > "$OUT/ht.out" 2> "$OUT/px.log" &
    HT_PID=$!
    PX=""
    for _ in $(seq 400); do
        PX=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\)\/v1.*/\1/p' "$OUT/px.log" | head -1)
        [ -n "$PX" ] && break
        sleep 0.05
    done
    [ -n "$PX" ] || { echo "proxy did not start under heaptrack" >&2; cat "$OUT/px.log" >&2; exit 1; }
    "$LG" --url "http://127.0.0.1:$PX/v1" --clients "$CLIENTS" --seconds "$dur" --seed 1 \
        --mix "$MIX" --latency 20:40 --chunk-delay 2 --noisy --fail-rate 0.05 \
        --abandon-rate 0.03 --timeout 120 --drain 120 > "$OUT/lg.out" 2> "$OUT/lg.err" || true
    REQS=$(tail -1 "$OUT/lg.out" | jq -r .requests 2> /dev/null || echo "?")
    PXPID=$(pgrep -f "^$BUILD/optillm --port 0 --base-url http://127.0.0.1:$MOCK/v1" | head -1 || true)
    [ -n "$PXPID" ] && kill -TERM "$PXPID"
    wait "$HT_PID" || true
    HT_PID=""
    F=$(ls "$OUT"/heaptrack.px* | head -1)
    heaptrack_print -f "$F" -p 1 -a 0 -T 0 -l 0 -n 5 -s 0 > "$OUT/print.txt" 2> /dev/null || true
    peak=$(sed -n 's/^peak heap memory consumption: *//p' "$OUT/print.txt")
    rss=$(sed -n 's/^peak RSS (including heaptrack overhead): *//p' "$OUT/print.txt")
    calls=$(sed -n 's/^calls to allocation functions: *\([0-9]*\).*/\1/p' "$OUT/print.txt")
    leaked=$(sed -n 's/^total memory leaked: *//p' "$OUT/print.txt")
    top=$(awk '/^PEAK MEMORY CONSUMERS/ { on = 1; next }
        on && / peak memory consumed over / {
            sz = $1; getline; fn = $1; getline
            where = ($1 == "at" || $1 == "in") ? $2 : ""
            sub(/.*\//, "", where)
            printf "%s%s %s%s", (n++ ? "; " : ""), sz, fn, (where == "" ? "" : " (" where ")")
            if (n == 4) exit
        }' "$OUT/print.txt")
    echo "| ${dur} s | $REQS | $peak | $rss | $calls | $leaked | ${top:-see heaptrack_print} |" >> "$OUT/section.md"
    cp "$OUT/print.txt" "$OUT/print.$dur.txt"
done
cat "$OUT/section.md"
[ "$RESULTS" = /dev/null ] || cat "$OUT/section.md" >> "$RESULTS"
