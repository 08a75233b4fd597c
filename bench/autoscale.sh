#!/usr/bin/env bash
# Autoscaler benchmark in one run: reaction time of the capacity autoscaler (load start ->
# replicas decided and available) and a cold call at zero replicas against warm calls, on the
# local provider with the echo function (release build, default autoscaler_interval unless set).
#
#   bash bench/autoscale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_apt curl curl
log "building release binaries"
cargo build --release -q --bin tributary --bin autoscale
BIN="$CARGO_TARGET_DIR/release"
use_workdir
cat >"$WORK/stack.yml" <<'STACK'
functions:
  cap:
    fprocess: tributary echo
    environment: {mode: http}
    labels:
      com.openfaas.scale.type: capacity
      com.openfaas.scale.target: "5"
      com.openfaas.scale.target-proportion: "1.0"
  cold:
    fprocess: tributary echo
    environment: {mode: http}
    labels:
      com.openfaas.scale.zero: "true"
      com.openfaas.scale.zero-duration: 2s
STACK
PORT="$(free_port)"
PATH="$BIN:$PATH" RUST_LOG=warn "$BIN/tributary" up -f "$WORK/stack.yml" --no-cron --bind 127.0.0.1 \
    --port "$PORT" --basic-auth=false --state-dir "$WORK/state" &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/healthz"
printf 'autoscaler_interval=%s\n' "${autoscaler_interval:-2s (default)}"
"$BIN/autoscale" "http://127.0.0.1:$PORT"
