"""Admin HTTP server (spec admin.md): routes and status codes, listen address handling,
/metrics as strict Prometheus text whose figures match the traffic sent, /config as JSON
equal to the YAML it came from.

Expected values: routes, status codes, content types, metric names, labels, buckets and
their counting rules, and /config's shape are the spec's (admin.md sections 2-5, config.md
section 7). quilkin-c's (docs/test-expectations.md): the extension families
quilkin_qcmp_packets_total and quilkin_config_reloads_total (E4), the cluster gauges of a
static config (E4, spec SHOULD), exit 255 when the admin port is taken (E3, spec SHOULD),
and the log lines `admin server listening` and `shutdown complete` (E1)."""

import json
import signal
import socket
import time

import pytest

from admin_helpers import (admin_get, free_tcp_port, http_request, listening_tcp_ports,
                           parse_prometheus, scrape, wait_metric)
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import Proxy, free_port, run_quilkin, stop_all

PROC_BOUNDS = ["0.00025", "0.0005", "0.001", "0.002", "0.004", "0.008", "0.016", "0.032",
               "0.064", "0.128", "0.256", "0.512", "1.024", "+Inf"]
SESSION_BOUNDS = ["1", "5", "10", "25", "60", "300", "900", "1800", "3600", "+Inf"]
NO_GEO = {"asn": "", "ip_prefix": ""}
SESSION_LABELS = {"asn": "0", "country_code": "", "ip_prefix": "", "organization": "",
                  "prefix_entity": "", "prefix_name": ""}
DROP_SOURCE = "filter  error: intentionally dropped"


# --------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/live", "/livez", "/ready", "/readyz"])
def test_health_endpoints_answer_ok(quilkin, echo_v4, path):
    p = quilkin("--to", echo_v4.addr)
    r = admin_get(p, path)
    assert r.status == 200, r
    assert r.body == b"ok"


def test_metrics_and_config_status_and_content_type(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    r = admin_get(p, "/metrics")
    assert r.status == 200, r
    assert r.headers.get("content-type") == "text/plain; version=0.0.4"
    parse_prometheus(r.text)
    r = admin_get(p, "/config")
    assert r.status == 200, r
    assert r.headers.get("content-type") == "application/json"
    assert json.loads(r.text)["version"] == "v1alpha1"


@pytest.mark.parametrize("path", ["/", "/nope", "/live/", "/LIVE", "/metrics/x", "/configs",
                                  "/readyz/", "//live", "/live%20"])
def test_unknown_paths_are_404_with_empty_body(quilkin, echo_v4, path):
    p = quilkin("--to", echo_v4.addr)
    r = admin_get(p, path)
    assert r.status == 404, r
    assert r.body == b""


@pytest.mark.parametrize("method,path", [("POST", "/live"), ("POST", "/metrics"),
                                         ("PUT", "/config"), ("DELETE", "/ready"),
                                         ("HEAD", "/live"), ("OPTIONS", "/metrics"),
                                         ("PATCH", "/nope")])
def test_non_get_methods_are_404(quilkin, echo_v4, method, path):
    p = quilkin("--to", echo_v4.addr)
    body = b"x" * 100 if method in ("POST", "PUT", "PATCH") else None
    r = admin_get(p, path, method=method, body=body)
    assert r.status == 404, r
    assert r.body == b""
    # the server keeps serving after a request with a body it discarded
    assert admin_get(p, "/live").status == 200


def test_query_string_is_ignored_for_routing(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    r = admin_get(p, "/live?probe=1&x=y")
    assert (r.status, r.body) == (200, b"ok")
    r = admin_get(p, "/metrics?name[]=quilkin_session_total")
    assert r.status == 200
    parse_prometheus(r.text)


def test_many_sequential_scrapes(quilkin, echo_v4):
    """The server does not leak connections: more requests than its connection limit."""
    p = quilkin("--to", echo_v4.addr)
    for i in range(100):
        path = ("/metrics", "/config", "/live", "/nope")[i % 4]
        r = admin_get(p, path)
        assert r.status == (404 if path == "/nope" else 200), (i, r)


# --------------------------------------------------------------------------
# listen address
# --------------------------------------------------------------------------

def test_admin_on_ipv6_loopback(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr, admin_host="::1")
    r = admin_get(p, "/live")
    assert (r.status, r.body) == (200, b"ok")
    r = admin_get(p, "/metrics")
    assert r.status == 200
    parse_prometheus(r.text)
    p.wait_log(f"admin server listening on [::1]:{p.admin_port}")
    # bound to ::1 only: nothing answers on 127.0.0.1 at that port
    with pytest.raises(ConnectionRefusedError):
        http_request("127.0.0.1", p.admin_port, "/live", timeout=2)


def test_admin_listens_on_exactly_the_given_port(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    assert listening_tcp_ports(p.proc.pid) == [p.admin_port]
    p.wait_log(f"admin server listening on 127.0.0.1:{p.admin_port}")


def test_admin_address_from_environment(quilkin_bin, tmp_path, echo_v4):
    port = free_tcp_port()
    argv = [quilkin_bin, "proxy", "--port", str(free_port()), "--qcmp-port", str(free_port()),
            "--to", echo_v4.addr]
    p = Proxy(argv, cwd=str(tmp_path), env={"QUILKIN_ADMIN_ADDRESS": f"127.0.0.1:{port}"})
    try:
        p.wait_ready()
        p.admin_host, p.admin_port = "127.0.0.1", port
        assert admin_get(p, "/live").body == b"ok"
        assert listening_tcp_ports(p.proc.pid) == [port]
    finally:
        stop_all([p])


def test_command_line_admin_address_overrides_environment(quilkin, echo_v4):
    env_port = free_tcp_port()
    p = quilkin("--to", echo_v4.addr, env={"QUILKIN_ADMIN_ADDRESS": f"127.0.0.1:{env_port}"})
    assert listening_tcp_ports(p.proc.pid) == [p.admin_port]
    assert admin_get(p, "/live").status == 200


def test_admin_bind_conflict_exits_255(tmp_path, echo_v4):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        t0 = time.monotonic()
        r = run_quilkin(["--admin-address", f"127.0.0.1:{port}", "proxy",
                         "--port", str(free_port()), "--qcmp-port", str(free_port()),
                         "--to", echo_v4.addr], cwd=tmp_path)
        elapsed = time.monotonic() - t0
    finally:
        blocker.close()
    assert r.returncode == 255, (r.returncode, r.stdout, r.stderr)
    assert elapsed < 5
    assert f"127.0.0.1:{port}" in r.stderr
    assert "admin" in r.stderr
    assert "AddressSanitizer" not in r.stderr
    # it never got as far as serving: no "ready" log
    assert "Quilkin is ready" not in r.stdout
    assert echo_v4.count() == 0


def test_no_admin_starts_no_server(quilkin, echo_v4):
    port = free_tcp_port()
    p = quilkin("--to", echo_v4.addr, admin=False, global_args=["--admin-address",
                                                                 f"127.0.0.1:{port}"])
    assert listening_tcp_ports(p.proc.pid) == []
    with pytest.raises(ConnectionRefusedError):
        http_request("127.0.0.1", port, "/live", timeout=2)
    assert not p.find("admin server listening")


def test_no_admin_from_environment(quilkin_bin, tmp_path, echo_v4):
    port = free_tcp_port()
    argv = [quilkin_bin, "--admin-address", f"127.0.0.1:{port}", "proxy",
            "--port", str(free_port()), "--qcmp-port", str(free_port()), "--to", echo_v4.addr]
    p = Proxy(argv, cwd=str(tmp_path), env={"NO_ADMIN": "true"})
    try:
        p.wait_ready()
        assert listening_tcp_ports(p.proc.pid) == []
    finally:
        stop_all([p])


def test_admin_address_must_be_a_socket_address(tmp_path):
    r = run_quilkin(["--admin-address", "http://localhost:8001", "proxy",
                     "--port", str(free_port()), "--to", "127.0.0.1:9"], cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "http://localhost:8001" in r.stderr


def test_sigterm_with_admin_running_shuts_down_gracefully(quilkin, echo_v4):
    """cli.md section 5: SIGTERM starts a graceful shutdown, exit 0 once no session is left.
    The admin server's thread must not let the default signal action kill the process."""
    p = quilkin("--to", echo_v4.addr)
    assert admin_get(p, "/live").status == 200
    p.signal(signal.SIGTERM)
    rc = p.wait_exit(10)
    assert rc == 0, f"exit status {rc} (negative = killed by signal)\n" + p.log_tail()
    p.wait_log("shutdown complete", timeout=1)


# --------------------------------------------------------------------------
# /metrics
# --------------------------------------------------------------------------

def test_metrics_before_any_traffic(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    m = scrape(p)
    fams = m.families
    expected_types = {
        "quilkin_packets_total": "counter",
        "quilkin_bytes_total": "counter",
        "quilkin_errors_total": "counter",
        "quilkin_packets_dropped_total": "counter",
        "quilkin_packets_processing_duration_seconds": "histogram",
        "quilkin_session_active": "gauge",
        "quilkin_session_total": "counter",
        "quilkin_session_duration_secs": "histogram",
        "quilkin_cluster_active": "gauge",
        "quilkin_cluster_active_endpoints": "gauge",
        "quilkin_qcmp_packets_total": "counter",
        "quilkin_config_reloads_total": "counter",
    }
    for name, type_ in expected_types.items():
        assert name in fams, name
        assert fams[name].type == type_, name
    # labelled packet series appear only after their first use
    for name in ("quilkin_packets_total", "quilkin_bytes_total", "quilkin_errors_total",
                 "quilkin_packets_dropped_total"):
        assert fams[name].samples == [], name
    assert m.value("quilkin_session_active", **SESSION_LABELS) == 0
    assert m.value("quilkin_session_total") == 0
    for ev in ("read", "write"):
        assert list(m.buckets("quilkin_packets_processing_duration_seconds", event=ev)) == \
            PROC_BOUNDS
        assert m.value("quilkin_packets_processing_duration_seconds_count", event=ev) == 0
    assert list(m.buckets("quilkin_session_duration_secs")) == SESSION_BOUNDS
    assert m.value("quilkin_cluster_active") == 1
    assert m.value("quilkin_cluster_active_endpoints") == 1
    for kind in ("ping", "reply", "invalid"):
        assert m.value("quilkin_qcmp_packets_total", kind=kind) == 0
    for result in ("applied", "rejected"):
        assert m.value("quilkin_config_reloads_total", result=result) == 0


def test_metrics_count_the_traffic_sent(quilkin, servers, clients):
    echo = servers("127.0.0.1")
    p = quilkin("--to", echo.addr)
    c4 = clients(p.port, "127.0.0.1")
    c6 = clients(p.port, "::1")
    sizes4 = [1, 10, 100, 1000, 1400, 9000]
    sizes6 = [7, 70, 700]
    total = 0
    for i, n in enumerate(sizes4):
        payload = bytes([65 + i % 26]) * n
        data, _ = c4.request(payload)
        assert data == payload
        total += n
    for i, n in enumerate(sizes6):
        payload = bytes([97 + i % 26]) * n
        data, _ = c6.request(payload)
        assert data == payload
        total += n
    count = len(sizes4) + len(sizes6)
    read = dict(event="read", **NO_GEO)
    write = dict(event="write", **NO_GEO)
    wait_metric(p, "quilkin_packets_total", count, **read)
    wait_metric(p, "quilkin_packets_total", count, **write)
    wait_metric(p, "quilkin_bytes_total", total, **read)
    m = wait_metric(p, "quilkin_bytes_total", total, **write)
    assert m.value("quilkin_session_active", **SESSION_LABELS) == 2
    assert m.value("quilkin_session_total") == 2
    assert m.value("quilkin_packets_processing_duration_seconds_count", event="read") == count
    assert m.value("quilkin_packets_processing_duration_seconds_count", event="write") == count
    assert m.value("quilkin_packets_processing_duration_seconds_sum", event="read") > 0
    assert m.families["quilkin_errors_total"].samples == []
    assert m.families["quilkin_packets_dropped_total"].samples == []
    # the only packet series are the four above, with exactly these label sets
    assert sorted((s[0], s[1]["event"]) for s in
                  m.samples("quilkin_packets_total") + m.samples("quilkin_bytes_total")) == [
        ("quilkin_bytes_total", "read"), ("quilkin_bytes_total", "write"),
        ("quilkin_packets_total", "read"), ("quilkin_packets_total", "write")]
    # nothing on the QCMP port was involved
    assert m.value("quilkin_qcmp_packets_total", kind="ping") == 0
    assert echo.count() == count


def test_metrics_bytes_read_are_after_filters_and_summed_over_endpoints(quilkin, servers,
                                                                          clients):
    """bytes_total read = bytes sent upstream, summed over endpoints (two endpoints -> 2x);
    write = bytes received from servers, before the write chain."""
    a = servers("127.0.0.1")
    b = servers("127.0.0.1", echo=False)
    p = quilkin("--to", a.addr, "--to", b.addr)
    c = clients(p.port)
    sizes = [5, 50, 500]
    for i, n in enumerate(sizes):
        payload = bytes([48 + i]) * n
        assert c.request(payload)[0] == payload
    b.wait_count(len(sizes))
    read = dict(event="read", **NO_GEO)
    write = dict(event="write", **NO_GEO)
    wait_metric(p, "quilkin_bytes_total", 2 * sum(sizes), **read)
    m = wait_metric(p, "quilkin_bytes_total", sum(sizes), **write)
    assert m.value("quilkin_packets_total", **read) == len(sizes)
    assert m.value("quilkin_packets_total", **write) == len(sizes)


def test_metrics_drop_filter(quilkin, echo_v4, clients):
    cfg = f"""
version: v1alpha1
clusters:
  - endpoints:
      - address: {echo_v4.addr}
filters:
  - name: quilkin.filters.drop.v1alpha1.Drop
"""
    p = quilkin(config=cfg)
    c = clients(p.port)
    n = 7
    for i in range(n):
        c.send(b"drop me %d" % i)
    c.expect_silence()
    assert echo_v4.count() == 0
    labels = dict(event="read", source=DROP_SOURCE, **NO_GEO)
    m = wait_metric(p, "quilkin_packets_dropped_total", n, **labels)
    assert m.value("quilkin_errors_total", event="read", display=DROP_SOURCE, **NO_GEO) == n
    assert len(m.samples("quilkin_packets_dropped_total")) == 1
    assert len(m.samples("quilkin_errors_total")) == 1
    assert m.families["quilkin_packets_total"].samples == []
    assert m.families["quilkin_bytes_total"].samples == []
    assert m.value("quilkin_session_total") == 0
    assert m.value("quilkin_session_active", **SESSION_LABELS) == 0


def test_metrics_session_counts_many_clients(quilkin, echo_v4, clients):
    p = quilkin("--to", echo_v4.addr)
    cs = [clients(p.port, "127.0.0.1" if i % 2 else "::1") for i in range(6)]
    for rnd in range(2):
        for i, c in enumerate(cs):
            msg = b"c%d r%d" % (i, rnd)
            assert c.request(msg)[0] == msg
    m = wait_metric(p, "quilkin_session_active", 6, **SESSION_LABELS)
    assert m.value("quilkin_session_total") == 6
    assert m.value("quilkin_packets_total", event="read", **NO_GEO) == 12


def test_session_duration_histogram_after_expiry(quilkin, echo_v4, clients):
    p = quilkin("--to", echo_v4.addr, "--session-timeout-secs", "1")
    c = clients(p.port)
    assert c.request(b"hello")[0] == b"hello"
    wait_metric(p, "quilkin_session_active", 1, **SESSION_LABELS)
    m = wait_metric(p, "quilkin_session_active", 0, timeout=5, **SESSION_LABELS)
    assert m.value("quilkin_session_duration_secs_count") == 1
    b = m.buckets("quilkin_session_duration_secs")
    # a 1 s timeout: the session lived 1 or 2 whole seconds
    assert b["5"] == 1 and b["+Inf"] == 1
    assert 1 <= m.value("quilkin_session_duration_secs_sum") <= 2
    assert m.value("quilkin_session_total") == 1


def test_cluster_gauges_match_config(quilkin, echo_v4):
    cfg = """
version: v1alpha1
clusters:
  - endpoints:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
  - locality: { region: r1 }
    endpoints:
      - address: 127.0.0.1:9003
  - locality: { region: r2, zone: z2 }
    endpoints:
      - address: 127.0.0.1:9004
      - address: "[::1]:9005"
  - locality: { region: r3 }
    endpoints: []
"""
    p = quilkin(config=cfg)
    m = scrape(p)
    assert m.value("quilkin_cluster_active") == 4
    assert m.value("quilkin_cluster_active_endpoints") == 5


def test_cluster_gauges_with_to(quilkin):
    p = quilkin("--to", "127.0.0.1:9001", "--to", "127.0.0.1:9002", "--to", "[::1]:9003")
    m = scrape(p)
    assert m.value("quilkin_cluster_active") == 1
    assert m.value("quilkin_cluster_active_endpoints") == 3


def test_scrape_while_traffic_flows(quilkin, echo_v4, clients):
    """Scrapes interleaved with traffic: every scrape parses, counters never go down."""
    p = quilkin("--to", echo_v4.addr)
    c = clients(p.port)
    last = 0
    for i in range(30):
        c.send(b"x" * 64)
        if i % 3 == 0:
            m = scrape(p)
            v = m.value("quilkin_packets_total", event="read", **NO_GEO) or 0
            assert v >= last
            last = v
    c.recv_n(30)
    wait_metric(p, "quilkin_packets_total", 30, event="read", **NO_GEO)
    wait_metric(p, "quilkin_bytes_total", 30 * 64, event="write", **NO_GEO)


# --------------------------------------------------------------------------
# the strict parser itself (so a lenient parser cannot hide a formatting bug)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "x 1\n",                                                  # no TYPE
    "# TYPE x counter\nx{a=\"1\",} 1\n",                      # trailing comma
    "# TYPE x counter\nx{a=1} 1\n",                           # unquoted value
    "# TYPE x counter\nx 1",                                  # no final newline
    "# TYPE x counter\nx one\n",                              # bad number
    "# TYPE x counter\nx 1\nx 2\n",                           # duplicate series
    "# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\nx{a=\"b\"} 1\n",   # non-contiguous
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",     # no +Inf
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",  # +Inf != count
])
def test_strict_parser_rejects(text):
    with pytest.raises(AssertionError):
        parse_prometheus(text)


def test_strict_parser_accepts_spec_example():
    text = ("# HELP quilkin_packets_total Total number of packets\n"
            "# TYPE quilkin_packets_total counter\n"
            "quilkin_packets_total{asn=\"\",event=\"read\",ip_prefix=\"\"} 12\n"
            "# TYPE quilkin_packets_dropped_total counter\n"
            "quilkin_packets_dropped_total{asn=\"\",event=\"read\",ip_prefix=\"\","
            "source=\"filter  error: a \\\"q\\\" \\\\ \\n\"} 3\n")
    m = parse_prometheus(text)
    assert m.value("quilkin_packets_total", asn="", event="read", ip_prefix="") == 12
    assert m.value("quilkin_packets_dropped_total", asn="", event="read", ip_prefix="",
                   source="filter  error: a \"q\" \\ \n") == 3


# --------------------------------------------------------------------------
# /config
# --------------------------------------------------------------------------

CONFIG_YAML = """\
version: v1alpha1
id: admin-test-proxy
clusters:
  - endpoints:
      - address: {echo}
        metadata:
          quilkin.dev:
            tokens:
              - bXktdG9rZW4=
              - AQID
              - ""
          build: "2024.06.1"
          canary: false
          weight: 3
          ratio: 0.5
          negative: -12
          nothing: null
          tags: [blue, 7, true]
          nested:
            inner: {{deep: "yes"}}
            list: []
      - address: localhost:7100
  - locality:
      region: europe-west1
      zone: europe-west1-b
      sub_zone: rack-12
    endpoints:
      - address: "[::1]:7101"
      - address: udp://127.0.0.2:7102
        metadata:
          quilkin.dev:
            tokens: [ "MXg3aWp5Ng==" ]
  - locality: {{region: us-east1}}
    endpoints:
      - address: "[2001:db8::40]:7100"
filters:
  - name: quilkin.filters.debug.v1alpha1.Debug
    label: first debug
    config:
      id: hello
  - name: quilkin.filters.pass.v1alpha1.Pass
  - name: quilkin.filters.pass.v1alpha1.Pass
    label: ~
    config: null
"""


def expected_config(echo_addr):
    return {
        "clusters": [
            {"endpoints": [
                {"address": "localhost:7100",
                 "metadata": {"quilkin.dev": {"tokens": []}}},
                {"address": echo_addr,
                 "metadata": {"quilkin.dev": {"tokens": ["", "AQID", "bXktdG9rZW4="]},
                              "build": "2024.06.1", "canary": False, "weight": 3,
                              "ratio": 0.5, "negative": -12, "nothing": None,
                              "tags": ["blue", 7, True],
                              "nested": {"inner": {"deep": "yes"}, "list": []}}},
            ], "locality": None},
            {"endpoints": [
                {"address": "127.0.0.2:7102",
                 "metadata": {"quilkin.dev": {"tokens": ["MXg3aWp5Ng=="]}}},
                {"address": "[::1]:7101", "metadata": {"quilkin.dev": {"tokens": []}}},
            ], "locality": {"region": "europe-west1", "zone": "europe-west1-b",
                            "sub_zone": "rack-12"}},
            {"endpoints": [
                {"address": "[2001:db8::40]:7100", "metadata": {"quilkin.dev": {"tokens": []}}},
            ], "locality": {"region": "us-east1", "zone": "", "sub_zone": ""}},
        ],
        "filters": [
            {"name": "quilkin.filters.debug.v1alpha1.Debug", "label": "first debug",
             "config": {"id": "hello"}},
            {"name": "quilkin.filters.pass.v1alpha1.Pass", "label": None, "config": None},
            {"name": "quilkin.filters.pass.v1alpha1.Pass", "label": None, "config": None},
        ],
        "id": "admin-test-proxy",
        "version": "v1alpha1",
    }


def _locality_key(group):
    return json.dumps(group["locality"], sort_keys=True)


def test_config_round_trips_the_yaml(quilkin, echo_v4):
    p = quilkin(config=CONFIG_YAML.format(echo=echo_v4.addr))
    r = admin_get(p, "/config")
    assert r.status == 200
    # key order (config.md section 7): clusters, filters, id, version; quilkin.dev first
    pairs = json.loads(r.text, object_pairs_hook=lambda kv: kv)
    assert [k for k, _ in pairs] == ["clusters", "filters", "id", "version"]
    doc = json.loads(r.text)
    for group in doc["clusters"]:
        assert list(group) == ["endpoints", "locality"]
        for ep in group["endpoints"]:
            assert list(ep) == ["address", "metadata"]
            assert list(ep["metadata"])[0] == "quilkin.dev"
    for f in doc["filters"]:
        assert list(f) == ["name", "label", "config"]
    want = expected_config(echo_v4.addr)
    # group order is not significant (config.md section 7)
    doc["clusters"].sort(key=_locality_key)
    want["clusters"].sort(key=_locality_key)
    assert doc == want


def test_config_legacy_map_form_is_reported_as_list(quilkin, echo_v4):
    cfg = f"""
id: legacy
clusters:
  default:
    localities:
      - endpoints:
          - address: {echo_v4.addr}
      - locality: {{ region: us-east1 }}
        endpoints:
          - address: 127.0.0.1:26001
"""
    p = quilkin(config=cfg)
    doc = json.loads(admin_get(p, "/config").text)
    doc["clusters"].sort(key=_locality_key)
    want = [
        {"endpoints": [{"address": echo_v4.addr, "metadata": {"quilkin.dev": {"tokens": []}}}],
         "locality": None},
        {"endpoints": [{"address": "127.0.0.1:26001",
                        "metadata": {"quilkin.dev": {"tokens": []}}}],
         "locality": {"region": "us-east1", "zone": "", "sub_zone": ""}},
    ]
    want.sort(key=_locality_key)
    assert doc == {"clusters": want, "filters": [], "id": "legacy", "version": "v1alpha1"}


def test_config_with_to_only(quilkin, echo_v4, echo_v6):
    p = quilkin("--to", echo_v6.addr, "--to", echo_v4.addr)
    doc = json.loads(admin_get(p, "/config").text)
    assert doc["clusters"] == [{
        "endpoints": [
            {"address": echo_v4.addr, "metadata": {"quilkin.dev": {"tokens": []}}},
            {"address": echo_v6.addr, "metadata": {"quilkin.dev": {"tokens": []}}},
        ],
        "locality": None}]
    assert doc["filters"] == []
    assert doc["version"] == "v1alpha1"
    assert isinstance(doc["id"], str)


def test_config_escapes_strings(quilkin, echo_v4):
    cfg = f"""
id: "quote\\" backslash\\\\ tab\\t nl\\n \\u00e9\\u4e2d"
clusters:
  - endpoints:
      - address: {echo_v4.addr}
        metadata:
          "key with \\"quotes\\"": "\\u0001\\u001f"
"""
    p = quilkin(config=cfg)
    r = admin_get(p, "/config")
    doc = json.loads(r.text)
    assert doc["id"] == "quote\" backslash\\ tab\t nl\n \u00e9\u4e2d"
    md = doc["clusters"][0]["endpoints"][0]["metadata"]
    assert md["key with \"quotes\""] == "\x01\x1f"
    # control characters are escaped, never raw, in the body
    assert not any(b < 0x20 for b in r.body)
