#!/usr/bin/env python3
"""A record-level TLS client for ringress's hostile-peer tests, built on tlslite-ng.

It completes (or starts) a real TLS handshake with the gateway and then misbehaves at
the record layer in one named way: a handshake message split over records with another
record between them, a KeyUpdate in pieces, a renegotiation ClientHello in TLS 1.2, an
empty alert, an oversized record. It prints one JSON object saying what the gateway
did (the alert it sent, whether it closed, the response it gave) and exits 0; the
Rust tests (tests/hostile.rs) decide whether that was right.

    tls_peer.py --port 8443 --sni httpbin.example.com SCENARIO

Scenarios: see SCENARIOS below. Every socket operation has a timeout, so a gateway
that never answers shows up as "timeout", never as a hang.
"""

import argparse
import json
import os
import socket
import sys

from tlslite.api import HandshakeSettings, TLSConnection
from tlslite.constants import AlertDescription, ContentType, HandshakeType
from tlslite.errors import TLSAbruptCloseError, TLSRemoteAlert
from tlslite.messages import KeyUpdate, Message
from tlslite.constants import KeyUpdateMessageType

# Seconds any one socket operation may take; --timeout changes it.
TIMEOUT = 10.0


class CoalescingSocket:
    """A socket whose sends are held back until `flush` (or the next receive), so that
    several records go out in one TCP segment and reach the gateway together."""

    def __init__(self, sock):
        self.sock = sock
        self.held = bytearray()
        self.holding = False

    def send(self, data):
        if self.holding:
            self.held += data
            return len(data)
        return self.sock.send(data)

    def sendall(self, data):
        self.send(data)

    def flush(self):
        if self.held:
            self.sock.sendall(bytes(self.held))
            self.held = bytearray()

    def recv(self, n):
        self.flush()
        return self.sock.recv(n)

    def __getattr__(self, name):
        return getattr(self.sock, name)


class Peer(TLSConnection):
    """A TLS connection that can split chosen handshake messages over records, with
    other records sent between the pieces."""

    def __init__(self, sock):
        super().__init__(sock)
        # handshake type -> (split offset, records to send between the pieces)
        self.splits = {}

    def split(self, handshake_type, at, between):
        self.splits[handshake_type] = (at, between)

    def _sendMsg(self, msg, randomizeFirstBlock=True, update_hashes=True):
        buf = msg.write()
        if msg.contentType == ContentType.handshake and buf and buf[0] in self.splits:
            at, between = self.splits.pop(buf[0])
            if update_hashes:
                self._handshake_hash.update(buf)
            pieces = [Message(ContentType.handshake, buf[:at])]
            pieces += between
            pieces.append(Message(ContentType.handshake, buf[at:]))
            for piece in pieces:
                for result in self._sendMsgThroughSocket(piece):
                    yield result
            return
        for result in super()._sendMsg(msg, randomizeFirstBlock, update_hashes):
            yield result

    def send_record(self, content_type, payload):
        """One record of `content_type`, protected with the current keys."""
        for _ in self._sendMsgThroughSocket(Message(content_type, bytearray(payload))):
            pass


def app_data(payload=b"x"):
    return Message(ContentType.application_data, bytearray(payload))


def settings_for(version):
    settings = HandshakeSettings()
    settings.minVersion = version
    settings.maxVersion = version
    # Only AES-128-GCM: the suite every gateway offers first.
    settings.cipherNames = ["aes128gcm"]
    return settings


def request_bytes(sni):
    return (
        "GET /status/200 HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls_peer\r\n\r\n" % sni
    ).encode()


def outcome(conn):
    """Reads until the gateway closes, answers or times out; describes what came."""
    result = {"alert": None, "closed": False, "data": "", "timeout": False}
    data = bytearray()
    try:
        while True:
            chunk = conn.read(max=65536)
            if not chunk:
                result["closed"] = True
                break
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except TLSRemoteAlert as alert:
        result["alert"] = AlertDescription.toStr(alert.description)
        result["closed"] = True
    except TLSAbruptCloseError:
        result["closed"] = True
    except socket.timeout:
        result["timeout"] = True
    except (ConnectionResetError, BrokenPipeError):
        result["closed"] = True
    result["data"] = data.decode("latin-1")
    return result


def status_of(result):
    if result is None:
        return None
    head = result["data"].split("\r\n", 1)[0]
    parts = head.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def connect(args, version, coalesce=False):
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=TIMEOUT)
    raw.settimeout(TIMEOUT)
    sock = CoalescingSocket(raw) if coalesce else raw
    return Peer(sock), sock


def handshake(conn, args, version):
    conn.handshakeClientCert(serverName=args.sni, settings=settings_for(version))


def handshake_failure(conn, args, version):
    """Runs a handshake expected to fail; returns the outcome as `outcome` does."""
    result = {"alert": None, "closed": False, "data": "", "timeout": False}
    try:
        handshake(conn, args, version)
    except TLSRemoteAlert as alert:
        result["alert"] = AlertDescription.toStr(alert.description)
        result["closed"] = True
        return result
    except (TLSAbruptCloseError, ConnectionResetError, BrokenPipeError):
        result["closed"] = True
        return result
    except socket.timeout:
        result["timeout"] = True
        return result
    # The client's flight went out; the gateway answers it on the next read.
    return outcome(conn)


TLS13 = (3, 4)
TLS12 = (3, 3)


def finished_split(args):
    """TLS 1.3: the client Finished in two records, application data between them."""
    conn, _ = connect(args, TLS13)
    conn.split(HandshakeType.finished, 2, [app_data()])
    return handshake_failure(conn, args, TLS13)


def finished_fragmented(args):
    """TLS 1.3: the client Finished in two records back to back (allowed)."""
    conn, _ = connect(args, TLS13)
    conn.split(HandshakeType.finished, 2, [])
    handshake(conn, args, TLS13)
    conn.write(request_bytes(args.sni))
    return outcome(conn)


def certificate_split(args):
    """TLS 1.3 to a MUTUAL server: an empty client Certificate in two records,
    application data between them."""
    conn, _ = connect(args, TLS13)
    conn.split(HandshakeType.certificate, 2, [app_data()])
    return handshake_failure(conn, args, TLS13)


def keyupdate(conn, at, between):
    conn.split(HandshakeType.key_update, at, between)
    for _ in conn.send_keyupdate_request(KeyUpdateMessageType.update_not_requested):
        pass


def keyupdate_split_with_finished(args):
    """TLS 1.3: the Finished and a KeyUpdate split around application data in one
    segment, so the gateway sees them before the handshake is done with."""
    conn, sock = connect(args, TLS13, coalesce=True)
    sock.holding = False
    # Hold everything from the client's second flight on.
    original = conn._sendMsg

    def holding_send(msg, *a, **k):
        if msg.contentType == ContentType.handshake and msg.write()[:1] == bytearray([HandshakeType.finished]):
            sock.holding = True
        return original(msg, *a, **k)

    conn._sendMsg = holding_send
    handshake(conn, args, TLS13)
    keyupdate(conn, 2, [app_data()])
    sock.holding = False
    sock.flush()
    return outcome(conn)


def first_request(conn, args):
    """A request and its answer, so what follows comes on an established connection
    that served; with --at-handshake nothing: it comes right after the Finished, as
    tlsfuzzer sends it. The outcome (or None)."""
    if args.at_handshake:
        return None
    conn.write(request_bytes(args.sni))
    return outcome(conn)


def keyupdate_split(args):
    """TLS 1.3, established: a KeyUpdate in two records, application data between."""
    conn, _ = connect(args, TLS13)
    handshake(conn, args, TLS13)
    first = first_request(conn, args)
    keyupdate(conn, 2, [app_data()])
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def keyupdate_fragmented(args):
    """TLS 1.3, established: a KeyUpdate in two records back to back (RFC 8446 5.1
    allows it), then a request under the new key."""
    conn, _ = connect(args, TLS13)
    handshake(conn, args, TLS13)
    first = first_request(conn, args)
    keyupdate(conn, 2, [])
    conn.write(request_bytes(args.sni))
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def keyupdate_fragmented_with_finished(args):
    """Like keyupdate-fragmented, but the pieces arrive with the Finished."""
    conn, sock = connect(args, TLS13, coalesce=True)
    original = conn._sendMsg

    def holding_send(msg, *a, **k):
        if msg.contentType == ContentType.handshake and msg.write()[:1] == bytearray([HandshakeType.finished]):
            sock.holding = True
        return original(msg, *a, **k)

    conn._sendMsg = holding_send
    handshake(conn, args, TLS13)
    keyupdate(conn, 2, [])
    conn.write(request_bytes(args.sni))
    sock.holding = False
    sock.flush()
    return outcome(conn)


def renegotiation_split(args):
    """TLS 1.2, established: a renegotiating ClientHello in two records,
    application data between them."""
    conn, _ = connect(args, TLS12)
    handshake(conn, args, TLS12)
    conn.write(request_bytes(args.sni))
    first = outcome(conn)
    # A plausible ClientHello body: its framing is what matters here.
    body = bytearray(b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00" + b"\x00\x00")
    hello = bytearray([HandshakeType.client_hello]) + len(body).to_bytes(3, "big") + body
    conn.send_record(ContentType.handshake, hello[:6])
    conn.send_record(ContentType.application_data, b"x")
    conn.send_record(ContentType.handshake, hello[6:])
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def empty_alert(args):
    """TLS 1.3, established: an alert record with no content (RFC 8446 5.4:
    unexpected_message)."""
    conn, _ = connect(args, TLS13)
    handshake(conn, args, TLS13)
    first = first_request(conn, args)
    conn.send_record(ContentType.alert, b"")
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def empty_handshake(args):
    """TLS 1.3, established: a handshake record with no content (RFC 8446 5.4)."""
    conn, _ = connect(args, TLS13)
    handshake(conn, args, TLS13)
    first = first_request(conn, args)
    conn.send_record(ContentType.handshake, b"")
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def record_overflow(args):
    """TLS 1.3, established: a record whose ciphertext is one byte over 2^14 + 256
    (garbage, so its tag is wrong too: the length is checked first)."""
    conn, _ = connect(args, TLS13)
    handshake(conn, args, TLS13)
    first = first_request(conn, args)
    length = (1 << 14) + 256 + 1
    raw = conn.sock
    raw.sendall(bytes([23, 3, 3]) + length.to_bytes(2, "big") + os.urandom(length))
    result = outcome(conn)
    result["first_status"] = status_of(first)
    return result


def request(args):
    """A plain well-behaved request over TLS 1.3 (or 1.2 with --tls12)."""
    version = TLS12 if args.tls12 else TLS13
    conn, _ = connect(args, version)
    handshake(conn, args, version)
    conn.write(request_bytes(args.sni))
    return outcome(conn)


SCENARIOS = {
    "finished-split": finished_split,
    "finished-fragmented": finished_fragmented,
    "certificate-split": certificate_split,
    "keyupdate-split": keyupdate_split,
    "keyupdate-split-with-finished": keyupdate_split_with_finished,
    "keyupdate-fragmented": keyupdate_fragmented,
    "keyupdate-fragmented-with-finished": keyupdate_fragmented_with_finished,
    "renegotiation-split": renegotiation_split,
    "empty-alert": empty_alert,
    "empty-handshake": empty_handshake,
    "record-overflow": record_overflow,
    "request": request,
}


def main():
    global TIMEOUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--tls12", action="store_true")
    parser.add_argument("--at-handshake", action="store_true",
                        help="TLS 1.3 scenarios: send the misbehaving records right after "
                             "the handshake, before any request")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds one socket operation may take (default %(default)s)")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    TIMEOUT = args.timeout
    try:
        result = SCENARIOS[args.scenario](args)
    except socket.timeout:
        result = {"alert": None, "closed": False, "data": "", "timeout": True}
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as error:
        result = {"alert": None, "closed": True, "data": "", "timeout": False,
                  "error": type(error).__name__}
    except TLSRemoteAlert as alert:
        result = {"alert": AlertDescription.toStr(alert.description), "closed": True,
                  "data": "", "timeout": False}
    except TLSAbruptCloseError:
        result = {"alert": None, "closed": True, "data": "", "timeout": False}
    result["status"] = status_of(result)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
