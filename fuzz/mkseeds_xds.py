#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/xds_response.c into fuzz/corpus/xds_response/.

Seeds are DiscoveryResponses carrying Cluster, Listener and ClusterLoadAssignment resources
(spec xds.md §4, §6; field numbers as in src/xds/proto/), plus a few bare resources and
error cases. Protobuf is written by hand (no protobuf package needed): each helper returns
the bytes of one field. Re-run after changing it; it overwrites its own outputs only.

Usage: python3 fuzz/mkseeds_xds.py [CORPUS_DIR]
"""

import os
import struct
import sys

sys.setrecursionlimit(20000)  # the deep-nesting seeds are built recursively

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "corpus", "xds_response")

CLUSTER_URL = "type.googleapis.com/quilkin.config.v1alpha1.Cluster"
LISTENER_URL = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLA_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

F = "quilkin.filters."
CAPTURE = F + "capture.v1alpha1.Capture"
COMPRESS = F + "compress.v1alpha1.Compress"
CONCAT = F + "concatenate.v1alpha1.Concatenate"
DEBUG = F + "debug.v1alpha1.Debug"
DROP = F + "drop.v1alpha1.Drop"
FIREWALL = F + "firewall.v1alpha1.Firewall"
LB = F + "load_balancer.v1alpha1.LoadBalancer"
RATE = F + "local_rate_limit.v1alpha1.LocalRateLimit"
MATCH = F + "match.v1alpha1.Match"
PASS = F + "pass.v1alpha1.Pass"
TIMESTAMP = F + "timestamp.v1alpha1.Timestamp"
TOKEN_ROUTER = F + "token_router.v1alpha1.TokenRouter"


# ---- wire format --------------------------------------------------------------------------

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(num, payload):
    """A length-delimited field (string, bytes or message)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def vi(num, v):
    """A varint field (uint, bool, enum)."""
    return varint(num << 3) + varint(v)


def dbl(num, d):
    return varint(num << 3 | 1) + struct.pack("<d", d)


# ---- well-known types -----------------------------------------------------------------------

def any_(type_url, value):
    return ld(1, type_url) + ld(2, value)


def string_value(s):
    return ld(1, s)


def value(v):
    """Python value -> google.protobuf.Value bytes."""
    if v is None:
        return vi(1, 0)
    if isinstance(v, bool):
        return vi(4, int(v))
    if isinstance(v, (int, float)):
        return dbl(2, float(v))
    if isinstance(v, str):
        return ld(3, v)
    if isinstance(v, list):
        return ld(6, b"".join(ld(1, value(x)) for x in v))
    if isinstance(v, dict):
        return ld(5, struct_(v))
    raise TypeError(v)


def struct_(d):
    return b"".join(ld(1, ld(1, k) + ld(2, value(v))) for k, v in d.items())


# ---- resources -----------------------------------------------------------------------------

def endpoint(host, port, md=None):
    out = ld(1, host) + vi(2, port)
    if md is not None:
        out += ld(3, struct_(md))
    return out


def cluster(endpoints, locality=None):
    out = b""
    if locality is not None:
        out += ld(1, b"".join(ld(i + 1, s) for i, s in enumerate(locality)))
    return out + b"".join(ld(2, e) for e in endpoints)


def filter_(name, type_url=None, config=None, discovery=False):
    out = ld(1, name)
    if config is not None:
        out += ld(4, any_(type_url or name, config))
    if discovery:
        out += ld(5, ld(4, "x"))
    return out


def listener(*chains):
    return ld(1, "") + b"".join(ld(3, b"".join(ld(3, f) for f in chain)) for chain in chains)


def socket_endpoint(ip, port, tokens=None, extra=None):
    sa = ld(2, ip) + vi(3, port)
    lb = ld(1, ld(1, ld(1, sa)))
    fm = b""
    if tokens is not None:
        fm += ld(1, ld(1, "quilkin.dev") + ld(2, struct_({"tokens": tokens})))
    for k, v in (extra or {}).items():
        fm += ld(1, ld(1, k) + ld(2, struct_(v)))
    if fm:
        lb += ld(3, fm)
    return lb


def cla(groups):
    out = ld(1, "default")
    for locality, eps in groups:
        lle = b""
        if locality is not None:
            lle += ld(1, b"".join(ld(i + 1, s) for i, s in enumerate(locality)))
        lle += b"".join(ld(2, e) for e in eps)
        out += ld(2, lle)
    return out


def response(type_url, resources, version="1", nonce="n-1", control_plane="mgmt"):
    out = ld(1, version) + b"".join(ld(2, any_(type_url, r)) for r in resources)
    out += ld(4, type_url) + ld(5, nonce)
    if control_plane is not None:
        out += ld(6, ld(1, control_plane))
    return out


# ---- filter configs -------------------------------------------------------------------------

def capture(key="quilkin.dev/capture", suffix=None, prefix=None, regex=None):
    out = ld(1, string_value(key))
    if prefix:
        out += ld(2, vi(1, prefix[0]) + ld(2, vi(1, int(prefix[1]))))
    if suffix:
        out += ld(3, vi(1, suffix[0]) + ld(2, vi(1, int(suffix[1]))))
    if regex is not None:
        out += ld(4, ld(1, string_value(regex)))
    return out


def action_value(v):
    return vi(1, v) if v else b""


def compress(on_read, on_write):
    return ld(1, b"") + ld(2, action_value(on_read)) + ld(3, action_value(on_write))


def concatenate(on_read, on_write, data):
    return ld(1, action_value(on_write)) + ld(2, action_value(on_read)) + ld(3, data)


def firewall(on_read, on_write):
    def rule(action, sources, ports):
        out = vi(1, action) if action else b""
        out += b"".join(ld(2, s) for s in sources)
        out += b"".join(ld(3, vi(1, lo) + vi(2, hi)) for lo, hi in ports)
        return out
    return (b"".join(ld(1, rule(*r)) for r in on_read) +
            b"".join(ld(2, rule(*r)) for r in on_write))


def rate_limit(max_packets, period=None):
    out = vi(1, max_packets)
    if period is not None:
        out += ld(2, vi(1, period))
    return out


def match_config(key, branches, fallthrough):
    out = ld(1, string_value(key))
    out += b"".join(ld(2, ld(1, value(v)) + ld(2, f)) for v, f in branches)
    return out + ld(4, fallthrough)


def match(on_read=None, on_write=None):
    out = b""
    if on_read is not None:
        out += ld(1, on_read)
    if on_write is not None:
        out += ld(2, on_write)
    return out


# ---- seeds ----------------------------------------------------------------------------------

SPEC_CLUSTER = cluster([endpoint("127.0.0.1", 26000, {"quilkin.dev": {"tokens": ["MXg3aWp5Ng=="]}})])

LISTENER_BASIC = listener([
    filter_(CAPTURE, config=capture(suffix=(3, True))),
    filter_(TOKEN_ROUTER),
    filter_(DEBUG, config=ld(1, string_value("edge"))),
    filter_(DROP),
])

LISTENER_MATCH = listener([
    filter_(CAPTURE, config=capture(key="example.org/version", prefix=(1, True))),
    filter_(MATCH, config=match(
        on_read=match_config("example.org/version", [
            (1, filter_(PASS)),
            (2, filter_(CONCAT, config=concatenate(2, 0, b"v2:"))),
            (["abc", True, [3]], filter_(MATCH, config=match(
                on_write=match_config("inner", [], filter_(DROP))))),
        ], filter_(DROP)),
        on_write=match_config("k", [("xyz", filter_(COMPRESS, config=compress(1, 2)))],
                              filter_(CONCAT, config=concatenate(1, 1, b"def"))))),
])

LISTENER_ALL = listener([
    filter_(FIREWALL, config=firewall(
        [(1, ["10.9.0.0/16"], [(1, 65535)]), (0, ["10.0.0.0/8", "2001:db8::/32"], [(7000, 7001)])],
        [(0, ["0.0.0.0/0", "::/0"], [(1, 65535)])])),
    filter_(LB, config=ld(1, vi(1, 2))),
    filter_(RATE, config=rate_limit(500)),
    filter_(COMPRESS, config=compress(2, 1)),
    filter_(CAPTURE, config=capture(key="example.org/sent_at", regex="(?-u:.)$")),
    filter_(TIMESTAMP, config=ld(1, string_value("example.org/sent_at"))),
    filter_(CONCAT, config=concatenate(1, 2, b"tok")),
    filter_(PASS, config=b""),
], [filter_(DROP)])

CLA = cla([
    (("eu", "z1", ""), [socket_endpoint("10.0.0.1", 7000, ["AQID"], {"team": {"n": "red"}}),
                        socket_endpoint("2001:db8::1", 7001, "BAUG")]),
    (None, [socket_endpoint("127.0.0.1", 7002)]),
])

def deep_struct(levels):
    d = True
    for _ in range(levels):
        d = {"k": d}
    return d


def deep_match(levels):
    f = filter_(PASS)
    for _ in range(levels):
        f = filter_(MATCH, config=match(on_read=match_config("k", [], f)))
    return listener([f])


SEEDS = {
    "resp_cluster_spec.bin": response(CLUSTER_URL, [SPEC_CLUSTER]),
    "resp_clusters_metadata.bin": response(CLUSTER_URL, [
        cluster([endpoint("10.0.0.2", 7100, {"quilkin.dev": {"tokens": ["AQID", ""]},
                                             "canary": False, "build": "2024.06.1",
                                             "n": -3.5, "nested": {"a": [1, "x", None]}}),
                 endpoint("10.0.0.2", 7100),
                 endpoint("[2001:db8::40]", 7100)], ("europe-west1", "b", "rack-12")),
        cluster([], None),
        cluster([endpoint("::ffff:10.0.0.1", 7000, {"quilkin.dev": {"tokens": "AQID"}})], ("", "", "")),
    ]),
    "resp_listener_basic.bin": response(LISTENER_URL, [LISTENER_BASIC]),
    "resp_listener_match.bin": response(LISTENER_URL, [LISTENER_MATCH]),
    "resp_listener_all.bin": response(LISTENER_URL, [LISTENER_ALL]),
    "resp_cla.bin": response(CLA_URL, [CLA]),
    "resp_empty.bin": response(CLUSTER_URL, [], control_plane=None),
    "resp_mixed_types.bin": (response(CLUSTER_URL, [SPEC_CLUSTER]) +
                             ld(2, any_(LISTENER_URL, LISTENER_BASIC)) + ld(2, any_(CLA_URL, CLA))),
    "resp_bad_port.bin": response(CLUSTER_URL, [cluster([endpoint("127.0.0.1", 70000)])]),
    "resp_bad_metadata.bin": response(CLUSTER_URL, [
        cluster([endpoint("127.0.0.1", 1, {"quilkin.dev": "x"})]),
        cluster([endpoint("127.0.0.1", 2, {"quilkin.dev": {"tokens": ["!!"]}})]),
        cluster([endpoint("127.0.0.1", 3, {"quilkin.dev": {"tokens": [1]}})]),
        cluster([endpoint("127.0.0.1", 4, {"quilkin.dev": {"tokens": 3}})]),
    ]),
    "resp_listener_errors.bin": response(LISTENER_URL, [
        listener([filter_(PASS, discovery=True)]),
        listener([filter_(DEBUG, type_url="type.googleapis.com/" + DEBUG, config=b"")]),
        listener([filter_(TIMESTAMP, config=b"")]),
        listener([filter_(F + "hashed_token_router.v1alpha1.HashedTokenRouter")]),
        listener([filter_(FIREWALL, config=firewall([(0, ["1.2.3.4"], [(5, 5)])], []))]),
    ]),
    # nesting guards: Struct nesting beyond what protobuf-c may recurse into, Match in Match
    "resp_deep_struct.bin": response(CLUSTER_URL, [
        cluster([endpoint("127.0.0.1", 1, {"d": deep_struct(40)})]),
        cluster([endpoint("127.0.0.1", 2, {"d": deep_struct(300)})]),
    ]),
    "raw_listener_deep_match.bin": deep_match(40),
    "raw_cluster.bin": SPEC_CLUSTER,
    "raw_listener.bin": LISTENER_MATCH,
    "raw_cla.bin": CLA,
}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR
    os.makedirs(out_dir, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out_dir}")


if __name__ == "__main__":
    main()
