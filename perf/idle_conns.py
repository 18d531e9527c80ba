#!/usr/bin/env python3
"""Open many idle keep-alive TLS connections to a gateway and hold them.

Used by perf/compare.sh for the idle-memory workload: every connection completes a
TLS handshake, sends one HTTP/1.1 keep-alive request and reads the whole response, so
the gateway has set up everything a real idle client costs it (TLS state, connection
state, upstream route). Then the script prints one line

    READY opened=N failed=M

and holds the connections open, sending nothing, until --hold seconds have passed or
it is terminated. compare.sh samples the gateway's RSS while they are held.

With --pause-at K --go-file PATH it also stops after K connections, prints

    PAUSED opened=K failed=M

and opens the rest only once PATH exists, so compare.sh can measure the memory of the
second batch alone (the first batch absorbs memory the allocator already had free).

With --h2 each connection negotiates HTTP/2 (ALPN h2) instead: the client preface and
SETTINGS, one GET stream read to its END_STREAM (HPACK written by hand: static-table
entries and literals), the server's SETTINGS acknowledged; then it is held idle the
same way (compare.sh's h2idle workload).

Only the standard library; connects to the given address only (loopback in
compare.sh). Every wait is bounded by --timeout or --hold.
"""

import argparse
import os
import socket
import ssl
import sys
import time

# A response head larger than this is not what the benchmark upstream sends.
MAX_HEAD_BYTES = 16 * 1024
# The benchmark's small response body; anything bigger means the wrong route.
MAX_BODY_BYTES = 1024 * 1024


def read_response(conn: ssl.SSLSocket) -> None:
    """Reads one HTTP/1.1 response with a Content-Length body; raises on anything else."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before the response head ended")
        buf += chunk
        if len(buf) > MAX_HEAD_BYTES:
            raise ValueError(f"response head longer than {MAX_HEAD_BYTES} bytes")
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"status line {lines[0]!r}, expected 200")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            raise ValueError("the gateway answered Connection: close to a keep-alive request")
    if length is None or length > MAX_BODY_BYTES:
        raise ValueError(f"response has no usable Content-Length ({length!r})")
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        body += chunk


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_literal(index: int, value: str) -> bytes:
    """An HPACK literal without indexing, its name from the static table (§6.2.2)."""
    raw = value.encode()
    if len(raw) >= 127:
        raise ValueError("header value too long for this encoder")
    return bytes([index]) + bytes([len(raw)]) + raw


def h2_exchange(conn: ssl.SSLSocket, server_name: str, path: str) -> None:
    """Opens HTTP/2 on `conn` and reads one GET's response to its END_STREAM."""
    if conn.selected_alpn_protocol() != "h2":
        raise ValueError(f"ALPN chose {conn.selected_alpn_protocol()!r}, not h2")
    # :method GET (2), :scheme https (7), :path (4, literal), :authority (1, literal).
    block = b"\x82\x87" + h2_literal(4, path) + h2_literal(1, server_name)
    conn.sendall(
        H2_PREFACE
        + h2_frame(0x4, 0, 0, b"")
        + h2_frame(0x1, 0x5, 1, block)  # HEADERS, END_STREAM | END_HEADERS
    )
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response ended")
            buf += chunk
        length = int.from_bytes(buf[:3], "big")
        kind, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + length :]
        if kind == 0x4 and not flags & 0x1:
            conn.sendall(h2_frame(0x4, 0x1, 0, b""))  # SETTINGS ACK
        elif kind == 0x7:
            raise ConnectionError("GOAWAY before the response ended")
        elif kind == 0x3 and stream == 1:
            raise ConnectionError("the stream was reset")
        elif kind in (0x0, 0x1) and stream == 1 and flags & 0x1:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to connect to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-name", required=True, help="SNI and Host header")
    parser.add_argument("--cafile", required=True, help="CA that signed the gateway's certificate")
    parser.add_argument("--count", type=int, default=3000, help="connections to open")
    parser.add_argument("--path", default="/")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold them")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-connection I/O timeout")
    parser.add_argument("--pause-at", type=int, default=0, help="pause after this many")
    parser.add_argument("--go-file", help="resume from the pause once this file exists")
    parser.add_argument("--h2", action="store_true", help="HTTP/2 connections (ALPN h2)")
    args = parser.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["h2"] if args.h2 else ["http/1.1"])
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.server_name}\r\n"
        "User-Agent: ringress-perf-idle\r\n\r\n"
    ).encode()

    held = []
    failed = 0
    first_error = None
    for i in range(args.count):
        if args.pause_at and i == args.pause_at and args.go_file:
            print(f"PAUSED opened={len(held)} failed={failed}", flush=True)
            deadline = time.monotonic() + args.hold
            while not os.path.exists(args.go_file) and time.monotonic() < deadline:
                time.sleep(0.05)
        raw = None
        try:
            raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
            conn = ctx.wrap_socket(raw, server_hostname=args.server_name)
            if args.h2:
                h2_exchange(conn, args.server_name, args.path)
            else:
                conn.sendall(request)
                read_response(conn)
            held.append(conn)
        except (OSError, ValueError) as err:
            failed += 1
            if first_error is None:
                first_error = err
            if raw is not None:
                raw.close()
            # A gateway that refuses everything should not cost count × timeout.
            if failed >= 50 and not held:
                break

    if first_error is not None:
        print(f"first error: {first_error}", file=sys.stderr, flush=True)
    print(f"READY opened={len(held)} failed={failed}", flush=True)

    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    for conn in held:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
