"""`quilkin manage` facing clients that misbehave (issue 10): what one client may make the
server hold is bounded (resource_names, connections per peer, connections that never ask,
metric rows), each refusal is counted in /metrics, and well-behaved clients keep being
served. The memory and slow-reader limits are driven by bench_xds_fleet's hostile modes in
test_xds_hostile.py; the gRPC-level limits also have unit tests (tests/unit/xds/grpc_test.c).

Expected values: every limit, its default and its metric are quilkin-c's (README "Fleet:
xDS", the limits table; docs/test-expectations.md E4, E5); status codes are gRPC's."""

import resource
import selectors
import socket
import time

import grpc
import pytest

from admin_helpers import admin_get, scrape, wait_admin_ready, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import READY_TIMEOUT, run_quilkin, wait_until
from xds_helpers import (TYPE_CLUSTER, TYPE_LISTENER, cluster, endpoint, is_uuid4, pb,
                         subscribe, subscription, write_by_rename)
from xds_helpers import ads_clients, control_plane, manage, xds_pb  # noqa: F401  (fixtures)

FILE = """\
version: v1alpha1
clusters:
  - endpoints:
      - address: 127.0.0.1:29001
  - locality:
      region: eu
      zone: z1
    endpoints:
      - address: 127.0.0.1:29002
"""


def limit_event(m, event):
    return scrape(m).value("quilkin_xds_server_limit_events_total", event=event)


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect_from(source, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def closed_within(socks, seconds):
    """Sockets (of socks) the peer closed within ``seconds``, and when (s from now)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    closed = {}
    while sel.get_map() and time.monotonic() - start < seconds:
        for key, _ in sel.select(timeout=0.05):
            try:
                data = key.fileobj.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                closed[key.fileobj] = time.monotonic() - start
                sel.unregister(key.fileobj)
    sel.close()
    return closed


def test_too_many_resource_names_refused_before_decoding(manage, ads_clients):
    m = manage(FILE)
    c = ads_clients(m.target)
    c.send(subscription(TYPE_CLUSTER, "greedy", [f"r{i}:z" for i in range(10001)]))
    code, details = c.wait_end(5.0)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "10001 resource_names (at most 10000)" in details
    long_name = ads_clients(m.target)
    long_name.send(subscription(TYPE_CLUSTER, "long", ["x" * 1025]))
    code, details = long_name.wait_end(5.0)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "1025 bytes" in details, details
    wait_metric(m, "quilkin_xds_server_limit_events_total", 2, event="request_too_many_names")
    # 10,000 names are served, matched by name (one located group among them)
    ok = ads_clients(m.target)
    names = [f"r{i}:z" for i in range(9999)] + ["eu:z1"]
    resp = subscribe(ok, TYPE_CLUSTER, "many-names", names, timeout=10.0)
    assert len(resp.resources) == 1
    assert m.running()


def test_idle_connections_from_one_peer_do_not_lock_proxies_out(manage, quilkin):
    """1,100 silent connections from 127.0.0.2: at most 64 are held at a time (the per-peer
    cap), the rest closed at once, and the held ones go when the first-request timeout
    passes; a proxy on 127.0.0.1 is served meanwhile."""
    if raise_nofile(1300) < 1300:
        pytest.skip("cannot open 1,100 sockets here")
    m = manage(FILE, "--first-request-timeout-secs", "3")
    socks = []
    try:
        for _ in range(1100):
            socks.append(connect_from("127.0.0.2", m.xds_port))
        assert scrape(m).value("quilkin_xds_server_connections") <= 64
        p = quilkin("-m", m.url, config="version: v1alpha1\nid: locked-out?\n")
        wait_admin_ready(p)
        assert admin_get(p, "/ready").status == 200
        closed = closed_within(socks, 3 + 3.0)
        assert len(closed) == 1100, len(closed)
    finally:
        for s in socks:
            s.close()
    # every connection is accounted for: refused at once, or closed for asking nothing
    refused = limit_event(m, "max_connections_per_peer")
    timed_out = limit_event(m, "first_request_timeout")
    assert refused >= 1100 - 3 * 64 and refused + timed_out == 1100, (refused, timed_out)
    assert admin_get(p, "/ready").status == 200


def test_one_encoding_per_version_with_a_nonce_per_stream(manage, ads_clients):
    """Two wildcard streams get byte-identical responses but for the nonce, which comes last
    as field 5 (0x2a, length 36) and differs; both decode like any response."""
    class Raw:
        FromString = staticmethod(lambda b: b)

    m = manage(FILE)
    a = ads_clients(m.target, response_cls=Raw)
    b = ads_clients(m.target, response_cls=Raw)
    for c, node in ((a, "raw-a"), (b, "raw-b")):
        c.send(subscription(TYPE_CLUSTER, node))
    ra, rb = a.next_response(), b.next_response()
    write_by_rename(m.file_path, FILE.replace("29001", "29011"))
    ra2, rb2 = a.next_response(), b.next_response()
    for first, second in ((ra, rb), (ra2, rb2)):
        assert first[:-38] == second[:-38]
        assert first[-38:-36] == b"\x2a\x24" and second[-38:-36] == b"\x2a\x24"
        da = pb().DiscoveryResponse.FromString(first)
        db = pb().DiscoveryResponse.FromString(second)
        assert da.nonce != db.nonce and is_uuid4(da.nonce) and is_uuid4(db.nonce)
        assert da.version_info == db.version_info
    def ports(raw):
        resp = pb().DiscoveryResponse.FromString(raw)
        return sorted(e.port for a in resp.resources
                      for e in pb().Cluster.FromString(a.value).endpoints)
    assert pb().DiscoveryResponse.FromString(ra2).version_info == "1"
    assert ports(ra) == [29001, 29002] and ports(ra2) == [29002, 29011]


def test_metric_rows_overflow_into_other(manage, ads_clients):
    """510 (node, type) rows by name, then node="other": 270 nodes x 2 types = 540
    requests, 30 of them in the other rows."""
    m = manage(FILE)
    # one connection each (grpcio would otherwise share one subchannel, and so one HTTP/2
    # connection capped at 100 streams, between channels to the same target)
    channels = [grpc.insecure_channel(m.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(3)]
    clients = []
    try:
        for i in range(270):
            c = ads_clients(m.target, channel=channels[i % 3])
            c.send(subscription(TYPE_CLUSTER, f"node-{i:03d}"))
            clients.append(c)
        for c in clients:
            c.next_response(10.0)
        for i, c in enumerate(clients):
            c.send(subscription(TYPE_LISTENER, f"node-{i:03d}"))
        for c in clients:
            c.next_response(10.0)
        metrics = scrape(m)
        rows = metrics.samples("quilkin_discovery_requests")
        named = [r for r in rows if r[1]["node"] != "other"]
        other = [r for r in rows if r[1]["node"] == "other"]
        assert len(named) == 510
        assert sum(r[2] for r in rows) == 540
        assert sum(r[2] for r in other) == 30
        assert {r[1]["type"] for r in other} <= {TYPE_CLUSTER, TYPE_LISTENER}
    finally:
        for c in clients:
            c.close()
        for ch in channels:
            ch.close()


def test_client_metric_rows_overflow_into_other(quilkin, control_plane):
    """The proxy counts responses per (control plane, type): 29 rows by name, then
    control_plane="other"."""
    cp = control_plane(auto_reply=False)
    p = quilkin("-m", cp.url, config="version: v1alpha1\nid: counting\n")
    st = cp.wait_stream(1)
    for i in range(32):
        cp.identifier = f"cp-{i:02d}"
        resp = cp.push(TYPE_CLUSTER, [cluster([endpoint("127.0.0.1", 29001)])],
                       version=str(i + 1))
        st.wait_reply_to(resp.nonce)
    m = wait_metric(p, "quilkin_discovery_responses", 3, control_plane="other",
                    type=TYPE_CLUSTER)
    named = [s for s in m.samples("quilkin_discovery_responses")
             if s[1]["control_plane"] != "other"]
    assert len(named) == 29


def test_limit_options_are_checked(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(FILE)
    for bad in (["--max-connections", "0"], ["--max-connections-per-peer", "70000"],
                ["--first-request-timeout-secs", "3601"], ["--xds-keepalive-timeout-secs", "0"]):
        r = run_quilkin(["--no-admin", "manage", "--port", "0", *bad, "file", str(path)],
                        cwd=str(tmp_path))
        assert r.returncode == 2, (bad, r.stderr)
    r = run_quilkin(["manage", "--help"], cwd=str(tmp_path))
    for flag in ("--max-connections-per-peer", "--first-request-timeout-secs",
                 "--idle-timeout-secs", "--xds-keepalive-interval-secs"):
        assert flag in r.stdout
