"""`quilkin manage file PATH` as an ADS server (spec xds.md §7, §8.1, §8.3), driven by a
Python grpcio client (xds_helpers.AdsClient) over loopback.

Responses are decoded with protos compiled from src/xds/proto and compared field by field
with the provider file; filter configs are also compared byte for byte with the spec's
encoding vectors (xds.md §6.4).

Expected values: resources, type URLs, filter config encodings and server metrics are the
spec's (xds.md sections 3, 6, 7, 8.1, admin.md section 4.5); pushing every subscribed type
is the spec's SHOULD (spec README), the `provider file rejected` line quilkin-c's
(docs/test-expectations.md E1)."""

import time

import grpc
import pytest

from admin_helpers import scrape, wait_metric
from xds_helpers import (CAPTURE, CONCATENATE, DEBUG, DELTA_METHOD, LOCAL_RATE_LIMIT,
                         TOKEN_ROUTER, TYPE_CLUSTER, TYPE_LISTENER, ack_for, b64,
                         decode_clusters, decode_listener, is_uuid4, pb, ready_status,
                         subscribe, subscription, wait_ready_status, write_by_rename,
                         write_in_place)
from xds_helpers import ads_clients, manage, xds_pb  # noqa: F401  (fixtures)

PUSH_TIMEOUT = 1.0          # spec/brief: a push ~50-100 ms after the change; allow 1 s
NODE = "py-node"
SERVER_ID = "manage-test"


def provider_yaml(unlocated, located=(), filters=""):
    """``unlocated``: list of (address, [tokens] or None, extra metadata dict or None);
    ``located``: list of ((region, zone, sub_zone), [addresses])."""
    out = ["version: v1alpha1", "clusters:", "  - endpoints:"]
    for addr, tokens, extra in unlocated:
        out.append(f"      - address: {addr}")
        if tokens is not None or extra:
            out.append("        metadata:")
            if tokens is not None:
                out += ["          quilkin.dev:", "            tokens:"]
                out += [f"              - {b64(t)}" for t in tokens]
            for k, v in (extra or {}).items():
                out.append(f"          {k}: {v}")
    for (region, zone, sub), addrs in located:
        out += ["  - locality:", f"      region: '{region}'", f"      zone: '{zone}'",
                f"      sub_zone: '{sub}'", "    endpoints:"]
        out += [f"      - address: {a}" for a in addrs]
    text = "\n".join(out) + "\n"
    if filters:
        text += "filters:\n" + filters
    return text


FILTERS = """\
  - name: quilkin.filters.capture.v1alpha1.Capture
    config:
      suffix:
        size: 3
        remove: true
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
  - name: quilkin.filters.debug.v1alpha1.Debug
  - name: quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit
    config:
      max_packets: 1000
      period: 1
  - name: quilkin.filters.concatenate.v1alpha1.Concatenate
    config:
      on_read: APPEND
      bytes: YWJj
"""

BASE = provider_yaml(
    [("127.0.0.1:26000", [b"1x7ijy6", b"8gj3v2i"], {"role": "primary"}),
     ("127.0.0.1:26001", None, None)],
    [(("eu", "z1", ""), ["127.0.0.1:27000"])],
    FILTERS)


def check_response_envelope(resp, type_url):
    assert resp.type_url == type_url
    assert is_uuid4(resp.nonce), resp.nonce
    assert resp.control_plane.identifier == SERVER_ID
    assert resp.version_info.isdigit(), resp.version_info


def raw_filters(resp):
    lst = pb().Listener.FromString(resp.resources[0].value)
    return [(f.name, f.typed_config.type_url if f.HasField("typed_config") else None,
             f.typed_config.value if f.HasField("typed_config") else None)
            for f in lst.filter_chains[0].filters]


# --------------------------------------------------------------------------
# initial state
# --------------------------------------------------------------------------

def test_serves_file_state(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    resp = subscribe(c, TYPE_CLUSTER, NODE)
    check_response_envelope(resp, TYPE_CLUSTER)
    assert resp.version_info == "0"
    assert decode_clusters(resp) == {
        None: [("127.0.0.1", 26000, [b"1x7ijy6", b"8gj3v2i"], {"role": "primary"}),
               ("127.0.0.1", 26001, [], {})],
        ("eu", "z1", ""): [("127.0.0.1", 27000, [], {})],
    }
    # spec xds.md §6.2: the quilkin.dev struct is always present, tokens a list
    for a in resp.resources:
        cl = pb().Cluster.FromString(a.value)
        for e in cl.endpoints:
            qd = e.metadata.fields["quilkin.dev"]
            assert qd.WhichOneof("kind") == "struct_value"
            assert qd.struct_value.fields["tokens"].WhichOneof("kind") == "list_value"

    # the second type on the same stream
    lresp = subscribe(c, TYPE_LISTENER, NODE)
    check_response_envelope(lresp, TYPE_LISTENER)
    assert lresp.nonce != resp.nonce
    name, filters = decode_listener(lresp)
    assert name == ""
    assert [f[0] for f in filters] == [CAPTURE, TOKEN_ROUTER, DEBUG, LOCAL_RATE_LIMIT,
                                       CONCATENATE]
    cap = filters[0][2]
    assert filters[0][1] == CAPTURE
    assert cap.metadata_key.value == "quilkin.dev/capture"
    assert cap.WhichOneof("strategy") == "suffix"
    assert cap.suffix.size == 3 and cap.suffix.remove.value is True
    assert filters[1][1:] == (None, None)         # TokenRouter without config
    assert filters[2][1:] == (None, None)         # Debug without config
    raw = raw_filters(lresp)
    key = b"quilkin.dev/capture"
    # spec xds.md §6.4 encoding vectors
    assert raw[0][2] == bytes.fromhex("0a150a13") + key + bytes.fromhex("1a06080312020801")
    assert raw[3][1:] == (LOCAL_RATE_LIMIT, bytes.fromhex("08e80712020801"))
    assert raw[4][1:] == (CONCATENATE, bytes.fromhex("0a00120208011a03") + b"abc")

    # ACK with the UUID nonce: nothing more is sent
    c.send(ack_for(lresp, [""]))
    c.send(ack_for(resp, ["", "eu:z1"]))
    c.expect_no_response(0.5)


def test_resource_names_select_located_groups(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    resp = subscribe(c, TYPE_CLUSTER, NODE, resource_names=["eu:z1", "nowhere"])
    assert decode_clusters(resp) == {("eu", "z1", ""): [("127.0.0.1", 27000, [], {})]}
    c2 = ads_clients(m.target)
    resp = subscribe(c2, TYPE_CLUSTER, NODE, resource_names=["nowhere"])
    assert list(resp.resources) == []


# --------------------------------------------------------------------------
# pushes on file change
# --------------------------------------------------------------------------

def next_of_type(c, type_url, timeout):
    """The next response of ``type_url`` within ``timeout``; returns (time, response, others
    seen before it)."""
    deadline = time.monotonic() + timeout
    others = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {type_url} push within {timeout}s (got {others})")
        t, r = c.next_response_at(left)
        if r.type_url == type_url:
            return t, r, others
        others.append(r.type_url)


@pytest.mark.parametrize("writer", [write_in_place, write_by_rename],
                         ids=["in-place", "rename"])
def test_push_on_file_change(manage, ads_clients, writer):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    first = subscribe(c, TYPE_CLUSTER, NODE)
    c.send(ack_for(first, ["", "eu:z1"]))
    lfirst = subscribe(c, TYPE_LISTENER, NODE)
    c.send(ack_for(lfirst, [""]))

    # endpoints change
    t0 = time.monotonic()
    writer(m.file_path, provider_yaml([("127.0.0.1:26005", [b"tok"], None)], (), FILTERS))
    t, resp, _ = next_of_type(c, TYPE_CLUSTER, PUSH_TIMEOUT)
    print(f"manage push ({writer.__name__}) ms:", round((t - t0) * 1000, 1))
    check_response_envelope(resp, TYPE_CLUSTER)
    assert int(resp.version_info) > int(first.version_info)
    assert resp.nonce != first.nonce
    assert decode_clusters(resp)[None] == [("127.0.0.1", 26005, [b"tok"], {})]
    c.send(ack_for(resp, [""]))
    # every subscribed type is pushed on a change (a C improvement over v0.7.0, §7)
    _, lresp, _ = next_of_type(c, TYPE_LISTENER, PUSH_TIMEOUT)
    assert decode_listener(lresp) == decode_listener(lfirst)
    c.send(ack_for(lresp, [""]))

    # filters only change: the Listener subscription is pushed too
    t0 = time.monotonic()
    writer(m.file_path, provider_yaml([("127.0.0.1:26005", [b"tok"], None)], (),
                                      "  - name: quilkin.filters.drop.v1alpha1.Drop\n"))
    t, lresp, _ = next_of_type(c, TYPE_LISTENER, PUSH_TIMEOUT)
    print(f"manage filters push ({writer.__name__}) ms:", round((t - t0) * 1000, 1))
    check_response_envelope(lresp, TYPE_LISTENER)
    assert int(lresp.version_info) > int(lfirst.version_info) + 1
    assert decode_listener(lresp) == ("", [("quilkin.filters.drop.v1alpha1.Drop", None, None)])


def test_broken_file_keeps_state(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    first = subscribe(c, TYPE_CLUSTER, NODE)
    c.send(ack_for(first, ["", "eu:z1"]))
    before = scrape(m).value("quilkin_config_reloads_total", result="rejected") or 0

    write_in_place(m.file_path, "version: v1alpha1\nclusters: [ this is: not valid\n")
    m.wait_log("provider file rejected", timeout=2.0)
    wait_metric(m, "quilkin_config_reloads_total", before + 1, result="rejected")
    c.expect_no_response(0.3)
    # a new client still gets the last good state
    c2 = ads_clients(m.target)
    again = subscribe(c2, TYPE_CLUSTER, NODE)
    assert decode_clusters(again) == decode_clusters(first)

    # semantically invalid (port out of range): rejected as well
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:70000", None, None)]))
    m.wait_log("provider file rejected", timeout=2.0, count=2)
    wait_metric(m, "quilkin_config_reloads_total", before + 2, result="rejected")
    c.expect_no_response(0.2)

    # a good file is served again
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:26009", None, None)]))
    t, resp, _ = next_of_type(c, TYPE_CLUSTER, PUSH_TIMEOUT)
    assert decode_clusters(resp)[None] == [("127.0.0.1", 26009, [], {})]


def test_concurrent_clients_all_get_pushes(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    cs = []
    for i in range(4):
        c = ads_clients(m.target)
        r = subscribe(c, TYPE_CLUSTER, f"node-{i}")
        c.send(ack_for(r, ["", "eu:z1"]))
        cs.append(c)
    wait_metric(m, "quilkin_xds_streams", 4)
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:26100", None, None)]))
    for c in cs:
        _, resp, _ = next_of_type(c, TYPE_CLUSTER, PUSH_TIMEOUT)
        assert decode_clusters(resp)[None] == [("127.0.0.1", 26100, [], {})]
    metrics = scrape(m)
    for i in range(4):
        assert metrics.value("quilkin_discovery_requests", node=f"node-{i}",
                             type=TYPE_CLUSTER) == 2


# --------------------------------------------------------------------------
# request handling
# --------------------------------------------------------------------------

def test_missing_node_rejected(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    c.send(subscription(TYPE_CLUSTER, node_id=None))
    assert c.wait_end() == (grpc.StatusCode.INVALID_ARGUMENT, "Node identifier required")
    assert c.responses == []


def test_unknown_first_type_rejected(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    c.send(subscription(url, NODE))
    assert c.wait_end() == (grpc.StatusCode.INVALID_ARGUMENT, f"Unknown resource type: {url}")
    assert c.responses == []


def test_stream_closed_before_first_request(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    c.half_close()
    code, details = c.wait_end()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details == "No message found"


def test_nack_and_non_uuid_nonce_trigger_resend(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    first = subscribe(c, TYPE_CLUSTER, NODE)
    c.send(ack_for(first, ["", "eu:z1"], error="cannot apply"))
    again = c.next_response(PUSH_TIMEOUT)
    check_response_envelope(again, TYPE_CLUSTER)
    assert again.nonce != first.nonce
    assert again.version_info == first.version_info
    assert decode_clusters(again) == decode_clusters(first)

    # a request whose nonce is not a UUID is a fresh request: answered
    rq = ack_for(again, ["", "eu:z1"])
    rq.response_nonce = "not-a-uuid"
    c.send(rq)
    third = c.next_response(PUSH_TIMEOUT)
    assert decode_clusters(third) == decode_clusters(first)
    # an ACK (UUID nonce, even an unknown one) is not answered
    rq = ack_for(third, ["", "eu:z1"])
    rq.response_nonce = "0b7f5b7e-2a8f-4d0e-9c31-5f0f8a1f0c11"
    c.send(rq)
    c.expect_no_response(0.4)
    metrics = wait_metric(m, "quilkin_discovery_requests", 4, node=NODE, type=TYPE_CLUSTER)
    assert metrics.value("quilkin_xds_nacks", control_plane=NODE, type=TYPE_CLUSTER) == 1


def test_region_zone_relocate_unlocated(manage, ads_clients):
    text = provider_yaml([("127.0.0.1:26000", [b"abc"], None)],
                         [(("eu", "z1", ""), ["127.0.0.1:27000"])])
    m = manage(text, "--region", "r1", "--zone", "z9", "--sub-zone", "s2", ident=SERVER_ID)
    c = ads_clients(m.target)
    resp = subscribe(c, TYPE_CLUSTER, NODE)
    assert decode_clusters(resp) == {
        ("r1", "z9", "s2"): [("127.0.0.1", 26000, [b"abc"], {})],
        ("eu", "z1", ""): [("127.0.0.1", 27000, [], {})],
    }
    c2 = ads_clients(m.target)
    resp = subscribe(c2, TYPE_CLUSTER, NODE, resource_names=["r1:z9:s2"])
    assert decode_clusters(resp) == {("r1", "z9", "s2"): [("127.0.0.1", 26000, [b"abc"], {})]}


def test_delta_unimplemented(manage, ads_clients):
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target, method=DELTA_METHOD, response_cls=pb().DeltaDiscoveryResponse)
    rq = pb().DeltaDiscoveryRequest(type_url=TYPE_CLUSTER)
    rq.node.id = NODE
    c.send(rq)
    assert c.wait_end() == (grpc.StatusCode.UNIMPLEMENTED,
                            "Quilkin doesn't currently support Delta xDS")


def test_groups_absent_from_file_are_kept(manage, ads_clients):
    """spec xds.md §8.1 step 3: each locality group of the file is replaced or inserted;
    groups absent from a new version of the file are kept."""
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    first = subscribe(c, TYPE_CLUSTER, NODE)
    c.send(ack_for(first, ["", "eu:z1"]))
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:26007", None, None)]))
    _, resp, _ = next_of_type(c, TYPE_CLUSTER, PUSH_TIMEOUT)
    assert decode_clusters(resp) == {
        None: [("127.0.0.1", 26007, [], {})],
        ("eu", "z1", ""): [("127.0.0.1", 27000, [], {})],
    }


def test_filters_absent_from_file_are_kept(manage, ads_clients):
    """spec xds.md §8.1 step 3: the chain is rebuilt only when `filters` is present."""
    m = manage(BASE, ident=SERVER_ID)
    c = ads_clients(m.target)
    lfirst = subscribe(c, TYPE_LISTENER, NODE)
    c.send(ack_for(lfirst, [""]))
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:26007", None, None)]))
    _, lresp, _ = next_of_type(c, TYPE_LISTENER, PUSH_TIMEOUT)
    assert decode_listener(lresp) == decode_listener(lfirst)


def test_not_ready_until_file_loads(manage, ads_clients):
    """admin.md §3: manage is ready once the provider file was read and applied; a client
    that subscribed meanwhile gets the state as soon as the file becomes valid."""
    m = manage("clusters: [ broken\n", ident=SERVER_ID, wait=False)
    m.wait_ready()
    m.wait_log("provider file rejected", timeout=2.0)
    assert ready_status(m) == 500
    c = ads_clients(m.target)
    c.send(subscription(TYPE_CLUSTER, NODE))
    c.expect_no_response(0.3)
    write_in_place(m.file_path, provider_yaml([("127.0.0.1:26010", None, None)]))
    wait_ready_status(m, 200, timeout=2.0)
    resp = c.next_response(PUSH_TIMEOUT)
    check_response_envelope(resp, TYPE_CLUSTER)
    assert decode_clusters(resp) == {None: [("127.0.0.1", 26010, [], {})]}
