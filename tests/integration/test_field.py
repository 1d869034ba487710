"""Field conditions (issue 8): the admin server at thousands of sessions, /ready while
draining, and the proxy's behaviour when the host runs out of what sessions need.

The session count is reached by fan-out (spec proxy.md section 3: without a routing filter
every datagram goes to every endpoint, each through its own session and socket): one client
datagram to a config of N endpoints opens N sessions, i.e. N upstream descriptors. The
endpoints are N distinct loopback addresses 127.3.x.y on one port where a single socket bound
to 0.0.0.0 receives them all, so nothing answers with ICMP and no foreign port is touched."""

import json
import signal
import socket
import threading
import time

import pytest

from admin_helpers import admin_get, scrape, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import free_port, wait_until

SESSION_LABELS = {"asn": "0", "country_code": "", "ip_prefix": "", "organization": "",
                  "prefix_entity": "", "prefix_name": ""}
ADMIN_PATHS = ("/live", "/livez", "/ready", "/readyz", "/metrics", "/config")


class Sink:
    """A UDP socket on 0.0.0.0:PORT that counts what arrives (on any 127/8 address)."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("0.0.0.0", self.port))
        self.sock.settimeout(0.1)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(65536)
                self.count += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def fanout_config(n, port):
    eps = "".join(f"      - address: 127.3.{k // 250}.{k % 250 + 1}:{port}\n" for k in range(n))
    return f"version: v1alpha1\nid: field\nclusters:\n  - endpoints:\n{eps}"


def open_fds(pid):
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_admin_serves_every_path_with_5000_live_sessions(quilkin, clients, sink):
    """Issue 8 #1: libmicrohttpd in select() mode refused every connection whose descriptor
    number was >= FD_SETSIZE (1024), so a liveness probe failed once ~1,000 sessions were
    open. Here 5,000 sessions (5,000 upstream sockets) are live while every admin path is
    asked repeatedly, each time on a fresh connection."""
    n = 5000
    p = quilkin(config=fanout_config(n, sink.port))
    c = clients(p.port)
    c.send(b"open")
    m = wait_metric(p, "quilkin_session_active", n, timeout=60, **SESSION_LABELS)
    assert m.value("quilkin_session_total") == n
    assert open_fds(p.proc.pid) > n  # the admin connections below get numbers > 1024
    wait_until(lambda: sink.count >= n, 30, what=f"{n} datagrams at the sink")
    for _ in range(5):
        for path in ADMIN_PATHS:
            r = admin_get(p, path, timeout=5.0)
            assert r.status == 200, (path, r)
    body = json.loads(admin_get(p, "/config").body)
    assert len(body["clusters"][0]["endpoints"]) == n
    # and traffic still flows while the admin server is being asked
    c.send(b"again")
    wait_until(lambda: sink.count >= 2 * n, 30, what=f"{2 * n} datagrams at the sink")
    assert scrape(p).value("quilkin_session_active", **SESSION_LABELS) == n


def test_ready_is_503_while_draining_and_live_stays_200(quilkin, echo_v4, clients):
    """Issue 8: during the drain that the first SIGTERM starts (spec cli.md section 5), /ready
    answers 503 so a load balancer stops sending new players; /live stays 200 and client
    traffic is still forwarded until the sessions expire."""
    p = quilkin("--to", echo_v4.addr, "--session-timeout-secs", "3")
    c = clients(p.port)
    assert c.request(b"before")[0] == b"before"
    assert admin_get(p, "/ready").status == 200
    p.signal(signal.SIGTERM)
    p.wait_log("shutting down: draining")
    r = admin_get(p, "/ready")
    assert r.status == 503 and r.body == b"draining", r
    assert admin_get(p, "/readyz").status == 503
    assert admin_get(p, "/live").status == 200
    c.send(b"during")
    echo_v4.wait_for(b"during")
    # the session expires (3 s idle), the process exits 0 by itself
    assert p.wait_exit(15) == 0
