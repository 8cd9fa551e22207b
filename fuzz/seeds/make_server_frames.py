#!/usr/bin/env python3
"""Writes the seed corpus of the `server_frames` fuzz target into fuzz/seeds/server_frames/.

Built from the golden vectors in tests/data/protocol-vectors.json plus requests that reach
each branch of the target's handler. Input format (see fuzz_targets/server_frames.rs):
flags:u8, then per WebSocket message header:u16le (kind << 14 | len) + len bytes;
kind 0 binary, 1 text, 2 ping. flags bit 0: close early; bit 1: WebSocket-level limit.

Run from anywhere: python3 fuzz/seeds/make_server_frames.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "server_frames")

BINARY, TEXT, PING = 0, 1, 2


def msg(data, kind=BINARY):
    assert len(data) < 0x4000
    return struct.pack("<H", kind << 14 | len(data)) + data


def seed(flags, *messages):
    return bytes([flags]) + b"".join(messages)


def request(n, name, payload=b"", typ=0x7F):
    name = name.encode()
    pad = b"\x00" if typ == 0x81 and len(name) % 2 == 1 else b""
    return bytes([typ]) + struct.pack("<Q", n) + bytes([len(name)]) + name + pad + payload


vectors = json.load(open(os.path.join(ROOT, "tests", "data", "protocol-vectors.json")))
c2s_valid = [bytes.fromhex(v["hex"]) for v in vectors
             if v["valid"] and v["direction"] == "client-to-server"]
s2c_valid = [bytes.fromhex(v["hex"]) for v in vectors
             if v["valid"] and v["direction"] == "server-to-client"]
invalid = {v["name"]: bytes.fromhex(v["hex"]) for v in vectors if not v["valid"]}

handler_requests = [
    request(1, "echo", b"hello"),
    request(2, "fail", b"x", 0x80),
    request(3, "oops", b"x"),
    request(4, "big", b"x"),
    request(5, "sleep", b"\x10", 0x7F),
    request(6, "login", b"a\x00", 0x81),
    bytes([0x20]) + struct.pack("<Q", 7) + b"k0",
    bytes([0x20]) + struct.pack("<Q", 8) + b"s",
    request(9, "logout", b"", 0x80),
    bytes([0x1F]) + struct.pack("<Q", 10),
    request(1, "echo", b"same id again"),
]

seeds = {
    # Every valid client message of the golden vectors, in one connection.
    "vectors_client": seed(0, *(msg(m) for m in c2s_valid)),
    # Server-bound types sent by a client are ignored.
    "vectors_server_types": seed(0, *(msg(m) for m in s2c_valid), msg(c2s_valid[-1])),
    # Each handler branch, sessions included.
    "handler_all": seed(0, *(msg(m) for m in handler_requests)),
    "handler_all_close_early": seed(1, *(msg(m) for m in handler_requests)),
    # Violations after valid requests.
    "then_malformed": seed(0, msg(handler_requests[0]), msg(invalid["request_no_name_no_payload"]),
                           msg(handler_requests[1])),
    "then_text": seed(0, msg(handler_requests[0]), msg(b"hello", TEXT)),
    "then_oversize": seed(0, msg(handler_requests[0]), msg(request(11, "echo", b"x" * 1100))),
    "then_oversize_ws_limit": seed(2, msg(handler_requests[0]),
                                   msg(request(11, "echo", b"x" * 1100))),
    "exactly_limit": seed(2, msg(request(12, "echo", b"y" * (1024 - 15)))),
    "then_empty": seed(0, msg(b"\x21"), msg(b"")),
    "ping_heartbeat": seed(0, msg(b"are you there", PING), msg(b"\x21"), msg(handler_requests[0])),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
