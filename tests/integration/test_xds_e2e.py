"""End to end: `quilkin manage file` + two proxies (`-m` to manage) + UDP echo servers, all
on loopback. A change to the provider file reaches both proxies' data paths (spec xds.md
§7, §8.1, §5.3). Run with -s to see the measured propagation times.

Expected values: propagation itself is the spec's (xds.md sections 7, 8.1: the 50 ms
provider debounce); PROPAGATION_LIMIT is the test's tolerance (docs/test-expectations.md
E7), not a product figure."""

import json
import time

from admin_helpers import admin_get, wait_admin_ready
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import READY_TIMEOUT, expect_quiet, wait_until
from xds_helpers import b64, request, write_by_rename, write_in_place
from xds_helpers import manage, xds_pb  # noqa: F401  (fixtures)

PROPAGATION_LIMIT = 2.0
CHAIN = """\
filters:
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      suffix:
        size: 3
        remove: true
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
"""


def file_for(*endpoints, filters=""):
    """``endpoints``: (server, [tokens] or None)."""
    out = ["version: v1alpha1", "clusters:", "  - endpoints:"]
    for server, tokens in endpoints:
        out.append(f"      - address: {server.addr}")
        if tokens is not None:
            out += ["        metadata:", "          quilkin.dev:", "            tokens:"]
            out += [f"              - {b64(t)}" for t in tokens]
    return "\n".join(out) + "\n" + filters


def start_proxies(quilkin, m, n=2, n_filters=0):
    """Starts n proxies fed by ``m``. /ready turns 200 after the first response (spec
    admin.md section 3), which may be the Cluster before the Listener: with ``n_filters``
    also wait until /config shows that many filters."""
    ps = [quilkin("-m", m.url, config=f"version: v1alpha1\nid: e2e-proxy-{i}\n")
          for i in range(1, n + 1)]
    for p in ps:
        wait_admin_ready(p)
        if n_filters:
            wait_until(lambda: len(json.loads(admin_get(p, "/config").body)["filters"])
                       == n_filters, READY_TIMEOUT, what=f"{n_filters} filters on /config")
    return ps


def tagged(servers, tag):
    return servers(echo=lambda d: tag + d)


def measure_switch(clients_, server, t_write, limit=PROPAGATION_LIMIT, interval=0.005):
    """Send ``pK-N`` probes from every client until each client's probes reach ``server``;
    returns {K: seconds from ``t_write`` to the first arrival}."""
    seen = server.count()
    first = {}
    deadline = t_write + limit
    i = 0
    while len(first) < len(clients_):
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"after {limit}s only proxies {sorted(first)} route to "
                                 f"{server.addr}")
        for k, c in enumerate(clients_):
            if k not in first:
                c.send(b"p%d-%d" % (k, i))
        i += 1
        end = time.monotonic() + interval
        while time.monotonic() < end:
            for d, _ in server.snapshot()[seen:]:
                k = int(d[1:d.index(b"-")])
                first.setdefault(k, time.monotonic() - t_write)
            time.sleep(0.001)
    return first


def drain(client):
    """Discard queued replies (echoes of probes)."""
    while True:
        try:
            client.recv(0.05)
        except AssertionError:
            return


def test_endpoint_move_propagates_to_both_proxies(manage, quilkin, servers, clients):
    a, b = servers(), servers()
    m = manage(file_for((a, None)), ident="e2e-manager")
    ps = start_proxies(quilkin, m)
    cs = [clients(p.port) for p in ps]
    for k, c in enumerate(cs):
        assert c.request(b"hello-%d" % k)[0] == b"hello-%d" % k
        a.wait_for(b"hello-%d" % k)

    t_write = time.monotonic()
    write_in_place(m.file_path, file_for((b, None)))
    first = measure_switch(cs, b, t_write)
    print("xds propagation ms (in-place write):",
          {f"proxy-{k + 1}": round(v * 1000, 1) for k, v in sorted(first.items())})
    assert max(first.values()) < PROPAGATION_LIMIT

    # afterwards nothing goes to the old endpoint any more
    for c in cs:
        drain(c)
    a_before = a.count()
    for k, c in enumerate(cs):
        assert request(c, b"moved-%d" % k) == b"moved-%d" % k
        assert b.wait_for(b"moved-%d" % k)
    assert a.count() == a_before

    # and back, by rename this time
    t_write = time.monotonic()
    write_by_rename(m.file_path, file_for((a, None)))
    first = measure_switch(cs, a, t_write)
    print("xds propagation ms (rename):",
          {f"proxy-{k + 1}": round(v * 1000, 1) for k, v in sorted(first.items())})


def test_token_routing_from_manage_file(manage, quilkin, servers, clients):
    a, b = tagged(servers, b"a:"), tagged(servers, b"b:")
    m = manage(file_for((a, [b"aaa"]), (b, [b"bbb"]), filters=CHAIN), ident="e2e-manager")
    ps = start_proxies(quilkin, m, n_filters=2)
    cs = [clients(p.port) for p in ps]
    for k, c in enumerate(cs):
        assert c.request(b"x%daaa" % k)[0] == b"a:x%d" % k
        assert c.request(b"y%dbbb" % k)[0] == b"b:y%d" % k
    assert sorted(d for d, _ in a.snapshot()) == [b"x0", b"x1"]
    assert sorted(d for d, _ in b.snapshot()) == [b"y0", b"y1"]
    # an unknown token is dropped by both proxies
    for c in cs:
        c.send(b"zzzccc")

    def nothing_routed():
        assert a.count() == 2 and b.count() == 2, (a.snapshot(), b.snapshot())
    expect_quiet(nothing_routed)
    for c in cs:
        drain(c)

    # swap the tokens in the file: routing follows on both proxies
    t_write = time.monotonic()
    write_in_place(m.file_path, file_for((a, [b"bbb"]), (b, [b"aaa"]), filters=CHAIN))
    deadline = t_write + PROPAGATION_LIMIT
    for k, c in enumerate(cs):
        while True:
            c.send(b"s%daaa" % k)
            try:
                data, _ = c.recv(0.05)
            except AssertionError:
                data = None
            if data == b"b:s%d" % k:
                break
            assert time.monotonic() < deadline, f"proxy-{k + 1}: tokens not swapped in time"
    print("xds token swap ms:", round((time.monotonic() - t_write) * 1000, 1))
    for c in cs:
        drain(c)
    for k, c in enumerate(cs):
        assert c.request(b"t%dbbb" % k)[0] == b"a:t%d" % k
