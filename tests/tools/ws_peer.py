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

import websockets

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
    elif args.mode == "idle":
        asyncio.run(idle(args))
    else:
        autobahn(args)


if __name__ == "__main__":
    main()
