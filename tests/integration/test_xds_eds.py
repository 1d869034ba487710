"""Envoy EDS (ClusterLoadAssignment) through ADS with standard semantics (issue 10): the
subscription is a wildcard and every ACK restates it (the control plane here applies
go-control-plane's snapshot-cache rules and fails the test on a violation); assignments are
keyed by cluster_name; a state-of-the-world response replaces them all, so one it leaves out
is removed; endpoints whose health is UNHEALTHY, DRAINING or TIMEOUT take no new sessions
while existing ones go on; weights, priority and health are kept in the endpoint metadata.

Expected values: EDS is a quilkin-c extension (README "Standard Envoy endpoints"),
following go-control-plane's state-of-the-world rules, which the Python control plane
enforces; the health drop reason is docs/test-expectations.md E2."""

import json

from admin_helpers import admin_get, scrape, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import SILENCE, wait_until
from xds_helpers import TYPE_CLA, TYPE_CLUSTER, TYPE_LISTENER, cla, wait_ready_status
from xds_helpers import control_plane, xds_pb  # noqa: F401  (fixtures)

PROXY_ID = "eds-proxy"


def start(quilkin, cp):
    n = len(cp.streams)
    p = quilkin("-m", cp.url, config=f"version: v1alpha1\nid: {PROXY_ID}\n")
    st = cp.wait_stream(n + 1)
    return p, st


def push(cp, st, resources, version):
    resp = cp.push(TYPE_CLA, resources, version=version)
    reply = st.wait_reply_to(resp.nonce)
    assert not reply.HasField("error_detail"), reply.error_detail
    assert list(reply.resource_names) == []  # the wildcard subscription, restated
    return reply


def endpoints_on_config(p):
    cfg = json.loads(admin_get(p, "/config").text)
    return {e["address"]: e for c in cfg["clusters"] for e in c["endpoints"]}


def tagged(servers, tag):
    return servers("127.0.0.1", echo=lambda d: tag + d)


def test_subscription_is_a_wildcard_restated_by_every_request(quilkin, control_plane):
    cp = control_plane(auto_reply=False)
    p, st = start(quilkin, cp)
    reqs = st.wait_requests(3)
    cla_sub = [r for r in reqs if r.type_url == TYPE_CLA]
    assert len(cla_sub) == 1 and list(cla_sub[0].resource_names) == []
    # updates flow without any re-subscription: each response is ACKed with no names, so
    # a server filtering by names (or checking the ADS superset) keeps sending everything
    for v in range(1, 4):
        push(cp, st, [cla([(None, [("127.0.0.1", 10000 + v, None)])], name=f"c{v}")], str(v))
    assert [r.type_url for _, r in st.sent].count(TYPE_CLA) == 3
    assert list(endpoints_on_config(p)) == ["127.0.0.1:10003"]


def test_assignments_are_keyed_by_cluster_name(quilkin, control_plane, servers, clients):
    """Two clusters without locality used to overwrite each other (the last one won)."""
    a, b = tagged(servers, b"a:"), tagged(servers, b"b:")
    cp = control_plane()
    p, st = start(quilkin, cp)
    push(cp, st, [cla([(None, [(a.host, a.port, None)])], name="arena"),
                  cla([(None, [(b.host, b.port, None)])], name="lobby")], "1")
    wait_ready_status(p, 200)
    assert sorted(endpoints_on_config(p)) == sorted([a.addr, b.addr])
    c = clients(p.port)
    c.send(b"both")  # no routing filter: fan-out to every endpoint
    a.wait_for(b"both")
    b.wait_for(b"both")
    # state of the world: the next response leaves `lobby` out, so it is gone
    push(cp, st, [cla([(None, [(a.host, a.port, None)])], name="arena")], "2")
    wait_until(lambda: list(endpoints_on_config(p)) == [a.addr], 5, what="lobby removed")
    before = b.count()
    c.send(b"only arena")
    a.wait_for(b"only arena")
    wait_until(lambda: True, SILENCE)
    assert b.count() == before
    # and an empty response removes every EDS endpoint
    push(cp, st, [], "3")
    wait_until(lambda: endpoints_on_config(p) == {}, 5, what="no endpoints")


def test_eds_endpoints_join_quilkin_clusters_by_locality(quilkin, control_plane, servers):
    a, b = servers(), servers()
    cp = control_plane()
    p, st = start(quilkin, cp)
    from xds_helpers import cluster, server_endpoint
    resp = cp.push(TYPE_CLUSTER, [cluster([server_endpoint(a)])], version="1")
    st.wait_reply_to(resp.nonce)
    push(cp, st, [cla([(None, [(b.host, b.port, None)])], name="extra")], "1")
    assert sorted(endpoints_on_config(p)) == sorted([a.addr, b.addr])
    # a later quilkin Cluster update keeps the EDS endpoints (they are not its to replace)
    resp = cp.push(TYPE_CLUSTER, [cluster([server_endpoint(a)])], version="2")
    st.wait_reply_to(resp.nonce)
    assert sorted(endpoints_on_config(p)) == sorted([a.addr, b.addr])


def test_draining_endpoints_keep_sessions_and_take_no_new_ones(quilkin, control_plane,
                                                               servers, clients):
    a, d = tagged(servers, b"a:"), tagged(servers, b"d:")
    cp = control_plane()
    p, st = start(quilkin, cp)

    def state(health):
        extra = {"health": health} if health else {}
        return [cla([(None, [(a.host, a.port, None), (d.host, d.port, None, extra)])],
                    name="arena")]
    push(cp, st, state(None), "1")
    wait_ready_status(p, 200)
    old = clients(p.port)
    old.send(b"join")  # sessions with both
    a.wait_for(b"join")
    d.wait_for(b"join")
    for i, health in enumerate(["DRAINING", "UNHEALTHY", "TIMEOUT"], 2):
        push(cp, st, state(health), str(i))
        assert endpoints_on_config(p)[d.addr]["metadata"]["envoy.eds"]["health_status"] == \
            health
        old.send(b"old-%d" % i)  # an existing session keeps its server
        d.wait_for(b"old-%d" % i)
        new = clients(p.port)
        new.send(b"new-%d" % i)  # a new player only reaches healthy servers
        a.wait_for(b"new-%d" % i)
        wait_until(lambda: True, 0.2)
        assert b"new-%d" % i not in [x for x, _ in d.snapshot()]
    # DEGRADED and HEALTHY take new sessions again
    push(cp, st, state("DEGRADED"), "9")
    fresh = clients(p.port)
    fresh.send(b"fresh")
    d.wait_for(b"fresh")


def test_a_new_client_with_only_draining_endpoints_is_dropped_and_counted(quilkin,
                                                                         control_plane,
                                                                         servers, clients):
    d = servers()
    cp = control_plane()
    p, st = start(quilkin, cp)
    push(cp, st, [cla([(None, [(d.host, d.port, None, {"health": "DRAINING"})])])], "1")
    c = clients(p.port)
    for i in range(3):
        c.send(b"x%d" % i)
    wait_metric(p, "quilkin_packets_dropped_total", 3, asn="", ip_prefix="", event="read",
                source="endpoints take no new sessions (health status)")
    assert d.count() == 0


def test_weights_priority_and_health_are_kept_in_metadata(quilkin, control_plane, servers):
    a = servers()
    cp = control_plane()
    p, st = start(quilkin, cp)
    push(cp, st, [cla([(("eu", "z1", ""),
                        [(a.host, a.port, [b"tok"], {"weight": 3, "health": "DEGRADED"})],
                        {"weight": 10, "priority": 1})], name="arena")], "1")
    ep = endpoints_on_config(p)[a.addr]
    assert ep["metadata"]["envoy.eds"] == {"health_status": "DEGRADED",
                                          "load_balancing_weight": 3,
                                          "locality_load_balancing_weight": 10,
                                          "priority": 1}
    assert ep["metadata"]["quilkin.dev"]["tokens"] == ["dG9r"]


def test_a_bad_assignment_rejects_the_whole_response(quilkin, control_plane, servers):
    """EDS is all or nothing: one undecodable assignment NACKs the response and the previous
    assignments keep serving."""
    a = servers()
    cp = control_plane()
    p, st = start(quilkin, cp)
    push(cp, st, [cla([(None, [(a.host, a.port, None)])], name="arena")], "1")
    bad = cla([(None, [("127.0.0.1", 70000, None)])], name="broken")
    resp = cp.push(TYPE_CLA, [cla([(None, [])], name="arena"), bad], version="2")
    reply = st.wait_reply_to(resp.nonce)
    assert reply.HasField("error_detail")
    assert list(endpoints_on_config(p)) == [a.addr]
    m = scrape(p)
    assert m.value("quilkin_xds_nacks", control_plane="py-cp", type=TYPE_CLA) == 1
    assert TYPE_LISTENER  # (imported for symmetry with the other xDS suites)
