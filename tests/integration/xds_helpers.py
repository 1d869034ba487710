"""Helpers for the xDS integration tests (test_xds_client.py, test_xds_server.py,
test_xds_e2e.py; spec xds.md).

* ``xds_pb`` (session fixture): compiles ``src/xds/proto/*.proto`` with ``protoc
  --python_out`` into a temporary directory and imports the generated modules. The
  well-known types (google/protobuf/*.proto) are NOT taken from the generated output: the
  installed python3-protobuf already registers them in the default descriptor pool, and our
  minimal copies are wire-compatible, so the generated modules import the installed ones.
* ``ControlPlane``: a Python ADS server (grpcio generic handlers) that records every
  DiscoveryRequest per stream (with its arrival time), answers subscriptions from a stored
  state (``auto_reply``), lets a test push DiscoveryResponses with a chosen version/nonce to
  every connected stream, and can be stopped and restarted on the same port.
* ``AdsClient``: a Python ADS client (grpcio generic stub) for testing ``quilkin manage``.
* builders: quilkin Cluster/Endpoint (Struct metadata with tokens), Listener with filters
  (Capture, TokenRouter, Debug, Drop, Pass, ...), Envoy ClusterLoadAssignment, requests and
  responses; decoders for what ``manage`` serves.
* fixtures ``control_plane`` (factory), ``manage`` (factory starting ``quilkin manage file``),
  ``ads_clients`` (factory); everything is stopped/killed at teardown.

All sockets are on loopback; every wait is a bounded poll.
"""

import base64
import importlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import types
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from admin_helpers import admin_get, free_tcp_port, wait_admin_ready
from conftest import Proxy, fmt_addr, stop_all

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(REPO, "src", "xds", "proto")

TYPE_CLUSTER = "type.googleapis.com/quilkin.config.v1alpha1.Cluster"
TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SUBSCRIPTION_ORDER = [TYPE_CLUSTER, TYPE_LISTENER, TYPE_CLA]

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"/{ADS_SERVICE}/DeltaAggregatedResources"

CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
TOKEN_ROUTER = "quilkin.filters.token_router.v1alpha1.TokenRouter"
DEBUG = "quilkin.filters.debug.v1alpha1.Debug"
DROP = "quilkin.filters.drop.v1alpha1.Drop"
PASS = "quilkin.filters.pass.v1alpha1.Pass"
CONCATENATE = "quilkin.filters.concatenate.v1alpha1.Concatenate"
LOCAL_RATE_LIMIT = "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit"
DEFAULT_CAPTURE_KEY = "quilkin.dev/capture"

# filter name -> (module path, message name) of its typed_config (spec xds.md §6.4)
_FILTER_MODULES = {
    CAPTURE: ("quilkin.filters.capture.v1alpha1.capture_pb2", "Capture"),
    "quilkin.filters.compress.v1alpha1.Compress":
        ("quilkin.filters.compress.v1alpha1.compress_pb2", "Compress"),
    CONCATENATE: ("quilkin.filters.concatenate.v1alpha1.concatenate_pb2", "Concatenate"),
    DEBUG: ("quilkin.filters.debug.v1alpha1.debug_pb2", "Debug"),
    DROP: ("quilkin.filters.drop.v1alpha1.drop_pb2", "Drop"),
    "quilkin.filters.firewall.v1alpha1.Firewall":
        ("quilkin.filters.firewall.v1alpha1.firewall_pb2", "Firewall"),
    "quilkin.filters.load_balancer.v1alpha1.LoadBalancer":
        ("quilkin.filters.load_balancer.v1alpha1.load_balancer_pb2", "LoadBalancer"),
    LOCAL_RATE_LIMIT: ("quilkin.filters.local_rate_limit.v1alpha1.local_rate_limit_pb2",
                       "LocalRateLimit"),
    "quilkin.filters.match.v1alpha1.Match":
        ("quilkin.filters.matches.v1alpha1.matches_pb2", "Match"),
    PASS: ("quilkin.filters.pass.v1alpha1.pass_pb2", "Pass"),
    "quilkin.filters.timestamp.v1alpha1.Timestamp":
        ("quilkin.filters.timestamp.v1alpha1.timestamp_pb2", "Timestamp"),
    TOKEN_ROUTER: ("quilkin.filters.token_router.v1alpha1.token_router_pb2", "TokenRouter"),
}

# --------------------------------------------------------------------------
# protobuf modules
# --------------------------------------------------------------------------

_PB = None
_PB_LOCK = threading.Lock()


def load_protos(out_dir):
    """Compiles every .proto under src/xds/proto into ``out_dir`` (once per session) and
    returns a namespace with the message classes."""
    global _PB
    with _PB_LOCK:
        if _PB is not None:
            return _PB
        files = []
        for root, _, names in os.walk(PROTO_DIR):
            for n in names:
                if n.endswith(".proto"):
                    files.append(os.path.relpath(os.path.join(root, n), PROTO_DIR))
        files.sort()
        r = subprocess.run(["protoc", f"--python_out={out_dir}", "-I", PROTO_DIR, *files],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"protoc failed ({r.returncode}):\n{r.stderr}")
        # use the installed well-known types (already in the default descriptor pool)
        shutil.rmtree(os.path.join(str(out_dir), "google", "protobuf"), ignore_errors=True)
        if str(out_dir) not in sys.path:
            sys.path.append(str(out_dir))
        importlib.invalidate_caches()

        def mod(name):
            return importlib.import_module(name)

        from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

        disc = mod("envoy.service.discovery.v3.discovery_pb2")
        base = mod("envoy.config.core.v3.base_pb2")
        addr = mod("envoy.config.core.v3.address_pb2")
        lst = mod("envoy.config.listener.v3.listener_pb2")
        lstc = mod("envoy.config.listener.v3.listener_components_pb2")
        ep = mod("envoy.config.endpoint.v3.endpoint_pb2")
        epc = mod("envoy.config.endpoint.v3.endpoint_components_pb2")
        qcfg = mod("quilkin.config.v1alpha1.config_pb2")
        status = mod("google.rpc.status_pb2")
        ns = types.SimpleNamespace(
            DiscoveryRequest=disc.DiscoveryRequest,
            DiscoveryResponse=disc.DiscoveryResponse,
            DeltaDiscoveryRequest=disc.DeltaDiscoveryRequest,
            DeltaDiscoveryResponse=disc.DeltaDiscoveryResponse,
            Node=base.Node,
            ControlPlane=base.ControlPlane,
            EnvoyLocality=base.Locality,
            HealthStatus=base.HealthStatus,
            Metadata=base.Metadata,
            SocketAddress=addr.SocketAddress,
            Address=addr.Address,
            Listener=lst.Listener,
            FilterChain=lstc.FilterChain,
            Filter=lstc.Filter,
            ClusterLoadAssignment=ep.ClusterLoadAssignment,
            LocalityLbEndpoints=epc.LocalityLbEndpoints,
            LbEndpoint=epc.LbEndpoint,
            EnvoyEndpoint=epc.Endpoint,
            Cluster=qcfg.Cluster,
            ClusterMap=qcfg.ClusterMap,
            Locality=qcfg.Locality,
            Endpoint=qcfg.Endpoint,
            Status=status.Status,
            Any=any_pb2.Any,
            Struct=struct_pb2.Struct,
            Value=struct_pb2.Value,
            ListValue=struct_pb2.ListValue,
            BoolValue=wrappers_pb2.BoolValue,
            StringValue=wrappers_pb2.StringValue,
            UInt32Value=wrappers_pb2.UInt32Value,
            filters={},
        )
        for fname, (modname, msg) in _FILTER_MODULES.items():
            ns.filters[fname] = getattr(mod(modname), msg)
        _PB = ns
        return ns


def pb():
    """The namespace of message classes; the ``xds_pb`` fixture must have run."""
    if _PB is None:
        raise RuntimeError("protos not compiled: use the xds_pb fixture")
    return _PB


@pytest.fixture(scope="session")
def xds_pb(tmp_path_factory):
    """Session fixture: compile src/xds/proto once and return the message namespace."""
    return load_protos(tmp_path_factory.mktemp("xds_proto"))


# --------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------

def b64(data):
    return base64.b64encode(data).decode()


def metadata_struct(tokens=None, extra=None):
    """google.protobuf.Struct endpoint metadata (spec xds.md §6.2):
    {"quilkin.dev": {"tokens": [base64...]}, **extra}."""
    s = pb().Struct()
    if tokens is not None:
        s.update({"quilkin.dev": {"tokens": [b64(t) for t in tokens]}})
    if extra:
        s.update(extra)
    return s


def endpoint(host, port, tokens=None, extra=None):
    """quilkin.config.v1alpha1.Endpoint; ``tokens`` are raw bytes (base64-encoded here)."""
    e = pb().Endpoint(host=host, port=port)
    if tokens is not None or extra:
        e.metadata.CopyFrom(metadata_struct(tokens, extra))
    return e


def server_endpoint(server, tokens=None, extra=None):
    """An Endpoint for a conftest UdpServer."""
    return endpoint(server.host, server.port, tokens, extra)


def cluster(endpoints, locality=None):
    """quilkin.config.v1alpha1.Cluster; ``locality`` None (unlocated) or (region, zone,
    sub_zone)."""
    c = pb().Cluster()
    if locality is not None:
        region, zone, sub = (tuple(locality) + ("", "", ""))[:3]
        c.locality.CopyFrom(pb().Locality(region=region, zone=zone, sub_zone=sub))
    c.endpoints.extend(endpoints)
    return c


def filter_entry(name, config=None, type_url=None):
    """envoy Filter: typed_config = Any{type_url: the filter name, value: config bytes}
    (spec xds.md §6.4); ``config`` None leaves typed_config absent."""
    f = pb().Filter(name=name)
    if config is not None:
        f.typed_config.CopyFrom(pb().Any(type_url=type_url if type_url is not None else name,
                                         value=config.SerializeToString()))
    return f


def listener(*filters, name=""):
    """envoy Listener with one FilterChain holding ``filters`` (Filter messages)."""
    lst = pb().Listener(name=name)
    chain = lst.filter_chains.add()
    chain.filters.extend(filters)
    return lst


def _wrapped_string(value):
    return pb().StringValue(value=value)


def capture_suffix(size, remove=False, key=DEFAULT_CAPTURE_KEY):
    c = pb().filters[CAPTURE]()
    c.metadata_key.CopyFrom(_wrapped_string(key))
    c.suffix.size = size
    c.suffix.remove.CopyFrom(pb().BoolValue(value=remove))
    return filter_entry(CAPTURE, c)


def capture_prefix(size, remove=False, key=DEFAULT_CAPTURE_KEY):
    c = pb().filters[CAPTURE]()
    c.metadata_key.CopyFrom(_wrapped_string(key))
    c.prefix.size = size
    c.prefix.remove.CopyFrom(pb().BoolValue(value=remove))
    return filter_entry(CAPTURE, c)


def token_router(key=DEFAULT_CAPTURE_KEY):
    t = pb().filters[TOKEN_ROUTER]()
    t.metadata_key.CopyFrom(_wrapped_string(key))
    return filter_entry(TOKEN_ROUTER, t)


def debug_filter(ident=None):
    if ident is None:
        return filter_entry(DEBUG)
    d = pb().filters[DEBUG]()
    d.id.CopyFrom(_wrapped_string(ident))
    return filter_entry(DEBUG, d)


def drop_filter():
    return filter_entry(DROP)


def pass_filter():
    return filter_entry(PASS)


def concatenate_filter(data, on_read=1, on_write=0):
    """Concatenate: strategy 0 DoNothing, 1 Append, 2 Prepend."""
    c = pb().filters[CONCATENATE]()
    c.on_read.value = on_read
    c.on_write.value = on_write
    c.bytes = data
    # the StrategyValue holders must be present even for DoNothing
    c.on_read.SetInParent()
    c.on_write.SetInParent()
    return filter_entry(CONCATENATE, c)


def cla(groups, name="default"):
    """envoy ClusterLoadAssignment (quilkin-c EDS extension).

    ``groups``: list of (locality, endpoints) or (locality, endpoints, lle) where locality is
    None or (region, zone, sub_zone), lle a dict with optional ``weight`` and ``priority``
    of the LocalityLbEndpoints, and endpoints a list of (host, port, tokens or None) or
    (host, port, tokens, extra) with extra a dict of optional ``health`` (a HealthStatus
    name such as "DRAINING") and ``weight``."""
    P = pb()
    m = P.ClusterLoadAssignment(cluster_name=name)
    for group in groups:
        loc, eps = group[0], group[1]
        lle_opts = group[2] if len(group) > 2 else {}
        lle = m.endpoints.add()
        if loc is not None:
            region, zone, sub = (tuple(loc) + ("", "", ""))[:3]
            lle.locality.CopyFrom(P.EnvoyLocality(region=region, zone=zone, sub_zone=sub))
        if "weight" in lle_opts:
            lle.load_balancing_weight.value = lle_opts["weight"]
        if "priority" in lle_opts:
            lle.priority = lle_opts["priority"]
        for ep in eps:
            host, port, tokens = ep[0], ep[1], ep[2]
            extra = ep[3] if len(ep) > 3 else {}
            lb = lle.lb_endpoints.add()
            sa = lb.endpoint.address.socket_address
            sa.protocol = P.SocketAddress.UDP
            sa.address = host
            sa.port_value = port
            if tokens is not None:
                lb.metadata.filter_metadata["quilkin.dev"].update(
                    {"tokens": [b64(t) for t in tokens]})
            if "health" in extra:
                lb.health_status = P.HealthStatus.Value(extra["health"])
            if "weight" in extra:
                lb.load_balancing_weight.value = extra["weight"]
    return m


def pack(message, type_url):
    return pb().Any(type_url=type_url, value=message.SerializeToString())


def _resource_any(type_url, res):
    if isinstance(res, pb().Any):
        return res
    return pack(res, type_url)


def response(type_url, resources, version="1", nonce=None, identifier="py-cp"):
    """A DiscoveryResponse; ``resources`` are messages (packed with ``type_url``) or Any."""
    r = pb().DiscoveryResponse(version_info=version, type_url=type_url,
                               nonce=nonce if nonce is not None else str(uuid.uuid4()))
    r.resources.extend(_resource_any(type_url, x) for x in resources)
    if identifier is not None:
        r.control_plane.identifier = identifier
    return r


def subscription(type_url, node_id="py-client", resource_names=(), user_agent="python"):
    """A first-style DiscoveryRequest (node set, no version/nonce)."""
    rq = pb().DiscoveryRequest(type_url=type_url)
    if node_id is not None:
        rq.node.id = node_id
        rq.node.user_agent_name = user_agent
    rq.resource_names.extend(resource_names)
    return rq


def ack_for(resp, resource_names=(), error=None):
    """The ACK (or NACK with ``error`` text) of ``resp``, as a proxy would send it."""
    rq = pb().DiscoveryRequest(version_info=resp.version_info, type_url=resp.type_url,
                               response_nonce=resp.nonce)
    rq.resource_names.extend(resource_names)
    if error is not None:
        rq.error_detail.code = 3
        rq.error_detail.message = error
    return rq


# --------------------------------------------------------------------------
# decoders (what manage serves)
# --------------------------------------------------------------------------

def struct_to_py(s):
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(s)


def decode_endpoint(e):
    """(host, port, [token bytes], {other metadata keys})."""
    md = struct_to_py(e.metadata) if e.HasField("metadata") else {}
    qd = md.pop("quilkin.dev", {})
    tokens = [base64.b64decode(t) for t in qd.get("tokens", [])]
    return (e.host, e.port, tokens, md)


def decode_clusters(resp):
    """{locality or None: sorted [(host, port, tokens, extra)]} of a Cluster response."""
    assert resp.type_url == TYPE_CLUSTER, resp.type_url
    out = {}
    for a in resp.resources:
        assert a.type_url == TYPE_CLUSTER, a.type_url
        c = pb().Cluster.FromString(a.value)
        loc = ((c.locality.region, c.locality.zone, c.locality.sub_zone)
               if c.HasField("locality") else None)
        assert loc not in out, f"two Cluster resources for locality {loc}"
        out[loc] = sorted((decode_endpoint(e) for e in c.endpoints),
                          key=lambda x: (x[0], x[1]))
    return out


def decode_listener(resp):
    """[(filter name, typed_config type_url or None, decoded config message or None)] of a
    Listener response (exactly one Listener, one chain)."""
    assert resp.type_url == TYPE_LISTENER, resp.type_url
    assert len(resp.resources) == 1, resp
    a = resp.resources[0]
    assert a.type_url == TYPE_LISTENER, a.type_url
    lst = pb().Listener.FromString(a.value)
    assert len(lst.filter_chains) == 1, lst
    out = []
    for f in lst.filter_chains[0].filters:
        if f.HasField("typed_config"):
            cls = pb().filters.get(f.name)
            msg = cls.FromString(f.typed_config.value) if cls else None
            out.append((f.name, f.typed_config.type_url, msg))
        else:
            out.append((f.name, None, None))
    return lst.name, out


def is_uuid4(text):
    try:
        u = uuid.UUID(text)
    except ValueError:
        return False
    return str(u) == text and u.version == 4


# --------------------------------------------------------------------------
# the Python control plane (ADS server)
# --------------------------------------------------------------------------

def resource_name(type_url, any_msg):
    """The name a state-of-the-world server files a resource under: a ClusterLoadAssignment's
    cluster_name, a Listener's name, a quilkin Cluster's locality ("region:zone:sub_zone",
    empty parts skipped, "" for none; spec xds.md section 3). None when it does not decode."""
    try:
        if type_url == TYPE_CLA:
            return pb().ClusterLoadAssignment.FromString(any_msg.value).cluster_name
        if type_url == TYPE_LISTENER:
            return pb().Listener.FromString(any_msg.value).name
        if type_url == TYPE_CLUSTER:
            c = pb().Cluster.FromString(any_msg.value)
            if not c.HasField("locality"):
                return ""
            return ":".join(x for x in (c.locality.region, c.locality.zone,
                                        c.locality.sub_zone) if x)
    except Exception:  # noqa: BLE001  (undecodable on purpose in some tests)
        return None
    return None


class CpStream:
    """One ADS stream as seen by ControlPlane: requests received and responses sent."""

    def __init__(self, cp, index, peer):
        self.cp = cp
        self.index = index
        self.peer = peer
        self.opened_at = time.monotonic()
        self.requests = []          # (monotonic time, DiscoveryRequest)
        self.raw = []               # the serialized bytes of each request, as received
        self.sent = []              # (monotonic time, DiscoveryResponse)
        self.outq = queue.Queue()
        self.active = True          # handler still running
        self.closed_by_peer = False
        self.subs = {}              # type URL -> resource_names of the latest request
        self.last_nonce = {}        # type URL -> nonce of the latest response sent
        self.stale = 0              # requests answering an older nonce (ignored, as gcp does)

    def reqs(self):
        with self.cp._cond:
            return [r for _, r in self.requests]

    def wait_requests(self, n, timeout=5.0):
        """Wait until this stream has received >= n requests; returns them all."""
        return self.cp._wait(lambda: len(self.requests) >= n and self.reqs(), timeout,
                             f"{n} requests on stream {self.index} (got "
                             f"{len(self.requests)})")

    def wait_reply_to(self, nonce, timeout=5.0):
        """The request whose response_nonce is ``nonce`` (the ACK/NACK of a response)."""
        def find():
            for _, r in self.requests:
                if r.response_nonce == nonce:
                    return r
            return None
        return self.cp._wait(find, timeout, f"a reply to nonce {nonce} on stream {self.index}")

    def send(self, resp):
        """Sends resp, as a state-of-the-world server would (``strict`` control planes apply
        go-control-plane's snapshot-cache rules): only for a type the stream subscribed to;
        when the subscription names resources, the response holds only those, and in ADS
        mode they must name every resource of the snapshot (else nothing is sent and a
        violation is recorded). Returns the response actually sent, or None."""
        if self.cp.strict:
            with self.cp._cond:
                names = self.subs.get(resp.type_url)
            if names is None:
                self.cp.violation(f"stream {self.index}: a {resp.type_url} response before "
                                  f"any subscription to that type")
                return None
            if names:
                have = [resource_name(resp.type_url, r) for r in resp.resources]
                missing = [n for n in have if n not in names]
                if missing:
                    self.cp.violation(
                        f"stream {self.index}: ADS subscription {names!r} to "
                        f"{resp.type_url} is no superset of the snapshot {have!r}: "
                        f"go-control-plane sends nothing")
                    return None
                filtered = pb().DiscoveryResponse()
                filtered.CopyFrom(resp)
                del filtered.resources[:]
                filtered.resources.extend(r for r, n in zip(resp.resources, have)
                                          if n in names)
                resp = filtered
        with self.cp._cond:
            self.sent.append((time.monotonic(), resp))
            self.last_nonce[resp.type_url] = resp.nonce
        self.outq.put(resp)
        return resp


def _raw_and_parsed(data):
    """The request deserializer: (bytes, DiscoveryRequest), or (bytes, the exception) when
    the bytes do not decode. grpcio would turn an exception raised here into a cancelled
    stream, indistinguishable from a client that went away; the reader reports it instead."""
    try:
        return bytes(data), pb().DiscoveryRequest.FromString(data)
    except Exception as exc:  # noqa: BLE001  (google.protobuf.message.DecodeError and kin)
        return bytes(data), exc


def server_tls_credentials(tls):
    import grpc
    with open(tls["key"], "rb") as f:
        key = f.read()
    with open(tls["cert"], "rb") as f:
        cert = f.read()
    ca = None
    if tls.get("client_ca"):
        with open(tls["client_ca"], "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def client_tls_credentials(ca, cert=None, key=None):
    import grpc

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))


class ControlPlane:
    """A gRPC ADS server on 127.0.0.1 (grpcio generic handler).

    ``state`` maps a type URL to (resources, version); with ``auto_reply`` a subscription
    (request without nonce and error) of a type present in ``state`` is answered at once,
    like a real server. ``push`` sends one response to every open stream (and by default
    stores it as the new state, so that a reconnecting client resyncs to it).
    """

    def __init__(self, identifier="py-cp", auto_reply=True, port=0, strict=True, tls=None):
        """``tls``: None (h2c) or {"cert": path, "key": path, "client_ca": path or None}:
        serve TLS with that certificate, requiring client certificates when client_ca is
        given."""
        self.identifier = identifier
        self.tls = tls
        self.auto_reply = auto_reply
        self.port = port
        self.strict = strict
        self.violations = []
        self.state = {}
        self.streams = []
        self._cond = threading.Condition()
        self.server = None
        self.start()

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- lifecycle ----------------------------------------------------------
    def start(self, timeout=5.0):
        """Start serving (again) on ``self.port`` (0 = pick one the first time)."""
        import grpc
        assert self.server is None, "already running"
        deadline = time.monotonic() + timeout
        while True:
            server = grpc.server(ThreadPoolExecutor(max_workers=16),
                                 options=[("grpc.so_reuseport", 0)])
            handler = grpc.method_handlers_generic_handler(ADS_SERVICE, {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._handle, request_deserializer=_raw_and_parsed,
                    response_serializer=lambda m: m.SerializeToString()),
            })
            server.add_generic_rpc_handlers((handler,))
            try:
                if self.tls:
                    port = server.add_secure_port(f"127.0.0.1:{self.port}",
                                                  server_tls_credentials(self.tls))
                else:
                    port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            except RuntimeError:
                port = 0
            if port and (self.port == 0 or port == self.port):
                break
            server.stop(None)
            if time.monotonic() >= deadline:
                raise AssertionError(f"control plane cannot bind 127.0.0.1:{self.port}")
            time.sleep(0.05)
        self.port = port
        server.start()
        self.server = server

    def stop(self):
        """Stop the server: every open stream is cancelled (the client sees an error)."""
        if self.server is None:
            return
        self.server.stop(None).wait(5)
        self.server = None
        with self._cond:
            for st in self.streams:
                st.active = False
                st.outq.put(None)
            self._cond.notify_all()

    def restart(self):
        self.stop()
        self.start()

    # -- stream handling ------------------------------------------------------
    def _handle(self, request_iterator, context):
        with self._cond:
            st = CpStream(self, len(self.streams), context.peer())
            self.streams.append(st)
            self._cond.notify_all()
        reader = threading.Thread(target=self._read, args=(st, request_iterator), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    item = st.outq.get(timeout=0.05)
                except queue.Empty:
                    if not context.is_active() or not st.active:
                        return
                    continue
                if item is None:
                    return
                yield item
        finally:
            with self._cond:
                st.active = False
                self._cond.notify_all()

    def _read(self, st, request_iterator):
        import grpc
        try:
            for raw, rq in request_iterator:
                if isinstance(rq, Exception):
                    self.violation(f"stream {st.index}: a request that does not decode as "
                                   f"DiscoveryRequest ({rq!r}): {raw[:80].hex()}")
                    continue
                with self._cond:
                    st.raw.append(raw)
                    st.requests.append((time.monotonic(), rq))
                    # state of the world: every request restates the subscription
                    st.subs[rq.type_url] = list(rq.resource_names)
                    if (rq.response_nonce and
                            rq.response_nonce != st.last_nonce.get(rq.type_url)):
                        st.stale += 1
                    self._cond.notify_all()
                    state = self.state.get(rq.type_url)
                    fresh = (not rq.response_nonce and not rq.HasField("error_detail"))
                if self.auto_reply and fresh and state is not None:
                    st.send(response(rq.type_url, state[0], state[1],
                                     identifier=self.identifier))
        except grpc.RpcError:
            pass  # the stream was cancelled or the connection reset: the client went away
        except Exception as exc:  # noqa: BLE001  (a fault of this control plane: report it)
            self.violation(f"stream {st.index}: the reader failed: {exc!r}")
        finally:
            with self._cond:
                st.closed_by_peer = True
                st.active = False
                self._cond.notify_all()
            st.outq.put(None)

    # -- test API ---------------------------------------------------------------
    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"control plane: timed out after {timeout:.1f}s "
                                         f"waiting for {what}")
                self._cond.wait(min(left, 0.05))

    def violation(self, text):
        with self._cond:
            self.violations.append(text)

    def set_state(self, type_url, resources, version="0"):
        with self._cond:
            self.state[type_url] = (list(resources), version)

    def active_streams(self):
        with self._cond:
            return [s for s in self.streams if s.active]

    def wait_stream(self, n=1, timeout=5.0, subscribed=True):
        """Wait for the n-th stream ever opened (1-based) and, with ``subscribed``, for its
        three subscriptions; returns it."""
        st = self._wait(lambda: len(self.streams) >= n and self.streams[n - 1], timeout,
                        f"stream #{n} (have {len(self.streams)})")
        if subscribed:
            st.wait_requests(len(SUBSCRIPTION_ORDER), timeout)
        return st

    def push(self, type_url, resources, version="1", nonce=None, store=True, any_type=None):
        """Send one DiscoveryResponse (same version and nonce) to every open stream; returns
        it. ``any_type`` overrides the Any.type_url of the resources."""
        if nonce is None:
            nonce = str(uuid.uuid4())
        items = [pack(r, any_type) if any_type else r for r in resources]
        resp = response(type_url, items, version, nonce, identifier=self.identifier)
        if store:
            self.set_state(type_url, items, version)
        targets = self.active_streams()
        assert targets, "push: no open stream"
        for st in targets:
            st.send(resp)
        return resp

    def sent_count(self, type_url=None):
        with self._cond:
            return sum(1 for s in self.streams for _, r in s.sent
                       if type_url is None or r.type_url == type_url)


@pytest.fixture
def control_plane(xds_pb):
    """Factory: ``control_plane(identifier="py-cp", auto_reply=True)`` -> ControlPlane,
    stopped at teardown."""
    made = []

    def make(**kw):
        cp = ControlPlane(**kw)
        made.append(cp)
        return cp

    yield make
    violations = []
    for cp in made:
        cp.stop()
        violations += cp.violations
    assert not violations, "state-of-the-world rules broken:\n" + "\n".join(violations)


# --------------------------------------------------------------------------
# the Python ADS client (for quilkin manage)
# --------------------------------------------------------------------------

class AdsClient:
    """One ADS stream to ``target`` ("127.0.0.1:PORT"): ``send`` requests, read responses
    with ``next_response`` (bounded), and the final status with ``wait_end``."""

    def __init__(self, target, method=ADS_METHOD, request_cls=None, response_cls=None,
                 credentials=None, options=None, channel=None):
        """``channel``: an existing grpc channel to open the stream on (streams then share
        its HTTP/2 connection; the caller closes it)."""
        import grpc
        self._grpc = grpc
        self._own_channel = channel is None
        if channel is not None:
            self.channel = channel
        elif credentials is not None:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self._q = queue.Queue()
        self._cond = threading.Condition()
        self.responses = []         # (monotonic time, response)
        self._read_pos = 0
        self.status = None          # (grpc.StatusCode, details) once ended
        response_cls = response_cls or pb().DiscoveryResponse
        stub = self.channel.stream_stream(method,
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=response_cls.FromString)
        self.call = stub(self._requests())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item

    def _run(self):
        try:
            for resp in self.call:
                with self._cond:
                    self.responses.append((time.monotonic(), resp))
                    self._cond.notify_all()
            st = (self.call.code(), self.call.details())
        except self._grpc.RpcError as exc:
            st = (exc.code(), exc.details())
        except Exception as exc:  # pragma: no cover
            st = (None, repr(exc))
        with self._cond:
            self.status = st
            self._cond.notify_all()

    def send(self, rq):
        self._q.put(rq)

    def half_close(self):
        self._q.put(None)

    def next_response(self, timeout=3.0):
        """The next response not read yet (bounded wait)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._read_pos >= len(self.responses):
                left = deadline - time.monotonic()
                if left <= 0 or self.status is not None:
                    raise AssertionError(f"no response within {timeout}s (stream status "
                                         f"{self.status}, {len(self.responses)} read)")
                self._cond.wait(min(left, 0.05))
            t, r = self.responses[self._read_pos]
            self._read_pos += 1
            return r

    def next_response_at(self, timeout=3.0):
        """Like next_response, with its arrival time: (time, response)."""
        r = self.next_response(timeout)
        with self._cond:
            return self.responses[self._read_pos - 1][0], r

    def expect_no_response(self, within=0.5):
        deadline = time.monotonic() + within
        with self._cond:
            while time.monotonic() < deadline:
                if self._read_pos < len(self.responses):
                    raise AssertionError(
                        f"unexpected response: {self.responses[self._read_pos][1]}")
                self._cond.wait(0.05)

    def wait_end(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.status is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"stream did not end within {timeout}s")
                self._cond.wait(min(left, 0.05))
            return self.status

    def close(self):
        self.call.cancel()
        self._q.put(None)
        self._thread.join(2)
        if self._own_channel:
            self.channel.close()


@pytest.fixture
def ads_clients(xds_pb):
    """Factory: ``ads_clients(target, method=ADS_METHOD)`` -> AdsClient, closed at
    teardown."""
    made = []

    def make(target, **kw):
        c = AdsClient(target, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def subscribe(client, type_url, node_id="py-client", resource_names=(), timeout=3.0):
    client.send(subscription(type_url, node_id, resource_names))
    return client.next_response(timeout)


# --------------------------------------------------------------------------
# quilkin manage
# --------------------------------------------------------------------------

def write_in_place(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_by_rename(path, text):
    tmp = f"{path}.tmp-{time.monotonic_ns()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@pytest.fixture
def manage(quilkin_bin, tmp_path, xds_pb):
    """Factory that starts ``quilkin --admin-address 127.0.0.1:A -c OWN manage --port X
    [ARGS] file PATH`` and waits for "Quilkin is ready".

    ``manage(file_text, *manage_args, ident="manage-test", wait=True, path=None, env=None)``:
    ``file_text`` is written to the provider file (``p.file_path``) unless ``path`` names
    one the caller prepared; ``OWN`` only sets the server id. The
    returned Proxy has ``xds_port``, ``target`` ("127.0.0.1:X"), ``url`` ("http://...") and
    ``admin_host``/``admin_port``. Stopped with SIGTERM at teardown and must exit 0;
    sanitizer reports fail the test (conftest ``stop_all``).
    """
    started = []

    def start(file_text, *manage_args, ident="manage-test", wait=True, path=None, env=None):
        n = len(started)
        if path is None:  # else the caller prepared the provider file (e.g. a symlink)
            path = tmp_path / f"provider-{n}.yaml"
            path.write_text(file_text)
        own = tmp_path / f"manage-own-{n}.yaml"
        own.write_text(f"version: v1alpha1\nid: {ident}\n")
        admin_port = free_tcp_port()
        xds_port = free_tcp_port()
        argv = [quilkin_bin, "--admin-address", fmt_addr("127.0.0.1", admin_port),
                "-c", str(own), "manage", "--port", str(xds_port),
                *[str(a) for a in manage_args], "file", str(path)]
        p = Proxy(argv, cwd=str(tmp_path), env=env)
        p.admin_host = "127.0.0.1"
        p.admin_port = admin_port
        p.xds_port = xds_port
        p.target = f"127.0.0.1:{xds_port}"
        p.url = f"http://127.0.0.1:{xds_port}"
        p.file_path = str(path)
        started.append(p)
        if wait:
            p.wait_ready()
            wait_admin_ready(p)
        return p

    yield start
    stop_all(started)


# --------------------------------------------------------------------------
# proxy-side helpers
# --------------------------------------------------------------------------

def ready_status(p):
    try:
        return admin_get(p, "/ready", timeout=1.0).status
    except OSError:
        return None


def wait_ready_status(p, status, timeout=5.0):
    """Poll /ready until it answers ``status``."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = ready_status(p)
        if last == status:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"/ready is {last}, expected {status} within {timeout}s\n"
                                 + p.log_tail())
        time.sleep(0.02)


def wait_delivery(client, server, timeout=3.0, tag=b"probe", interval=0.05):
    """Send unique probes ``TAG-N`` from ``client`` every ``interval`` until one reaches
    ``server``; returns (the first probe that arrived, seconds waited)."""
    prefix = tag + b"-"
    seen = server.count()
    start = time.monotonic()
    deadline = start + timeout
    i = 0
    while True:
        client.send(prefix + b"%d" % i)
        i += 1
        end = min(deadline, time.monotonic() + interval)
        while True:
            for d, _ in server.snapshot()[seen:]:
                if d.startswith(prefix):
                    return d, time.monotonic() - start
            if time.monotonic() >= end:
                break
            time.sleep(0.003)
        if time.monotonic() >= deadline:
            raise AssertionError(f"no probe from {client.addr} reached {server.addr} within "
                                 f"{timeout}s ({server.count()} datagrams there)")


def request(client, payload, timeout=2.0):
    """Send ``payload`` and return the first reply that is not a stale probe echo (replies
    to ``wait_delivery`` probes may still be queued on the client socket)."""
    client.send(payload)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no reply to {payload!r} within {timeout}s")
        data, _ = client.recv(left)
        if b"probe-" not in data:
            return data
