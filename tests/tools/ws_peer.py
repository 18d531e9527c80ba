#!/usr/bin/env python3
"""WebSocket peers for tests/websocket.rs, on the `websockets` package.

    ws_peer.py serve PORT_FILE [--tls CERT KEY]
        An echo server on 127.0.0.1 (a free port, written to PORT_FILE; over TLS with
        the chain CERT and its key KEY when given): every message
        comes back as it was sent; permessage-deflate offered like any server. A
        connection to /headers is first sent one text message, the JSON object of the
        handshake's request headers (lower-case names, repeated ones joined with ", ").

    ws_peer.py client URL [--cafile F] [--connect-to ADDR] [--big N]
        Connects (to ADDR instead of the URL's host when given; wss:// trusting the CA
        file, the URL's host as the TLS server name and Host), reads the
        /headers message when the path is /headers, sends a text message, a binary one
        of N bytes (default 1 MiB) and 100 small ones, checks each echo, closes with
        1000, and prints one JSON line: {"headers": ..., "echoed": n, "close": code,
        "response_headers": {...}}.

    ws_peer.py h2-client URL [--cafile F] [--connect-to ADDR] [--big N] [--protocol P]
        The same exchange as `client` over HTTP/2, as RFC 8441 says: an HTTP/2
        connection (TLS with ALPN h2 for wss://, prior knowledge for ws://) whose
        server must announce SETTINGS_ENABLE_CONNECT_PROTOCOL, one extended CONNECT
        stream (`:protocol` websocket, or P), then WebSocket frames (the `websockets`
        package's protocol, without its HTTP/1.1 handshake) in DATA both ways; after
        the close handshake, END_STREAM, and the server's end of the stream awaited.
        Prints one JSON line: {"status": S, "headers": ..., "echoed": n, "close": code,
        "response_headers": {...}, "ended": "end_stream" | "reset"}; a status other
        than 200 is printed at once (with the response's body) and nothing is sent.

    ws_peer.py serve-counting PORT_FILE
        A bare-socket upgrade server (one thread per connection): answers any
        `Upgrade` request with a 101, reads the connection's bytes until the client's
        FIN, then sends back "received N" and closes.

    ws_peer.py h2-half-close URL N [--cafile F] [--connect-to ADDR]
        Opens an extended CONNECT stream (as `h2-client`), sends N bytes and
        END_STREAM at once, then reads until the server ends the stream. Prints
        {"status": S, "reply": "...", "ended": ...}.

    ws_peer.py h2-bridge PORT_FILE URL [--cafile F] [--connect-to ADDR]
        Lets an HTTP/1.1 WebSocket client (the Autobahn runner) speak to URL over
        HTTP/2: on 127.0.0.1 (a free port, written to PORT_FILE) it answers each
        HTTP/1.1 upgrade with its own 101 once URL's server (an HTTP/2 connection per
        client connection, TLS with ALPN h2 for wss://) accepted an extended CONNECT
        for the same path, then relays the bytes as they are: the client's as DATA
        (within the stream's window), the stream's DATA to the client; the client's
        FIN is END_STREAM, the stream's end closes the client connection.

    ws_peer.py idle URL SECONDS [--connect-to ADDR]
        Connects (as `client` does), sends one message, reads its echo, then waits up to SECONDS for the
        connection to be closed by the other side, and prints one JSON line:
        {"closed_after": seconds or null}.

    ws_peer.py autobahn URL OUTDIR [-x CASE ...]
        Runs the Autobahn fuzzing cases (the `kosoku` runner) against URL, and prints
        one JSON line: {"CASE": "OK" | behaviour, ...} (a case counts as passed when its
        behaviour is OK, NON-STRICT or INFORMATIONAL and its closing behaviour OK or
        INFORMATIONAL).

Every wait is bounded; exits non-zero on anything unexpected.
"""

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse

import socket

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import websockets
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side

TIMEOUT = 20
PASSED = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSED_OK = {"OK", "INFORMATIONAL"}


async def serve(port_file, tls):
    async def echo(ws):
        if ws.request.path == "/headers":
            headers = {}
            for name, value in ws.request.headers.raw_items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            await ws.send(json.dumps(headers))
        try:
            async for message in ws:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass

    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.rename(tmp, port_file)
        await asyncio.Future()


def connect_options(args):
    """Where to connect and how, for `websockets.connect`."""
    options = {}
    if args.connect_to:
        options["host"] = args.connect_to
        options["port"] = urllib.parse.urlsplit(args.url).port
    if args.url.startswith("wss://"):
        options["ssl"] = ssl.create_default_context(cafile=args.cafile)
    return options


async def client(args):
    async with asyncio.timeout(TIMEOUT):
        async with websockets.connect(args.url, max_size=None, **connect_options(args)) as ws:
            headers = None
            if args.url.endswith("/headers"):
                headers = json.loads(await ws.recv())
            messages = ["hello, gateway", os.urandom(args.big)] + [f"m{i}" for i in range(100)]
            for message in messages:
                await ws.send(message)
                back = await ws.recv()
                if back != message:
                    sys.exit(f"echo differs: sent {len(message)} got {len(back)}")
            await ws.close(1000)
            print(json.dumps({
                "headers": headers,
                "echoed": len(messages),
                "close": ws.close_code,
                "response_headers": {k.lower(): v for k, v in ws.response.headers.raw_items()},
            }))


class H2Tunnel:
    """One extended CONNECT stream on a blocking socket (see `h2-client`)."""

    def __init__(self, args):
        url = urllib.parse.urlsplit(args.url)
        self.host, self.path = url.hostname, url.path or "/"
        sock = socket.create_connection((args.connect_to or url.hostname, url.port), TIMEOUT)
        if url.scheme == "wss":
            context = ssl.create_default_context(cafile=args.cafile)
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname=url.hostname)
            if sock.selected_alpn_protocol() != "h2":
                sys.exit(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.scheme = "https" if url.scheme == "wss" else "http"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.stream = None
        self.data = bytearray()
        self.response = None
        self.ended = None

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self):
        """Reads once, handles what came; False once the server closed."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == self.stream:
                self.response = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream:
                self.data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, self.stream)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream:
                self.ended = self.ended or "end_stream"
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream:
                # After END_STREAM, RST_STREAM(NO_ERROR) only says the server wants no
                # more of the request (RFC 9113 §8.1).
                self.ended = self.ended or "reset"
        self.flush()
        return True

    def open(self, protocol):
        deadline = time.monotonic() + TIMEOUT
        settings = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
        while self.conn.remote_settings.get(settings) != 1:
            if time.monotonic() > deadline or not self.pump():
                sys.exit("the server never announced SETTINGS_ENABLE_CONNECT_PROTOCOL")
        self.stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.stream, [
            (":method", "CONNECT"), (":protocol", protocol), (":scheme", self.scheme),
            (":path", self.path), (":authority", self.host),
            ("sec-websocket-version", "13"),
        ])
        self.flush()
        while self.response is None:
            if time.monotonic() > deadline or not self.pump():
                sys.exit("no response to the extended CONNECT")
        return int(self.response[":status"])

    def send(self, data, end=False):
        """Sends as the stream's window allows (nothing once the stream ended)."""
        if self.ended is not None:
            sys.exit(f"the stream ended ({self.ended}) while the tunnel still sent")
        view = memoryview(data)
        while True:
            window = min(self.conn.local_flow_control_window(self.stream),
                         self.conn.max_outbound_frame_size)
            if window == 0 and len(view):
                if not self.pump():
                    sys.exit("the server closed while the tunnel sent")
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(self.stream, bytes(piece), end_stream=end and not len(view))
            self.flush()
            if not len(view):
                return

    def receive(self):
        """What DATA brought since the last call, reading when there is nothing."""
        while not self.data and self.ended is None:
            if not self.pump():
                break
        data, self.data = bytes(self.data), bytearray()
        return data


def h2_client(args):
    tunnel = H2Tunnel(args)
    status = tunnel.open(args.protocol)
    if status != 200:
        body = b""
        while tunnel.ended is None and tunnel.pump():
            pass
        body = bytes(tunnel.data)
        print(json.dumps({"status": status, "body": body.decode(errors="replace"),
                          "response_headers": tunnel.response}))
        return
    ws = Protocol(Side.CLIENT, max_size=None)

    def next_frame():
        while True:
            for event in ws.events_received():
                if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE):
                    return event
            for out in ws.data_to_send():
                if out:
                    tunnel.send(out)
            data = tunnel.receive()
            if not data:
                sys.exit(f"the tunnel ended ({tunnel.ended}) before a frame came")
            ws.receive_data(data)

    headers = None
    if args.url.endswith("/headers"):
        headers = json.loads(next_frame().data)
    messages = ["hello, gateway", os.urandom(args.big)] + [f"m{i}" for i in range(100)]
    for message in messages:
        if isinstance(message, str):
            ws.send_text(message.encode())
        else:
            ws.send_binary(message)
        for out in ws.data_to_send():
            tunnel.send(out)
        frame = next_frame()
        back = frame.data.decode() if frame.opcode == Opcode.TEXT else frame.data
        if back != message:
            sys.exit(f"echo differs: sent {len(message)} got {len(back)}")
    ws.send_close(1000)
    for out in ws.data_to_send():
        if out:
            tunnel.send(out)
    closing = next_frame()
    if closing.opcode != Opcode.CLOSE:
        sys.exit(f"expected the close frame, got {closing.opcode}")
    # The server closes first after the close handshake (RFC 6455 §7.1.1): the
    # stream may have ended already; if not, END_STREAM, and its end is awaited.
    if tunnel.ended is None:
        tunnel.send(b"", end=True)
    deadline = time.monotonic() + TIMEOUT
    while tunnel.ended is None and time.monotonic() < deadline and tunnel.pump():
        pass
    print(json.dumps({
        "status": status,
        "headers": headers,
        "echoed": len(messages),
        "close": ws.close_rcvd.code if ws.close_rcvd else None,
        "response_headers": tunnel.response,
        "ended": tunnel.ended,
    }))


def serve_counting(port_file):
    import base64
    import hashlib
    import threading

    def handle(conn):
        with conn:
            conn.settimeout(TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            key = b""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                         b"connection: upgrade\r\nsec-websocket-accept: " + accept
                         + b"\r\n\r\n")
            received = len(rest)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
            conn.sendall(f"received {received}".encode())

    server = socket.create_server(("127.0.0.1", 0))
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.getsockname()[1]))
    os.rename(tmp, port_file)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def h2_half_close(args):
    args.protocol = "websocket"
    tunnel = H2Tunnel(args)
    status = tunnel.open(args.protocol)
    if status == 200:
        tunnel.send(b"x" * args.count, end=True)
    deadline = time.monotonic() + TIMEOUT
    reply = b""
    while tunnel.ended is None and time.monotonic() < deadline:
        reply += tunnel.receive()
    reply += tunnel.receive()
    print(json.dumps({"status": status, "reply": reply.decode(errors="replace"),
                      "ended": tunnel.ended}))


async def h2_bridge(args):
    import base64
    import hashlib

    target = urllib.parse.urlsplit(args.url)
    context = None
    if target.scheme == "wss":
        context = ssl.create_default_context(cafile=args.cafile)
        context.set_alpn_protocols(["h2"])

    async def bridge(reader, writer):
        up_writer = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1].decode()
            key = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                args.connect_to or target.hostname, target.port, ssl=context,
                server_hostname=target.hostname if context else None), TIMEOUT)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            window = asyncio.Event()
            opened = asyncio.get_running_loop().create_future()
            ended = asyncio.Event()
            sid = None
            settings = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL

            def flush():
                out = conn.data_to_send()
                if out:
                    up_writer.write(out)

            def start():
                nonlocal sid
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [
                    (":method", "CONNECT"), (":protocol", "websocket"),
                    (":scheme", "https" if context else "http"), (":path", path),
                    (":authority", target.hostname), ("sec-websocket-version", "13"),
                ])

            async def from_gateway():
                while True:
                    chunk = await up_reader.read(65536)
                    if not chunk:
                        break
                    for event in conn.receive_data(chunk):
                        if isinstance(event, h2.events.RemoteSettingsChanged) and sid is None:
                            if conn.remote_settings.get(settings) == 1:
                                start()
                        elif isinstance(event, h2.events.ResponseReceived):
                            status = dict(event.headers)[b":status"]
                            if not opened.done():
                                opened.set_result(status)
                        elif isinstance(event, h2.events.DataReceived):
                            writer.write(event.data)
                            conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id)
                        elif isinstance(event, h2.events.WindowUpdated):
                            window.set()
                        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                            ended.set()
                    flush()
                    await writer.drain()
                    if ended.is_set():
                        break
                ended.set()
                if not opened.done():
                    opened.set_result(b"none")

            gateway = asyncio.create_task(from_gateway())
            flush()
            status = await asyncio.wait_for(opened, TIMEOUT)
            if status != b"200":
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                return
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                         b"connection: upgrade\r\nsec-websocket-accept: " + accept
                         + b"\r\n\r\n")
            while not ended.is_set():
                reading = asyncio.create_task(reader.read(65536))
                done, _ = await asyncio.wait({reading, gateway}, timeout=TIMEOUT * 3,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reading not in done:
                    reading.cancel()
                    break
                data = reading.result()
                if not data:
                    conn.end_stream(sid)
                    flush()
                    await asyncio.wait_for(ended.wait(), TIMEOUT)
                    break
                view = memoryview(data)
                while len(view) and not ended.is_set():
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if room == 0:
                        window.clear()
                        await asyncio.wait_for(window.wait(), TIMEOUT)
                        continue
                    conn.send_data(sid, bytes(view[:room]))
                    view = view[room:]
                    flush()
                await up_writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()
            if up_writer is not None:
                up_writer.close()

    server = await asyncio.start_server(bridge, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, args.port_file)
    async with server:
        await server.serve_forever()


async def idle(args):
    async with asyncio.timeout(TIMEOUT):
        ws = await websockets.connect(args.url, max_size=None, **connect_options(args))
    await ws.send("before the silence")
    await asyncio.wait_for(ws.recv(), TIMEOUT)
    start = time.monotonic()
    closed_after = None
    try:
        await asyncio.wait_for(ws.wait_closed(), args.seconds)
        closed_after = time.monotonic() - start
    except asyncio.TimeoutError:
        await ws.close()
    print(json.dumps({"closed_after": closed_after}))


def autobahn(args):
    # The runner's command, installed beside this interpreter by pip.
    runner = os.path.join(os.path.dirname(sys.executable), "kosoku")
    command = [runner, args.url.removeprefix("ws://"), "-p", "4", "-o", args.outdir]
    for case in args.exclude:
        command += ["-x", case]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    index = os.path.join(args.outdir, "index.json")
    if not os.path.exists(index):
        sys.exit(f"kosoku wrote no report (exit {run.returncode}): {run.stderr[-2000:]}")
    with open(index) as f:
        report = next(iter(json.load(f).values()))
    results = {}
    for case, result in report.items():
        passed = result["behavior"] in PASSED and result["behaviorClose"] in CLOSED_OK
        results[case] = "OK" if passed else f'{result["behavior"]}/{result["behaviorClose"]}'
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("port_file")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p = sub.add_parser("client")
    p.add_argument("url")
    p.add_argument("--cafile")
    p.add_argument("--connect-to")
    p.add_argument("--big", type=int, default=1 << 20)
    p = sub.add_parser("h2-client")
    p.add_argument("url")
    p.add_argument("--cafile")
    p.add_argument("--connect-to")
    p.add_argument("--big", type=int, default=1 << 20)
    p.add_argument("--protocol", default="websocket")
    p = sub.add_parser("serve-counting")
    p.add_argument("port_file")
    p = sub.add_parser("h2-half-close")
    p.add_argument("url")
    p.add_argument("count", type=int)
    p.add_argument("--cafile")
    p.add_argument("--connect-to")
    p = sub.add_parser("h2-bridge")
    p.add_argument("port_file")
    p.add_argument("url")
    p.add_argument("--cafile")
    p.add_argument("--connect-to")
    p = sub.add_parser("idle")
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("--connect-to")
    p = sub.add_parser("autobahn")
    p.add_argument("url")
    p.add_argument("outdir")
    p.add_argument("-x", "--exclude", action="append", default=[])
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.port_file, args.tls))
    elif args.mode == "client":
        asyncio.run(client(args))
    elif args.mode == "h2-client":
        h2_client(args)
    elif args.mode == "h2-bridge":
        asyncio.run(h2_bridge(args))
    elif args.mode == "serve-counting":
        serve_counting(args.port_file)
    elif args.mode == "h2-half-close":
        h2_half_close(args)
    elif args.mode == "idle":
        asyncio.run(idle(args))
    else:
        autobahn(args)


if __name__ == "__main__":
    main()
