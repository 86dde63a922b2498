#!/usr/bin/env python3
"""What two gates on one PostgreSQL do when the database goes away, measured.

    python3 bench/outage.py [gate binary]     (ROUNDS=8 OUTAGE_SECS=3 by default)

Starts a PostgreSQL cluster of its own (initdb / pg_ctl, as the `postgres` user when root), a
stand-in backend, and two gates on one database with the same secrets (bench/gate.toml, each
with one worker). Then, ROUNDS times: a key is cached on gate B; PostgreSQL is stopped for
OUTAGE_SECS; metered requests are sent to gate A one after another all through the outage; the
database is started again; the key is deleted on gate A as soon as it can be; gate B is polled
with it. It prints, and writes to bench/results/outage.md:
  - how long the request sent as the database stopped waited for its 503 (it finds the outage),
    and those sent a second or more into it (the breaker's), in ms;
  - how long after `pg_ctl start` returned metered requests were served again;
  - how long after the delete gate B refused the key, and whether it ever admitted it after.
Timings depend on this machine; the rules they show are in the README.
"""
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/idoctor-gate")
ROUNDS = int(os.environ.get("ROUNDS", "8"))
OUTAGE = float(os.environ.get("OUTAGE_SECS", "3"))
OUT = ROOT / "bench/results/outage.md"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pg_tool(name):
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not cands:
        sys.exit(f"{name} not found: install the PostgreSQL server binaries")
    return str(cands[-1])


ROOT_USER = os.geteuid() == 0


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if ROOT_USER else []) + args


class Backend(BaseHTTPRequestHandler):
    """Answers like iDoctor's /process: submitted, with a task id."""

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        body = json.dumps({"status": "submitted", "task_id": "main_p_20250101"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *a):
        pass


def request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    h = {"content-type": "application/json"} if data else {}
    h.update(headers or {})
    t = time.monotonic()
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        return r.status, payload, (time.monotonic() - t) * 1000
    except OSError:
        return 0, b"", (time.monotonic() - t) * 1000
    finally:
        c.close()


def main():
    d = pathlib.Path(tempfile.mkdtemp(prefix="gate-outage-"))
    os.chmod(d, 0o755)
    procs = []
    pgdata = d / "pg"
    pg_ctl = pg_tool("pg_ctl")
    pg_port = free_port()
    opts = f"-p {pg_port} -k {d} -c listen_addresses=127.0.0.1"

    def ctl(*args):
        subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), *args]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        if ROOT_USER:
            shutil.chown(d, "postgres")
        subprocess.run(as_postgres([pg_tool("initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres",
                                    "-N", "--no-instructions", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        ctl("-w", "-l", str(d / "pg.log"), "-o", opts, "start")
        db = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"

        backend_port = free_port()
        server = ThreadingHTTPServer(("127.0.0.1", backend_port), Backend)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        env = dict(os.environ, RUST_LOG="warn",
                   GATE_JWT_SECRET="outage-bench-jwt-secret-0123456789abcdef0123456789",
                   GATE_API_KEY_PEPPER="outage-bench-pepper-0123456789abcdef0123456789abcd")
        ports = []
        for name in ("a", "b"):
            port = free_port()
            (d / name).mkdir()
            cfg = (ROOT / "bench/gate.toml").read_text()
            for k, v in {"@GATE_PORT@": str(port), "@DATA@": str(d / name), "@DATABASE_URL@": db,
                         "@GATE_UPSTREAM_PORT@": str(backend_port)}.items():
                cfg = cfg.replace(k, v)
            (d / name / "gate.toml").write_text(cfg)
            procs.append(subprocess.Popen([BIN, "serve", "--config", str(d / name / "gate.toml")], env=env,
                                          stdout=open(d / name / "log", "w"), stderr=subprocess.STDOUT))
            ports.append(port)
        a, b = ports
        for port in ports:
            for _ in range(300):
                if request(port, "GET", "/healthz", timeout=1)[0] == 200:
                    break
                time.sleep(0.1)
        request(a, "POST", "/auth/register",
                {"email": "ops@example.com", "username": "ops", "password": "password-ops"})
        token = json.loads(request(a, "POST", "/auth/login",
                                   {"username_or_email": "ops", "password": "password-ops"})[1])["access_token"]
        auth = {"authorization": f"Bearer {token}"}

        first, later, recovery, revocation, admitted = [], [], [], [], 0
        for r in range(ROUNDS):
            created = json.loads(request(a, "POST", "/api-keys/", {"name": f"k{r}"}, auth)[1])
            key, kid = created["key"], created["id"]
            for _ in range(3):
                assert request(b, "GET", "/user/x", headers={"x-api-key": key})[0] == 200
            assert request(a, "POST", "/process/p/20250101", {}, auth)[0] == 200

            ctl("-w", "-m", "fast", "stop")
            stopped = time.monotonic()
            # A metered request every 100 ms, each on its own connection, all through the outage.
            lat, threads = [], []

            def one(sent):
                status, _, ms = request(a, "POST", "/process/p/20250101", {}, auth)
                lat.append((sent, status, ms))
                if os.environ.get("VERBOSE"):
                    h = request(a, "GET", "/healthz")
                    u = request(a, "GET", "/user/x", headers=auth)
                    print("  ", round(sent, 2), "healthz", h[0], round(h[2]), "user", u[0], round(u[2]))

            while time.monotonic() - stopped < OUTAGE:
                t = threading.Thread(target=one, args=(time.monotonic() - stopped,))
                t.start()
                threads.append(t)
                time.sleep(0.1)
            for t in threads:
                t.join()
            lat.sort()
            if os.environ.get("VERBOSE"):
                print([(round(sent, 2), status, round(ms)) for sent, status, ms in lat])
            first.append(lat[0][2])
            later.extend(ms for sent, status, ms in lat if sent >= 1.0 and status == 503)
            ctl("-w", "-l", str(d / "pg.log"), "-o", opts, "start")
            started = time.monotonic()
            while request(a, "POST", "/process/p/20250101", {}, auth)[0] != 200:
                time.sleep(0.01)
            recovery.append((time.monotonic() - started) * 1000)
            while request(a, "DELETE", f"/api-keys/{kid}", headers=auth)[0] != 204:
                time.sleep(0.01)
            deleted = time.monotonic()
            while True:
                status = request(b, "GET", "/user/x", headers={"x-api-key": key})[0]
                if status == 200:
                    admitted += 1
                if status == 401:
                    revocation.append((time.monotonic() - deleted) * 1000)
                    break
                if time.monotonic() - deleted > 15:
                    revocation.append(float("inf"))
                    break
                time.sleep(0.005)

        def q(xs, p):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

        lines = [
            "# Two gates on one PostgreSQL, through outages",
            "",
            f"{ROUNDS} rounds of a {OUTAGE:g} s outage (`pg_ctl stop -m fast`, then `start`), "
            f"measured by `python3 bench/outage.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            "| what | median | p99 / max |",
            "|---|---|---|",
            f"| the metered request sent as the database stopped: its 503 after, ms | {statistics.median(first):.0f} | {max(first):.0f} |",
            f"| metered requests sent 1 s or more into the outage: their 503 after, ms ({len(later)} requests) | "
            f"{statistics.median(later) if later else float('nan'):.1f} | {q(later, 0.99):.1f} |",
            f"| metered requests served again, ms after `pg_ctl start` returned | {statistics.median(recovery):.0f} | {max(recovery):.0f} |",
            f"| key deleted on gate A right after the restart: refused by gate B after, ms | "
            f"{statistics.median(revocation):.0f} | {max(revocation):.0f} |",
            "",
            f"The deleted key was admitted by gate B after its deletion {admitted} times.",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.environ.get("KEEP"):
            print(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
