#!/usr/bin/env python3
"""Two gates on one PostgreSQL, soaked with mixed load; what must stay exact, counted.

    python3 bench/soak.py [gate binary]       (SOAK_SECS=300 by default)

Starts a PostgreSQL cluster of its own, a stand-in backend and two gates on one database with
the same secrets (bench/gate.toml plus two paid plans), then for SOAK_SECS drives, at once:
  - metered calls near the limit: 6 users, each limited to 150 runs (raised by 50 every 60 s,
    an operator's plan change), calling /process from both gates until refused;
  - JWT and API-key traffic on both gates;
  - sign-ins, alternating between the gates;
  - key revocations: a key is created on one gate, used (and cached) on the other, deleted on
    the first, and the other is polled until it refuses it; the time is recorded;
  - user disables: a superuser disables a user on one gate and the other is polled with the
    user's token until it refuses it; then both gates must refuse it on every further try,
    and the user is enabled again;
  - plan changes by payment: every second a new clinic buys one paid plan from the free one,
    renews it and upgrades to the dearer one, each paid through the sandbox checkout on the
    other gate; the plan it ends on is read back.
Then it stops the gates (which flush their batched commits) and counts in the database:
overspend (committed runs past a limit, must be 0), requests answered 200 without exactly one
committed usage row and committed rows without a 200 answer (0 and 0), balances that differ
from their rows (0), payments a payer saw complete that are not stored completed (0); the
revocation and disable times (p50 / p99 / max; the goal is max <= 1 s); and each gate's RSS
at the start and the end. Writes bench/results/soak.md.
"""
import json
import os
import pathlib
import random
import shutil
import sys
import tempfile
import threading
import time

from cluster import ROOT, Postgres, quantile, request, rss_mib, start_backend, start_gates, stop_gates

BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/idoctor-gate")
SECS = float(os.environ.get("SOAK_SECS", "300"))
OUT = ROOT / "bench/results/soak.md"
QUOTA = "api_calls_full_process"
LIMIT, RAISE, METERED_USERS = 150, 50, 6

PLANS = """
[[plan]]
name = "pro"
price = "1.00"
[plan.quotas]
api_calls_full_process = 400

[[plan]]
name = "team"
price = "5.00"
[plan.quotas]
api_calls_full_process = 800
"""


class Soak:
    def __init__(self, ports, pg):
        self.ports, self.pg = ports, pg
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.metered = {}  # request id -> status, for every metered answer
        self.revocations, self.disables = [], []
        self.admitted_in_window = 0  # answered 200 between the revocation and its first refusal
        self.admitted_after_refusal = 0  # answered 200 after a refusal: must stay 0
        self.errors = []
        self.paid = []  # order numbers the payers saw complete
        self.plan_changes = 0  # clinics that went free -> pro -> pro renewed -> team
        self.traffic = {"jwt": 0, "key": 0, "logins": 0, "other": 0}

    def other(self, port):
        return self.ports[1] if port == self.ports[0] else self.ports[0]

    def note(self, what):
        with self.lock:
            self.errors.append(what)

    def signup(self, name):
        port = random.choice(self.ports)
        status = request(port, "POST", "/auth/register",
                         {"email": f"{name}@example.com", "username": name, "password": f"password-{name}"})[0]
        assert status == 201, status
        return self.login(name, port)

    def login(self, name, port):
        s, body, _, _ = request(port, "POST", "/auth/login",
                                {"username_or_email": name, "password": f"password-{name}"})
        assert s == 200, (s, body)
        t = json.loads(body)
        return {"authorization": f"Bearer {t['access_token']}"}

    def me(self, auth):
        return json.loads(request(self.ports[0], "GET", "/users/me", headers=auth)[1])["id"]

    # --- the actors -------------------------------------------------------------------------

    def metered_caller(self, auth, port):
        while not self.stop.is_set():
            status, _, _, headers = request(port, "POST", "/process/p/20250101", {}, auth)
            rid = headers.get("x-request-id") or headers.get("X-Request-Id")
            with self.lock:
                if rid:
                    self.metered[rid] = status
                else:
                    self.traffic["other"] += 1
            if status not in (200, 402):  # 402: the quota is used up
                self.note(f"metered answered {status}")
            time.sleep(0.02 if status == 200 else 0.2)

    def raise_limits(self, admin, users):
        limit = LIMIT
        while not self.stop.wait(60):
            limit += RAISE
            for uid in users:
                port = random.choice(self.ports)
                s = request(port, "PUT", f"/admin/quotas/users/{uid}/adjust?quota_type={QUOTA}&new_limit={limit}",
                            headers=admin)[0]
                if s != 200:
                    self.note(f"adjust answered {s}")
            with self.lock:
                self.limit = limit

    def plain_traffic(self, auth, key):
        i = 0
        while not self.stop.is_set():
            port = self.ports[i % 2]
            i += 1
            a = request(port, "GET", "/user/x", headers=auth)[0]
            k = request(port, "GET", "/user/x", headers={"x-api-key": key})[0]
            with self.lock:
                self.traffic["jwt"] += 1
                self.traffic["key"] += 1
            if a != 200 or k != 200:
                self.note(f"plain traffic answered {a} / {k}")

    def sign_ins(self, name):
        i = 0
        while not self.stop.wait(0.5):
            self.login(name, self.ports[i % 2])
            i += 1
            with self.lock:
                self.traffic["logins"] += 1

    def refused_within(self, port, headers, started, limit=15.0):
        """Polls `port` until it refuses `headers`; seconds after `started`, or None. Answers
        200 before that are the propagation window (counted, allowed); once refused, both
        gates are asked again and must refuse every time."""
        while time.monotonic() - started < limit:
            s = request(port, "GET", "/user/x", headers=headers)[0]
            if s in (401, 403):
                took = time.monotonic() - started
                for again in self.ports * 3:
                    if request(again, "GET", "/user/x", headers=headers)[0] == 200:
                        with self.lock:
                            self.admitted_after_refusal += 1
                return took
            if s == 200:
                with self.lock:
                    self.admitted_in_window += 1
            time.sleep(0.005)
        return None

    def revoker(self, auth):
        i = 0
        while not self.stop.wait(1.5):
            here = self.ports[i % 2]
            there = self.other(here)
            i += 1
            created = json.loads(request(here, "POST", "/api-keys/", {"name": f"r{i}"}, auth)[1])
            key = {"x-api-key": created["key"]}
            for _ in range(3):
                request(there, "GET", "/user/x", headers=key)
            s = request(here, "DELETE", f"/api-keys/{created['id']}", headers=auth)[0]
            started = time.monotonic()
            if s != 204:
                self.note(f"key delete answered {s}")
                continue
            took = self.refused_within(there, key, started)
            with self.lock:
                self.revocations.append(took if took is not None else float("inf"))

    def disabler(self, admin, name, uid):
        i = 0
        while not self.stop.wait(5):
            here = self.ports[i % 2]
            there = self.other(here)
            i += 1
            auth = self.login(name, there)
            request(there, "GET", "/user/x", headers=auth)
            s = request(here, "POST", f"/admin/users/{uid}/disable", headers=admin)[0]
            started = time.monotonic()
            if s != 200:
                self.note(f"disable answered {s}")
                continue
            took = self.refused_within(there, auth, started)
            with self.lock:
                self.disables.append(took if took is not None else float("inf"))
            request(here, "POST", f"/admin/users/{uid}/enable", headers=admin)

    def pay(self, auth, port, plan, expected):
        """Subscribes to `plan` on `port` and pays in the sandbox on the other gate; True when
        the payer saw the payment complete. `expected` is the plan change the gate must quote."""
        s, body, _, _ = request(port, "POST", "/subscriptions/subscribe",
                                {"plan_id": plan, "payment_method": "sandbox"}, auth)
        if s != 202:
            self.note(f"subscribe answered {s}: {body[:200]!r}")
            return False
        order = json.loads(body)
        if order.get("change") != expected:
            self.note(f"a {expected} quoted as {order.get('change')!r}")
        path = "/payments/" + order["payment_url"].split("/payments/", 1)[1]
        s, page, _, _ = request(self.other(port), "POST", path)
        if s == 200 and b"completed" in page:
            with self.lock:
                self.paid.append(order["order_no"])
            return True
        self.note(f"sandbox checkout answered {s}")
        return False

    def payer(self, plans):
        """Plan changes by payment, as clinics make them: each round a new clinic buys `pro`
        from the free plan, renews it, then upgrades to `team`; the plan it ends on is checked
        on the other gate."""
        i = 0
        while not self.stop.wait(1):
            port = self.ports[i % 2]
            auth = self.signup(f"payer{i}")
            i += 1
            if not (self.pay(auth, port, plans["pro"], "new")
                    and self.pay(auth, self.other(port), plans["pro"], "renew")
                    and self.pay(auth, port, plans["team"], "upgrade")):
                continue
            s, body, _, _ = request(self.other(port), "GET", "/subscriptions/current", headers=auth)
            plan = json.loads(body).get("plan_name") if s == 200 else None
            with self.lock:
                self.plan_changes += 1
                if plan != "team":
                    self.errors.append(f"after paying for team the plan is {plan!r} ({s})")

def main():
    d = pathlib.Path(tempfile.mkdtemp(prefix="gate-soak-"))
    os.chmod(d, 0o755)
    procs, pg = [], None
    try:
        pg = Postgres(d)
        env = {"GATE_JWT_SECRET": "soak-bench-jwt-secret-0123456789abcdef0123456789ab",
               "GATE_API_KEY_PEPPER": "soak-bench-pepper-0123456789abcdef0123456789abcd",
               "GATE_ADMIN_PASSWORD": "soak-admin-password"}
        procs, ports = start_gates(BIN, d, ("a", "b"), pg.url, start_backend(), env, PLANS)
        os.spawnve(os.P_WAIT, BIN, [BIN, "--config", str(d / "a/gate.toml"), "create-admin",
                                     "--email", "root@example.com", "--username", "root"],
                   dict(os.environ, **env))
        soak = Soak(ports, pg)
        soak.limit = LIMIT
        s, body, _, _ = request(ports[0], "POST", "/auth/login",
                                {"username_or_email": "root", "password": "soak-admin-password"})
        assert s == 200, (s, body)
        admin = {"authorization": f"Bearer {json.loads(body)['access_token']}"}

        metered_users = []
        threads = []
        for n in range(METERED_USERS):
            auth = soak.signup(f"metered{n}")
            uid = soak.me(auth)
            assert request(ports[0], "PUT", f"/admin/quotas/users/{uid}/adjust?quota_type={QUOTA}&new_limit={LIMIT}",
                           headers=admin)[0] == 200
            metered_users.append(uid)
            for port in ports:
                threads.append(threading.Thread(target=soak.metered_caller, args=(auth, port)))
        threads.append(threading.Thread(target=soak.raise_limits, args=(admin, metered_users)))
        plain = soak.signup("plain")
        key = json.loads(request(ports[0], "POST", "/api-keys/", {"name": "traffic"}, plain)[1])["key"]
        threads.append(threading.Thread(target=soak.plain_traffic, args=(plain, key)))
        soak.signup("signer")
        threads.append(threading.Thread(target=soak.sign_ins, args=("signer",)))
        threads.append(threading.Thread(target=soak.revoker, args=(soak.signup("revoker"),)))
        disabled = soak.signup("disabled")
        threads.append(threading.Thread(target=soak.disabler, args=(admin, "disabled", soak.me(disabled))))
        plans = {p["name"]: p["id"] for p in json.loads(request(ports[0], "GET", "/plans/")[1])}
        threads.append(threading.Thread(target=soak.payer, args=(plans,)))

        time.sleep(1)
        rss_start = [rss_mib(p.pid) for p in procs]
        started = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - started < SECS:
            time.sleep(1)
        soak.stop.set()
        for t in threads:
            t.join()
        rss_end = [rss_mib(p.pid) for p in procs]
        stop_gates(procs)
        procs = []

        # --- what the database holds ------------------------------------------------------
        rows = dict(pg.sql(f"SELECT request_id, state FROM usage_logs WHERE quota_type = '{QUOTA}'"))
        ok = {rid for rid, s in soak.metered.items() if s == 200}
        committed = {rid for rid, s in rows.items() if s == "committed"}
        lost = len(ok - committed)
        unanswered = len(committed - ok)
        reserved = sum(1 for s in rows.values() if s == "reserved")
        ids = ",".join(f"'{u}'" for u in metered_users)
        overspend = 0
        for uid, n in pg.sql(f"SELECT user_id, count(*) FROM usage_logs WHERE state = 'committed' "
                             f"AND user_id IN ({ids}) GROUP BY user_id"):
            overspend += max(0, int(n) - soak.limit)
        mismatched = pg.sql(
            "SELECT b.user_id, b.used_amount, (SELECT count(*) FROM usage_logs u WHERE u.user_id = b.user_id "
            "AND u.quota_type = b.quota_type AND u.state = 'committed' AND u.created_at >= b.period_start) "
            f"FROM quota_balances b WHERE b.quota_type = '{QUOTA}'")
        mismatched = [r for r in mismatched if int(r[1]) != int(r[2])]
        stored_paid = {r[0] for r in pg.sql(
            "SELECT order_no FROM payment_transactions WHERE status = 'completed'")}
        unpaid = len(set(soak.paid) - stored_paid)

        def dist(xs):
            ms = [x * 1000 for x in xs]
            return f"{quantile(ms, 0.5):.0f} | {quantile(ms, 0.99):.0f} | {max(ms) if ms else float('nan'):.0f}"

        statuses = {}
        for s in soak.metered.values():
            statuses[s] = statuses.get(s, 0) + 1
        lines = [
            "# Two gates on one PostgreSQL, soaked",
            "",
            f"{SECS:g} s of mixed load, measured by `python3 bench/soak.py` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (2 cores shared by both gates, "
            "PostgreSQL, the backend and the load).",
            "",
            "| what must stay exact | count |",
            "|---|---|",
            f"| runs committed past a limit (overspend) | {overspend} |",
            f"| metered requests answered 200 without a committed usage row (lost) | {lost} |",
            f"| committed usage rows without a 200 answer (doubled or unanswered) | {unanswered} |",
            f"| reservations left open after both gates stopped | {reserved} |",
            f"| balances that differ from their committed rows | {len(mismatched)} |",
            f"| sandbox payments seen complete but not stored completed | {unpaid} of {len(soak.paid)} |",
            f"| revoked credentials admitted again after one gate refused them | {soak.admitted_after_refusal} |",
            "",
            "| across the replicas, ms | p50 | p99 | max |",
            "|---|---|---|---|",
            f"| a key deleted on one gate, refused by the other ({len(soak.revocations)} times) | {dist(soak.revocations)} |",
            f"| a user disabled on one gate, refused by the other ({len(soak.disables)} times) | {dist(soak.disables)} |",
            "",
            "| gate | RSS at start, MiB | RSS at end, MiB |",
            "|---|---|---|",
            *[f"| {n} | {a:.1f} | {b:.1f} |" for n, a, b in zip("ab", rss_start, rss_end)],
            "",
            f"Metered answers by status: {dict(sorted(statuses.items()))}; plain requests: "
            f"{soak.traffic['jwt']} JWT and {soak.traffic['key']} API-key; {soak.traffic['logins']} sign-ins; "
            f"{len(soak.paid)} payments by {soak.plan_changes} clinics that went free -> pro -> renewed -> team; "
            f"{soak.admitted_in_window} requests admitted between a revocation and its first refusal; the limit rose from {LIMIT} to {soak.limit}.",
            "",
        ]
        if soak.errors:
            lines += ["Unexpected answers (first 20 of " + str(len(soak.errors)) + "):", ""]
            lines += [f"- {e}" for e in soak.errors[:20]] + [""]
        text = "\n".join(lines)
        print(text)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        bad = overspend or lost or unanswered or reserved or mismatched or unpaid or soak.admitted_after_refusal
        sys.exit(1 if bad else 0)
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
