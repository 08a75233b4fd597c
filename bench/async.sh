#!/usr/bin/env bash
# Async queue benchmark, for each backend (embedded SQLite, NATS JetStream): end-to-end
# messages/s through /async-function (stored, invoked by the worker, result posted to a callback)
# against synchronous /function calls of the same mode=http echo function in the same run.
#
#   bash bench/async.sh               # MESSAGES=20000 CONCURRENCY=32 by default
#   GATEWAY_BIN=path bash bench/async.sh   # another build of the gateway, to compare
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MESSAGES="${MESSAGES:-20000}"
CONCURRENCY="${CONCURRENCY:-32}"
need_apt curl curl
need_apt nats-server nats-server
NATS_SERVER="$(command -v nats-server || echo /usr/sbin/nats-server)"

log "building release binaries"
cargo build --release -q --bin tributary --bin async_queue
BIN="$CARGO_TARGET_DIR/release"
use_workdir

NATS_PORT="$(free_port)"
printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s" }\n' "$NATS_PORT" "$WORK/js" > "$WORK/nats.conf"
"$NATS_SERVER" -c "$WORK/nats.conf" 2>"$WORK/nats.log" &
NATS_PID=$!
PIDS+=($NATS_PID)

for backend in embedded nats; do
    GW_PORT="$(free_port)"
    if [ "$backend" = nats ]; then
        QUEUE=(env "nats_url=nats://127.0.0.1:$NATS_PORT")
    else
        QUEUE=(env "queue_path=$WORK/queue.db")
    fi
    RUST_LOG=warn "${QUEUE[@]}" "${GATEWAY_BIN:-$BIN/tributary}" gateway --bind 127.0.0.1 --port "$GW_PORT" \
        --basic-auth=false --state-dir "$WORK/state-$GW_PORT" &
    GW_PID=$!
    wait_http "http://127.0.0.1:$GW_PORT/healthz"
    curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
        -d '{"service":"echo","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"}}'
    printf '\n== backend: %s ==\n' "$backend"
    wait_http "http://127.0.0.1:$GW_PORT/function/echo"
    # The echo function is the gateway's child process (the local provider's replica).
    FN_PID="$(pgrep -P "$GW_PID" | head -1)"
    [ -n "$FN_PID" ] || die "the echo function's process was not found"
    "$BIN/async_queue" "http://127.0.0.1:$GW_PORT" echo "$MESSAGES" "$CONCURRENCY" \
        "gateway=$GW_PID,function=$FN_PID,nats-server=$NATS_PID"
    kill "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
done
