#!/usr/bin/env bash
# SDK dispatch benchmark: an in-memory source through the connector runtime to the built-in
# mode=http echo function via the gateway, against the same HTTP client calling the gateway
# directly at the same concurrency, in one process (bench/src/bin/dispatch.rs). Prints both
# rates and the ratio.
#
#   bash bench/dispatch.sh            # MESSAGES=20000 CONCURRENCY=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MESSAGES="${MESSAGES:-20000}"
CONCURRENCY="${CONCURRENCY:-64}"
need_apt curl curl

log "building release binaries"
cargo build --release -q --bin tributary --bin dispatch
BIN="$CARGO_TARGET_DIR/release"

use_workdir
GW_PORT="$(free_port)"
# Loopback only and no credentials: the benchmark measures the invocation path.
RUST_LOG=warn "$BIN/tributary" gateway --bind 127.0.0.1 --port "$GW_PORT" \
    --basic-auth=false --state-dir "$WORK/state" &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_PORT/healthz"
curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
    -d '{"service":"echo","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"},"annotations":{"topic":"bench"}}'
"$BIN/dispatch" "http://127.0.0.1:$GW_PORT" echo "$MESSAGES" "$CONCURRENCY"
