"""A stand-in iDoctor backend that dies: SIGKILL to itself part-way through an upload it is
reading or a download it is sending, as the real backend's process dies when the OOM killer or
an operator takes it. Prints its port on the first line of stdout.

    python3 dying_backend.py [KILL_AFTER bytes] [PORT (0: any free one)]

POST /upload_dicom_zip  reads the body; after KILL_AFTER bytes it kills itself.
GET  /download          announces SIZE bytes, sends KILL_AFTER of them, kills itself.
Anything else           200 {"ok": true}.
"""

import os
import signal
import socket
import sys

KILL_AFTER = int(sys.argv[1]) if len(sys.argv) > 1 else 8 << 20
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
SIZE = 200 << 20


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return None, b""
        data += part
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def serve(conn):
    text, rest = head(conn)
    if text is None:
        return
    line = text.split("\r\n", 1)[0]
    if line.startswith("POST /upload_dicom_zip"):
        received = len(rest)
        while received < KILL_AFTER:
            part = conn.recv(1 << 20)
            if not part:
                return
            received += len(part)
        die()
    if line.startswith("GET /download"):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/zip\r\n"
            + b"content-length: %d\r\n\r\n" % SIZE
        )
        block = b"\x5a" * (1 << 20)
        sent = 0
        while sent < KILL_AFTER:
            conn.sendall(block)
            sent += len(block)
        die()
    body = b'{"ok": true}'
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\n"
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def main():
    listener = socket.socket()
    # A restarted backend takes its predecessor's port (bench/faults.py) at once.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            serve(conn)
        finally:
            conn.close()


main()
