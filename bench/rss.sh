#!/usr/bin/env bash
# NATS connector and memory benchmark: resident set size (VmRSS) of the NATS connector idle and
# after delivering MESSAGES core-NATS messages to the echo function through the gateway (and how
# fast it delivered them), of the cron connector idle with a function scheduled, and of the
# gateway itself. When ../shared/openfaas/bin/of-nats-connector exists, OpenFaaS's NATS connector
# runs the same load in the same run (it needs the broker on port 4222) and the ratios
# Tributary/OpenFaaS (memory and messages/s) are printed; otherwise that part says SKIPPED.
# The Kafka and SQS connectors' memory is in bench/kafka.sh and bench/sqs.sh.
#
#   bash bench/rss.sh               # MESSAGES=20000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

MESSAGES="${MESSAGES:-20000}"
need_apt curl curl
need_apt nats-server nats-server
NATS_SERVER="$(command -v nats-server || echo /usr/sbin/nats-server)"
OF_NATS="$(cd .. && pwd)/shared/openfaas/bin/of-nats-connector"

log "building release binary"
cargo build --release -q --bin tributary --bin tributary-nats-connector --bin tributary-cron-connector
BIN="$CARGO_TARGET_DIR/release"
use_workdir


# OpenFaaS's connector always dials port 4222: use it when free.
NATS_PORT=4222
if ! python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",4222))' 2>/dev/null; then
    NATS_PORT="$(free_port)"
fi
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" 2>"$WORK/nats.log" &
PIDS+=($!)

start_gateway_with_echo
wait_http "http://127.0.0.1:$GW_PORT/function/echo"
sleep "$IDLE_AFTER"
GW_IDLE="$(rss_kb "$GW_PID")"

# calls: the gateway's count of answered calls of echo.
calls() {
    curl -fsS "http://127.0.0.1:$GW_PORT/metrics" |
        awk '/^gateway_function_invocation_total\{.*function_name="echo/ {n += $2} END {printf "%d\n", n}'
}

# publish N: N core-NATS messages on bench, in one connection.
publish() {
    python3 - "$NATS_PORT" "$1" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.recv(4096)
s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
one = b"PUB bench 5\r\nhello\r\n"
for _ in range(n // 1000):
    s.sendall(one * 1000)
s.sendall(one * (n % 1000))
s.sendall(b"PING\r\n")
buf = b""
while b"PONG" not in buf:
    buf += s.recv(4096)
PY
}

# measure NAME PID: idle RSS, then RSS once MESSAGES more calls were answered, SETTLE seconds
# later and at its peak, and the delivery rate (from the first publish to the last answered
# call); prints a row.
measure() {
    local name="$1" pid="$2" before idle loaded settled start end i=0
    sleep "$IDLE_AFTER"
    idle="$(rss_kb "$pid")"
    before="$(calls)"
    start="$(date +%s%N)"
    publish "$MESSAGES"
    while [ "$(calls)" -lt $((before + MESSAGES)) ]; do
        i=$((i + 1))
        [ "$i" -le 2400 ] || die "$name: only $(($(calls) - before)) of $MESSAGES calls in 120 s"
        sleep 0.05
    done
    end="$(date +%s%N)"
    loaded="$(rss_kb "$pid")"
    [ -z "${RSS_DETAIL:-}" ] || grep -E "^(Rss|Anonymous|Private)" "/proc/$pid/smaps_rollup" >&2
    sleep "$SETTLE"
    settled="$(rss_kb "$pid")"
    printf '%s %s %s %s %s %s\n' "$name" "$idle" "$loaded" "$settled" "$(peak_kb "$pid")" \
        "$(awk -v n="$MESSAGES" -v ns=$((end - start)) 'BEGIN { printf "%.0f", n / (ns / 1e9) }')"
}

gateway_url="http://127.0.0.1:$GW_PORT" nats_url="nats://127.0.0.1:$NATS_PORT" topics=bench \
    metrics_port=0 RUST_LOG=warn "${CONNECTOR_BIN:-$BIN/tributary-nats-connector}" 2>"$WORK/tri-nats.log" &
TRI_PID=$!
PIDS+=($TRI_PID)
TRI="$(measure tributary "$TRI_PID")"
kill "$TRI_PID"

OF=""
if [ ! -x "$OF_NATS" ]; then
    log "SKIPPED OpenFaaS's nats-connector: $OF_NATS not found"
elif [ "$NATS_PORT" != 4222 ]; then
    log "SKIPPED OpenFaaS's nats-connector: port 4222 is taken and it cannot use another"
else
    gateway_url="http://127.0.0.1:$GW_PORT" broker_host=127.0.0.1 topics=bench \
        asynchronous_invocation=false basic_auth=false "$OF_NATS" >"$WORK/of-nats.log" 2>&1 &
    OF_PID=$!
    PIDS+=($OF_PID)
    OF="$(measure openfaas "$OF_PID")"
    kill "$OF_PID"
fi
GW_LOADED="$(rss_kb "$GW_PID")"

# The cron connector, idle with one function scheduled every minute.
curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
    -d '{"service":"tick","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"},"annotations":{"topic":"cron-function","schedule":"* * * * *"}}'
gateway_url="http://127.0.0.1:$GW_PORT" RUST_LOG=warn "$BIN/tributary-cron-connector" \
    2>"$WORK/tri-cron.log" &
CRON_PID=$!
PIDS+=($CRON_PID)
sleep "$IDLE_AFTER"
kill -0 "$CRON_PID" 2>/dev/null || die "the cron connector exited: $(cat "$WORK/tri-cron.log")"
CRON_IDLE="$(rss_kb "$CRON_PID")"

printf '\n%-26s %8s %12s %9s %8s %10s\n' process "idle MB" "after load" settled peak "msg/s"
awk -v i="$GW_IDLE" -v l="$GW_LOADED" 'BEGIN { printf "%-26s %8.1f %12.1f\n", "gateway", i / 1024, l / 1024 }'
for row in "$TRI" "$OF"; do
    [ -n "$row" ] || continue
    read -r n i l s p r <<<"$row"
    awk -v n="$n nats-connector" -v i="$i" -v l="$l" -v s="$s" -v p="$p" -v r="$r" 'BEGIN { printf "%-26s %8.1f %12.1f %9.1f %8.1f %10s\n", n, i / 1024, l / 1024, s / 1024, p / 1024, r }'
done
awk -v i="$CRON_IDLE" 'BEGIN { printf "%-26s %8.1f\n", "tributary cron-connector", i / 1024 }'
printf '(after load: once %s messages were delivered, synchronous calls; settled: %s s later; peak: VmHWM)\n\n' "$MESSAGES" "$SETTLE"
# The same figures as lines bench/ratios.py collects.
awk -v i="$GW_IDLE" -v l="$GW_LOADED" 'BEGIN { printf "gateway RSS: idle %.1f MB, after load %.1f MB\n", i / 1024, l / 1024 }'
for row in "$TRI" "$OF"; do
    [ -n "$row" ] || continue
    read -r n i l s p _ <<<"$row"
    awk -v n="$n" -v i="$i" -v l="$l" -v s="$s" -v p="$p" 'BEGIN { printf "%s nats-connector RSS: idle %.1f MB, after load %.1f MB, settled %.1f MB, peak %.1f MB\n", n, i / 1024, l / 1024, s / 1024, p / 1024 }'
done
awk -v i="$CRON_IDLE" 'BEGIN { printf "tributary cron-connector RSS: idle %.1f MB\n", i / 1024 }'
if [ -n "$OF" ]; then
    read -r _ ti tl ts _ tr <<<"$TRI"
    read -r _ oi ol os _ or <<<"$OF"
    awk -v ti="$ti" -v tl="$tl" -v ts="$ts" -v tr="$tr" -v oi="$oi" -v ol="$ol" -v os="$os" -v or="$or" 'BEGIN {
        printf "\nratio nats-connector msg/s tributary/openfaas: %.2fx\n", tr / or
        printf "ratio nats-connector RSS idle tributary/openfaas: %.2fx\n", ti / oi
        printf "ratio nats-connector RSS after load tributary/openfaas: %.2fx\n", tl / ol
        printf "ratio nats-connector RSS settled tributary/openfaas: %.2fx\n", ts / os
    }'
fi
