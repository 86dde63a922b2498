#!/usr/bin/env python3
"""A backend killed mid-transfer, over and over: does the gate leak memory or connections?

    python3 bench/faults.py [gate binary]       (FAULT_ROUNDS=200 by default)

tests/it/faults.rs proves once that a backend killed 16 MB into a 200 MB upload or download
leaves the client a clean answer, the charge right and no connection open. This repeats it:
one gate (release build, SQLite, bench/gate.toml plus a metered upload route) in front of
tests/it/common/dying_backend.py, restarted on the same port after each death. Each round
streams a 200 MB metered upload (the backend dies 16 MB in) and a 200 MB download (it dies
16 MB out). It prints, and writes to bench/results/faults.md: the answers seen (every upload
502, every download cut short), runs charged (must be 0: every broken upload refunded), the
connections left open on either side of the gate afterwards (must be 0), and the gate's RSS
after the warm-up rounds and at the end (flat: no growth per fault).
"""
import http.client
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from cluster import ROOT, free_port, request, rss_mib, start_gates, stop_gates

BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/idoctor-gate")
ROUNDS = int(os.environ.get("FAULT_ROUNDS", "200"))
WARMUP = 5
OUT = ROOT / "bench/results/faults.md"
MIB = 1 << 20
KILL_AFTER = 16 * MIB
BOUNDARY = "----faultB0undary"

UPLOAD_ROUTE = """
[[route]]
path = "/upload_dicom_zip"
methods = ["POST"]
access = "user"
multipart = true
max_body = "500MB"
[route.meter]
quota = "api_calls_full_process"
cost = 1

[[route]]
path = "/download"
methods = ["GET"]
access = "user"
"""


def start_backend(port):
    """The dying backend on `port`, once it listens."""
    p = subprocess.Popen([sys.executable, str(ROOT / "tests/it/common/dying_backend.py"),
                          str(KILL_AFTER), str(port)], stdout=subprocess.PIPE)
    assert int(p.stdout.readline()) == port
    return p


def upload_chunks():
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"patient_name\"\r\n\r\nzhang\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"study_date\"\r\n\r\n20250101\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ct.zip\"\r\n"
           "Content-Type: application/zip\r\n\r\n").encode()
    block = b"\x5a" * MIB
    for _ in range(200):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(port, token):
    """The status the gate answered (0: cut off without an answer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.putrequest("POST", "/upload_dicom_zip")
        c.putheader("authorization", f"Bearer {token}")
        c.putheader("content-type", f"multipart/form-data; boundary={BOUNDARY}")
        c.putheader("transfer-encoding", "chunked")
        c.endheaders()
        try:
            for chunk in upload_chunks():
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
        except OSError:
            pass  # the gate answered early and closed: read its answer
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        c.close()


def download(port, token):
    """(status, bytes received, whether the reply ended early with an error)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    got = 0
    try:
        c.request("GET", "/download", headers={"authorization": f"Bearer {token}"})
        r = c.getresponse()
        try:
            while True:
                piece = r.read(MIB)
                if not piece:
                    break
                got += len(piece)
            return r.status, got, False
        except (OSError, http.client.IncompleteRead):
            return r.status, got, True
    finally:
        c.close()


def connections(port):
    """TCP connections (not listeners, not time-wait) with `port` at either end."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, state = (int(cols[1].rsplit(":", 1)[1], 16),
                                    int(cols[2].rsplit(":", 1)[1], 16), cols[3])
            if port in (local, remote) and state not in ("0A", "06"):
                n += 1
    return n


def settle(port, limit=5.0):
    deadline = time.monotonic() + limit
    while connections(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return connections(port)


def main():
    if not pathlib.Path(BIN).exists():
        sys.exit(f"{BIN} not found: cargo build --release first")
    d = pathlib.Path(tempfile.mkdtemp(prefix="gate-faults-"))
    backend_port = free_port()
    procs, backend = [], None
    env = {"GATE_JWT_SECRET": "faults-bench-jwt-secret-0123456789abcdef0123456789ab",
           "GATE_API_KEY_PEPPER": "faults-bench-pepper-0123456789abcdef0123456789abcde"}
    try:
        backend = start_backend(backend_port)
        procs, (gate,) = start_gates(BIN, d, ("a",), f"sqlite://{d}/a/gate.db", backend_port, env,
                                     UPLOAD_ROUTE)
        request(gate, "POST", "/auth/register",
                {"email": "f@example.com", "username": "faults", "password": "password-faults"})
        token = json.loads(request(gate, "POST", "/auth/login",
                                   {"username_or_email": "faults", "password": "password-faults"})[1])[
            "access_token"]
        uploads, downloads, rss = {}, {"cut": 0, "whole": 0}, []
        t0 = time.monotonic()
        for r in range(ROUNDS):
            for transfer in ("upload", "download"):
                if transfer == "upload":
                    status = upload(gate, token)
                    uploads[status] = uploads.get(status, 0) + 1
                else:
                    status, got, cut = download(gate, token)
                    downloads["cut" if cut or got < 200 * MIB else "whole"] += 1
                backend.wait(timeout=30)
                backend = start_backend(backend_port)
            if r + 1 == WARMUP:
                rss.append(rss_mib(procs[0].pid))
        secs = time.monotonic() - t0
        rss.append(rss_mib(procs[0].pid))
        left_backend, left_client = settle(backend_port), settle(gate)
        me = json.loads(request(gate, "GET", "/admin/quotas/users/me", headers={
            "authorization": f"Bearer {token}"})[1])
        charged = next(q["used"] for q in me["quotas"] if q["type_key"] == "api_calls_full_process")
        # A leak of the buffers of a broken transfer would show as megabytes per round.
        ok = (uploads == {502: ROUNDS} and downloads["whole"] == 0 and charged == 0
              and left_backend == 0 and left_client == 0 and rss[1] - rss[0] < 16)
        lines = [
            "# Faults: a backend killed mid-transfer, repeated (bench/faults.py)",
            "",
            f"{ROUNDS} rounds in {secs:.0f} s: each a 200 MB metered upload and a 200 MB download "
            f"through one gate (release, SQLite), the backend killed 16 MB into each and restarted.",
            "",
            "| what | seen | must be |",
            "|---|---|---|",
            f"| upload answers | {', '.join(f'{n} x {s}' for s, n in sorted(uploads.items()))} "
            f"| {ROUNDS} x 502 |",
            f"| downloads cut short / whole | {downloads['cut']} / {downloads['whole']} "
            f"| {ROUNDS} / 0 |",
            f"| runs charged | {charged} | 0 |",
            f"| connections left, backend side / client side | {left_backend} / {left_client} "
            f"| 0 / 0 |",
            f"| gate RSS after {WARMUP} rounds / after {ROUNDS} | {rss[0]:.1f} / {rss[1]:.1f} MiB "
            f"| flat |",
            "",
            "PASS" if ok else "FAIL",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        OUT.write_text(text)
        sys.exit(0 if ok else 1)
    finally:
        stop_gates(procs)
        if backend:
            backend.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
