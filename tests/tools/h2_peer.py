#!/usr/bin/env python3
"""A frame-level HTTP/2 client for ringress's abuse tests, built on the `h2` package.

It opens a TLS connection (ALPN h2) to the gateway on loopback and misbehaves in one
named way, then prints what the gateway did, one line per fact ("goaway CODE",
"closed", "responses N", "timeout"), and exits 0; the Rust tests (tests/http2.rs)
decide whether that was right.

    h2_peer.py rapid-reset PORT N    N requests, each reset right after it is sent
                                     (CVE-2023-44487)
    h2_peer.py shut-window PORT      a request for a large body with a flow-control
                                     window of 0 that is never opened
    h2_peer.py idle PORT             a connection that opens no stream
    h2_peer.py flood KIND PORT N     N PING, SETTINGS or empty DATA frames (KIND ping,
                                     settings, data) sent without reading a byte,
                                     then what comes back
    h2_peer.py stalled-preface PORT  TLS with ALPN h2, then half the HTTP/2 preface and
                                     nothing more: how long until the gateway closes
    h2_peer.py continuation-flood PORT N
                                     a HEADERS frame without END_HEADERS, then N
                                     CONTINUATION frames of 1 KiB each, never ending

Every socket operation has a timeout, so a gateway that never answers shows up as
"timeout", never as a hang.
"""

import socket
import ssl
import sys

import h2.config
import h2.errors
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

TIMEOUT = 10.0


def connect(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    if sock.selected_alpn_protocol() != "h2":
        print("alpn", sock.selected_alpn_protocol())
        sys.exit(0)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def request_headers(path):
    return [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
    ]


def rapid_reset(port, count):
    sock, conn = connect(port)
    responses = 0
    try:
        for i in range(count):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, request_headers("/status/200"), end_stream=True)
            conn.reset_stream(stream, error_code=8)  # CANCEL
            if i % 50 == 49:
                sock.sendall(conn.data_to_send())
        sock.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            print("timeout")
            break
        except (ConnectionResetError, ssl.SSLError):
            print("closed")
            break
        if not data:
            print("closed")
            break
        try:
            events = conn.receive_data(data)
        except Exception as error:  # a frame for a stream the client reset, say
            print("protocol", type(error).__name__)
            continue
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                responses += 1
            if isinstance(event, h2.events.ConnectionTerminated):
                print("goaway", event.error_code.name)
    print("responses", responses)


def shut_window(port):
    sock, conn = connect(port)
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, request_headers("/bytes/100000"), end_stream=True)
    sock.sendall(conn.data_to_send())
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            print("timeout")
            return
        except (ConnectionResetError, ssl.SSLError):
            print("closed")
            return
        if not data:
            print("closed")
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                print("headers")
            if isinstance(event, h2.events.DataReceived):
                print("data", len(event.data))
            if isinstance(event, h2.events.StreamReset):
                print("reset", event.error_code.name)
                return
            if isinstance(event, h2.events.ConnectionTerminated):
                print("goaway", event.error_code.name)
                return
        sock.sendall(conn.data_to_send())


def idle(port):
    sock, conn = connect(port)
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            print("timeout")
            return
        except (ConnectionResetError, ssl.SSLError):
            print("closed")
            return
        if not data:
            print("closed")
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # After the first GOAWAY the client is closed: the server's graceful
            # shutdown PING and its last GOAWAY are frames it no longer takes.
            continue
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                print("goaway", event.error_code.name)
        sock.sendall(conn.data_to_send())


def stalled_preface(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(b"PRI * HTTP/2.0\r\n")
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            print("timeout")
            return
        except (ConnectionResetError, ssl.SSLError, OSError):
            print("closed")
            return
        if not data:
            print("closed")
            return


def read_goaway(sock):
    """Reads until the connection ends (or a timeout); the GOAWAY code seen, if any."""
    goaway = None
    pending = b""
    while True:
        try:
            data = sock.recv(65536)
        except (socket.timeout, ConnectionResetError, ssl.SSLError):
            break
        if not data:
            break
        pending += data
        # Frames read by hand: the client's h2 state machine never saw the raw frames.
        while len(pending) >= 9:
            length = int.from_bytes(pending[0:3], "big")
            if len(pending) < 9 + length:
                break
            kind = pending[3]
            payload = pending[9:9 + length]
            if kind == 0x7 and len(payload) >= 8:
                goaway = h2.errors.ErrorCodes(int.from_bytes(payload[4:8], "big")).name
            pending = pending[9 + length:]
    return goaway


def flood(kind, port, count):
    sock, conn = connect(port)
    if kind == "ping":
        frame = hyperframe.frame.PingFrame(0)
        frame.opaque_data = b"12345678"
    elif kind == "settings":
        frame = hyperframe.frame.SettingsFrame(0)
        frame.settings = {hyperframe.frame.SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
    else:
        conn.send_headers(1, [(":method", "POST")] + request_headers("/status/200")[1:])
        sock.sendall(conn.data_to_send())
        frame = hyperframe.frame.DataFrame(1)
    wire = frame.serialize() * 100
    sent = 0
    try:
        sock.settimeout(3)
        for _ in range(count // 100):
            sock.sendall(wire)
            sent += 100
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
        pass
    print("sent", sent)
    # A gateway that absorbs the flood keeps the connection: a short look suffices.
    sock.settimeout(2)
    print("goaway", read_goaway(sock))


def continuation_flood(port, count):
    sock, conn = connect(port)
    encoder = hpack.Encoder()
    block = encoder.encode(request_headers("/status/200"))
    headers = hyperframe.frame.HeadersFrame(1)
    headers.data = block
    sent = 0
    try:
        sock.sendall(headers.serialize())
        filler = encoder.encode([("x-filler", "a" * 1000)])
        for _ in range(count):
            frame = hyperframe.frame.ContinuationFrame(1)
            frame.data = filler
            sock.sendall(frame.serialize())
            sent += 1
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
        pass
    print("sent", sent)
    print("goaway", read_goaway(sock))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "rapid-reset":
        rapid_reset(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "shut-window":
        shut_window(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "idle":
        idle(int(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "flood":
        flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "stalled-preface":
        stalled_preface(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "continuation-flood":
        continuation_flood(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
