#!/usr/bin/env python3
"""A gRPC service (grpcio, plaintext HTTP/2) for ringress's tests, and its client.

Usage:
  grpc_service.py serve PORT_FILE
      Serves on 127.0.0.1 (a free port, written to PORT_FILE once serving) the
      standard health service (grpc.health.v1.Health, "" SERVING) and
      ringress.test.Echo with raw-bytes messages:
        Unary          echoes the request; b"fail" aborts NOT_FOUND "no such thing";
                       b"slow" answers after 3 s; b"metadata" echoes the call's
                       metadata as "key=value;" pairs
        ServerStream   the request, then "1", "2", ... as many times as its length
        ClientStream   every request joined
        Bidi           each request echoed as it arrives, upper-cased
      Every response carries the trailing metadata x-echo-trailer: done.
  grpc_service.py call TARGET [--ca CA --name NAME] CALL...
      Makes each CALL on TARGET (TLS when --ca is given, the server name NAME) and
      prints one JSON line per call: {"call", "code", "details", "responses",
      "trailers"}. CALLs: health, unary:TEXT, server:TEXT, client:A,B,C, bidi:A,B,C,
      pingpong:A,B,C (Bidi, each message sent only once the answer to the one before
      came: the response streams while the request is still open), missing (a
      method no service has), deadline:SECONDS (a unary "slow" call with that
      deadline).
"""

import json
import os
import queue
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "ringress.test.Echo"


def trailer(context):
    context.set_trailing_metadata((("x-echo-trailer", "done"),))


def unary(request, context):
    trailer(context)
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"slow":
        time.sleep(3)
    if request == b"metadata":
        pairs = "".join(f"{k}={v};" for k, v in context.invocation_metadata())
        return pairs.encode()
    return request


def server_stream(request, context):
    trailer(context)
    yield request
    for i in range(len(request)):
        yield str(i + 1).encode()


def client_stream(requests, context):
    trailer(context)
    return b",".join(requests)


def bidi(requests, context):
    trailer(context)
    for request in requests:
        yield request.upper()


def serve(port_file):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    server.wait_for_termination()


def result(call, code, details, responses, trailers):
    print(
        json.dumps(
            {
                "call": call,
                "code": code.name,
                "details": details,
                "responses": responses,
                "trailers": {k: v for k, v in (trailers or ())},
            }
        ),
        flush=True,
    )


def call(argv):
    target = argv[0]
    rest = argv[1:]
    ca = name = None
    if rest[:1] == ["--ca"]:
        ca, rest = rest[1], rest[2:]
    if rest[:1] == ["--name"]:
        name, rest = rest[1], rest[2:]
    if ca:
        with open(ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = (("grpc.ssl_target_name_override", name),) if name else ()
        channel = grpc.secure_channel(target, credentials, options)
    else:
        channel = grpc.insecure_channel(target)
    for spec in rest:
        kind, _, arg = spec.partition(":")
        method = {
            "unary": "Unary",
            "deadline": "Unary",
            "server": "ServerStream",
            "client": "ClientStream",
            "bidi": "Bidi",
            "pingpong": "Bidi",
            "missing": "Missing",
        }.get(kind)
        try:
            if kind == "health":
                stub = health_pb2_grpc.HealthStub(channel)
                response, c = stub.Check.with_call(
                    health_pb2.HealthCheckRequest(service=""), timeout=10
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                result(spec, c.code(), c.details(), [status], c.trailing_metadata())
            elif kind in ("unary", "missing", "deadline"):
                timeout = float(arg) if kind == "deadline" else 10
                payload = b"slow" if kind == "deadline" else arg.encode()
                path = f"/{SERVICE}/{method}" if kind != "missing" else "/no.Such/Method"
                stub = channel.unary_unary(path)
                response, c = stub.with_call(payload, timeout=timeout)
                result(spec, c.code(), c.details(), [response.decode()], c.trailing_metadata())
            elif kind == "server":
                stream = channel.unary_stream(f"/{SERVICE}/{method}")(arg.encode(), timeout=10)
                responses = [r.decode() for r in stream]
                result(spec, stream.code(), stream.details(), responses, stream.trailing_metadata())
            elif kind == "client":
                stub = channel.stream_unary(f"/{SERVICE}/{method}")
                parts = iter([p.encode() for p in arg.split(",")])
                response, c = stub.with_call(parts, timeout=10)
                result(spec, c.code(), c.details(), [response.decode()], c.trailing_metadata())
            elif kind == "bidi":
                stream = channel.stream_stream(f"/{SERVICE}/{method}")(
                    iter([p.encode() for p in arg.split(",")]), timeout=10
                )
                responses = [r.decode() for r in stream]
                result(spec, stream.code(), stream.details(), responses, stream.trailing_metadata())
            elif kind == "pingpong":
                answered = queue.Queue()

                def requests(parts):
                    for i, part in enumerate(parts):
                        if i > 0:
                            answered.get(timeout=10)
                        yield part.encode()

                stream = channel.stream_stream(f"/{SERVICE}/{method}")(
                    requests(arg.split(",")), timeout=10
                )
                responses = []
                for r in stream:
                    responses.append(r.decode())
                    answered.put(True)
                result(spec, stream.code(), stream.details(), responses, stream.trailing_metadata())
            else:
                raise SystemExit(f"unknown call {spec}")
        except grpc.RpcError as e:
            result(spec, e.code(), e.details(), [], e.trailing_metadata())


def main():
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "call":
        call(sys.argv[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
