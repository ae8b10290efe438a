#!/bin/bash
# Passthrough throughput and added latency: wrk against the mock directly and through the
# proxy, at 1, 16 and 64 connections, in one run on this machine. Appends a section to
# bench/RESULTS.md. Usage: bench/passthrough.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
# Tools used beyond the build, installed when missing (scripts/deps.sh; root or sudo).
need=""
for t in wrk:wrk ss:iproute2; do command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"; done
# shellcheck disable=SC2086
[ -z "$need" ] || scripts/deps.sh $need
DUR=${1:-10}
BUILD=${PX_BUILD:-build}
# nginx as a reverse proxy to the same mock is the practical ceiling for any proxy on these
# cores (shared/DESIGN.md): measured in the same run as the reference.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || scripts/deps.sh nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
make -s all
OUT=$(mktemp -d)
NGX_PID=""
trap 'kill $MOCK_PID $PX_PID $NGX_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

"$BUILD/mock_upstream" --port 0 > "$OUT/mock.port" &
MOCK_PID=$!
for _ in $(seq 100); do grep -q PORT "$OUT/mock.port" 2>/dev/null && break; sleep 0.05; done
MOCK=$(awk '/PORT/{print $2}' "$OUT/mock.port")
"$BUILD/optillm" --port 0 --base-url "http://127.0.0.1:$MOCK/v1" --log error \
    2> "$OUT/px.log" &
PX_PID=$!
sleep 0.3
"$BUILD/optillm" --help >/dev/null
PX=""
for _ in $(seq 100); do
    PX=$(ss -ltnp 2>/dev/null | awk -v pid="pid=$PX_PID," '$0 ~ pid {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$PX" ] && break
    sleep 0.05
done
[ -n "$PX" ] || { echo "proxy did not start" >&2; exit 1; }

NGX_PORT=$(free_port)
mkdir -p "$OUT/ngx/logs"
cat > "$OUT/ngx/nginx.conf" <<NGX
worker_processes 2;
pid $OUT/ngx/nginx.pid;
error_log $OUT/ngx/logs/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $OUT/ngx/body;
    proxy_temp_path $OUT/ngx/proxy;
    fastcgi_temp_path $OUT/ngx/fcgi;
    uwsgi_temp_path $OUT/ngx/uwsgi;
    scgi_temp_path $OUT/ngx/scgi;
    upstream mock { server 127.0.0.1:$MOCK; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
"$NGINX" -p "$OUT/ngx" -c "$OUT/ngx/nginx.conf" -g 'daemon off;' &
NGX_PID=$!
sleep 0.3

cat > "$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"mock","messages":[{"role":"user","content":"Say hello in five words."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
LUA

# Prints "rps p50_us p99_us" for one wrk run.
run() {
    local port=$1 conns=$2 threads=$(( $2 < 2 ? 1 : 2 ))
    wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency -s "$OUT/post.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" > "$OUT/wrk.txt"
    awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        / Non-2xx/ { bad = $NF }
        END { printf "%.0f %.0f %.0f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }' "$OUT/wrk.txt"
}

{
    echo
    echo "## Passthrough ($(date -u +%Y-%m-%d), ${DUR}s per run, $(nproc) cores, wrk, mock latency 0)"
    echo
    echo "| connections | direct req/s | nginx-as-proxy req/s | optillm req/s | optillm ÷ direct | optillm ÷ nginx-as-proxy | direct p50/p99 µs | nginx p50/p99 µs | optillm p50/p99 µs | optillm added p50/p99 µs | non-2xx |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > "$OUT/section.md"
for c in 1 16 64; do
    read -r drps dp50 dp99 dbad < <(run "$MOCK" "$c")
    read -r nrps np50 np99 nbad < <(run "$NGX_PORT" "$c")
    read -r prps pp50 pp99 pbad < <(run "$PX" "$c")
    ratio=$(awk -v a="$prps" -v b="$drps" 'BEGIN { printf "%.2f", a / b }')
    nratio=$(awk -v a="$prps" -v b="$nrps" 'BEGIN { printf "%.2f", a / b }')
    echo "| $c | $drps | $nrps | $prps | $ratio | $nratio | $dp50 / $dp99 | $np50 / $np99 | $pp50 / $pp99 | $((pp50 - dp50)) / $((pp99 - dp99)) | $((dbad + nbad + pbad)) |" >> "$OUT/section.md"
done
cat "$OUT/section.md"
cat "$OUT/section.md" >> bench/RESULTS.md
