#!/usr/bin/env bash
# The project's one test command: builds the floe binary, runs every Rust test (unit and
# end-to-end; the e2e tests start target/debug/floe and moto_server), then the opensearch-py
# client test. Needs: cargo (cargo-nextest if available), python3 with `moto[server]` and
# opensearch-py (see .ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v moto_server >/dev/null || { echo "moto_server not on PATH: pip install 'moto[server]'" >&2; exit 1; }

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
