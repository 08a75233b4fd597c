#!/usr/bin/env bash
# Gateway proxy benchmark. In one run, with the same wrk client, connections and duration, it
# loads the built-in `mode=http` echo function (1) directly, (2) through the Tributary gateway at
# /function/echo, and (3) through nginx (1 worker, upstream keep-alive) as a best-in-class proxy
# baseline, and (4) through OpenFaaS's own gateway when ../shared/openfaas/bin/of-gateway exists
# (its provider URL is the echo function itself, so it too makes one hop: what it does with
# `direct_functions`; it listens on :8080 and :8082, fixed, and says SKIPPED when either is taken);
# then prints throughput, p50/p99, the ratios gateway/direct, gateway/nginx and gateway/openfaas,
# plus the gateway's idle and loaded RSS.
#
#   bash bench/proxy.sh              # DURATION=10s CONNECTIONS=64 THREADS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
need_apt wrk wrk
need_apt nginx nginx-light
need_apt curl curl

log "building release binary"
cargo build --release --bin tributary -q
BIN="$CARGO_TARGET_DIR/release/tributary"

use_workdir

FN_PORT="$(free_port)"
"$BIN" echo --port "$FN_PORT" 2>"$WORK/fn.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$FN_PORT/"

GW_PORT="$(free_port)"
RUST_LOG=warn "${GATEWAY_BIN:-$BIN}" gateway --bind 127.0.0.1 --port "$GW_PORT" \
    --basic-auth=false --state-dir "$WORK/state" 2>"$WORK/gw.log" &
GW_PID=$!
PIDS+=($GW_PID)
wait_http "http://127.0.0.1:$GW_PORT/healthz"
curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
    -d '{"service":"echo","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"}}'
wait_http "http://127.0.0.1:$GW_PORT/function/echo"
sleep "$IDLE_AFTER"
IDLE_RSS="$(rss_kb "$GW_PID")"

NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    upstream fn { server 127.0.0.1:$FN_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"

OF_GATEWAY="$(cd .. && pwd)/shared/openfaas/bin/of-gateway"
OF_URL=""
if [ ! -x "$OF_GATEWAY" ]; then
    log "SKIPPED OpenFaaS's gateway: $OF_GATEWAY not found"
elif ! python3 -c 'import socket
for p in (8080, 8082): socket.socket().bind(("0.0.0.0", p))' 2>/dev/null; then
    log "SKIPPED OpenFaaS's gateway: port 8080 or 8082 is taken and it cannot use others"
else
    # Its defaults, but no auth (as the others here) and no scale-from-zero lookups (the
    # provider URL is the function, which has no /system API). It logs each call: to a file.
    functions_provider_url="http://127.0.0.1:$FN_PORT/" direct_functions=false \
        basic_auth=false scale_from_zero=false upstream_timeout=10s \
        "$OF_GATEWAY" >"$WORK/of-gateway.log" 2>&1 &
    PIDS+=($!)
    OF_URL="http://127.0.0.1:8080/function/echo"
    wait_http "$OF_URL"
fi

# run_wrk NAME URL: prints "NAME req/s p50_ms p99_ms".
run_wrk() {
    local name="$1" url="$2" out
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null  # warm-up
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")"
    if grep -q "Non-2xx" <<<"$out"; then
        printf '%s\n' "$out" >&2
        die "$name: non-2xx answers during the run"
    fi
    awk -v name="$name" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%s %.0f %.3f %.3f\n", name, rps, p50, p99 }' <<<"$out"
}

log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, keep-alive"
DIRECT="$(run_wrk direct "http://127.0.0.1:$FN_PORT/")"
GATEWAY="$(run_wrk gateway "http://127.0.0.1:$GW_PORT/function/echo")"
NGINX="$(run_wrk nginx "http://127.0.0.1:$NGINX_PORT/")"
OPENFAAS=""
[ -z "$OF_URL" ] || OPENFAAS="$(run_wrk openfaas "$OF_URL")"
LOADED_RSS="$(rss_kb "$GW_PID")"

printf '\n%-10s %12s %10s %10s\n' path "req/s" "p50 ms" "p99 ms"
for row in "$DIRECT" "$GATEWAY" "$NGINX" "$OPENFAAS"; do
    [ -n "$row" ] || continue
    read -r n r p50 p99 <<<"$row"
    printf '%-10s %12s %10s %10s\n' "$n" "$r" "$p50" "$p99"
done
read -r _ d_rps _ d_p99 <<<"$DIRECT"
read -r _ g_rps _ g_p99 <<<"$GATEWAY"
read -r _ n_rps _ n_p99 <<<"$NGINX"
awk -v d="$d_rps" -v g="$g_rps" -v n="$n_rps" -v dp="$d_p99" -v gp="$g_p99" -v np="$n_p99" \
    -v idle="$IDLE_RSS" -v loaded="$LOADED_RSS" 'BEGIN {
    printf "\nratio gateway/direct: %.2fx   (target >= 0.60x)\n", g / d
    printf "ratio gateway/nginx:  %.2fx\n", g / n
    printf "ratio nginx/direct:   %.2fx   (best-in-class proxy baseline)\n", n / d
    printf "added p99 gateway vs direct: %.3f ms (nginx adds %.3f ms; target < 2 ms)\n", gp - dp, np - dp
    printf "gateway RSS: idle %.1f MB, after load %.1f MB (target idle < 15 MB)\n", idle / 1024, loaded / 1024
}'
if [ -n "$OPENFAAS" ]; then
    read -r _ o_rps _ o_p99 <<<"$OPENFAAS"
    awk -v g="$g_rps" -v o="$o_rps" -v gp="$g_p99" -v op="$o_p99" 'BEGIN {
        printf "ratio gateway/openfaas: %.2fx   (OpenFaaS gateway 0.27, same function, one hop)\n", g / o
        printf "p99 gateway %.3f ms, openfaas %.3f ms\n", gp, op
    }'
fi
