#!/usr/bin/env bash
# Batch benchmark: messages/s from a 3-partition topic on the tansu broker to one function with
# com.tributary.batch.size 1, 10 and 100 in one run, printed as ratios to batch size 1.
#
#   bash bench/batch.sh        # MESSAGES=20000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

MESSAGES="${MESSAGES:-20000}"
bash scripts/setup

log "building release binaries"
cargo build --release -q --bin tributary --bin tributary-kafka-connector --bin kafka_batches
BIN="$CARGO_TARGET_DIR/release"
use_workdir

start_tansu bench 3

start_gateway_with_echo
"$BIN/kafka_batches" "127.0.0.1:$KAFKA_PORT" "http://127.0.0.1:$GW_PORT" echo "$BIN/tributary-kafka-connector" "$MESSAGES"
