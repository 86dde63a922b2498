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
import json
import os
import shutil
import pathlib
import statistics
import sys
import tempfile
import threading
import time

from cluster import ROOT, Postgres, quantile, request, start_backend, start_gates, stop_gates

BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/idoctor-gate")
ROUNDS = int(os.environ.get("ROUNDS", "8"))
OUTAGE = float(os.environ.get("OUTAGE_SECS", "3"))
OUT = ROOT / "bench/results/outage.md"


def main():
    d = pathlib.Path(tempfile.mkdtemp(prefix="gate-outage-"))
    os.chmod(d, 0o755)
    procs, pg = [], None
    try:
        pg = Postgres(d)
        env = {"GATE_JWT_SECRET": "outage-bench-jwt-secret-0123456789abcdef0123456789",
               "GATE_API_KEY_PEPPER": "outage-bench-pepper-0123456789abcdef0123456789abcd"}
        procs, (a, b) = start_gates(BIN, d, ("a", "b"), pg.url, start_backend(), env)
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

            pg.stop()
            stopped = time.monotonic()
            # A metered request every 100 ms, each on its own connection, all through the outage.
            lat, threads = [], []

            def one(sent):
                status, _, ms, _ = request(a, "POST", "/process/p/20250101", {}, auth)
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
            pg.start()
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
            f"{statistics.median(later) if later else float('nan'):.1f} | {quantile(later, 0.99):.1f} |",
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
        stop_gates(procs)
        if pg:
            pg.discard()
        if os.environ.get("KEEP"):
            print(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
