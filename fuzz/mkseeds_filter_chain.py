#!/usr/bin/env python3
"""Writes fuzz/corpus/filter_chain/seed_<name>.bin for every YAML config in that directory.

The binary format is the one fuzz/filter_chain.c reads:
    u16 LE config length L, L bytes of YAML, then packets, each
    u8 flags (bit 0: write direction, bit 1: IPv6 client), u16 LE length, bytes.
Every seed gets the same packet set: plain text, a capturable suffix, the spec's Snappy
vectors (filters.md §3) in both directions, an 8-byte big-endian timestamp suffix, an empty
datagram and garbage. Re-run it after adding YAML files; it overwrites its own outputs only.

Usage: python3 fuzz/mkseeds_filter_chain.py [CORPUS_DIR]
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "corpus", "filter_chain")

READ, WRITE, V6 = 0, 1, 2

HELLO_FRAMED = bytes.fromhex("ff060000734e61507059" "01090000bb1f1c19" "68656c6c6f")
A16_COMPRESSED = bytes.fromhex("ff060000734e61507059" "000a0000a278e96e" "100061 3a0100"
                               .replace(" ", ""))
A16_FRAMED = bytes.fromhex("ff060000734e61507059" "01140000a278e96e") + b"a" * 16

PACKETS = [
    (READ, b"hello"),
    (READ, b"helloabc"),
    (READ, b"\x01payload"),
    (READ | V6, b"\x02v2 payload"),
    (READ, HELLO_FRAMED),
    (READ, A16_COMPRESSED),
    (WRITE, HELLO_FRAMED),
    (WRITE, A16_FRAMED),
    (WRITE, b"hello"),
    (READ, b"sent" + struct.pack(">q", 1700000000 - 3)),
    (WRITE | V6, b"reply" + struct.pack(">q", 1700000000 + 5)),
    (READ, b""),
    (READ, HELLO_FRAMED[:12]),
    (READ, bytes(range(256)) * 4),
]


def encode(config: bytes) -> bytes:
    if len(config) > 0xFFFF:
        raise ValueError("config too long for the u16 length prefix")
    out = bytearray(struct.pack("<H", len(config)))
    out += config
    for flags, data in PACKETS:
        out += struct.pack("<BH", flags, len(data))
        out += data
    return bytes(out)


def main(argv):
    corpus = argv[1] if len(argv) > 1 else DEFAULT_DIR
    names = sorted(n for n in os.listdir(corpus) if n.endswith((".yaml", ".yml")))
    for name in names:
        with open(os.path.join(corpus, name), "rb") as f:
            config = f.read()
        stem = os.path.splitext(name)[0]
        path = os.path.join(corpus, f"seed_{stem}.bin")
        with open(path, "wb") as f:
            f.write(encode(config))
    print(f"wrote {len(names)} seeds to {corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
