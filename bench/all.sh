#!/usr/bin/env bash
# Runs the benches that print ratios against a baseline measured in the same run (proxy vs
# nginx and direct, async vs sync on both queue backends, Kafka vs raw consume and HTTP, batch
# sizes, NATS connector memory vs OpenFaaS's) ROUNDS times and prints each ratio's median and
# range over the rounds.
#
#   bash bench/all.sh                   # ROUNDS=3 by default; logs stay in the printed folder
#   BENCHES="proxy async" bash bench/all.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ROUNDS="${ROUNDS:-3}"
BENCHES="${BENCHES:-proxy async kafka batch rss}"
LOGS="$(mktemp -d)"
log "logs in $LOGS"
for round in $(seq "$ROUNDS"); do
    for bench in $BENCHES; do
        log "round $round of $ROUNDS: bench/$bench.sh"
        if ! bash "bench/$bench.sh" >"$LOGS/$bench.$round.log" 2>&1; then
            tail -20 "$LOGS/$bench.$round.log" >&2
            die "bench/$bench.sh failed in round $round (log: $LOGS/$bench.$round.log)"
        fi
    done
done
python3 bench/ratios.py "$LOGS"/*.log
