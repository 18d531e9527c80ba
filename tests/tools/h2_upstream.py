#!/usr/bin/env python3
"""An HTTP/2 (h2c, prior knowledge) upstream for ringress's tests, on Python's `h2`.

Usage: h2_upstream.py PORT_FILE [MAX_CONCURRENT_STREAMS] [--tls CERT KEY]

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening; with --tls,
over TLS with ALPN h2, CERT being the chain and KEY its key), refuses
(REFUSED_STREAM) streams over MAX_CONCURRENT_STREAMS (default 100) and answers
every request with a JSON echo: method, path, authority, scheme, headers, the body
(as text), the request trailers, the connection's number and how many streams it
had open at once at most. Paths:
  /trailers...  the response ends with trailers (x-upstream-trailer: done)
  /slow/MS...   the response waits MS milliseconds first
  /status/N     the response has status N
  /goaway       after the response, GOAWAY (NO_ERROR); the socket stays open, as in a
                graceful shutdown, and later streams on it are refused
Prints nothing else; runs until killed.
"""

import json
import socket
import ssl
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

CONNECTIONS = [0]
LOCK = threading.Lock()


class Lenient(h2.connection.H2Connection):
    """h2 treats a stream over the announced limit as a connection error; RFC 9113
    §5.1.2 allows a stream error, REFUSED_STREAM, which `Conn.handle` sends."""

    @property
    def open_inbound_streams(self):
        return 0


class Conn:
    def __init__(self, sock, number, max_streams):
        self.sock = sock
        self.number = number
        self.h2 = Lenient(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.max_streams = max_streams
        self.going_away = False
        self.streams = {}
        self.open = 0
        self.peak = 0
        self.lock = threading.Lock()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def serve(self):
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.do_handshake()
            except (ssl.SSLError, OSError):
                self.sock.close()
                return
        with self.lock:
            self.h2.initiate_connection()
            self.flush()
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    if self.going_away:
                        # Frames after GOAWAY: ignored, the connection kept open.
                        continue
                    # Not HTTP/2 (an HTTP/1.1 client, in a test that shows it fails).
                    self.sock.close()
                    return
                for event in events:
                    self.handle(event)
                self.flush()

    def handle(self, event):
        if isinstance(event, h2.events.RequestReceived):
            if self.going_away or self.open >= self.max_streams:
                # Over the limit this server announced (h2 enforces it only once the
                # client acknowledged the SETTINGS): refused, as RFC 9113 §5.1.2 says.
                self.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            self.open += 1
            self.peak = max(self.peak, self.open)
            self.streams[event.stream_id] = {
                "headers": dict(event.headers),
                "all": [list(h) for h in event.headers],
                "body": b"",
                "trailers": {},
            }
            if event.stream_ended:
                self.respond(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream["body"] += event.data
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream["trailers"] = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self.streams:
                self.respond(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            if self.streams.pop(event.stream_id, None) is not None:
                self.open -= 1

    def respond(self, stream_id):
        stream = self.streams[stream_id]
        path = stream["headers"].get(":path", "/")
        delay = 0.0
        if path.startswith("/slow/"):
            delay = int(path.split("/")[2]) / 1000.0
        threading.Thread(
            target=self.answer, args=(stream_id, stream, path, delay), daemon=True
        ).start()

    def answer(self, stream_id, stream, path, delay):
        if delay:
            time.sleep(delay)
        status = 200
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
        headers = stream["headers"]
        echo = {
            "method": headers.get(":method"),
            "path": path,
            "authority": headers.get(":authority"),
            "scheme": headers.get(":scheme"),
            "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
            "header_lines": stream["all"],
            "data": stream["body"].decode("utf-8", "replace"),
            "trailers": stream["trailers"],
            "connection": self.number,
            "peak_streams": self.peak,
        }
        body = json.dumps(echo).encode()
        trailers = path.startswith("/trailers")
        with self.lock:
            if stream_id not in self.streams:
                return
            response = [(":status", str(status)), ("content-type", "application/json")]
            if not trailers:
                response.append(("content-length", str(len(body))))
            try:
                self.h2.send_headers(stream_id, response)
                self.send_body(stream_id, body, not trailers)
                if trailers:
                    self.h2.send_headers(
                        stream_id, [("x-upstream-trailer", "done")], end_stream=True
                    )
                if path == "/goaway":
                    self.h2.close_connection(last_stream_id=stream_id)
                    self.going_away = True
                self.flush()
            except Exception:  # the stream or connection went away meanwhile
                pass
            self.streams.pop(stream_id, None)
            self.open -= 1

    def send_body(self, stream_id, body, end):
        # Bodies here are small: within the initial windows.
        size = self.h2.max_outbound_frame_size
        for start in range(0, len(body), size):
            self.h2.send_data(stream_id, body[start : start + size])
        if end:
            self.h2.end_stream(stream_id)


def main():
    args = sys.argv[1:]
    ctx = None
    if "--tls" in args:
        at = args.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[at + 1], args[at + 2])
        ctx.set_alpn_protocols(["h2"])
        del args[at : at + 3]
    port_file = args[0]
    max_streams = int(args[1]) if len(args) > 1 else 100
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    import os

    os.rename(port_file + ".tmp", port_file)
    while True:
        sock, _ = listener.accept()
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with LOCK:
            CONNECTIONS[0] += 1
            number = CONNECTIONS[0]
        conn = Conn(sock, number, max_streams)
        threading.Thread(target=conn.serve, daemon=True).start()


if __name__ == "__main__":
    main()
