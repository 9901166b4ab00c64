# Shared set-up of the benchmark scripts; source it from the repository root.
#
# After `prepare_run NAME`:
# - $oha is oha 1.16.0, installed into .tools/ on first use;
# - $adpa is the release build of the adpa command;
# - $work is a fresh folder bench/results/NAME-TIME for the run's reports;
# - processes whose PIDs are added to the `pids` array are stopped on exit.

oha_version=1.16.0
oha=.tools/bin/oha
adpa=target/release/adpa
pids=()

prepare_run() {
    if [ ! -x "$oha" ] || ! "$oha" --version | grep -q "$oha_version"; then
        echo "installing oha $oha_version into .tools/" >&2
        cargo install --quiet --locked --root .tools "oha@$oha_version"
    fi
    cargo build --quiet --release -p adpa-cli

    work=bench/results/$1-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$work"
    trap stop_started EXIT
}

stop_started() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# Waits up to 10 s for a line containing $2 in file $1 and prints it.
wait_for_line() {
    for _ in $(seq 100); do
        if grep -q "$2" "$1" 2>/dev/null; then grep "$2" "$1" | head -n 1; return 0; fi
        sleep 0.1
    done
    echo "error: no \"$2\" in $1:" >&2
    cat "$1" >&2
    return 1
}
