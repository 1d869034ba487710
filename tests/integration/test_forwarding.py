"""Data path: client -> proxy -> endpoint(s) -> proxy -> client (proxy.md §3, §6, §7).

Expected values: the data path's rules are the spec's (proxy.md sections 3, 5, 6, 7; the
seed's map form: config.md section 6; --to replacing the unlocated group: cli.md section 2.1
step 3); the exit summary lines (`totals:`, `dropped N packets: REASON`, `shutdown
complete`) and the Debug filter's line text are quilkin-c's (docs/test-expectations.md E1,
E2)."""

import os
import re
import signal
import socket

import pytest


def tagged(tag):
    """Reply function for UdpServer: prefix the datagram with ``tag``."""
    return lambda data: tag + data


def test_to_forwards_exact_bytes_and_replies_from_proxy_port(proxy, servers, clients):
    server = servers("127.0.0.1", echo=tagged(b"reply:"))
    p = proxy("--to", server.addr)
    p.wait_log(f"listening on [::]:{p.port}")
    client = clients(p.port)

    payload = b"hello quilkin \x00\x01\xfe\xff"
    client.send(payload)
    data, src = client.recv()
    assert data == b"reply:" + payload
    assert src == ("127.0.0.1", p.port)

    got = server.snapshot()
    assert len(got) == 1
    sdata, ssrc = got[0]
    assert sdata == payload
    # The server talks to the proxy's upstream socket, never to the client.
    assert ssrc[0] == "127.0.0.1"
    assert ssrc[1] not in (client.port, p.port)


def test_config_file_list_form(proxy, echo_v4, clients):
    config = f"""\
version: v1alpha1
id: list-form
clusters:
  - endpoints:
      - address: {echo_v4.addr}
"""
    p = proxy(config=config)
    p.wait_log("loaded ")
    client = clients(p.port)
    assert client.request(b"list-form") == (b"list-form", ("127.0.0.1", p.port))
    assert [d for d, _ in echo_v4.snapshot()] == [b"list-form"]


def test_config_file_map_form_from_seed(proxy, servers, clients):
    """The seed document's `clusters: {default: {localities: [...]}}` form."""
    unlocated = servers("127.0.0.1", echo=tagged(b"u:"))
    located = servers("127.0.0.1", echo=tagged(b"l:"))
    config = f"""\
clusters:
  default:
    localities:
      - endpoints:
        - address: {unlocated.addr}
          metadata:
            canary: false
            quilkin.dev: # This object is extracted by Quilkin and is usually reserved for built-in features
                tokens:
                - MXg3aWp5Ng== # base64 for 1x7ijy6
                - OGdqM3YyaQ== # base64 for 8gj3v2i
      - locality: {{ region: us-east1 }}
        endpoints:
          - address: {located.addr}
"""
    p = proxy(config=config)
    client = clients(p.port)
    client.send(b"seed")
    replies = sorted(d for d, _ in client.recv_n(2))
    assert replies == [b"l:seed", b"u:seed"]
    assert [d for d, _ in unlocated.snapshot()] == [b"seed"]
    assert [d for d, _ in located.snapshot()] == [b"seed"]
    client.expect_silence(0.3)


def test_each_client_gets_its_own_upstream_port(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    cs = [clients(p.port) for _ in range(6)]
    for i, c in enumerate(cs):
        c.send(b"client-%d" % i)
    # Each reply goes back to the client that sent it, and only to it.
    for i, c in enumerate(cs):
        assert c.recv() == (b"client-%d" % i, ("127.0.0.1", p.port))
    for c in cs:
        c.expect_silence(0.1)

    got = echo_v4.snapshot()
    assert sorted(d for d, _ in got) == sorted(b"client-%d" % i for i in range(6))
    ports = {src[1] for _, src in got}
    assert len(ports) == 6, f"upstream source ports not distinct: {got}"
    assert not ports & ({c.port for c in cs} | {p.port})


def test_same_client_keeps_its_upstream_port(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    client = clients(p.port)
    for i in range(10):
        assert client.request(b"seq-%d" % i) == (b"seq-%d" % i, ("127.0.0.1", p.port))
    got = echo_v4.snapshot()
    assert [d for d, _ in got] == [b"seq-%d" % i for i in range(10)]
    assert len({src for _, src in got}) == 1, got


def test_every_endpoint_receives_every_packet(proxy, servers, clients):
    """No routing filter: fan-out to all endpoints, one session each."""
    srv = [servers("127.0.0.1", echo=tagged(b"s%d:" % i)) for i in range(3)]
    p = proxy(*[a for s in srv for a in ("--to", s.addr)])
    client = clients(p.port)
    payloads = [b"fan-%d" % i for i in range(4)]
    for pl in payloads:
        client.send(pl)
        replies = client.recv_n(3)
        assert sorted(d for d, _ in replies) == sorted(b"s%d:" % i + pl for i in range(3))
        assert {src for _, src in replies} == {("127.0.0.1", p.port)}
    client.expect_silence(0.3)
    for s in srv:
        got = s.snapshot()
        assert [d for d, _ in got] == payloads
        assert len({src for _, src in got}) == 1


def test_ipv6_client_to_ipv4_endpoint(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    c6 = clients(p.port, host="::1")
    c4 = clients(p.port)
    assert c6.request(b"from-v6") == (b"from-v6", ("::1", p.port))
    assert c4.request(b"from-v4") == (b"from-v4", ("127.0.0.1", p.port))
    got = echo_v4.snapshot()
    assert [d for d, _ in got] == [b"from-v6", b"from-v4"]
    assert all(src[0] == "127.0.0.1" for _, src in got)
    assert got[0][1] != got[1][1]


def test_ipv6_endpoint(proxy, echo_v6, clients):
    assert echo_v6.addr.startswith("[::1]:")
    p = proxy("--to", echo_v6.addr)
    c6 = clients(p.port, host="::1")
    c4 = clients(p.port)
    assert c6.request(b"v6-to-v6") == (b"v6-to-v6", ("::1", p.port))
    assert c4.request(b"v4-to-v6") == (b"v4-to-v6", ("127.0.0.1", p.port))
    got = echo_v6.snapshot()
    assert [d for d, _ in got] == [b"v6-to-v6", b"v4-to-v6"]
    assert all(src[0] == "::1" for _, src in got)


def test_ipv6_endpoint_in_config_file(proxy, echo_v6, echo_v4, clients):
    config = f"""\
clusters:
  - endpoints:
      - address: "{echo_v6.addr}"
      - address: udp://{echo_v4.addr}
"""
    p = proxy(config=config)
    client = clients(p.port, host="::1")
    client.send(b"both")
    assert client.recv_n(2) == [(b"both", ("::1", p.port))] * 2
    echo_v6.wait_for(b"both")
    echo_v4.wait_for(b"both")


@pytest.mark.parametrize("size", [60000, 65507])
def test_large_datagram_passes_intact(proxy, echo_v4, clients, size):
    p = proxy("--to", echo_v4.addr)
    client = clients(p.port)
    payload = os.urandom(size)
    client.send(payload)
    data, src = client.recv()
    assert src == ("127.0.0.1", p.port)
    assert len(data) == size
    assert data == payload
    got = echo_v4.snapshot()
    assert len(got) == 1 and got[0][0] == payload


def test_empty_datagram_is_forwarded(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    client = clients(p.port)
    client.send(b"")
    assert client.recv() == (b"", ("127.0.0.1", p.port))
    assert echo_v4.snapshot()[0][0] == b""
    # and the session carries on normally afterwards
    assert client.request(b"after-empty") == (b"after-empty", ("127.0.0.1", p.port))
    assert len({src for _, src in echo_v4.snapshot()}) == 1


def test_reply_from_another_port_of_the_server_is_dropped(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    client = clients(p.port)
    assert client.request(b"open") == (b"open", ("127.0.0.1", p.port))
    upstream = echo_v4.snapshot()[0][1]

    impostor = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        impostor.bind(("127.0.0.1", 0))
        impostor.sendto(b"not-from-the-endpoint", upstream)
        client.expect_silence()
    finally:
        impostor.close()
    # the genuine endpoint still gets through on the same session
    echo_v4.sendto(b"genuine", upstream)
    assert client.recv() == (b"genuine", ("127.0.0.1", p.port))


def test_drop_filter_drops_everything(proxy, echo_v4, clients):
    config = f"""\
filters:
  - name: quilkin.filters.drop.v1alpha1.Drop
clusters:
  - endpoints:
      - address: {echo_v4.addr}
"""
    p = proxy("--session-timeout-secs", "1", config=config)
    client = clients(p.port)
    for i in range(3):
        client.send(b"drop-me-%d" % i)
    client.expect_silence()
    assert echo_v4.count() == 0

    # No session was ever created, so SIGTERM exits at once and reports the drops.
    p.signal(signal.SIGTERM)
    assert p.wait_exit(5) == 0
    assert p.find("sessions created 0")
    assert p.find("dropped 3 packets: filter  error"), p.log_tail()
    assert p.find("shutdown complete")


def test_pass_and_debug_filters(proxy, echo_v4, clients):
    config = f"""\
filters:
  - name: quilkin.filters.pass.v1alpha1.Pass
    label: first
  - name: quilkin.filters.debug.v1alpha1.Debug
    config:
      id: probe-7
clusters:
  - endpoints:
      - address: {echo_v4.addr}
"""
    p = proxy(config=config)
    client = clients(p.port)
    assert client.request(b"debug-me") == (b"debug-me", ("127.0.0.1", p.port))
    assert echo_v4.snapshot()[0][0] == b"debug-me"

    read = p.wait_log("Read filter event")[0]
    assert "id=probe-7" in read
    assert f"127.0.0.1:{client.port}" in read
    assert re.search(r'contents="?debug-me"?$', read), read
    write = p.wait_log("Write filter event")[0]
    assert "id=probe-7" in write
    assert f"source={echo_v4.addr}" in write
    assert f"dest=127.0.0.1:{client.port}" in write
    assert re.search(r'contents="?debug-me"?$', write), write
    rec = [r for r in p.records() if r.get("fields", {}).get("message") == "Read filter event"][0]
    assert rec["fields"]["id"] == "probe-7" and rec["fields"]["contents"] == "debug-me", rec
    assert rec["level"] == "INFO"


def test_to_replaces_unlocated_endpoints_of_the_file(proxy, servers, clients):
    from_file = servers("127.0.0.1", echo=tagged(b"file:"))
    located = servers("127.0.0.1", echo=tagged(b"located:"))
    from_cli = servers("127.0.0.1", echo=tagged(b"cli:"))
    config = f"""\
clusters:
  - endpoints:
      - address: {from_file.addr}
  - locality:
      region: eu
    endpoints:
      - address: {located.addr}
"""
    p = proxy("--to", from_cli.addr, config=config)
    client = clients(p.port)
    client.send(b"who")
    replies = sorted(d for d, _ in client.recv_n(2))
    assert replies == [b"cli:who", b"located:who"]
    client.expect_silence()
    assert from_file.count() == 0
    assert [d for d, _ in from_cli.snapshot()] == [b"who"]
    assert [d for d, _ in located.snapshot()] == [b"who"]
