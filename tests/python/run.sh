#!/usr/bin/env bash
# Starts `floe standalone` (local backend in a temp dir, free port on 127.0.0.1), waits until it
# answers, runs test_opensearch_py.py against it, kills Floe, exits with the script's status.
# Needs: the floe binary (FLOE_BIN, default target/debug/floe) and `pip install opensearch-py`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${FLOE_BIN:-$root/target/debug/floe}"
if [[ ! -x "$bin" ]]; then
  echo "$bin not found: build it first: cargo build --bin floe" >&2
  exit 1
fi
python3 -c 'import opensearchpy' 2>/dev/null || { echo "opensearch-py missing: pip install opensearch-py" >&2; exit 1; }

tmp="$(mktemp -d)"
floe_pid=""
cleanup() {
  if [[ -n "$floe_pid" ]]; then
    kill -9 "$floe_pid" 2>/dev/null || true
    wait "$floe_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
mkdir -p "$tmp/data" "$tmp/cache"
export FLOE_ADMIN_PASSWORD="py-admin-password-1"
FLOE_INITIAL_ADMIN_PASSWORD="$FLOE_ADMIN_PASSWORD" RUST_LOG="${RUST_LOG:-info}" "$bin" standalone --http-addr "127.0.0.1:$port" \
  --data-dir "$tmp/data" --cache-dir "$tmp/cache" >"$tmp/floe.log" 2>&1 &
floe_pid=$!

# Wait (at most 60 s) for the security health check (no credentials needed) to answer 200.
if ! python3 - "$port" "$floe_pid" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("floe exited during startup")
    try:
        if opener.open("http://127.0.0.1:%s/_plugins/_security/health" % port, timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit("floe did not answer within 60 s")
PY
then
  echo "----- floe log -----" >&2; tail -n 100 "$tmp/floe.log" >&2
  exit 1
fi

status=0
FLOE_PORT="$port" python3 "$here/test_opensearch_py.py" || status=$?
if [[ $status -ne 0 ]]; then
  echo "----- floe log (last 100 lines) -----" >&2; tail -n 100 "$tmp/floe.log" >&2
fi
exit "$status"
