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
    args = parser.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1"])
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
