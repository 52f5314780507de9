"""A gRPC server for tests/grpc.rs, on grpcio: service test.Items with a unary, a
server-streaming, a client-streaming and a bidirectional method. Messages are bytes as they
came (no schema): each method logs what it received, in hex, one call per line, to the file
named by the second argument, so a test can check that the server got exactly the recorded
messages. Get answers an Item (tests/servers/items.proto) whose stock is 7, or 8 from the
"v2" build (a known change for response comparison).
Usage: grpc_items.py PORT LOG [v2] (PORT 0: any free port). Prints the port once serving."""

import sys
from concurrent import futures

import grpc

log = open(sys.argv[2], "a", buffering=1)
stock = 8 if sys.argv[3:] == ["v2"] else 7


def get(request, context):
    log.write(f"Get {request.hex()}\n")
    # A known share of calls answer NOT_FOUND: those whose message starts with "nf".
    if request.startswith(b"nf"):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
    # An Item in protobuf's wire format: name (1) "item:" + the request, stock (2).
    name = b"item:" + request
    return b"\x0a" + bytes([len(name)]) + name + b"\x10" + bytes([stock])


def list_items(request, context):
    log.write(f"List {request.hex()}\n")
    for i in range(request[0] if request else 0):
        yield bytes([0x08, i])


def put(requests, context):
    got = list(requests)
    log.write("Put " + ",".join(m.hex() for m in got) + "\n")
    return bytes([0x08, len(got)])


def chat(requests, context):
    for m in requests:
        log.write(f"Chat {m.hex()}\n")
        yield m[::-1]


handlers = grpc.method_handlers_generic_handler(
    "test.Items",
    {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "List": grpc.unary_stream_rpc_method_handler(list_items),
        "Put": grpc.stream_unary_rpc_method_handler(put),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handlers,))
port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print(f"listening {port}", flush=True)
server.wait_for_termination()
