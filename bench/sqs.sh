#!/usr/bin/env bash
# SQS connector benchmark on a moto server: messages/s from a queue to a mode=http echo function
# (deleted after delivery) against the raw receive+delete rate of the same server, in one run.
# moto slows down as queues grow, so both queues hold the same number of messages.
#
#   bash bench/sqs.sh          # MESSAGES=300 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

MESSAGES="${MESSAGES:-300}"
bash scripts/setup
log "building release binaries"
cargo build --release -q --bin tributary --bin tributary-sqs-connector --bin sqs_throughput
BIN="$CARGO_TARGET_DIR/release"
use_workdir

SQS_PORT="$(free_port)"
python3 -m moto.server -H 127.0.0.1 -p "$SQS_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SQS_PORT/"

start_gateway_with_echo
"$BIN/sqs_throughput" "http://127.0.0.1:$SQS_PORT" "http://127.0.0.1:$GW_PORT" "$BIN/tributary-sqs-connector" "$MESSAGES"
