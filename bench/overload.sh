#!/usr/bin/env bash
# Overload: a route with max_concurrent = 100 and queue_size = 50 in front of a
# simulated provider with 100 ms latency (capacity about 1,000 requests/s) receives 3×
# its capacity for DURATION, half of it high priority and half low priority, with load
# shedding by priority above max_load = 0.8.
#
# It reports, per priority: requests sent, succeeded (200), shed or rejected (503), other
# errors, and latency percentiles of the successful requests. The gateway runs alone on
# CPU 0; the provider and both oha processes share CPU 1.
#
# Settings (environment): DURATION (default 20s), RATE per priority (default 1500).
# oha is installed into .tools/ on first use. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-20s}
rate=${RATE:-1500}
source bench/common.sh
prepare_run overload

cat >"$work/faults.toml" <<'TOML'
[latency]
fixed = "100ms"
TOML
RUST_LOG=warn taskset -c 1 "$adpa" sim --listen 127.0.0.1:0 --name mock --faults "$work/faults.toml" >"$work/sim.out" 2>&1 &
pids+=($!)
upstream=$(wait_for_line "$work/sim.out" base_url | sed -E 's/.*base_url = "([^"]+)".*/\1/')

cat >"$work/gateway.toml" <<TOML
[providers.mock]
kind = "openai"
base_url = "$upstream"
models = ["mock-model"]

[routes.chat]
primary = "mock"

[routes.chat.concurrency]
max_concurrent = 100
queue_size = 50
queue_timeout = "2s"

[routes.chat.load_shedding]
max_load = 0.8
shed_strategy = "priority"
TOML
RUST_LOG=warn taskset -c 0 "$adpa" serve --config "$work/gateway.toml" --listen 127.0.0.1:0 >"$work/gateway.out" 2>&1 &
pids+=($!)
gateway=$(wait_for_line "$work/gateway.out" "listening on" | sed -E 's/.*(http:[^ ]+).*/\1/')

body='{"model":"chat","messages":[{"role":"user","content":"Say hello."}]}'
load() {
    taskset -c 1 "$oha" --no-tui --output-format json -z "$duration" -q "$rate" -c 400 \
        --latency-correction --stats-success-breakdown -m POST -H 'content-type: application/json' \
        -H "x-adpa-priority: $1" -d "$body" "$gateway/v1/chat/completions" >"$work/$1.json"
}

echo "offering ${rate}/s high and ${rate}/s low priority for $duration" >&2
load high &
high_pid=$!
load low &
low_pid=$!
wait "$high_pid" "$low_pid"

python3 - "$work" <<'PY'
import json
import sys

work = sys.argv[1]
print(f"{'priority':>8} | {'sent':>6} | {'200':>6} | {'503':>6} | {'other':>5} | {'ok p50 ms':>9} | {'ok p99 ms':>9} | {'503 p99 ms':>10}")
print("-" * 82)
for priority in ("high", "low"):
    with open(f"{work}/{priority}.json") as f:
        data = json.load(f)
    codes = data.get("statusCodeDistribution", {})
    errors = {k: v for k, v in data.get("errorDistribution", {}).items() if "aborted due to deadline" not in k}
    ok = codes.get("200", 0)
    shed = codes.get("503", 0)
    other = sum(n for code, n in codes.items() if code not in ("200", "503")) + sum(errors.values())
    sent = sum(codes.values()) + sum(errors.values())
    # Latency of the successful requests, and separately of the rejections, which must
    # come back at once rather than after a wait.
    good = data.get("latencyPercentilesSuccessful") or {}
    bad = data.get("latencyPercentilesNotSuccessful") or {}
    ms = lambda table, key: (table.get(key) or 0.0) * 1000
    print(f"{priority:>8} | {sent:>6} | {ok:>6} | {shed:>6} | {other:>5} | {ms(good, 'p50'):>9.1f} | {ms(good, 'p99'):>9.1f} | {ms(bad, 'p99'):>10.1f}")
    if errors:
        print(f"         errors: {errors}")
print(f"reports: {work}")
PY
