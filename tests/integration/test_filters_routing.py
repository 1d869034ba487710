"""Capture, TokenRouter and Concatenate on the wire (filters.md §2, §4, §10, §13).

Each test starts the real proxy with a config file, talks UDP over loopback and
asserts the bytes seen by the servers and by the client.  "Nothing arrived"
is checked by sending a sentinel through the same client afterwards: one
client 4-tuple is served by one worker in order, so once the sentinel has
arrived, an earlier packet that was not dropped would have arrived too.

Expected values: bytes on the wire and what is dropped are the spec's (filters.md sections
2, 4, 10, 13; v0.7.0 tests/match.rs); exit 255 for a bad filter config is spec cli.md
section 5."""

import base64

import pytest

from conftest import expect_quiet, run_quilkin


def b64(data):
    return base64.b64encode(data).decode()


def tagged(tag):
    """Echo reply function: prefix the datagram with ``tag``."""
    return lambda data: tag + data


def endpoints_yaml(endpoints):
    """``endpoints``: list of (server, [token bytes, ...] or None)."""
    out = ["version: v1alpha1", "clusters:", "  - endpoints:"]
    for server, tokens in endpoints:
        out.append(f"      - address: {server.addr}")
        if tokens is not None:
            out += ["        metadata:", "          quilkin.dev:", "            tokens:"]
            out += [f"              - {b64(t)}" for t in tokens]
    return "\n".join(out) + "\n"


def config(endpoints, filters):
    return endpoints_yaml(endpoints) + "filters:\n" + filters


def received(server):
    return [d for d, _ in server.snapshot()]


def assert_quiet(*servers, counts):
    """No server gets more than it should: polled for SILENCE seconds (fails at the first
    extra datagram), then each must hold exactly its count."""
    def check():
        for server, n in zip(servers, counts):
            assert server.count() <= n, f"{server.addr}: {received(server)!r}"
    expect_quiet(check)
    for server, n in zip(servers, counts):
        assert server.count() == n, f"{server.addr}: {received(server)!r}"


CAPTURE_SUFFIX_ROUTER = """\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      suffix:
        size: 3
        remove: true
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
"""


# --------------------------------------------------------------------------
# Capture + TokenRouter
# --------------------------------------------------------------------------

def test_suffix_token_routes_and_is_removed(proxy, servers, clients):
    a = servers(echo=tagged(b"a:"))
    b = servers(echo=tagged(b"b:"))
    p = proxy(config=config([(a, [b"abc"]), (b, [b"xyz"])], CAPTURE_SUFFIX_ROUTER))
    client = clients(p.port)

    # the token (last 3 bytes) selects the endpoint and is gone before forwarding
    assert client.request(b"helloabc") == (b"a:hello", ("127.0.0.1", p.port))
    assert received(a) == [b"hello"]
    assert received(b) == []

    assert client.request(b"worldxyz")[0] == b"b:world"
    assert received(a) == [b"hello"]
    assert received(b) == [b"world"]


def test_wrong_or_missing_token_is_dropped(proxy, servers, clients):
    a = servers(echo=False)
    b = servers(echo=False)
    p = proxy(config=config([(a, [b"abc"]), (b, [b"xyz"])], CAPTURE_SUFFIX_ROUTER))
    client = clients(p.port)

    client.send(b"hellozzz")   # no endpoint holds zzz
    client.send(b"helloab")    # the token is case- and length-exact: "oab"
    client.send(b"ab")         # too short to capture 3 bytes
    client.send(b"helloABC")
    client.send(b"sentinel-aabc")
    client.send(b"sentinel-bxyz")
    a.wait_for(b"sentinel-a")
    b.wait_for(b"sentinel-b")
    assert received(a) == [b"sentinel-a"]
    assert received(b) == [b"sentinel-b"]
    client.expect_silence()   # echo is off: nothing comes back either
    assert p.running()


def test_two_endpoints_each_get_only_their_packets(proxy, servers, clients):
    a = servers(echo=tagged(b"A"))
    b = servers(echo=tagged(b"B"))
    p = proxy(config=config([(a, [b"abc", b"alt"]), (b, [b"xyz"])], CAPTURE_SUFFIX_ROUTER))
    c1 = clients(p.port)
    c2 = clients(p.port)

    sent_a, sent_b = [], []
    replies_due = {c1: [], c2: []}
    for i in range(20):
        client = c1 if i % 2 == 0 else c2
        if i % 3 == 0:
            body = f"to-b-{i}".encode()
            client.send(body + b"xyz")
            sent_b.append(body)
            replies_due[client].append(b"B" + body)
        else:
            body = f"to-a-{i}".encode()
            client.send(body + (b"abc" if i % 4 else b"alt"))   # either token of a
            sent_a.append(body)
            replies_due[client].append(b"A" + body)
    a.wait_count(len(sent_a))
    b.wait_count(len(sent_b))
    assert sorted(received(a)) == sorted(sent_a)
    assert sorted(received(b)) == sorted(sent_b)

    # replies come back to the client that sent the packet, with the token still removed
    for client, due in replies_due.items():
        got = [d for d, _ in client.recv_n(len(due))]
        assert sorted(got) == sorted(due)
        client.expect_silence(0.1)
    assert_quiet(a, b, counts=(len(sent_a), len(sent_b)))


def test_shared_token_fans_out(proxy, servers, clients):
    a = servers(echo=False)
    b = servers(echo=False)
    c = servers(echo=False)
    p = proxy(config=config([(a, [b"grp"]), (b, [b"grp", b"bbb"]), (c, [b"ccc"])],
                            CAPTURE_SUFFIX_ROUTER))
    client = clients(p.port)
    client.send(b"allgrp")
    client.send(b"onlybbb")
    a.wait_for(b"all")
    b.wait_for(b"only")
    assert received(a) == [b"all"]
    assert received(b) == [b"all", b"only"]
    assert_quiet(a, b, c, counts=(1, 2, 0))


# --------------------------------------------------------------------------
# Capture prefix and regex
# --------------------------------------------------------------------------

def test_capture_prefix_custom_key(proxy, servers, clients):
    a = servers(echo=True)
    b = servers(echo=True)
    filters = """\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      metadataKey: example.org/session
      prefix:
        size: 4
        remove: true
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
    config:
      metadataKey: example.org/session
"""
    p = proxy(config=config([(a, [b"\x00\x01\x02\x03"]), (b, [b"\xff\xfe\xfd\xfc"])], filters))
    client = clients(p.port)
    assert client.request(b"\x00\x01\x02\x03payload")[0] == b"payload"
    assert client.request(b"\xff\xfe\xfd\xfcother")[0] == b"other"
    client.send(b"\x00\x01\x02")          # shorter than the prefix: dropped
    client.send(b"\x00\x01\x02\x03")      # exactly the token: empty payload forwarded
    a.wait_for(b"")
    assert received(a) == [b"payload", b""]
    assert received(b) == [b"other"]


def test_capture_prefix_without_remove_keeps_bytes(proxy, servers, clients):
    a = servers(echo=False)
    filters = """\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      prefix: { size: 2 }
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
"""
    p = proxy(config=config([(a, [b"id"])], filters))
    clients(p.port).send(b"id-kept")
    a.wait_for(b"id-kept")


def test_capture_regex_routes_without_modifying(proxy, servers, clients):
    a = servers(echo=True)
    b = servers(echo=True)
    filters = """\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      regex:
        pattern: 'id:[0-9]+'
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
"""
    p = proxy(config=config([(a, [b"id:1"]), (b, [b"id:22"])], filters))
    client = clients(p.port)
    assert client.request(b"x id:22 y")[0] == b"x id:22 y"   # packet unchanged
    assert client.request(b"id:1")[0] == b"id:1"
    # two matches make a List, which TokenRouter refuses; no match: Capture fails
    client.send(b"id:1 id:22")
    client.send(b"no token here")
    client.send(b"id:333")             # one match, but nobody holds it
    client.send(b"last id:1")
    a.wait_for(b"last id:1")
    assert received(a) == [b"id:1", b"last id:1"]
    assert received(b) == [b"x id:22 y"]


# --------------------------------------------------------------------------
# Concatenate
# --------------------------------------------------------------------------

@pytest.mark.parametrize("on_read,on_write,data,at_server,at_client", [
    ("APPEND", "DO_NOTHING", b"hello", b"hellotok", b"hellotok"),
    ("PREPEND", "DO_NOTHING", b"hello", b"tokhello", b"tokhello"),
    ("DO_NOTHING", "APPEND", b"hello", b"hello", b"hellotok"),
    ("DO_NOTHING", "PREPEND", b"hello", b"hello", b"tokhello"),
    ("APPEND", "PREPEND", b"\x00\xff", b"\x00\xfftok", b"tok\x00\xfftok"),
    ("PREPEND", "APPEND", b"", b"tok", b"toktok"),
])
def test_concatenate(proxy, servers, clients, on_read, on_write, data, at_server, at_client):
    echo = servers(echo=True)
    filters = f"""\
  - name: quilkin.filters.concatenate.v1alpha1.Concatenate
    config:
      on_read: {on_read}
      on_write: {on_write}
      bytes: {b64(b"tok")}
"""
    p = proxy(config=config([(echo, None)], filters))
    client = clients(p.port)
    assert client.request(data) == (at_client, ("127.0.0.1", p.port))
    assert received(echo) == [at_server]


def test_concatenate_chain_order(proxy, servers, clients):
    """proxy.md §4 (tests/filter_order.rs without Compress): read forward, write reverse."""
    echo = servers(echo=True)
    filters = f"""\
  - name: quilkin.filters.concatenate.v1alpha1.Concatenate
    config: {{ on_read: APPEND, on_write: APPEND, bytes: {b64(b"1")} }}
  - name: quilkin.filters.concatenate.v1alpha1.Concatenate
    config: {{ on_read: APPEND, on_write: APPEND, bytes: {b64(b"2")} }}
"""
    p = proxy(config=config([(echo, None)], filters))
    client = clients(p.port)
    assert client.request(b"x")[0] == b"x1221"
    assert received(echo) == [b"x12"]


def test_concatenate_bad_config_is_rejected(quilkin_bin, tmp_path, servers):
    echo = servers(echo=False)
    path = tmp_path / "bad.yaml"
    path.write_text(config([(echo, None)], """\
  - name: quilkin.filters.concatenate.v1alpha1.Concatenate
    config: { on_read: append, bytes: dG9r }
"""))
    proc = run_quilkin(["--no-admin", "-c", str(path), "proxy", "--port", "0"],
                       cwd=str(tmp_path))
    # spec cli.md §5: a bad config is a start-up error, exit 255 (a crash would differ)
    assert proc.returncode == 255, (proc.returncode, proc.stderr)
    assert "unknown variant `append`" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# Match + Capture + Concatenate (filters.md §10, v0.7.0 tests/match.rs)
# --------------------------------------------------------------------------

def test_match_capture_concatenate(proxy, servers, clients):
    echo = servers(echo=True)
    filters = f"""\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      suffix:
        size: 3
        remove: true
  - name: quilkin.filters.match.v1alpha1.Match
    config:
      on_read:
        metadataKey: quilkin.dev/capture
        fallthrough:
          name: quilkin.filters.concatenate.v1alpha1.Concatenate
          config:
            on_read: APPEND
            bytes: {b64(b"def")}
        branches:
          - value: abc
            name: quilkin.filters.concatenate.v1alpha1.Concatenate
            config:
              on_read: APPEND
              bytes: {b64(b"xyz")}
          - value: xyz
            name: quilkin.filters.concatenate.v1alpha1.Concatenate
            config:
              on_read: APPEND
              bytes: {b64(b"abc")}
"""
    p = proxy(config=config([(echo, None)], filters))  # a start-up failure fails the test
    client = clients(p.port)
    for sent, want in [(b"helloabc", b"helloxyz"), (b"helloxyz", b"helloabc"),
                       (b"hellodef", b"hellodef"), (b"hellofgh", b"hellodef")]:
        assert client.request(sent) == (want, ("127.0.0.1", p.port)), sent
    assert received(echo) == [b"helloxyz", b"helloabc", b"hellodef", b"hellodef"]
    client.send(b"hi")   # too short for the capture: dropped before Match
    client.expect_silence()
