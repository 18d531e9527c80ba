#!/usr/bin/env python3
"""A named HTTP/1.1 keep-alive upstream for ringress's load-balancing tests.

Usage: lb_upstream.py NAME PORT_FILE [STATUS]

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) and answers
every request with its NAME: in the body and in an `x-upstream` header, with
`x-connection` (the number of the connection, from 1) and `x-request` (the number
of the request on that connection, from 1). Paths:
  /status/N      status N
  /slow/MS       the response waits MS milliseconds first
  /slow/MS/N     the same, with status N
  /connections   the body is the number of connections accepted so far
  /requests      the body is the number of requests answered before this one
Anything else is STATUS (default 200). Prints nothing; runs until killed.
"""

import os
import socketserver
import sys
import threading
import time

CONNECTIONS = [0]
REQUESTS = [0]
LOCK = threading.Lock()


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def serve(conn, name, number, default_status):
    buf = b""
    requests = 0
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            lines = head.split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            length = 0
            close = False
            for line in lines[1:]:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value.strip())
                if key == "connection" and value.strip().lower() == "close":
                    close = True
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            requests += 1
            with LOCK:
                answered = REQUESTS[0]
                REQUESTS[0] += 1
            status = default_status
            body = name + "\n"
            parts = path.split("?")[0].split("/")
            if len(parts) == 3 and parts[1] == "status":
                status = int(parts[2])
            elif len(parts) in (3, 4) and parts[1] == "slow":
                time.sleep(int(parts[2]) / 1000)
                if len(parts) == 4:
                    status = int(parts[3])
            elif path == "/connections":
                with LOCK:
                    body = "%d\n" % CONNECTIONS[0]
            elif path == "/requests":
                body = "%d\n" % answered
            data = body.encode()
            response = (
                "HTTP/1.1 %d X\r\nx-upstream: %s\r\nx-connection: %d\r\nx-request: %d\r\n"
                "content-length: %d\r\n%s\r\n"
                % (status, name, number, requests, len(data), "connection: close\r\n" if close else "")
            ).encode() + data
            conn.sendall(response)
            if close:
                return
    except OSError:
        return
    finally:
        conn.close()


def main():
    name, port_file = sys.argv[1], sys.argv[2]
    default_status = int(sys.argv[3]) if len(sys.argv) > 3 else 200

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            with LOCK:
                CONNECTIONS[0] += 1
                number = CONNECTIONS[0]
            serve(self.request, name, number, default_status)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    # Written whole, then renamed: the test never reads half a port number.
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
