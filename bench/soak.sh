#!/bin/bash
# Soak: mixed traffic from 64 concurrent clients (build/loadgen, bench/loadgen.c) through the
# proxy to the mock upstream for SECONDS (default 600): passthrough (JSON and stream), bon,
# moa, streamed bon and moa; mock latency 20-40 ms, fail_rate=0.05 on every upstream call, 2%
# of requests with an injected 503/500/400 or a dropped upstream connection, 3% abandoned by
# the client part-way (mid-wait and mid-stream). Every answer is checked (complete and
# well-formed, or a clean OpenAI-shaped refusal; anything else is "malformed"); the proxy's
# RSS, open fds and threads are sampled every 5 s. At the end the proxy must answer /health and
# exit 0 on SIGTERM. Appends a section to bench/RESULTS.md and prints it.
# Usage: bench/soak.sh [SECONDS]
# (env: CLIENTS=64 WARMUP=30 SEED=1 PX_BUILD=build RESULTS=bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
# Tools used beyond the build, installed when missing (scripts/deps.sh; root or sudo).
need=""
for t in jq:jq curl:curl ss:iproute2 cc:gcc pkg-config:pkg-config; do command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"; done
# shellcheck disable=SC2086
[ -z "$need" ] || scripts/deps.sh $need
DUR=${1:-600}
CLIENTS=${CLIENTS:-64}
WARMUP=${WARMUP:-30}
SEED=${SEED:-1}
PERIOD=5
BUILD=${PX_BUILD:-build}
RESULTS=${RESULTS:-bench/RESULTS.md}
MIX=pass=25,pass_stream=20,bon=15,bon_stream=5,moa=15,moa_stream=20
LAT=20:40
INJECT='status=503/status=503/status=500/status=400/drop=1'
make -s all
LG=$BUILD/loadgen
if [ ! -x "$LG" ] || [ bench/loadgen.c -nt "$LG" ]; then
    # shellcheck disable=SC2046
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror bench/loadgen.c -o "$LG" \
        $(pkg-config --cflags --libs libcurl libcjson)
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
OUT=$(mktemp -d)
MOCK_PID="" PX_PID="" SAMPLER_PID=""
cleanup() {
    for p in $SAMPLER_PID $PX_PID $MOCK_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")
env -u OPENAI_API_KEY -u OPTILLM_API_KEY "$BUILD/optillm" --port 0 \
    --base-url "http://127.0.0.1:$MOCK/v1" --log warning 2> "$OUT/px.log" &
PX_PID=$!
PX=""
for _ in $(seq 100); do
    PX=$(ss -ltnp 2>/dev/null | awk -v pid="pid=$PX_PID," '$0 ~ pid {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$PX" ] && break
    sleep 0.05
done
[ -n "$PX" ] || { echo "proxy did not start" >&2; exit 1; }

# "seconds rss_kB fds threads" of the proxy.
sample() {
    local st=/proc/$PX_PID/status fds
    fds=("/proc/$PX_PID/fd/"*)
    echo "$1 $(awk '/^VmRSS/{print $2}' "$st") ${#fds[@]} $(awk '/^Threads/{print $2}' "$st")"
}
HZ=$(getconf CLK_TCK)
cpu_s() { awk -v hz="$HZ" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
# Busy CPU seconds of the whole machine (all processes), to see what others used meanwhile.
busy_s() { awk -v hz="$HZ" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }

sample before > "$OUT/before"
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
PX_CPU0=$(cpu_s "$PX_PID")
MOCK_CPU0=$(cpu_s "$MOCK_PID")
BUSY0=$(busy_s)
echo "soak: ${DUR}s, $CLIENTS clients, proxy pid $PX_PID on port $PX, mock on port $MOCK" >&2
T0=$(date +%s%N)
(
    while kill -0 "$PX_PID" 2>/dev/null; do
        sample $(( ($(date +%s%N) - T0) / 1000000000 )) >> "$OUT/samples" || true
        sleep "$PERIOD"
    done
) &
SAMPLER_PID=$!
LG_RC=0
"$LG" --url "http://127.0.0.1:$PX/v1" --clients "$CLIENTS" --seconds "$DUR" --seed "$SEED" \
    --mix "$MIX" --latency "$LAT" --chunk-delay 2 --noisy --fail-rate 0.05 \
    --inject-rate 0.02 --inject "$INJECT" --abandon-rate 0.03 --timeout 120 --drain 120 \
    --progress 60 > "$OUT/lg.out" 2> "$OUT/lg.err" || LG_RC=$?
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
LOAD1=$(cut -d' ' -f1 /proc/loadavg)
BUSY1=$(busy_s)
PX_CPU=$(awk -v a="$(cpu_s "$PX_PID" 2>/dev/null || echo 0)" -v b="$PX_CPU0" 'BEGIN { print a - b }')
MOCK_CPU=$(awk -v a="$(cpu_s "$MOCK_PID" 2>/dev/null || echo 0)" -v b="$MOCK_CPU0" 'BEGIN { print a - b }')
cat "$OUT/lg.err" >&2
grep -v '^{' "$OUT/lg.out" >&2
J=$(tail -1 "$OUT/lg.out")
[ "${J:0:1}" = "{" ] || { echo "loadgen printed no summary (exit $LG_RC)" >&2; exit 1; }
sleep 3
ALIVE=no
kill -0 "$PX_PID" 2>/dev/null && ALIVE=yes
HEALTH=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PX/health" || echo 000)
sample idle > "$OUT/idle" 2>/dev/null || echo "idle - - -" > "$OUT/idle"
curl -s "http://127.0.0.1:$PX/metrics" > "$OUT/metrics" || true
curl -s "http://127.0.0.1:$MOCK/mock/stats" > "$OUT/mock.json" || echo '{}' > "$OUT/mock.json"
PX_RC=none
if [ "$ALIVE" = yes ]; then
    kill -TERM "$PX_PID"
    PX_RC=0
    wait "$PX_PID" || PX_RC=$?
fi
PX_PID=""

metric() { awk -v m="$1" '$1 == m { print $2 }' "$OUT/metrics"; }
CANCELS=$(metric optillm_cancellations_total)
RETRIES=$(metric optillm_retries_total)
INFLIGHT=$(metric optillm_in_flight_requests)
ATHREADS=$(metric optillm_approach_threads)
UPS=$(awk -F'[{}"]' '/^optillm_upstream_calls_total\{/ { split($0, v, " "); printf "%s%s: %s", sep, $3, v[2]; sep = ", " }' "$OUT/metrics")
MB() { awk -v k="$1" 'BEGIN { if (k == "-" || k == "") print "-"; else printf "%.1f", k / 1024 }'; }
read -r _ B_RSS B_FD B_TH < "$OUT/before"
read -r S_T S_RSS S_FD S_TH < <(awk -v w="$WARMUP" '$1 >= w { print; exit }' "$OUT/samples")
read -r E_T E_RSS E_FD E_TH < <(tail -1 "$OUT/samples")
read -r _ I_RSS I_FD I_TH < "$OUT/idle"
MAXRSS=$(awk -v w="$WARMUP" '$1 >= w && $2 > m { m = $2 } END { print m }' "$OUT/samples")
MAXFD=$(awk -v w="$WARMUP" '$1 >= w && $3 > m { m = $3 } END { print m }' "$OUT/samples")
MAXTH=$(awk -v w="$WARMUP" '$1 >= w && $4 > m { m = $4 } END { print m }' "$OUT/samples")
# RSS every minute (or every tenth of the run when shorter), MB.
STEP=$(( DUR >= 600 ? 60 : (DUR >= 10 ? DUR / 10 : 1) ))
SERIES=$(awk -v s="$STEP" '$1 >= n * s { printf "%s%.1f", (n ? " " : ""), $2 / 1024; n = int($1 / s) + 1 }' "$OUT/samples")
jqr() { jq -r "$1" <<< "$J"; }
REQS=$(jqr .requests)
ELAPSED=$(jqr '.seconds | . * 10 | round / 10')
RPS=$(jqr '.rps | round')
APS=$(jqr '.answers_per_s | round')
REFUSALS=$(jqr '[.refusals | to_entries[] | "\(.key): \(.value)"] | join(", ") | if . == "" then "none" else . end')
MALREASONS=$(jqr '[.malformed_reasons | to_entries[] | "\(.key) \(.value)"] | join(", ")')
LG_CPU=$(jqr '.cpu_s | round')
OTHER_CPU=$(awk -v t="$(awk -v a="$BUSY1" -v b="$BUSY0" 'BEGIN { print a - b }')" -v p="$PX_CPU" \
    -v m="$MOCK_CPU" -v l="$(jqr .cpu_s)" 'BEGIN { o = t - p - m - l; printf "%.0f", o < 0 ? 0 : o }')
PX_WARN=$(grep -c ' WARN ' "$OUT/px.log" || true)
PX_ERR=$(grep -c ' ERROR ' "$OUT/px.log" || true)
PX_RETRY=$(grep -c 'retrying in' "$OUT/px.log" || true)
PX_FAILED=$(grep -c 'upstream call .* failed\|upstream unreachable' "$OUT/px.log" || true)
PX_MHD=$(grep -c 'libmicrohttpd:' "$OUT/px.log" || true)
PX_OTHER=$(( PX_WARN + PX_ERR - PX_RETRY - PX_FAILED - PX_MHD ))
# The "other" lines, by kind (their text up to the first digit), for the operator to read.
grep ' WARN \| ERROR ' "$OUT/px.log" | grep -v 'retrying in\|upstream call .* failed\|upstream unreachable\|libmicrohttpd:' |
    sed -E 's/^[^ ]+ +[A-Z]+ +//; s/^req=[^ ]+ //; s#https?://[^ ]+#URL#g; s/[0-9].*//' | sort | uniq -c | sort -rn | head -10 > "$OUT/other.txt" || true
{
    grep -v 'retrying in\|upstream call .* failed\|upstream unreachable\|libmicrohttpd:' "$OUT/px.log" | head -20
    grep 'libmicrohttpd:' "$OUT/px.log" | sed 's/^[^ ]* //' | sort | uniq -c | head -10
} > "$OUT/px.notable" || true
if [ -s "$OUT/px.notable" ]; then
    echo "proxy log, other than retries and failed upstream calls:" >&2
    cat "$OUT/px.notable" >&2
fi
VERDICT=pass
[ "$(jqr .malformed)" = 0 ] && [ "$ALIVE" = yes ] && [ "$HEALTH" = 200 ] && [ "$PX_RC" = 0 ] \
    || VERDICT=FAIL

{
    echo
    echo "## Soak ($(date -u +%Y-%m-%d), ${DUR} s, $CLIENTS clients, $(nproc) cores, mock latency ${LAT/:/–} ms)"
    echo
    echo "build/loadgen (bench/loadgen.c, seed $SEED), mix"
    echo "${MIX//,/, }. Every upstream call"
    echo "has \`fail_rate=0.05\`; 2% of requests carry one more model option for all their calls:"
    echo "\`status=503\` (2/5), \`status=500\`, \`status=400\` or \`drop=1\` (1/5 each); 3% are abandoned"
    echo "by the client after 1–300 ms or after the 1st–4th SSE event. \`chunk_delay=2\`, \`noisy=1\`,"
    echo "proxy defaults (2 retries, 0.5 s base delay). The proxy's RSS, fds and threads are sampled"
    echo "every ${PERIOD} s: start = first sample after the ${WARMUP} s warm-up, end = last one under"
    echo "load, idle = 3 s after the load."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| requests (all outcomes) | $REQS in $ELAPSED s: $RPS/s ($APS/s answered) |"
    echo "| complete answers | $(jqr .ok) |"
    echo "| clean refusals (OpenAI error, by status) | $(jqr .refused) ($REFUSALS) |"
    echo "| in-band stream errors (\`data: {\"error\"…}\` + \`[DONE]\`) | $(jqr .inband_errors) |"
    echo "| abandoned by the client | $(jqr .abandoned) (mid-wait $(jqr .abandoned_wait), mid-stream $(jqr .abandoned_stream)) |"
    echo "| **malformed** | **$(jqr .malformed)**${MALREASONS:+ ($MALREASONS)} |"
    echo "| latency of complete answers p50 / p99 / max | $(jqr '.latency_ms | "\(.p50 | round) / \(.p99 | round) / \(.max | round)"') ms |"
    echo "| proxy RSS MB: before load / start ($S_T s) / end ($E_T s) / idle (max after warm-up) | $(MB "$B_RSS") / $(MB "$S_RSS") / $(MB "$E_RSS") / $(MB "$I_RSS") ($(MB "$MAXRSS")) |"
    echo "| proxy open fds: before / start / end / idle (max) | $B_FD / $S_FD / $E_FD / $I_FD ($MAXFD) |"
    echo "| proxy threads: before / start / end / idle (max) | $B_TH / $S_TH / $E_TH / $I_TH ($MAXTH) |"
    echo "| RSS MB every ${STEP} s | $SERIES |"
    echo "| /metrics after the load: in flight (incl. that request), cancellations, retries, approach threads | $INFLIGHT, $CANCELS, $RETRIES, $ATHREADS |"
    echo "| upstream attempts by status (/metrics) | $UPS |"
    echo "| proxy log (warning level): retries, failed upstream calls, libmicrohttpd, other lines | $PX_RETRY, $PX_FAILED, $PX_MHD, $PX_OTHER |"
    [ ! -s "$OUT/other.txt" ] || echo "| the other lines by kind (count, text up to its first digit) | $(awk '{ c = $1; $1 = ""; printf "%s%s ×%s", (NR > 1 ? "; " : ""), substr($0, 2), c }' "$OUT/other.txt" | sed 's/|/\\|/g') |"
    echo "| up at the end (GET /health), exit status on SIGTERM | $HEALTH, $PX_RC |"
    echo "| CPU s during the load: proxy / mock / loadgen / other processes (of $(( $(nproc) * ${ELAPSED%.*} )) s on $(nproc) cores); load average start → end | $(printf '%.0f' "$PX_CPU") / $(printf '%.0f' "$MOCK_CPU") / $LG_CPU / $OTHER_CPU; $LOAD0 → $LOAD1 |"
    echo
    echo "| type | sent | ok | refused | abandoned | malformed | p50 / p99 ms |"
    echo "|---|---|---|---|---|---|---|"
    jqr '.types | to_entries[] | "| \(.key) | \(.value.sent) | \(.value.ok) | \(.value.refused + .value.inband) | \(.value.abandoned) | \(.value.malformed) | \(.value.p50_ms | round) / \(.value.p99_ms | round) |"'
    echo
    if [ "$OTHER_CPU" -gt $(( $(nproc) * ${ELAPSED%.*} / 10 )) ]; then
        echo "Contention: other processes on the machine (tests, fuzzers) used $OTHER_CPU of the"
        echo "$(( $(nproc) * ${ELAPSED%.*} )) CPU seconds available during the run, so throughput and"
        echo "latency are below a quiet machine's; the soak is about correctness and flat resources."
        echo
    fi
    echo "Verdict: $VERDICT (zero malformed, proxy up, exit 0 on SIGTERM)."
} > "$OUT/section.md"
cat "$OUT/section.md"
cat "$OUT/section.md" >> "$RESULTS"
[ "$VERDICT" = pass ]
