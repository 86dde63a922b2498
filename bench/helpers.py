"""Load helpers for bench/run.sh that wrk does not cover (standard library only).

idle N PORT                               open N keep-alive connections, one request each,
                                          and hold them until stdin closes
logins PORT USER PASSWORD THREADS SECONDS sign in over and over (argon2 on the gate)
transfer-backend PORT FILE                the backend for the big transfers: GET sends FILE
                                          with sendfile(2), POST reads the whole body in
                                          1 MiB reads, then answers
upload PORT FILE PATH                     POST FILE to PATH with sendfile(2); print MiB/s
upload-form PORT FILE PATH TOKEN          the same as a multipart/form-data DICOM upload
                                          (patient_name, study_date, then the file)
download PORT PATH                        GET PATH into a 1 MiB buffer; print MiB/s
stalls PORT PATH SECONDS                  GET PATH about once a millisecond on one connection
                                          and report the answers that took over 5 ms
parse-wrk FILE                            print "rps p50_ms p99_ms errors"
"""
import os
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


def stalls(port, path, seconds):
    """The machine's own pauses: an answer from a backend that takes ~0.1 ms and comes back
    after 5 ms means the machine stopped the backend or this client for that long (run beside
    a load that leaves both cores some room). Prints how many, the longest, and the median gap
    between them."""
    req = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    n, slow = 0, []
    while time.monotonic() < start + seconds:
        sent = time.monotonic()
        s.sendall(req)
        buf = b""
        while True:
            buf += s.recv(65536)
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(rest) >= length:
                    break
        took = time.monotonic() - sent
        n += 1
        if took > 0.005:
            slow.append((sent - start, took))
        time.sleep(0.001)
    gaps = sorted(b[0] - a[0] for a, b in zip(slow, slow[1:]))
    longest = max((t for _, t in slow), default=0)
    gap = f"{gaps[len(gaps) // 2]:.2f} s" if gaps else "-"
    print(f"{n} requests in {seconds:.0f} s, {len(slow)} took over 5 ms (longest {longest * 1000:.1f} ms, median gap {gap})", flush=True)


def transfer_backend(port, path):
    """A stand-in backend for the 1 GiB transfers that costs as little as the kernel allows, so
    the figures show the proxy, not the backend: a download is one sendfile(2), an upload is
    read whole (Content-Length or chunked) in 1 MiB reads before the answer. nginx's own
    `return 200` would answer before reading and then discard the body 4 KiB at a time."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    size = os.path.getsize(path)

    def serve(c):
        view = memoryview(bytearray(1 << 20))
        pending = bytearray()

        def fill(n):
            """Ensures `pending` holds at least n bytes."""
            while len(pending) < n:
                d = c.recv(1 << 16)
                if not d:
                    raise EOFError
                pending.extend(d)

        def skip(n):
            """Reads and drops n body bytes, from `pending` first."""
            take = min(n, len(pending))
            del pending[:take]
            n -= take
            while n:
                got = c.recv_into(view[: min(n, len(view))])
                if not got:
                    raise EOFError
                n -= got

        def line():
            while b"\r\n" not in pending:
                fill(len(pending) + 1)
            i = pending.index(b"\r\n")
            text = bytes(pending[:i])
            del pending[: i + 2]
            return text

        with c:
            try:
                while True:
                    while b"\r\n\r\n" not in pending:
                        fill(len(pending) + 1)
                    i = pending.index(b"\r\n\r\n")
                    head = bytes(pending[:i]).split(b"\r\n")
                    del pending[: i + 4]
                    method = head[0].split()[0]
                    h = {}
                    for l in head[1:]:
                        k, _, v = l.partition(b":")
                        h[k.strip().lower()] = v.strip().lower()
                    if h.get(b"expect") == b"100-continue":
                        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if method == b"GET":
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                  b"Content-Length: %d\r\n\r\n" % size)
                        with open(path, "rb") as f:
                            c.sendfile(f)
                        continue
                    n = 0
                    if h.get(b"transfer-encoding") == b"chunked":
                        while True:
                            k = int(line().split(b";")[0], 16)
                            if k == 0:
                                while line():
                                    pass
                                break
                            skip(k)
                            n += k
                            fill(2)
                            del pending[:2]
                    else:
                        n = int(h.get(b"content-length", b"0"))
                        skip(n)
                    body = b'{"status":"ok","bytes":%d}' % n
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except (EOFError, ConnectionError):
                return

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# A transfer that moves nothing for this long has stalled: the run fails instead of waiting.
STALL = 60


def _head(s):
    """Reads a response head; returns (status line, content-length, body bytes already read)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError(buf)
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    return lines[0], length, rest


def upload(port, path, target):
    """The upload client: the body goes out with sendfile(2), so the client costs next to
    nothing on the core it shares with the backend (curl copies every byte through itself)."""
    size = os.path.getsize(path)
    s = socket.create_connection(("127.0.0.1", port), timeout=STALL)
    started = time.monotonic()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: %d\r\n\r\n" % (target.encode(), size))
    with open(path, "rb") as f:
        s.sendfile(f)
    status, length, rest = _head(s)
    while len(rest) < length:
        rest += s.recv(65536)
    took = time.monotonic() - started
    if b" 200 " not in status or b'"bytes":%d' % size not in rest:
        sys.exit(f"upload failed: {status!r} {rest[:200]!r}")
    print(f"{size / took / (1 << 20):.0f}")


def upload_form(port, path, target, token):
    """A DICOM upload as the frontends send it: the form's fields, then the file as one part
    (sent with sendfile(2)), then the closing boundary."""
    size = os.path.getsize(path)
    b = b"----bench-boundary-7MA4YWxkTrZu0gW"
    head = (b"--" + b + b'\r\nContent-Disposition: form-data; name="patient_name"\r\n\r\n\xe5\xbc\xa0\xe4\xb8\x89\r\n'
            + b"--" + b + b'\r\nContent-Disposition: form-data; name="study_date"\r\n\r\n20250101\r\n'
            + b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="series.zip"\r\n'
            + b"Content-Type: application/zip\r\n\r\n")
    tail = b"\r\n--" + b + b"--\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=STALL)
    started = time.monotonic()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n"
              % (target.encode(), token.encode(), b, len(head) + size + len(tail)))
    s.sendall(head)
    with open(path, "rb") as f:
        s.sendfile(f)
    s.sendall(tail)
    status, length, rest = _head(s)
    while len(rest) < length:
        rest += s.recv(65536)
    took = time.monotonic() - started
    if b" 200 " not in status or b'"status":"ok"' not in rest:
        sys.exit(f"form upload failed: {status!r} {rest[:200]!r}")
    print(f"{size / took / (1 << 20):.0f}")


def download(port, target):
    """The download client: reads into one 1 MiB buffer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=STALL)
    started = time.monotonic()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % target.encode())
    status, length, rest = _head(s)
    if b" 200 " not in status:
        sys.exit(f"download failed: {status!r}")
    view = memoryview(bytearray(1 << 20))
    left = length - len(rest)
    while left:
        got = s.recv_into(view[: min(left, len(view))])
        if not got:
            sys.exit(f"download cut off with {left} bytes to go")
        left -= got
    took = time.monotonic() - started
    print(f"{length / took / (1 << 20):.0f}")


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


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "logins":
        logins(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    elif cmd == "transfer-backend":
        transfer_backend(int(sys.argv[2]), sys.argv[3])
    elif cmd == "upload":
        upload(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif cmd == "upload-form":
        upload_form(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif cmd == "download":
        download(int(sys.argv[2]), sys.argv[3])
    elif cmd == "stalls":
        stalls(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    elif cmd == "parse-wrk":
        parse_wrk(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
