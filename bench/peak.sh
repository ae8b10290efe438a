#!/bin/bash
# Peak: N concurrent slow requests (default 1,000 bon requests, mock latency 2000 ms), one
# wave: build/loadgen opens N client connections at once, one request each. Every answer must
# be complete (no refusal, no malformed answer); reports the wall time against the ideal (bon
# = 2 rounds: 2 x latency), and the proxy's RSS, threads and open fds at the peak (sampled
# every 0.1 s). The mock runs --event-loop 1 (suspended waits, no thread per call). At the
# end the proxy must answer /health and exit 0 on SIGTERM. Appends a section to
# bench/RESULTS.md and prints it.
# Usage: bench/peak.sh [N, default 1000] [latency ms, default 2000]
# (env: PX_BUILD=build RESULTS=bench/RESULTS.md; UPSTREAM_H2=1 puts nghttpx (Debian
# nghttp2-proxy) in front of the mock: TLS with a throwaway CA and HTTP/2 towards the proxy,
# HTTP/1.1 to the mock, so the proxy's calls are multiplexed streams on a few connections)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
# Tools used beyond the build, installed when missing (scripts/deps.sh; root or sudo).
need=""
H2=${UPSTREAM_H2:-0}
for t in jq:jq curl:curl ss:iproute2 cc:gcc pkg-config:pkg-config openssl:openssl; do command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"; done
[ "$H2" = 0 ] || command -v nghttpx >/dev/null || [ -x /usr/sbin/nghttpx ] || need="$need nghttp2-proxy"
# shellcheck disable=SC2086
[ -z "$need" ] || scripts/deps.sh $need
N=${1:-1000}
LAT=${2:-2000}
ROUNDS=2
BUILD=${PX_BUILD:-build}
RESULTS=${RESULTS:-bench/RESULTS.md}
make -s all
LG=$BUILD/loadgen
if [ ! -x "$LG" ] || [ bench/loadgen.c -nt "$LG" ]; then
    # shellcheck disable=SC2046
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror bench/loadgen.c -o "$LG" \
        $(pkg-config --cflags --libs libcurl libcjson)
fi
# loadgen holds N sockets, the mock up to 3N; the proxy raises its own limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $(( 4 * N + 64 )) ] || echo "warning: ulimit -n $(ulimit -n) is low for N=$N" >&2
OUT=$(mktemp -d)
MOCK_PID="" PX_PID="" SAMPLER_PID="" H2_PID=""
cleanup() {
    for p in $SAMPLER_PID $PX_PID $H2_PID $MOCK_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

"$BUILD/mock_upstream" --port 0 --event-loop 1 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")
UP="http://127.0.0.1:$MOCK/v1"
UP_ARGS=()
if [ "$H2" != 0 ]; then
    (
        cd "$OUT"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=peak-ca -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout h2.key -out h2.csr
        printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
        openssl x509 -req -in h2.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out h2.pem
    ) > /dev/null 2>&1
    H2PORT=$(free_port)
    NGHTTPX=$(command -v nghttpx || echo /usr/sbin/nghttpx)
    "$NGHTTPX" -f"127.0.0.1,$H2PORT" -b"127.0.0.1,$MOCK" --workers=1 --no-ocsp \
        --frontend-http2-max-concurrent-streams=1000 --backend-connections-per-host=20000 \
        --backend-read-timeout=120s --frontend-read-timeout=120s \
        --errorlog-file="$OUT/nghttpx.log" "$OUT/h2.key" "$OUT/h2.pem" &
    H2_PID=$!
    sleep 0.5
    UP="https://127.0.0.1:$H2PORT/v1"
    UP_ARGS=(--upstream-ca "$OUT/ca.pem")
fi
env -u OPENAI_API_KEY -u OPTILLM_API_KEY "$BUILD/optillm" --port 0 \
    --base-url "$UP" "${UP_ARGS[@]}" --log warning 2> "$OUT/px.log" &
PX_PID=$!
PX=""
for _ in $(seq 100); do
    PX=$(ss -ltnp 2>/dev/null | awk -v pid="pid=$PX_PID," '$0 ~ pid {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$PX" ] && break
    sleep 0.05
done
[ -n "$PX" ] || { echo "proxy did not start" >&2; exit 1; }

# "rss_kB fds threads" of the proxy, with shell builtins only: the sampler runs 10 times a
# second during the wave, and a process started per sample would take CPU from the wave.
sample() {
    local k v rest rss=- th=- fds
    while read -r k v rest; do
        case $k in
            VmRSS:) rss=$v ;;
            Threads:) th=$v ;;
        esac
    done < "/proc/$PX_PID/status"
    fds=("/proc/$PX_PID/fd/"*)
    echo "$rss ${#fds[@]} $th"
}
HZ=$(getconf CLK_TCK)
cpu_s() { awk -v hz="$HZ" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
# Busy CPU seconds of the whole machine (all processes), to see what others used meanwhile.
busy_s() { awk -v hz="$HZ" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }

curl -s -o /dev/null -X POST "http://127.0.0.1:$MOCK/mock/reset"
sample > "$OUT/before"
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
PX_CPU0=$(cpu_s "$PX_PID")
MOCK_CPU0=$(cpu_s "$MOCK_PID")
BUSY0=$(busy_s)
(
    while kill -0 "$PX_PID" 2>/dev/null; do
        sample >> "$OUT/samples" || true
        sleep 0.1
    done
) &
SAMPLER_PID=$!
sleep 0.3
LG_RC=0
"$LG" --url "http://127.0.0.1:$PX/v1" --clients "$N" --max-requests "$N" --seconds 0 \
    --mix bon=1 --latency "$LAT" --noisy --timeout 120 --drain 120 \
    > "$OUT/lg.out" 2> "$OUT/lg.err" || LG_RC=$?
BUSY1=$(busy_s)
PX_CPU=$(awk -v a="$(cpu_s "$PX_PID" 2>/dev/null || echo 0)" -v b="$PX_CPU0" 'BEGIN { print a - b }')
MOCK_CPU=$(awk -v a="$(cpu_s "$MOCK_PID" 2>/dev/null || echo 0)" -v b="$MOCK_CPU0" 'BEGIN { print a - b }')
sleep 0.5
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
cat "$OUT/lg.err" >&2
grep -v '^{' "$OUT/lg.out" >&2
J=$(tail -1 "$OUT/lg.out")
[ "${J:0:1}" = "{" ] || { echo "loadgen printed no summary (exit $LG_RC)" >&2; exit 1; }
sleep 2
ALIVE=no
kill -0 "$PX_PID" 2>/dev/null && ALIVE=yes
HEALTH=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PX/health" || echo 000)
sample > "$OUT/after" 2>/dev/null || echo "- - -" > "$OUT/after"
curl -s "http://127.0.0.1:$MOCK/mock/stats" > "$OUT/mock.json" || echo '{}' > "$OUT/mock.json"
PX_RC=none
if [ "$ALIVE" = yes ]; then
    kill -TERM "$PX_PID"
    PX_RC=0
    wait "$PX_PID" || PX_RC=$?
fi
PX_PID=""

# The floor of this mock and client on this machine: the same waves without the proxy, N
# concurrent calls (bon's first round) and 3N (its ratings), straight to the mock.
# A wave the mock alone cannot take (too many sockets, refused connections) is reported in the
# table, not a reason to stop: its figure is "failed (ok of requests)".
direct() {
    local j
    j=$("$LG" --url "http://127.0.0.1:$MOCK/v1" --clients "$1" --max-requests "$1" --seconds 0 \
        --mix pass=1 --latency "$LAT" --noisy --timeout 120 2>/dev/null | tail -1) || true
    jq -r 'if .ok == .requests then .seconds else "failed (\(.ok) of \(.requests))" end' \
        <<< "$j" 2>/dev/null || echo "failed (no summary)"
}
D1=$(direct "$N")
D3=$(direct $(( 3 * N )))
isnum() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }

MB() { awk -v k="$1" 'BEGIN { if (k == "-" || k == "") print "-"; else printf "%.1f", k / 1024 }'; }
read -r B_RSS B_FD B_TH < "$OUT/before"
read -r A_RSS A_FD A_TH < "$OUT/after"
read -r P_RSS P_FD P_TH < <(awk '$1 > r { r = $1 } $2 > f { f = $2 } $3 > t { t = $3 } END { print r, f, t }' "$OUT/samples")
jqr() { jq -r "$1" <<< "$J"; }
OTHER_CPU=$(awk -v t="$(awk -v a="$BUSY1" -v b="$BUSY0" 'BEGIN { print a - b }')" -v p="$PX_CPU" \
    -v m="$MOCK_CPU" -v l="$(jqr .cpu_s)" 'BEGIN { o = t - p - m - l; printf "%.1f", o < 0 ? 0 : o }')
IDEAL=$(awk -v r="$ROUNDS" -v l="$LAT" 'BEGIN { printf "%.1f", r * l / 1000 }')
WALL=$(jqr '.seconds | . * 100 | round / 100')
RATIO=$(awk -v w="$WALL" -v i="$IDEAL" 'BEGIN { printf "%.2f", w / i }')
if isnum "$D1" && isnum "$D3"; then
    FLOOR=$(awk -v a="$D1" -v b="$D3" 'BEGIN { printf "%.2f", a + b }')
    ABOVE=$(awk -v w="$WALL" -v f="$FLOOR" 'BEGIN { printf "%+.2f", w - f }')
    FLOOR_ROW="$(printf '%.2f' "$D1") s + $(printf '%.2f' "$D3") s = $FLOOR s floor; wall time − floor: $ABOVE s"
else
    FLOOR_ROW="$D1 / $D3: the mock alone could not take these waves on this machine, so there is no floor"
fi
MOCK_PEAK=$(jq -r '.peak_concurrency // "-"' "$OUT/mock.json")
MOCK_CALLS=$(jq -r '.calls // "-"' "$OUT/mock.json")
PX_WARN=$(grep -c ' WARN \| ERROR ' "$OUT/px.log" || true)
if [ "$PX_WARN" -gt 0 ]; then
    echo "proxy log (warnings and errors):" >&2
    head -20 "$OUT/px.log" >&2
fi
VERDICT=pass
[ "$(jqr .ok)" = "$N" ] && [ "$(jqr .malformed)" = 0 ] && [ "$ALIVE" = yes ] &&
    [ "$HEALTH" = 200 ] && [ "$PX_RC" = 0 ] || VERDICT=FAIL

{
    echo
    echo "## Peak ($(date -u +%Y-%m-%d), $N concurrent bon requests, mock latency $LAT ms, $(nproc) cores)"
    echo
    echo "One wave: build/loadgen (bench/loadgen.c) opens $N client connections at once, one"
    echo "\`bon-mock@latency=$LAT,noisy=1\` request each (bon: one n=3 call, then 3 ratings in"
    echo "parallel = $((ROUNDS)) rounds, $((4 * N)) upstream calls); proxy defaults (\`--workers 10000\`,"
    echo "\`--max-connections 4096\`). RSS, fds and threads of the proxy sampled every 0.1 s."
    [ "$H2" = 0 ] || echo "Upstream: nghttpx in front of the mock, HTTP/2 over TLS to the proxy (multiplexed streams, at most 1000 per connection), HTTP/1.1 to the mock."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| answers | $(jqr .ok) complete of $N; refused $(jqr '.refused + .inband_errors'), malformed $(jqr .malformed) |"
    echo "| wall time, first request → last answer | $WALL s; ideal $IDEAL s ($ROUNDS rounds × $LAT ms): ${RATIO}× ideal |"
    echo "| the same waves straight to the mock ($N, then $(( 3 * N )) concurrent calls) | $FLOOR_ROW |"
    echo "| latency min / p50 / p99 / max | $(jqr '.latency_ms | "\(.min | round) / \(.p50 | round) / \(.p99 | round) / \(.max | round)"') ms |"
    echo "| proxy RSS MB: before / peak / after | $(MB "$B_RSS") / **$(MB "$P_RSS")** / $(MB "$A_RSS") |"
    echo "| proxy threads: before / peak / after | $B_TH / **$P_TH** / $A_TH |"
    echo "| proxy open fds: before / peak / after | $B_FD / $P_FD / $A_FD |"
    echo "| mock: upstream calls, peak concurrent calls | $MOCK_CALLS, $MOCK_PEAK |"
    echo "| CPU s during the wave: proxy / mock / loadgen / other processes (of $(awk -v w="$WALL" -v c="$(nproc)" 'BEGIN { printf "%.1f", w * c }') on $(nproc) cores); load average | $(printf '%.1f' "$PX_CPU") / $(printf '%.1f' "$MOCK_CPU") / $(jqr '.cpu_s * 10 | round / 10') / $OTHER_CPU; $LOAD0 |"
    echo "| up at the end (GET /health), exit status on SIGTERM | $HEALTH, $PX_RC |"
    echo
    if awk -v o="$OTHER_CPU" -v w="$WALL" -v c="$(nproc)" 'BEGIN { exit !(o > w * c / 10) }'; then
        echo "Contention: other processes on the machine used $OTHER_CPU CPU s during the wave, so"
        echo "the wall time is above what a quiet machine gives."
        echo
    fi
    echo "Verdict: $VERDICT ($N complete answers, proxy up, exit 0 on SIGTERM)."
} > "$OUT/section.md"
cat "$OUT/section.md"
cat "$OUT/section.md" >> "$RESULTS"
[ "$VERDICT" = pass ]
