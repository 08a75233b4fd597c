#!/usr/bin/env bash
# Kafka connector benchmark: messages/s from a 3-partition topic on the tansu broker to a
# mode=http echo function, against (a) the raw rdkafka consume rate of the same topic and
# (b) HTTP load on the same function through the gateway, in one run; prints the ratios.
#
#   bash bench/kafka.sh        # MESSAGES=150000 CONCURRENCY=64 ORDER=none by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

MESSAGES="${MESSAGES:-150000}"
CONCURRENCY="${CONCURRENCY:-64}"
ORDER="${ORDER:-none}"
bash scripts/setup

log "building release binaries"
cargo build --release -q --bin tributary --bin tributary-kafka-connector --bin kafka_throughput
BIN="$CARGO_TARGET_DIR/release"
use_workdir

start_tansu bench 3
TANSU_PID="${PIDS[-1]}"

start_gateway_with_echo
# CONNECTOR_BIN: another build of the connector to compare (the gateway stays this build).
"$BIN/kafka_throughput" "127.0.0.1:$KAFKA_PORT" "http://127.0.0.1:$GW_PORT" echo "${CONNECTOR_BIN:-$BIN/tributary-kafka-connector}" \
    "$MESSAGES" "$CONCURRENCY" "$ORDER" "$TANSU_PID"
