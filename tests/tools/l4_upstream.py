#!/usr/bin/env python3
"""Upstreams for the TLS passthrough and TCP tests (tests/passthrough.rs).

    l4_upstream.py tls CERT KEY NAME PORT_FILE   # TLS with its own certificate; answers
                                                 # every HTTP request "NAME sni=<SNI>"
    l4_upstream.py echo PORT_FILE                # TCP: echoes every byte; once the client
                                                 # half-closes, sends "EOF <n>\\n" (n = bytes
                                                 # received) and closes
    l4_upstream.py banner NAME PORT_FILE         # TCP: speaks first ("NAME\\n"), then echoes

Each listens on 127.0.0.1, an ephemeral port written to PORT_FILE, one thread per
connection, until killed.
"""

import socket
import ssl
import sys
import threading


def listen(port_file):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    import os

    os.rename(port_file + ".tmp", port_file)
    return sock


def serve(sock, handle):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def tls_main(cert, key, name, port_file):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    seen = {}

    def on_sni(ssl_sock, server_name, _ctx):
        seen[id(ssl_sock)] = server_name

    ctx.sni_callback = on_sni
    sock = listen(port_file)

    def handle(conn):
        conn.settimeout(20)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)
                body = f"{name} sni={seen.get(id(tls))}\n".encode()
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()

    serve(sock, handle)


def echo_main(port_file, banner=None):
    sock = listen(port_file)

    def handle(conn):
        conn.settimeout(20)
        total = 0
        try:
            if banner:
                conn.sendall(banner.encode() + b"\n")
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
                conn.sendall(chunk)
            conn.sendall(f"EOF {total}\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    serve(sock, handle)


def main():
    mode = sys.argv[1]
    if mode == "tls":
        tls_main(*sys.argv[2:6])
    elif mode == "echo":
        echo_main(sys.argv[2])
    elif mode == "banner":
        echo_main(sys.argv[3], banner=sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
