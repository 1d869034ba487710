"""Filters that transform or route packets end to end: Compress (filters.md §3) across
two chained proxies and against the spec's Snappy vectors, garbage dropped by a DECOMPRESS
proxy, Match routing on captured metadata (§10) and Timestamp (§12) leaving packets alone.

Expected values: the Snappy framing vectors and filter semantics are the spec's
(filters.md sections 3, 10, 12); every filter is registered (spec filters.md section 1.1),
so a proxy that does not start fails the test."""

import random
import struct
import time

COMPRESS = "quilkin.filters.compress.v1alpha1.Compress"
CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
MATCH = "quilkin.filters.match.v1alpha1.Match"
CONCAT = "quilkin.filters.concatenate.v1alpha1.Concatenate"
TIMESTAMP = "quilkin.filters.timestamp.v1alpha1.Timestamp"

HELLO_FRAMED = bytes.fromhex("ff060000734e61507059" "01090000bb1f1c19" "68656c6c6f")
A16_FRAMED = bytes.fromhex("ff060000734e61507059" "01140000a278e96e") + b"a" * 16
A16_COMPRESSED = bytes.fromhex("ff060000734e61507059" "000a0000a278e96e" "1000613a0100")


def config(endpoint, filters_yaml):
    return f"""\
version: v1alpha1
clusters:
  - endpoints:
      - address: {endpoint}
filters:
{filters_yaml}"""


def compress_filter(on_read, on_write):
    return f"""\
  - name: {COMPRESS}
    config:
      on_read: {on_read}
      on_write: {on_write}
"""


def test_compress_between_two_chained_proxies(proxy, servers, clients):
    """client -> A {COMPRESS / DECOMPRESS} -> B {DECOMPRESS / COMPRESS} -> echo server."""
    server = servers("127.0.0.1")
    b = proxy(config=config(server.addr, compress_filter("DECOMPRESS", "COMPRESS")))
    a = proxy(config=config(f"127.0.0.1:{b.port}", compress_filter("COMPRESS", "DECOMPRESS")))
    client = clients(a.port)

    rng = random.Random(7)
    payloads = [
        b"hello",
        b"a" * 16,
        b"x",
        b"the quick brown fox " * 200,            # compressible: a type 0x00 chunk
        bytes(rng.getrandbits(8) for _ in range(1200)),  # incompressible: type 0x01
        bytes(30000),
    ]
    for i, data in enumerate(payloads):
        got, src = client.request(data)
        assert got == data, f"payload {i}"
        assert src == ("127.0.0.1", a.port)
    assert [d for d, _ in server.snapshot()] == payloads


def test_compress_single_proxy_emits_spec_vectors(proxy, servers, clients):
    server = servers("127.0.0.1", echo=lambda data: b"reply")
    p = proxy(config=config(server.addr, compress_filter("COMPRESS", "DO_NOTHING")))
    client = clients(p.port)

    assert client.request(b"hello") == (b"reply", ("127.0.0.1", p.port))
    assert client.request(b"a" * 16)[0] == b"reply"
    got = [d for d, _ in server.wait_count(2)]
    assert got == [HELLO_FRAMED, A16_FRAMED]


def test_compress_empty_datagram_stays_empty(proxy, servers, clients):
    server = servers("127.0.0.1", echo=False)
    p = proxy(config=config(server.addr, compress_filter("COMPRESS", "DO_NOTHING")))
    client = clients(p.port)
    client.send(b"")
    client.send(b"hello")
    server.wait_for(HELLO_FRAMED)
    assert [d for d, _ in server.snapshot()] == [b"", HELLO_FRAMED]


def test_decompress_drops_garbage_and_keeps_serving(proxy, servers, clients):
    server = servers("127.0.0.1")  # echoes; the proxy compresses the reply
    p = proxy(config=config(server.addr, compress_filter("DECOMPRESS", "COMPRESS")))
    bad = clients(p.port)
    good = clients(p.port)

    rng = random.Random(11)
    garbage = [
        b"hello",                                 # unframed: no stream identifier
        HELLO_FRAMED[:-1],                        # truncated
        HELLO_FRAMED[:14] + b"\x00" + HELLO_FRAMED[15:],  # CRC mismatch
        HELLO_FRAMED[:10] + b"\x02" + HELLO_FRAMED[11:],  # reserved unskippable chunk
        bytes(rng.getrandbits(8) for _ in range(300)),
        b"\xff\x06\x00\x00sNaPpY\x00\x10\x00\x00" + bytes(16),  # bad raw block
    ]
    for data in garbage:
        bad.send(data)
    assert good.request(HELLO_FRAMED) == (HELLO_FRAMED, ("127.0.0.1", p.port))
    assert good.request(A16_COMPRESSED)[0] == A16_FRAMED
    # the decompressed bytes reached the server; none of the garbage did
    assert [d for d, _ in server.wait_count(2)] == [b"hello", b"a" * 16]
    bad.expect_silence()
    assert [d for d, _ in server.snapshot()] == [b"hello", b"a" * 16]
    # the bad client is not banned: a valid packet from it still passes
    assert bad.request(HELLO_FRAMED)[0] == HELLO_FRAMED


def _match_proxy_port(proxy, server, filters):
    """Every filter is registered: a proxy that does not start fails the test (the fixture
    raises with its exit status and log)."""
    return proxy(config=config(server.addr, filters)).port


def test_match_spec_example_end_to_end(proxy, servers, clients):
    server = servers("127.0.0.1", echo=False)
    filters = f"""\
  - name: {CAPTURE}
    config:
      metadataKey: example.org/version
      prefix: {{ size: 1, remove: true }}
  - name: {MATCH}
    config:
      on_read:
        metadataKey: example.org/version
        branches:
          - value: 1
            name: quilkin.filters.pass.v1alpha1.Pass
          - value: 2
            name: {CONCAT}
            config: {{ on_read: PREPEND, bytes: djI6 }}
        fallthrough:
          name: quilkin.filters.drop.v1alpha1.Drop
"""
    port = _match_proxy_port(proxy, server, filters)
    client = clients(port)
    client.send(b"\x03dropped")
    client.send(b"\x01plain")
    client.send(b"\x02tagged")
    client.send(b"")  # nothing to capture: Capture fails
    client.send(b"\x01last")
    server.wait_for(b"last")
    assert [d for d, _ in server.snapshot()] == [b"plain", b"v2:tagged", b"last"]


def test_match_rs_suffix_routing(proxy, servers, clients):
    """v0.7.0 tests/match.rs: a 3-byte suffix picks what gets appended."""
    server = servers("127.0.0.1", echo=False)
    filters = f"""\
  - name: {CAPTURE}
    config:
      metadataKey: myapp.com/token
      suffix: {{ size: 3, remove: true }}
  - name: {MATCH}
    config:
      on_read:
        metadataKey: myapp.com/token
        branches:
          - value: abc
            name: {CONCAT}
            config: {{ on_read: APPEND, bytes: eHl6 }}
          - value: xyz
            name: {CONCAT}
            config: {{ on_read: APPEND, bytes: YWJj }}
        fallthrough:
          name: {CONCAT}
          config: {{ on_read: APPEND, bytes: ZGVm }}
"""
    port = _match_proxy_port(proxy, server, filters)
    client = clients(port)
    cases = [(b"helloabc", b"helloxyz"), (b"helloxyz", b"helloabc"),
             (b"hellodef", b"hellodef"), (b"hellofgh", b"hellodef")]
    for sent, _ in cases:
        client.send(sent)
    got = [d for d, _ in server.wait_count(len(cases))]
    assert got == [want for _, want in cases]


def test_match_on_write_without_metadata_drops_replies(proxy, servers, clients):
    """Metadata never crosses directions: a write-side Match finds nothing and drops."""
    server = servers("127.0.0.1")
    filters = f"""\
  - name: {MATCH}
    config:
      on_write:
        metadataKey: example.org/any
        branches:
          - value: 1
            name: quilkin.filters.pass.v1alpha1.Pass
        fallthrough:
          name: quilkin.filters.pass.v1alpha1.Pass
"""
    port = _match_proxy_port(proxy, server, filters)
    client = clients(port)
    client.send(b"ping")
    server.wait_for(b"ping")  # read is not configured: passes
    client.expect_silence()   # the echo is dropped on write


def test_timestamp_observes_without_touching_packets(proxy, servers, clients):
    server = servers("127.0.0.1")
    filters = f"""\
  - name: {CAPTURE}
    config: {{ metadataKey: example.org/sent_at, suffix: {{ size: 8, remove: true }} }}
  - name: {TIMESTAMP}
    config: {{ metadataKey: example.org/sent_at }}
  - name: {TIMESTAMP}
    config: {{ metadataKey: never.set }}
"""
    port = _match_proxy_port(proxy, server, filters)
    client = clients(port)
    now = int(time.time())
    stamps = [now - 2, now + 30, -1, -(2 ** 63), 2 ** 63 - 1, 0]
    for i, t in enumerate(stamps):
        data, _ = client.request(b"m%d" % i + struct.pack(">q", t))
        # the reply passes both Timestamps on write, unchanged (no metadata there)
        assert data == b"m%d" % i
    assert [d for d, _ in server.snapshot()] == [b"m%d" % i for i in range(len(stamps))]
