# What security costs per request: the first request of a credential (one argon2id
# verification) and the cached ones after it, against the same Floe with security off.
# Usage: cargo build --release --bin floe && python3 bench/scripts/auth_overhead.py
import base64, http.client, json, os, statistics, subprocess, sys, tempfile, time
bin = os.environ.get("FLOE_BIN", os.path.join(os.path.dirname(__file__), "../../target/release/floe"))
def run(security, port):
    d = tempfile.mkdtemp()
    env = dict(os.environ, FLOE_INITIAL_ADMIN_PASSWORD="bench-admin-pw", RUST_LOG="warn")
    args = [bin, "standalone", "--http-addr", f"127.0.0.1:{port}", "--data-dir", d + "/data", "--cache-dir", d + "/cache", "--security-enabled", "true" if security else "false"]
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/_plugins/_security/health"); c.getresponse().read(); break
            except Exception: time.sleep(0.1)
        auth = {"authorization": "Basic " + base64.b64encode(b"admin:bench-admin-pw").decode()}
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t = time.perf_counter(); c.request("GET", "/_cluster/health", headers=auth); r = c.getresponse(); r.read(); first = (time.perf_counter() - t) * 1000
        assert r.status == 200, r.status
        lat = []
        for _ in range(2000):
            t = time.perf_counter(); c.request("GET", "/_cluster/health", headers=auth); r = c.getresponse(); r.read(); lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        return first, statistics.median(lat), lat[int(len(lat) * 0.99)]
    finally:
        p.kill(); p.wait()
on = run(True, 19411); off = run(False, 19412)
print("security on : first request %.1f ms (argon2 verify), then p50 %.0f us p99 %.0f us" % on)
print("security off: first request %.1f ms, then p50 %.0f us p99 %.0f us" % off)
print("cached-auth overhead per request (p50): %.0f us" % (on[1] - off[1]))
