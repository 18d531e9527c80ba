#!/usr/bin/env python3
"""An HTTP/1.1 upstream over TLS for ringress's tests, on Python's `ssl`.

Usage: tls_upstream.py CERT KEY PORT_FILE [CLIENT_CA]

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) with the
certificate chain CERT and its key KEY; with CLIENT_CA, requires a client
certificate issued by it. Answers every request (keep-alive) with a JSON echo: the
method, path, the SNI name the client sent, the ALPN protocol, the client
certificate's subject common name, whether the TLS session was resumed, the
connection's number (TLS connections accepted so far, handshakes that failed not
counted) and the request's number on its connection. A request for /close is
answered with `connection: close`, and the connection closed. Prints nothing else;
runs until killed.
"""

import json
import os
import socket
import ssl
import sys
import threading

CONNECTIONS = [0]
LOCK = threading.Lock()
SNI = {}


def remember_sni(sock, name, _ctx):
    SNI[id(sock)] = name


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def serve(conn):
    try:
        conn.do_handshake()
    except (ssl.SSLError, OSError):
        conn.close()
        return
    with LOCK:
        CONNECTIONS[0] += 1
        number = CONNECTIONS[0]
    cert = conn.getpeercert() or {}
    client = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                client = value
    buf = b""
    requests = 0
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                break
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            requests += 1
            body = json.dumps(
                {
                    "method": method,
                    "path": path,
                    "sni": SNI.get(id(conn)),
                    "alpn": conn.selected_alpn_protocol(),
                    "client": client,
                    "resumed": conn.session_reused,
                    "connection": number,
                    "request": requests,
                }
            ).encode()
            close = path == "/close"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + (b"connection: close\r\n" if close else b"")
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            if close:
                break
    except (ssl.SSLError, OSError):
        pass
    finally:
        SNI.pop(id(conn), None)
        conn.close()


def main():
    cert, key, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sni_callback = remember_sni
    if len(sys.argv) > 4:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[4])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    while True:
        sock, _ = listener.accept()
        conn = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
