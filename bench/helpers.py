"""Load helpers for bench/run.sh that wrk and hey do not cover (standard library only).

idle N PORT                               open N keep-alive connections, one request each,
                                          and hold them until stdin closes
logins PORT USER PASSWORD THREADS SECONDS sign in over and over (argon2 on the gate)
parse-wrk FILE / parse-hey FILE           print "rps p50_ms p99_ms errors"
"""
import socket
import sys
import threading
import time


def idle(n, port):
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
        conns.append(s)
    ok = 0
    for s in conns:
        data = s.recv(4096)
        ok += data.startswith(b"HTTP/1.1 200")
    print(f"open {len(conns)} ok {ok}", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()


def logins(port, user, password, threads, seconds):
    body = ('{"username_or_email":"%s","password":"%s"}' % (user, password)).encode()
    req = (
        b"POST /auth/login HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    done = [0]
    stop = time.time() + seconds

    def run():
        s = socket.create_connection(("127.0.0.1", port))
        while time.time() < stop:
            s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(rest) < length:
                rest += s.recv(65536)
            done[0] += 1
        s.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"logins {done[0]} in {seconds}s", flush=True)


def _ms(text):
    """'1.23ms' / '850.00us' / '1.02s' (wrk) -> milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def parse_wrk(path):
    rps = p50 = p99 = 0.0
    errors = 0
    for line in open(path):
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif len(parts) == 2 and parts[0] == "50%":
            p50 = _ms(parts[1])
        elif len(parts) == 2 and parts[0] == "99%":
            p99 = _ms(parts[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            errors += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(x.strip(",")) for x in parts if x.strip(",").isdigit())
    print(f"{rps:.0f} {p50:.3f} {p99:.3f} {errors}")


def parse_hey(path):
    rps = p50 = p99 = 0.0
    errors = 0
    for line in open(path):
        parts = line.split()
        if line.strip().startswith("Requests/sec:"):
            rps = float(parts[1])
        elif len(parts) >= 3 and parts[0] == "50%" and parts[1] == "in":
            p50 = float(parts[2]) * 1000
        elif len(parts) >= 3 and parts[0] == "99%" and parts[1] == "in":
            p99 = float(parts[2]) * 1000
        elif line.strip().startswith("[") and "]" in line and not line.strip().startswith("[200]"):
            errors += int(parts[1])
    print(f"{rps:.0f} {p50:.3f} {p99:.3f} {errors}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "logins":
        logins(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    elif cmd == "parse-wrk":
        parse_wrk(sys.argv[2])
    elif cmd == "parse-hey":
        parse_hey(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
