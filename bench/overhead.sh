#!/usr/bin/env bash
# Measures the latency the gateway adds to non-streaming chat completions.
#
# A simulated provider (no faults, no latency) is the upstream. oha sends requests at a
# fixed rate, first straight to the upstream, then through the gateway, at each rate in
# RATES. The gateway runs alone on CPU 0; oha and the upstream share CPU 1. The added
# latency is the gateway's percentile minus the direct percentile at the same rate.
#
# Settings (environment): RATES (default "500 2000 5000"), DURATION per run (default
# 10s), CONNECTIONS (default 64). oha is installed into .tools/ on first use. oha's JSON
# reports are kept in bench/results/overhead-TIME/.
# All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

rates=${RATES:-"500 2000 5000"}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-64}
if [ "$(nproc)" -lt 2 ]; then
    echo "error: this benchmark pins the gateway and the load generator to separate CPUs; it needs 2" >&2
    exit 1
fi

source bench/common.sh
prepare_run overhead

RUST_LOG=warn taskset -c 1 "$adpa" sim --listen 127.0.0.1:0 --name mock >"$work/sim.out" 2>&1 &
pids+=($!)
upstream=$(wait_for_line "$work/sim.out" base_url | sed -E 's/.*base_url = "([^"]+)".*/\1/')

cat >"$work/gateway.toml" <<TOML
[providers.mock]
kind = "openai"
base_url = "$upstream"
models = ["mock-model"]

[routes.chat]
primary = "mock"
TOML
RUST_LOG=warn taskset -c 0 "$adpa" serve --config "$work/gateway.toml" --listen 127.0.0.1:0 >"$work/gateway.out" 2>&1 &
pids+=($!)
gateway=$(wait_for_line "$work/gateway.out" "listening on" | sed -E 's/.*(http:[^ ]+).*/\1/')

body='{"model":"chat","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'

# Runs oha against URL $1 at rate $2 and writes its JSON summary to $3.
load() {
    taskset -c 1 "$oha" --no-tui --output-format json -z "$duration" -q "$2" -c "$connections" \
        --latency-correction -m POST -H 'content-type: application/json' -d "$body" \
        "$1/chat/completions" >"$3"
}

echo "warming up" >&2
load "$upstream" 500 "$work/warmup-direct.json"
load "$gateway/v1" 500 "$work/warmup-gateway.json"

for rate in $rates; do
    echo "measuring at $rate requests/s for $duration" >&2
    load "$upstream" "$rate" "$work/direct-$rate.json"
    load "$gateway/v1" "$rate" "$work/gateway-$rate.json"
done

python3 - "$work" $rates <<'PY'
import json
import sys

work, rates = sys.argv[1], sys.argv[2:]


def read(path):
    with open(path) as f:
        data = json.load(f)
    summary = data["summary"]
    latency = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    # Requests still in flight when a run's duration ends are aborted by oha and
    # listed as errors. They show nothing about the server, so they are not counted.
    errors = sum(
        n for kind, n in data.get("errorDistribution", {}).items() if "aborted due to deadline" not in kind
    )
    non_200 = sum(n for code, n in codes.items() if code != "200")
    return {
        "rate": summary["requestsPerSec"],
        "p50": latency["p50"] * 1000,
        "p99": latency["p99"] * 1000,
        "errors": errors + non_200,
        "total": sum(codes.values()) + errors,
    }


header = f"{'target rate':>11} | {'path':>7} | {'achieved/s':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6}"
print(header)
print("-" * len(header))
added = []
for rate in rates:
    direct = read(f"{work}/direct-{rate}.json")
    gateway = read(f"{work}/gateway-{rate}.json")
    for name, run in (("direct", direct), ("gateway", gateway)):
        print(f"{rate:>11} | {name:>7} | {run['rate']:>10.0f} | {run['p50']:>7.3f} | {run['p99']:>7.3f} | {run['errors']:>6}")
    added.append((rate, gateway["p50"] - direct["p50"], gateway["p99"] - direct["p99"]))
print()
print(f"reports: {work}")
print(f"{'target rate':>11} | {'added p50 ms':>12} | {'added p99 ms':>12}")
for rate, p50, p99 in added:
    print(f"{rate:>11} | {p50:>12.3f} | {p99:>12.3f}")
PY
