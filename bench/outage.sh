#!/usr/bin/env bash
# Outage: the only target of a route returns 503 to every request for DURATION while
# oha sends RATE requests/s. The circuit breaker is set so high that it never opens, so
# the retry budget alone limits the extra traffic. It reports the requests sent, the
# attempts the simulated provider received and their ratio, which the retry budget
# (budget_ratio = 0.2, budget_window = 10s, budget_min_per_second = 1) keeps near 1.2.
#
# Settings (environment): DURATION (default 30s), RATE (default 200). oha is installed
# into .tools/ on first use. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-30s}
rate=${RATE:-200}
source bench/common.sh
prepare_run outage

cat >"$work/faults.toml" <<'TOML'
[[faults]]
kind = "status"
status = 503
TOML
RUST_LOG=warn "$adpa" sim --listen 127.0.0.1:0 --name down --faults "$work/faults.toml" >"$work/sim.out" 2>&1 &
pids+=($!)
upstream=$(wait_for_line "$work/sim.out" base_url | sed -E 's/.*base_url = "([^"]+)".*/\1/')
stats=$(wait_for_line "$work/sim.out" "stats:" | sed -E 's/.*curl -s (http[^ ]+).*/\1/')

cat >"$work/gateway.toml" <<TOML
[providers.down]
kind = "openai"
base_url = "$upstream"
models = ["mock-model"]

[routes.chat]
primary = "down"

[routes.chat.retry]
max_retries = 3
base_delay = "10ms"
budget_ratio = 0.2
budget_window = "10s"
budget_min_per_second = 1.0

[routes.chat.circuit_breaker]
failure_threshold = 100000000
TOML
RUST_LOG=error "$adpa" serve --config "$work/gateway.toml" --listen 127.0.0.1:0 >"$work/gateway.out" 2>&1 &
pids+=($!)
gateway=$(wait_for_line "$work/gateway.out" "listening on" | sed -E 's/.*(http:[^ ]+).*/\1/')

echo "sending ${rate}/s for $duration to a route whose only target is down" >&2
"$oha" --no-tui --output-format json -z "$duration" -q "$rate" -c 50 -m POST \
    -H 'content-type: application/json' \
    -d '{"model":"chat","messages":[{"role":"user","content":"Hello"}]}' \
    "$gateway/v1/chat/completions" >"$work/oha.json"
curl -s "$stats" >"$work/stats.json"

python3 - "$work" <<'PY'
import json
import sys

work = sys.argv[1]
with open(f"{work}/oha.json") as f:
    codes = json.load(f).get("statusCodeDistribution", {})
with open(f"{work}/stats.json") as f:
    attempts = json.load(f)["requests"]
answered = sum(codes.values())
print(f"requests answered: {answered} ({codes})")
print(f"upstream attempts: {attempts}")
print(f"attempts per request: {attempts / max(answered, 1):.3f} (without a budget: 4.0)")
print(f"reports: {work}")
PY
