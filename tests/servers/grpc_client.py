"""A gRPC client for tests/record.rs, on grpcio and without a schema: calls each method of
tests/servers/grpc_items.py (unary, a NOT_FOUND, server-, client- and bidirectional
streaming) at HOST:PORT and prints what each call got, one JSON line per call: the
messages in hex and the status's name. Usage: grpc_client.py HOST:PORT"""

import json
import sys

import grpc


def same(b):
    return b


channel = grpc.insecure_channel(sys.argv[1])
get = channel.unary_unary("/test.Items/Get", request_serializer=same, response_deserializer=same)
list_items = channel.unary_stream("/test.Items/List", request_serializer=same, response_deserializer=same)
put = channel.stream_unary("/test.Items/Put", request_serializer=same, response_deserializer=same)
chat = channel.stream_stream("/test.Items/Chat", request_serializer=same, response_deserializer=same)

calls = [
    ("Get id1", lambda: [get(b"id1", timeout=10)]),
    ("Get nf2", lambda: [get(b"nf2", timeout=10)]),
    ("List 3", lambda: list(list_items(b"\x03", timeout=10))),
    ("Put", lambda: [put(iter([b"a", b"bb", b"\x00\xff"]), timeout=10)]),
    ("Chat", lambda: list(chat(iter([b"xy", b"z"]), timeout=10))),
]
for name, call in calls:
    try:
        got, status = [m.hex() for m in call()], "OK"
    except grpc.RpcError as e:
        got, status = [], e.code().name
    print(json.dumps({"call": name, "got": got, "status": status}), flush=True)
