#!/usr/bin/env python3
"""ringress's own frame-level RFC 9113 (HTTP/2) conformance suite.

It connects over plain TCP with HTTP/2 prior knowledge (h2c) to 127.0.0.1:PORT, a
gateway's plain HTTP port serving the host httpbin.example.com in front of an
httpbin-like upstream (`GET /status/200` answers 200, `/anything` echoes), and runs
every case on a fresh connection. Frames are written byte by byte (so that invalid
ones can be sent) and header blocks encoded with `hpack` without ever touching the
dynamic table (so a block the gateway refuses unread cannot put the two HPACK
contexts out of step); what comes back is parsed with `hyperframe` and decoded with
`hpack`, under a deadline of CASE_TIMEOUT seconds per case. The `h2` package is used
for its error-code names only, never for its state machine.

What each case checks is what RFC 9113 requires, the section in its name:
- a connection error is GOAWAY with the named code, then the connection closes;
- a stream error is RST_STREAM with the named code on that stream, and then the
  connection still works: a valid request on a new stream of it gets its response.
A malformed request may instead be answered with 400 where §8.1.1 allows it.

It prints one line per case and a summary:

    PASS name                       the gateway did what RFC 9113 requires
    FAIL name: expected X / got Y   it did not
    XFAIL name: RFC 9113 wants X; got Y (known: why)
                                    a deviation listed in KNOWN_DEVIATIONS (most are
                                    the `h2` crate's), observed exactly as listed
    XPASS name: ...                 a listed deviation that now conforms: the entry
                                    is stale and counts as a failure

and exits 1 when any case failed (FAIL or XPASS; with --strict, XFAIL too), else 0.

    python3 tests/tools/h2_conformance.py PORT [--strict] [--list] [SUBSTRING...]

SUBSTRING arguments run only the cases whose name contains one of them. The Rust
test tests/h2_conformance.rs starts a gateway and runs this script against it:

    cargo test --test h2_conformance
"""

import argparse
import socket
import struct
import sys
import time

import h2.errors
import hpack
import hyperframe.exceptions
import hyperframe.frame

HOST = "httpbin.example.com"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Every case ends within this many seconds (a gateway that never answers fails it).
CASE_TIMEOUT = 5.0
# Cases not started within this many seconds of the first fail as not run, so the
# summary is printed well within the Rust test's limit.
BUDGET = 90.0
# The stream a case's follow-up request goes on: above every stream a case uses.
FOLLOW_UP_STREAM = 101

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384

# Cases where the gateway is known to differ from RFC 9113: name -> (what it does,
# why). A case listed here whose observation is exactly that prints XFAIL and does
# not fail the run; one that conforms prints XPASS and does (remove its entry).
H2_CRATE = "the h2 crate (0.4) answers every frame it cannot load with PROTOCOL_ERROR"
H2_HPACK = (
    "the h2 crate turns every HPACK decoding error into a connection PROTOCOL_ERROR"
)
H2_FIELD = (
    "the h2 crate's HPACK decoder refuses the field itself, a connection error "
    "(§5.4.1 lets an endpoint make a stream error one, at the cost of every other "
    "stream of the connection)"
)
KNOWN_DEVIATIONS = {
    "§3.4 a preface not followed by SETTINGS closes the connection": (
        "PING ACK (the PING was taken as the first frame)",
        "the h2 crate's handshake ends with the 24-octet preface and takes any frame "
        "after it",
    ),
    "§6.5 SETTINGS with a length not a multiple of 6 is FRAME_SIZE_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE,
    ),
    "§6.5 SETTINGS ACK with a payload is FRAME_SIZE_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE,
    ),
    "§6.5.2 INITIAL_WINDOW_SIZE above 2^31-1 is FLOW_CONTROL_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE + " (its setting check is part of loading the frame)",
    ),
    "§6.7 PING with a length other than 8 is FRAME_SIZE_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE,
    ),
    "§6.9 WINDOW_UPDATE with a length other than 4 is FRAME_SIZE_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE,
    ),
    "§6.4 RST_STREAM with a length other than 4 is FRAME_SIZE_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE,
    ),
    "§6.3 PRIORITY with a length other than 5 is a FRAME_SIZE_ERROR stream error": (
        "GOAWAY PROTOCOL_ERROR",
        H2_CRATE + ", a connection error",
    ),
    "§5.1 DATA on a stream the client half-closed is STREAM_CLOSED": (
        "GOAWAY PROTOCOL_ERROR",
        "the h2 crate treats DATA on a half-closed (remote) stream as a connection "
        "PROTOCOL_ERROR (a TODO in its recv_data says so)",
    ),
    "§6.9 WINDOW_UPDATE with increment 0 on a stream is a PROTOCOL_ERROR stream error": (
        "GOAWAY PROTOCOL_ERROR",
        "the h2 crate checks the increment while loading the frame, before it looks "
        "at the stream, so it is a connection error",
    ),
    "§4.3 HPACK index beyond the table is COMPRESSION_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_HPACK,
    ),
    "§4.3 HPACK truncated integer is COMPRESSION_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_HPACK,
    ),
    "§4.3 HPACK string longer than the block is COMPRESSION_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_HPACK,
    ),
    "§4.3 HPACK table size update above SETTINGS_HEADER_TABLE_SIZE is COMPRESSION_ERROR": (
        "GOAWAY PROTOCOL_ERROR",
        H2_HPACK,
    ),
    "§8.2.1 upper-case field name is malformed": (
        "GOAWAY PROTOCOL_ERROR",
        H2_FIELD,
    ),
    "§8.2.1 field value with CR LF is malformed": (
        "GOAWAY PROTOCOL_ERROR",
        H2_FIELD,
    ),
    "§8.3 unknown pseudo-header is malformed": (
        "GOAWAY PROTOCOL_ERROR",
        H2_FIELD,
    ),
    "§8.1 trailers with a pseudo-header are malformed": (
        "response 200, then served",
        "the h2 crate drops the pseudo-headers of trailers without a word, and the "
        "gateway never sees them",
    ),
}


class CaseTimeout(Exception):
    pass


def error_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return "0x%x" % code


# ---------------------------------------------------------------------------------------
# Frames, written by hand


def frame(kind, flags=0, stream=0, payload=b""):
    """A frame: the 9-octet header (§4.1) and `payload`, whatever they say."""
    length = struct.pack(">I", len(payload))[1:]
    return length + struct.pack(">BBI", kind, flags, stream) + payload


def settings(*pairs, ack=False, stream=0):
    payload = b"".join(struct.pack(">HI", key, value) for key, value in pairs)
    return frame(SETTINGS, ACK if ack else 0, stream, payload)


def ping(payload=b"ringress", ack=False, stream=0, flags=None):
    if flags is None:
        flags = ACK if ack else 0
    return frame(PING, flags, stream, payload)


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_stream(stream, code=0x8):  # CANCEL
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def goaway(last=0, code=0, stream=0):
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code))


def priority_payload(depends_on, weight=16, exclusive=False):
    return struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight - 1)


def encode(fields):
    """An HPACK block for `fields` ((name, value) pairs, kept exactly as given: case,
    order, duplicates), static-table references and never-indexed literals only."""
    encoder = hpack.Encoder()
    return encoder.encode(
        [hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False
    )


def headers(stream, fields=None, end_stream=True, end_headers=True, block=None,
            priority=None, pad=None):
    """A HEADERS frame of `fields` (or of the raw `block`); `priority` is the
    PRIORITY flag's payload, `pad` a (pad length octet, padding) pair."""
    if block is None:
        block = encode(fields)
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = block
    if priority is not None:
        flags |= PRIORITY_FLAG
        payload = priority + payload
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad[0]]) + payload + pad[1]
    return frame(HEADERS, flags, stream, payload)


def continuation(stream, block, end_headers=True):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


def data(stream, payload=b"", end_stream=False, pad=None):
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad[0]]) + payload + pad[1]
    return frame(DATA, flags, stream, payload)


def request(path="/status/200", method="GET", extra=()):
    """A valid request's fields, then `extra` ones."""
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", HOST),
        (":path", path),
    ] + list(extra)


def without(fields, name):
    return [(n, v) for n, v in fields if n != name]


# ---------------------------------------------------------------------------------------
# One connection


class Conn:
    """A connection to the gateway with one deadline for the whole case. It answers
    the server's SETTINGS and PING itself, as any client must."""

    def __init__(self, port, preface=PREFACE + settings()):
        self.deadline = time.monotonic() + CASE_TIMEOUT
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CASE_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""
        self.closed = False
        self.reset = False
        self.decoder = hpack.Decoder()
        # A response block waiting for its CONTINUATION: (HEADERS frame, block).
        self.partial = None
        self.server_settings = {}
        self.got_settings = False
        self.settings_acks = 0
        self.connection_window_updates = 0
        if preface:
            self.send(preface)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *chunks):
        try:
            self.sock.sendall(b"".join(chunks))
        except (BrokenPipeError, ConnectionResetError):
            # The gateway has closed already; what it said first is read back.
            pass

    def left(self):
        return self.deadline - time.monotonic()

    def _receive(self):
        left = self.left()
        if left <= 0:
            raise CaseTimeout()
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise CaseTimeout() from None
        except ConnectionResetError:
            chunk = b""
            self.reset = True
        if not chunk:
            self.closed = True
        self.pending += chunk

    def _parse(self):
        """The next whole frame in `pending`, or None."""
        while len(self.pending) >= 9:
            length = int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < 9 + length:
                return None
            head, body = self.pending[:9], self.pending[9:9 + length]
            self.pending = self.pending[9 + length:]
            parsed, _ = hyperframe.frame.Frame.parse_frame_header(memoryview(head))
            parsed.parse_body(memoryview(body))
            if isinstance(parsed, (hyperframe.frame.HeadersFrame,
                                   hyperframe.frame.ContinuationFrame)):
                parsed = self._header_block(parsed)
                if parsed is None:
                    continue
            return parsed
        return None

    def _header_block(self, parsed):
        """A HEADERS frame (its CONTINUATIONs joined) with `.fields` decoded once the
        block is whole; None before."""
        if isinstance(parsed, hyperframe.frame.HeadersFrame):
            self.partial = (parsed, bytes(parsed.data))
        elif self.partial is not None:
            self.partial = (self.partial[0], self.partial[1] + bytes(parsed.data))
        else:
            raise ValueError("the server sent CONTINUATION without HEADERS")
        if "END_HEADERS" not in parsed.flags:
            return None
        first, block = self.partial
        self.partial = None
        first.fields = self.decoder.decode(block)
        return first

    def next_frame(self):
        """The next frame from the server, None once it closed; CaseTimeout past the
        deadline."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                self._answer(parsed)
                return parsed
            if self.closed:
                return None
            self._receive()

    def _answer(self, parsed):
        if isinstance(parsed, hyperframe.frame.SettingsFrame):
            if "ACK" in parsed.flags:
                self.settings_acks += 1
            else:
                self.got_settings = True
                self.server_settings.update(parsed.settings)
                self.send(settings(ack=True))
        elif isinstance(parsed, hyperframe.frame.PingFrame) and "ACK" not in parsed.flags:
            self.send(ping(bytes(parsed.opaque_data), ack=True))
        elif isinstance(parsed, hyperframe.frame.WindowUpdateFrame) and parsed.stream_id == 0:
            self.connection_window_updates += parsed.window_increment

    def handshake(self):
        """Waits until the server's SETTINGS came and ours were acknowledged; the
        server's settings."""
        while not self.got_settings or self.settings_acks < 1:
            if self.next_frame() is None:
                raise ValueError("the connection closed during the handshake")
        return self.server_settings

    def wait_close(self):
        """Whether the server closes the connection before the deadline."""
        try:
            while self.next_frame() is not None:
                pass
            return True
        except CaseTimeout:
            return False


def status_of(parsed):
    for name, value in parsed.fields:
        if name == ":status":
            return int(value)
    return None


def outcome(conn, stream=1, responses=True):
    """What the gateway does about the case, first decisive thing first:
    "GOAWAY CODE" (and the connection closed; else "... (connection left open)"),
    "RST_STREAM CODE" on `stream` ("... on stream N" when on another one),
    "response STATUS" on `stream` (not when `responses` is false), "closed without
    GOAWAY", or "nothing within 5 s"."""
    try:
        while True:
            parsed = conn.next_frame()
            if parsed is None:
                return "closed without GOAWAY" + (" (reset)" if conn.reset else "")
            if isinstance(parsed, hyperframe.frame.GoAwayFrame):
                seen = "GOAWAY " + error_name(parsed.error_code)
                if not conn.wait_close():
                    seen += " (connection left open)"
                return seen
            if isinstance(parsed, hyperframe.frame.RstStreamFrame):
                seen = "RST_STREAM " + error_name(parsed.error_code)
                if parsed.stream_id != stream:
                    seen += " on stream %d" % parsed.stream_id
                return seen
            if (responses and isinstance(parsed, hyperframe.frame.HeadersFrame)
                    and parsed.stream_id == stream):
                status = status_of(parsed)
                if status is None or status >= 200:
                    return "response %s" % status
    except CaseTimeout:
        return "nothing within %g s" % CASE_TIMEOUT


def served(conn, stream=FOLLOW_UP_STREAM):
    """Sends a valid request on `stream`: "served" when its 200 comes, else what did."""
    conn.send(headers(stream, request()))
    try:
        while True:
            parsed = conn.next_frame()
            if parsed is None:
                return "the connection closed"
            if isinstance(parsed, hyperframe.frame.GoAwayFrame):
                return "GOAWAY " + error_name(parsed.error_code)
            if isinstance(parsed, hyperframe.frame.RstStreamFrame) and parsed.stream_id == stream:
                return "RST_STREAM " + error_name(parsed.error_code)
            if isinstance(parsed, hyperframe.frame.HeadersFrame) and parsed.stream_id == stream:
                status = status_of(parsed)
                if status is not None and status >= 200:
                    return "served" if status == 200 else "response %d" % status
    except CaseTimeout:
        return "nothing within %g s" % CASE_TIMEOUT


def stream_outcome(conn, stream=1, responses=True):
    """[`outcome`], and when the stream (not the connection) ended, whether the
    connection still serves a new stream: "..., then served" when it does."""
    seen = outcome(conn, stream, responses)
    if seen.startswith(("RST_STREAM", "response")):
        after = served(conn)
        seen += ", then served" if after == "served" else ", then a new stream got: " + after
    return seen


# ---------------------------------------------------------------------------------------
# The cases

CASES = []


def case(name, *expected):
    """Registers a case: `name` (its RFC 9113 section first) and the observations
    (from [`outcome`] and friends) that conform."""
    def register(run):
        CASES.append((name, expected, run))
        return run
    return register


def connection_error(code):
    return "GOAWAY " + code


def stream_error(code):
    return "RST_STREAM %s, then served" % code


MALFORMED = (stream_error("PROTOCOL_ERROR"), "response 400, then served")

# §3.4 and §6.5: the preface and SETTINGS


@case("§3.4 a valid request with prior knowledge is answered", "served")
def valid_request(port):
    # Also the suite's own check that the gateway is up (a gateway still starting
    # may take a connection and drop it): tried for a while before it counts.
    give_up = time.monotonic() + CASE_TIMEOUT
    while True:
        try:
            conn = Conn(port)
            result = served(conn, 1)
            conn.close()
        except OSError as error:
            result = "cannot connect: %s" % error
        if result == "served" or time.monotonic() > give_up:
            return result
        time.sleep(0.1)


@case("§3.4 an invalid connection preface closes the connection",
      connection_error("PROTOCOL_ERROR"), "closed without GOAWAY")
def invalid_preface(port):
    conn = Conn(port, preface=b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
    return outcome(conn)


@case("§3.4 a preface not followed by SETTINGS closes the connection",
      connection_error("PROTOCOL_ERROR"), "closed without GOAWAY")
def preface_without_settings(port):
    conn = Conn(port, preface=PREFACE + ping())
    try:
        while True:
            parsed = conn.next_frame()
            if parsed is None:
                return "closed without GOAWAY"
            if isinstance(parsed, hyperframe.frame.GoAwayFrame):
                seen = "GOAWAY " + error_name(parsed.error_code)
                return seen + ("" if conn.wait_close() else " (connection left open)")
            if isinstance(parsed, hyperframe.frame.PingFrame) and "ACK" in parsed.flags:
                # No need to wait any longer: the PING was taken.
                return "PING ACK (the PING was taken as the first frame)"
    except CaseTimeout:
        return "nothing within %g s" % CASE_TIMEOUT


@case("§6.5 SETTINGS with a length not a multiple of 6 is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def settings_length(port):
    conn = Conn(port)
    conn.send(frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 65535)[:5]))
    return outcome(conn)


@case("§6.5 SETTINGS on a stream other than 0 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def settings_on_stream(port):
    conn = Conn(port)
    conn.send(settings((MAX_CONCURRENT_STREAMS, 100), stream=1))
    return outcome(conn)


@case("§6.5 SETTINGS ACK with a payload is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def settings_ack_payload(port):
    conn = Conn(port)
    conn.handshake()
    conn.send(settings((MAX_CONCURRENT_STREAMS, 100), ack=True))
    return outcome(conn)


@case("§6.5.2 ENABLE_PUSH other than 0 or 1 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def enable_push_2(port):
    conn = Conn(port)
    conn.send(settings((ENABLE_PUSH, 2)))
    return outcome(conn)


@case("§6.5.2 INITIAL_WINDOW_SIZE above 2^31-1 is FLOW_CONTROL_ERROR",
      connection_error("FLOW_CONTROL_ERROR"))
def initial_window_too_large(port):
    conn = Conn(port)
    conn.send(settings((INITIAL_WINDOW_SIZE, 2**31)))
    return outcome(conn)


@case("§6.5.2 MAX_FRAME_SIZE below 16384 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def max_frame_size_too_small(port):
    conn = Conn(port)
    conn.send(settings((MAX_FRAME_SIZE, 16383)))
    return outcome(conn)


@case("§6.5.2 MAX_FRAME_SIZE above 2^24-1 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def max_frame_size_too_large(port):
    conn = Conn(port)
    conn.send(settings((MAX_FRAME_SIZE, 2**24)))
    return outcome(conn)


@case("§6.5.3 SETTINGS is acknowledged", "SETTINGS ACK")
def settings_acknowledged(port):
    conn = Conn(port)
    conn.handshake()
    acks = conn.settings_acks
    conn.send(settings((MAX_CONCURRENT_STREAMS, 100), (INITIAL_WINDOW_SIZE, 65535)))
    try:
        while conn.settings_acks == acks:
            parsed = conn.next_frame()
            if parsed is None:
                return "closed without SETTINGS ACK"
            if isinstance(parsed, hyperframe.frame.GoAwayFrame):
                return "GOAWAY " + error_name(parsed.error_code)
    except CaseTimeout:
        return "no SETTINGS ACK within %g s" % CASE_TIMEOUT
    return "SETTINGS ACK"


@case("§6.5.2 an unknown setting is ignored", "served")
def unknown_setting(port):
    conn = Conn(port)
    conn.send(settings((0xFA17, 1), (MAX_CONCURRENT_STREAMS, 100)))
    return served(conn, 1)


# §4 and §6: frames


@case("§4.2 a HEADERS frame over SETTINGS_MAX_FRAME_SIZE is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def headers_too_large(port):
    conn = Conn(port)
    limit = conn.handshake().get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
    # A block of exactly limit + 1 octets.
    size = limit
    while True:
        block = encode(request(extra=[("x-filler", "a" * size)]))
        if len(block) == limit + 1:
            break
        size += limit + 1 - len(block)
    conn.send(headers(1, block=block))
    return outcome(conn)


@case("§4.2 a DATA frame over SETTINGS_MAX_FRAME_SIZE is FRAME_SIZE_ERROR",
      stream_error("FRAME_SIZE_ERROR"), connection_error("FRAME_SIZE_ERROR"))
def data_too_large(port):
    conn = Conn(port)
    limit = conn.handshake().get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              data(1, b"a" * (limit + 1), end_stream=True))
    return stream_outcome(conn)


@case("§4.1 an unknown frame type is ignored", "served")
def unknown_frame_type(port):
    conn = Conn(port)
    conn.send(frame(0xFA, 0xFF, 0, b"whatever"))
    return served(conn, 1)


@case("§4.1 unknown flags are ignored", "PING ACK with the same payload")
def unknown_flags(port):
    conn = Conn(port)
    return ping_answer(conn, ping(b"flagged!", flags=0xFE))


def ping_answer(conn, sent):
    conn.send(sent)
    payload = sent[9:]
    try:
        while True:
            parsed = conn.next_frame()
            if parsed is None:
                return "closed without PING ACK"
            if isinstance(parsed, hyperframe.frame.GoAwayFrame):
                return "GOAWAY " + error_name(parsed.error_code)
            if isinstance(parsed, hyperframe.frame.PingFrame) and "ACK" in parsed.flags:
                if bytes(parsed.opaque_data) == payload:
                    return "PING ACK with the same payload"
                return "PING ACK with %r" % bytes(parsed.opaque_data)
    except CaseTimeout:
        return "no PING ACK within %g s" % CASE_TIMEOUT


@case("§6.7 PING is answered with a PING ACK of the same payload",
      "PING ACK with the same payload")
def ping_is_answered(port):
    conn = Conn(port)
    return ping_answer(conn, ping(b"conform!"))


@case("§6.7 PING on a stream other than 0 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def ping_on_stream(port):
    conn = Conn(port)
    conn.send(ping(stream=1))
    return outcome(conn)


@case("§6.7 PING with a length other than 8 is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def ping_length(port):
    conn = Conn(port)
    conn.send(ping(b"1234567"))
    return outcome(conn)


@case("§6.8 GOAWAY on a stream other than 0 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def goaway_on_stream(port):
    conn = Conn(port)
    conn.send(goaway(stream=1))
    return outcome(conn)


@case("§6.9 WINDOW_UPDATE with a length other than 4 is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def window_update_length(port):
    conn = Conn(port)
    conn.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000)[:3]))
    return outcome(conn)


@case("§6.1 DATA on stream 0 is PROTOCOL_ERROR", connection_error("PROTOCOL_ERROR"))
def data_on_stream_0(port):
    conn = Conn(port)
    conn.send(data(0, b"hello"))
    return outcome(conn)


@case("§6.2 HEADERS on stream 0 is PROTOCOL_ERROR", connection_error("PROTOCOL_ERROR"))
def headers_on_stream_0(port):
    conn = Conn(port)
    conn.send(headers(0, request()))
    return outcome(conn)


@case("§6.4 RST_STREAM on stream 0 is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def rst_stream_on_stream_0(port):
    conn = Conn(port)
    conn.send(rst_stream(0))
    return outcome(conn)


@case("§6.4 RST_STREAM on an idle stream is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def rst_stream_idle(port):
    conn = Conn(port)
    conn.send(rst_stream(1))
    return outcome(conn)


@case("§6.4 RST_STREAM with a length other than 4 is FRAME_SIZE_ERROR",
      connection_error("FRAME_SIZE_ERROR"))
def rst_stream_length(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              frame(RST_STREAM, 0, 1, b"\x00\x00\x08"))
    return outcome(conn)


@case("§6.3 PRIORITY with a length other than 5 is a FRAME_SIZE_ERROR stream error",
      stream_error("FRAME_SIZE_ERROR"))
def priority_length(port):
    conn = Conn(port)
    conn.send(frame(PRIORITY, 0, 1, priority_payload(0)[:4]))
    return stream_outcome(conn)


@case("§6.10 CONTINUATION without a preceding HEADERS is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def continuation_alone(port):
    conn = Conn(port)
    conn.send(continuation(1, encode(request())))
    return outcome(conn)


@case("§6.10 another frame between HEADERS and its CONTINUATION is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def frame_inside_header_block(port):
    conn = Conn(port)
    block = encode(request())
    conn.send(headers(1, block=block[:3], end_headers=False), ping(),
              continuation(1, block[3:]))
    return outcome(conn)


@case("§6.10 CONTINUATION on another stream than its HEADERS is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def continuation_other_stream(port):
    conn = Conn(port)
    block = encode(request())
    conn.send(headers(1, block=block[:3], end_headers=False), continuation(3, block[3:]))
    return outcome(conn)


@case("§6.1 DATA padding longer than the payload is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def data_padding(port):
    conn = Conn(port)
    # Pad Length 10 in a frame whose payload is 5 octets (the Pad Length included).
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              frame(DATA, PADDED | END_STREAM, 1, b"\x0a" + b"abcd"))
    return outcome(conn)


@case("§6.2 HEADERS padding as long as the payload is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def headers_padding(port):
    conn = Conn(port)
    block = encode(request())
    # Pad Length equal to the payload's length (the Pad Length octet and the block):
    # one more than the most there is room for.
    conn.send(frame(HEADERS, PADDED | END_HEADERS | END_STREAM, 1,
                    bytes([len(block) + 1]) + block))
    return outcome(conn)


# §5.1: stream states


@case("§5.1 DATA on an idle stream is PROTOCOL_ERROR", connection_error("PROTOCOL_ERROR"))
def data_idle(port):
    conn = Conn(port)
    conn.send(data(1, b"hello", end_stream=True))
    return outcome(conn)


@case("§5.1 WINDOW_UPDATE on an idle stream is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def window_update_idle(port):
    conn = Conn(port)
    conn.send(window_update(1, 1000))
    return outcome(conn)


@case("§5.1.1 an even stream id from the client is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def even_stream(port):
    conn = Conn(port)
    conn.send(headers(2, request()))
    return outcome(conn, stream=2)


@case("§5.1.1 a stream id lower than one already used is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def lower_stream(port):
    conn = Conn(port)
    conn.send(headers(5, request()), headers(3, request()))
    return outcome(conn, stream=3)


@case("§5.1 DATA on a stream the client half-closed is STREAM_CLOSED",
      stream_error("STREAM_CLOSED"), connection_error("STREAM_CLOSED"))
def data_after_end_stream(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST")), data(1, b"late", end_stream=True))
    # The request's own response may come first: only an error decides.
    return stream_outcome(conn, responses=False)


@case("§5.3.1 HEADERS depending on its own stream is a PROTOCOL_ERROR stream error",
      stream_error("PROTOCOL_ERROR"))
def headers_self_dependency(port):
    conn = Conn(port)
    conn.send(headers(1, request(), priority=priority_payload(1)))
    return stream_outcome(conn)


@case("§5.3.1 PRIORITY depending on its own stream is a PROTOCOL_ERROR stream error",
      stream_error("PROTOCOL_ERROR"))
def priority_self_dependency(port):
    conn = Conn(port)
    conn.send(frame(PRIORITY, 0, 1, priority_payload(1)))
    return stream_outcome(conn)


# §6.9: flow control


@case("§6.9 WINDOW_UPDATE with increment 0 on the connection is PROTOCOL_ERROR",
      connection_error("PROTOCOL_ERROR"))
def window_update_zero_connection(port):
    conn = Conn(port)
    conn.send(window_update(0, 0))
    return outcome(conn)


@case("§6.9 WINDOW_UPDATE with increment 0 on a stream is a PROTOCOL_ERROR stream error",
      stream_error("PROTOCOL_ERROR"))
def window_update_zero_stream(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              window_update(1, 0))
    return stream_outcome(conn)


@case("§6.9.1 WINDOW_UPDATE past 2^31-1 on the connection is FLOW_CONTROL_ERROR",
      connection_error("FLOW_CONTROL_ERROR"))
def window_overflow_connection(port):
    conn = Conn(port)
    conn.send(window_update(0, MAX_WINDOW))
    return outcome(conn)


@case("§6.9.1 WINDOW_UPDATE past 2^31-1 on a stream is a FLOW_CONTROL_ERROR stream error",
      stream_error("FLOW_CONTROL_ERROR"))
def window_overflow_stream(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              window_update(1, MAX_WINDOW))
    return stream_outcome(conn)


@case("§6.9.2 INITIAL_WINDOW_SIZE taking a stream's window past 2^31-1 is "
      "FLOW_CONTROL_ERROR", connection_error("FLOW_CONTROL_ERROR"))
def initial_window_overflow(port):
    conn = Conn(port)
    conn.handshake()
    # The server's window for stream 1 at its largest, then 1 more by the setting.
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              window_update(1, MAX_WINDOW - DEFAULT_WINDOW),
              settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW + 1)))
    return outcome(conn)


@case("§6.9.1 DATA beyond the window the server advertised is FLOW_CONTROL_ERROR",
      stream_error("FLOW_CONTROL_ERROR"), connection_error("FLOW_CONTROL_ERROR"))
def data_beyond_window(port):
    conn = Conn(port)
    server = conn.handshake()
    limit = server.get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
    window = min(server.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW),
                 DEFAULT_WINDOW + conn.connection_window_updates)
    # One octet more than the smaller window, sent at once (before the gateway can
    # have read, and given back, any of it).
    frames, left = [], window + 1
    while left > 0:
        n = min(limit, left)
        frames.append(data(1, b"x" * n))
        left -= n
    conn.send(headers(1, request("/anything", "POST"), end_stream=False), *frames)
    return stream_outcome(conn)


# §4.3: header compression


def hpack_case(block):
    def run(port):
        conn = Conn(port)
        conn.send(headers(1, block=block))
        return outcome(conn)
    return run


case("§4.3 HPACK index beyond the table is COMPRESSION_ERROR",
     connection_error("COMPRESSION_ERROR"))(
    # Indexed field 70: the static table has 61 entries, the dynamic one none.
    hpack_case(b"\x82\x86" + bytes([0x80 | 70])))
case("§4.3 HPACK truncated integer is COMPRESSION_ERROR",
     connection_error("COMPRESSION_ERROR"))(
    # An indexed field whose 7-bit prefix is full and whose continuation never ends.
    hpack_case(b"\x82\x86\xff\x80"))
case("§4.3 HPACK string longer than the block is COMPRESSION_ERROR",
     connection_error("COMPRESSION_ERROR"))(
    # A literal whose value says 16 octets, of which 3 follow.
    hpack_case(b"\x82\x86\x00\x05x-big\x10abc"))
case("§4.3 HPACK table size update above SETTINGS_HEADER_TABLE_SIZE is COMPRESSION_ERROR",
     connection_error("COMPRESSION_ERROR"))(
    # A dynamic table size update to 8192 (5-bit prefix 31, then 8161), above the
    # default 4096 (RFC 7541 §6.3), then a valid request.
    hpack_case(b"\x3f\xe1\x3f" + encode(request())))


# §8.1, §8.2 and §8.3: messages, fields and pseudo-headers


def malformed_case(fields):
    def run(port):
        conn = Conn(port)
        conn.send(headers(1, fields))
        return stream_outcome(conn)
    return run


for title, fields in [
    ("§8.2.1 upper-case field name is malformed",
     request(extra=[("X-Upper", "1")])),
    ("§8.2.1 field value with CR LF is malformed",
     request(extra=[("x-split", "a\r\nx-injected: 1")])),
    ("§8.2.2 te other than trailers is malformed",
     request(extra=[("te", "gzip")])),
    ("§8.3 unknown pseudo-header is malformed",
     request(extra=[(":foo", "bar")])),
    ("§8.3 pseudo-header after a regular field is malformed",
     request()[:3] + [("x-first", "1"), (":path", "/status/200")]),
    ("§8.3 response pseudo-header :status in a request is malformed",
     request()[:1] + [(":status", "200")] + request()[1:]),
    ("§8.3.1 missing :method is malformed", without(request(), ":method")),
    ("§8.3.1 missing :scheme is malformed", without(request(), ":scheme")),
    ("§8.3.1 missing :path is malformed", without(request(), ":path")),
    ("§8.3.1 empty :path is malformed",
     without(request(), ":path") + [(":path", "")]),
    ("§8.3.1 duplicate :path is malformed",
     request() + [(":path", "/status/200")]),
]:
    case(title, *MALFORMED)(malformed_case(fields))

for field, value in [("connection", "keep-alive"), ("keep-alive", "timeout=5"),
                     ("proxy-connection", "keep-alive"),
                     ("transfer-encoding", "chunked"), ("upgrade", "h2c")]:
    case("§8.2.2 connection-specific field %s is malformed" % field, *MALFORMED)(
        malformed_case(request(extra=[(field, value)])))


@case("§8.2.2 te: trailers is allowed", "served")
def te_trailers(port):
    conn = Conn(port)
    conn.send(headers(1, request(extra=[("te", "trailers")])))
    return served_on(conn, 1)


def served_on(conn, stream):
    """The outcome of a request already sent on `stream`: "served" when its 200 came."""
    seen = outcome(conn, stream)
    return "served" if seen == "response 200" else seen


@case("§8.1.1 content-length above the DATA sent is malformed", *MALFORMED)
def content_length_above(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST", [("content-length", "10")]),
                      end_stream=False),
              data(1, b"hello", end_stream=True))
    return stream_outcome(conn)


@case("§8.1.1 content-length below the DATA sent is malformed", *MALFORMED)
def content_length_below(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST", [("content-length", "2")]),
                      end_stream=False),
              data(1, b"hello", end_stream=True))
    return stream_outcome(conn)


@case("§8.1 trailers with a pseudo-header are malformed", *MALFORMED)
def trailers_with_pseudo(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              data(1, b"hello"),
              headers(1, [(":path", "/status/200"), ("x-trailer", "1")]))
    return stream_outcome(conn)


@case("§8.1 trailers without END_STREAM are malformed", *MALFORMED)
def trailers_without_end_stream(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST"), end_stream=False),
              data(1, b"hello"),
              headers(1, [("x-trailer", "1")], end_stream=False))
    return stream_outcome(conn)


@case("§8.1 a valid request with trailers is answered", "served, the body echoed")
def trailers_valid(port):
    conn = Conn(port)
    conn.send(headers(1, request("/anything", "POST", [("te", "trailers")]),
                      end_stream=False),
              data(1, b"hello, trailers"),
              headers(1, [("x-trailer", "1")]))
    seen = served_on(conn, 1)
    if seen != "served":
        return seen
    body = read_body(conn, 1)
    if b"hello, trailers" in body:
        return "served, the body echoed"
    return "served, but the echo lacks the body: %r" % body[:300]


def read_body(conn, stream):
    """The DATA of `stream` until its END_STREAM (or the deadline)."""
    body = b""
    try:
        while True:
            parsed = conn.next_frame()
            if parsed is None:
                return body
            if isinstance(parsed, hyperframe.frame.DataFrame) and parsed.stream_id == stream:
                body += bytes(parsed.data)
                if "END_STREAM" in parsed.flags:
                    return body
    except CaseTimeout:
        return body


# ---------------------------------------------------------------------------------------


def run_case(port, run):
    try:
        return run(port)
    except CaseTimeout:
        return "nothing within %g s" % CASE_TIMEOUT
    except (OSError, ValueError, hpack.HPACKError,
            hyperframe.exceptions.HyperframeError) as error:
        return "%s: %s" % (type(error).__name__, error)


def main():
    parser = argparse.ArgumentParser(
        description="RFC 9113 conformance of an HTTP/2 (h2c) server on 127.0.0.1:PORT")
    parser.add_argument("port", type=int)
    parser.add_argument("only", nargs="*", help="run only cases whose name has one")
    parser.add_argument("--strict", action="store_true",
                        help="count known deviations (XFAIL) as failures")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    for name in KNOWN_DEVIATIONS:
        if name not in [c[0] for c in CASES]:
            print("the known deviation %r names no case" % name, file=sys.stderr)
            return 2
    cases = [c for c in CASES if not args.only or any(s in c[0] for s in args.only)]
    if args.list:
        for name, expected, _ in cases:
            print("%s: %s" % (name, " or ".join(expected)))
        return 0
    started = time.monotonic()
    counts = {"PASS": 0, "FAIL": 0, "XFAIL": 0, "XPASS": 0}
    for name, expected, run in cases:
        if time.monotonic() - started > BUDGET:
            seen = "not run: the suite's %g s were up" % BUDGET
        else:
            seen = run_case(args.port, run)
        known = KNOWN_DEVIATIONS.get(name)
        wanted = " or ".join(expected)
        if seen in expected and known is None:
            verdict = "PASS"
            line = "PASS %s" % name + (" (%s)" % seen if len(expected) > 1 else "")
        elif seen in expected:
            verdict = "XPASS"
            line = ("XPASS %s: got %s as RFC 9113 wants; remove it from "
                    "KNOWN_DEVIATIONS" % (name, seen))
        elif known is not None and seen == known[0]:
            verdict = "XFAIL"
            line = "XFAIL %s: RFC 9113 wants %s; got %s (known: %s)" % (
                name, wanted, seen, known[1])
        else:
            verdict = "FAIL"
            line = "FAIL %s: expected %s / got %s" % (name, wanted, seen)
        counts[verdict] += 1
        print(line, flush=True)
    failed = counts["FAIL"] + counts["XPASS"] + (counts["XFAIL"] if args.strict else 0)
    print("%d cases in %.1f s: %d passed, %d known deviations (XFAIL), %d failed%s" % (
        len(cases), time.monotonic() - started, counts["PASS"], counts["XFAIL"],
        counts["FAIL"] + counts["XPASS"], " (strict)" if args.strict else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
