#!/usr/bin/env bash
# The project's one test command: builds the floe binary, runs every Rust test (unit and
# end-to-end; the e2e tests start target/debug/floe and moto_server), then the opensearch-py
# client test. Needs cargo (cargo-nextest if available) and python3 with pip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Test dependencies (installed once; a fresh machine has Python 3 and pip): moto's S3
# server for the end-to-end tests, opensearch-py for the client test.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PATH="$PATH:$(python3 -m site --user-base)/bin"
if ! command -v moto_server >/dev/null || ! python3 -c 'import opensearchpy' 2>/dev/null; then
  echo "==> pip install moto[server] opensearch-py"
  # Debian's system Python refuses plain pip installs (PEP 668); retry with the override.
  python3 -m pip install -q 'moto[server]' opensearch-py \
    || python3 -m pip install -q --break-system-packages 'moto[server]' opensearch-py
fi
command -v moto_server >/dev/null || { echo "moto_server not on PATH after pip install" >&2; exit 1; }

echo "==> cargo build --bin floe"
cargo build --bin floe

if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast
else
  echo "==> cargo test --workspace (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast
fi

echo "==> tests/python/run.sh (opensearch-py)"
bash tests/python/run.sh
