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


def run_in_netns(argv, timeout):
    """Runs argv in a new network namespace (as root, else in a new user namespace too).
    Skips, saying why, only when the kernel or sandbox allows neither."""
    import shutil
    import subprocess
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed: make deps installs them")
    last = None
    for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
        probe = subprocess.run(prefix + ["true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return subprocess.run(prefix + argv, capture_output=True, text=True,
                                  timeout=timeout)
        last = probe.stderr.strip()
    pytest.skip(f"cannot create a network namespace here: {last}")


def test_ephemeral_port_exhaustion_is_counted_logged_and_recovers(quilkin_bin):
    """Issue 8 #7: every session holds one local port; when the host's ephemeral range is
    used up, connect() fails with EAGAIN. That is counted as its own drop reason, logged once
    with the limit and how to raise it, and new sessions open again once ports are free.
    Reproduced in a private network namespace whose range is narrowed to 10 ports."""
    import os
    import sys
    helper = os.path.join(os.path.dirname(__file__), "netns_ports.py")
    r = run_in_netns(["/usr/bin/python3", helper, quilkin_bin], timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    assert out["sessions_exhausted"] == 10
    assert out["drops"] == 5 and out["errors"] == 5
    assert out["sessions_after"] == 20
    assert out["exit"] == 0, out["stderr"]
    assert "Sanitizer" not in out["stderr"] and "runtime error" not in out["stderr"], out["stderr"]
    msgs = [(rec.get("level"), rec.get("fields", rec).get("message", "")) for rec in out["log"]]
    warned = [m for lvl, m in msgs if lvl == "WARN" and "no free ephemeral port" in m]
    assert len(warned) == 1, msgs  # once per episode, not per packet
    assert "net.ipv4.ip_local_port_range = 40000 40009 (10 ports" in warned[0]
    assert any("ephemeral ports available again" in m for _, m in msgs), msgs
    print(warned[0], file=sys.stderr)
