"""What bench/outage.py and bench/soak.py share (standard library only): a PostgreSQL cluster
of their own (initdb / pg_ctl, as the `postgres` user when root), a stand-in backend that
answers like iDoctor's /process, gates started from bench/gate.toml on one database, and plain
HTTP requests that report their status instead of raising.
"""
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROOT_USER = os.geteuid() == 0


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


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if ROOT_USER else []) + args


class Postgres:
    """A throwaway cluster in `d/pg`, listening on loopback."""

    def __init__(self, d):
        self.d = d
        self.data = d / "pg"
        self.port = free_port()
        self.pg_ctl = pg_tool("pg_ctl")
        self.opts = f"-p {self.port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if ROOT_USER:
            shutil.chown(d, "postgres")
        subprocess.run(as_postgres([pg_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                    "-N", "--no-instructions", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.start()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args):
        subprocess.run(as_postgres([self.pg_ctl, "-D", str(self.data), *args]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        self.ctl("-w", "-l", str(self.d / "pg.log"), "-o", self.opts, "start")

    def stop(self):
        self.ctl("-w", "-m", "fast", "stop")

    def sql(self, query):
        """Rows of `query` as lists of text, through psql."""
        out = subprocess.run(as_postgres([pg_tool("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                                          "postgres", "-At", "-F", "\t", "-c", query]),
                             check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def discard(self):
        subprocess.run(as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def start_backend():
    """The stand-in backend on a port of its own, served by threads of this process."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Backend)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


def start_gates(binary, d, names, db, backend_port, env, extra=""):
    """One gate per name on database `db`, from bench/gate.toml plus `extra`; their
    processes and ports, once each answers /healthz."""
    procs, ports = [], []
    for name in names:
        port = free_port()
        (d / name).mkdir()
        cfg = (ROOT / "bench/gate.toml").read_text()
        for k, v in {"@GATE_PORT@": str(port), "@DATA@": str(d / name), "@DATABASE_URL@": db,
                     "@GATE_UPSTREAM_PORT@": str(backend_port)}.items():
            cfg = cfg.replace(k, v)
        (d / name / "gate.toml").write_text(cfg + extra)
        procs.append(subprocess.Popen([binary, "serve", "--config", str(d / name / "gate.toml")],
                                      env=dict(os.environ, RUST_LOG="warn", **env),
                                      stdout=open(d / name / "log", "w"), stderr=subprocess.STDOUT))
        ports.append(port)
    for port in ports:
        for _ in range(300):
            if request(port, "GET", "/healthz", timeout=1)[0] == 200:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"the gate on {port} did not start: see {d}")
    return procs, ports


def stop_gates(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def request(port, method, path, body=None, headers=None, timeout=30):
    """(status, body bytes, ms, response headers); status 0 when the connection failed."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    h = {"content-type": "application/json"} if data else {}
    h.update(headers or {})
    t = time.monotonic()
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        return r.status, payload, (time.monotonic() - t) * 1000, dict(r.getheaders())
    except OSError:
        return 0, b"", (time.monotonic() - t) * 1000, {}
    finally:
        c.close()


def rss_mib(pid):
    """Resident memory of process `pid`, MiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def quantile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
