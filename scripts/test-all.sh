#!/usr/bin/env bash
# Runs the whole test suite, including the tests that drive the gateway with the
# official OpenAI Python SDK. The SDK and its dependencies are installed, at the
# versions pinned in crates/testkit/tests/sdk/requirements.txt, into .venv-sdk.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-sdk
requirements=crates/testkit/tests/sdk/requirements.txt
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null; then
    echo "error: $python not found; install Python 3.9 or later, or set PYTHON" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    echo "creating $venv with the pinned OpenAI SDK" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
fi

export ADPA_TEST_PYTHON="$PWD/$venv/bin/python"
# The SDK tests are marked ignored so that a plain `cargo test` lists them as skipped;
# here they run with the rest.
exec cargo test --workspace --locked "$@" -- --include-ignored
