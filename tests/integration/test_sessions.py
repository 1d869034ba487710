"""Sessions: expiry, refresh, shutdown drain, limits, dead endpoints, many clients
(proxy.md §5, cli.md §5).

Expected values: session identity, one upstream socket per session and the drain of the
first signal are the spec's (proxy.md section 5, cli.md section 5); the seed's
either-direction expiry rule and removal within about a second, the second signal ending
the drain, --max-sessions with its split between workers and the open-files cap, and the
`shutting down` reason, summary and WARN lines are quilkin-c's (spec README deviations;
README "Shutdown", "Limits"; docs/test-expectations.md E1, E2, E5, E6)."""

import os
import re
import resource
import select
import signal
import socket
import time

import pytest

from conftest import closed_port, expect_quiet, fmt_addr, record_text


def let_time_pass(seconds):
    """Deliberate wait for wall-clock time to pass (session timers).

    This is not a poll: the condition under test IS the passage of time, and
    probing the session would refresh it.
    """
    time.sleep(seconds)


def totals(p):
    """Parse the 'totals:' line logged at exit into a dict of ints."""
    line = p.find("totals:")
    assert line, p.log_tail()
    m = re.search(r"read (\d+) packets / (\d+) bytes, write (\d+) packets / (\d+) bytes, "
                  r"sessions created (\d+), expired (\d+), upstream errors (\d+)", line[-1])
    assert m, line[-1]
    keys = ("read_packets", "read_bytes", "write_packets", "write_bytes",
            "sessions_created", "sessions_expired", "upstream_errors")
    return dict(zip(keys, map(int, m.groups())))


def test_idle_session_expires_and_a_new_one_is_created(proxy, echo_v4, clients):
    timeout = 1
    p = proxy("--to", echo_v4.addr, "--session-timeout-secs", timeout)
    client = clients(p.port)
    assert client.request(b"first") == (b"first", ("127.0.0.1", p.port))
    upstream = echo_v4.snapshot()[0][1]

    # Well inside the timeout the session is alive: the server can reach the client.
    let_time_pass(0.5)
    echo_v4.sendto(b"still-alive", upstream)
    assert client.recv() == (b"still-alive", ("127.0.0.1", p.port))
    last_activity = time.monotonic()

    # timeout + 1.5 s after the last packet the session is gone: the old
    # upstream port no longer leads to the client.
    let_time_pass(last_activity + timeout + 1.5 - time.monotonic())
    echo_v4.sendto(b"too-late", upstream)
    client.expect_silence()

    # A new client packet creates a new session with a new upstream socket.
    assert client.request(b"again") == (b"again", ("127.0.0.1", p.port))
    got = echo_v4.snapshot()
    assert [d for d, _ in got] == [b"first", b"again"]
    new_upstream = got[1][1]
    assert new_upstream != upstream, "expired session's upstream port was reused"
    echo_v4.sendto(b"to-new-session", new_upstream)
    assert client.recv() == (b"to-new-session", ("127.0.0.1", p.port))


def open_fds(p):
    return len(os.listdir(f"/proc/{p.proc.pid}/fd"))


def test_expired_session_socket_is_pooled_and_reused_on_a_fresh_port(proxy, echo_v4,
                                                                       clients):
    """Issue 11: an expired session's upstream socket is disconnected (its port goes back to
    the host) and kept for the next session, which then costs one connect() instead of a
    new socket. The new session gets a fresh port, and a datagram sent late to the old port
    reaches nobody."""
    p = proxy("--to", echo_v4.addr, "--session-timeout-secs", 1, "--workers", 1)
    a = clients(p.port)
    assert a.request(b"a") == (b"a", ("127.0.0.1", p.port))
    old_upstream = echo_v4.snapshot()[0][1]
    with_session = open_fds(p)
    let_time_pass(2.5)  # the timeout and the 1 s sweep: the session is gone
    assert open_fds(p) == with_session  # pooled, not closed
    b = clients(p.port)
    assert b.request(b"b") == (b"b", ("127.0.0.1", p.port))
    assert open_fds(p) == with_session  # the pooled socket carries b: no new descriptor
    new_upstream = echo_v4.snapshot()[1][1]
    assert new_upstream != old_upstream
    # at once, while b's session is well inside its 1 s timeout: the stale datagram first
    echo_v4.sendto(b"stale", old_upstream)
    echo_v4.sendto(b"fresh", new_upstream)
    assert b.recv() == (b"fresh", ("127.0.0.1", p.port))  # not "stale"
    a.expect_silence()


def test_server_traffic_keeps_session_alive(proxy, echo_v4, clients):
    """A server streaming to a silent client keeps the session alive (seed rule)."""
    timeout = 2
    p = proxy("--to", echo_v4.addr, "--session-timeout-secs", timeout)
    client = clients(p.port)
    assert client.request(b"subscribe") == (b"subscribe", ("127.0.0.1", p.port))
    upstream = echo_v4.snapshot()[0][1]

    sent = []
    end = time.monotonic() + 2 * timeout + 0.6
    i = 0
    while time.monotonic() < end:
        msg = b"tick-%03d" % i
        echo_v4.sendto(msg, upstream)
        sent.append(msg)
        # each tick must arrive before the next one is sent (300 ms apart)
        data, src = client.recv()
        assert (data, src) == (msg, ("127.0.0.1", p.port))
        let_time_pass(0.3)
        i += 1
    assert len(sent) >= 14
    # The client only ever sent one datagram.
    assert echo_v4.count() == 1


def test_client_traffic_keeps_session_alive(proxy, echo_v4, clients):
    timeout = 1
    p = proxy("--to", echo_v4.addr, "--session-timeout-secs", timeout)
    client = clients(p.port)
    end = time.monotonic() + 2 * timeout + 0.6
    n = 0
    while time.monotonic() < end:
        assert client.request(b"c-%d" % n) == (b"c-%d" % n, ("127.0.0.1", p.port))
        let_time_pass(0.3)
        n += 1
    got = echo_v4.snapshot()
    assert len(got) == n >= 8
    assert len({src for _, src in got}) == 1, "session was recreated while in use"


def test_sigterm_drains_then_exits_cleanly(proxy, servers, clients):
    timeout = 2
    echo = servers("127.0.0.1")
    p = proxy("--to", echo.addr, "--session-timeout-secs", timeout)
    c1, c2 = clients(p.port), clients(p.port, host="::1")
    assert c1.request(b"one") == (b"one", ("127.0.0.1", p.port))
    assert c2.request(b"two") == (b"two", ("::1", p.port))
    upstream1 = echo.snapshot()[0][1]

    p.signal(signal.SIGTERM)
    p.wait_log("shutting down")
    t_signal = time.monotonic()
    # During the drain client->server is still forwarded ...
    c1.send(b"during-drain")
    assert echo.wait_for(b"during-drain") == upstream1
    # ... but server->client is not relayed (neither the echo nor a push).
    echo.sendto(b"push", upstream1)
    c1.expect_silence()
    assert p.running()

    rc = p.wait_exit(timeout + 4)
    assert rc == 0
    assert time.monotonic() - t_signal < timeout + 4
    assert p.find("shutdown complete")
    t = totals(p)
    assert t["sessions_created"] == 2
    assert t["sessions_expired"] == 2
    assert t["read_packets"] == 3
    assert p.find(re.compile(r"^dropped 2 packets: shutting down$")), p.log_tail()
    assert p.sanitizer_reports() == []


def test_second_sigterm_exits_immediately(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)           # default 60 s session timeout
    client = clients(p.port)
    assert client.request(b"x") == (b"x", ("127.0.0.1", p.port))
    p.signal(signal.SIGTERM)
    p.wait_log("shutting down")
    assert p.running()
    p.signal(signal.SIGTERM)
    assert p.wait_exit(3) == 0
    assert p.find("shutdown complete")
    assert totals(p)["sessions_created"] == 1


def test_sigint_drains_then_a_second_sigint_exits(proxy, echo_v4, clients):
    """README Shutdown, spec cli.md section 5: SIGINT does what SIGTERM does. The first
    starts the drain (client traffic still forwarded, replies dropped as `shutting down`);
    a second ends it at once, with status 0, although a session is still live."""
    p = proxy("--to", echo_v4.addr)           # default 60 s session timeout
    c = clients(p.port)
    assert c.request(b"before") == (b"before", ("127.0.0.1", p.port))
    p.signal(signal.SIGINT)
    p.wait_log("shutting down: draining 1 sessions")
    c.send(b"during")
    echo_v4.wait_for(b"during")
    c.expect_silence()                        # its echo is not relayed
    assert p.running()
    p.signal(signal.SIGINT)
    assert p.wait_exit(5) == 0
    assert p.find("second signal: exiting now") and p.find("shutdown complete")
    assert totals(p)["read_packets"] == 2
    assert p.find(re.compile(r"^dropped 1 packets: shutting down$")), p.log_tail()


def test_sigint_drain_ends_when_the_sessions_expire(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, "--session-timeout-secs", 1)
    c = clients(p.port)
    assert c.request(b"x") == (b"x", ("127.0.0.1", p.port))
    p.signal(signal.SIGINT)
    p.wait_log("shutting down: draining 1 sessions")
    # expiry about 1 s after the last packet, the drain looks once a second
    assert p.wait_exit(6) == 0
    assert not p.find("second signal")
    assert p.find("shutdown complete")
    assert totals(p)["sessions_expired"] == 1


def test_session_cap_is_split_between_workers_and_capped_by_open_files(proxy, echo_v4):
    """README Limits: --max-sessions is split evenly between the workers and capped by the
    open-files limit minus 256 descriptors kept for listeners, admin and logs; the proxy
    raises its own soft limit to the hard one. Started with 64 soft / 262 hard, it raises
    the soft limit to 262 and caps --max-sessions 100 at 6: 3 per worker. 40 clients spread
    over both workers by the kernel's SO_REUSEPORT hash (all 40 on one worker: 2^-39); each
    worker takes 3 sessions and says once that its table is full."""
    def limits():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 262))
    p = proxy("--to", echo_v4.addr, "--workers", 2, "--max-sessions", 100, preexec_fn=limits)
    with open(f"/proc/{p.proc.pid}/limits") as f:
        nofile = [line.split()[3:5] for line in f if line.startswith("Max open files")]
    assert nofile == [["262", "262"]], nofile
    assert p.find("--max-sessions 100 exceeds the open-files limit 262; using 6"), p.log_tail()
    assert p.find("with 2 workers, session timeout 60s, max sessions 6"), p.log_tail()
    socks = []
    try:
        for i in range(40):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            s.sendto(b"c%02d" % i, ("127.0.0.1", p.port))
        full = p.wait_log("session table full", count=2)
        echo_v4.wait_count(6)

        def no_more_than_6():
            assert echo_v4.count() <= 6, echo_v4.snapshot()
        expect_quiet(no_more_than_6)
    finally:
        for s in socks:
            s.close()
    assert sorted(m.split(":")[0] for m in full) == ["worker 0", "worker 1"], full
    assert all("(3 sessions)" in m for m in full), full
    assert p.stop() == 0
    t = totals(p)
    assert t["sessions_created"] == 6 and t["read_packets"] == 6
    assert p.find("dropped 34 packets: session limit reached"), p.log_tail()


def test_session_limit(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, "--workers", 1, "--max-sessions", 3)
    cs = [clients(p.port) for _ in range(5)]
    for i, c in enumerate(cs[:3]):
        assert c.request(b"ok-%d" % i) == (b"ok-%d" % i, ("127.0.0.1", p.port))
    first_sources = echo_v4.sources()
    assert len(set(first_sources)) == 3

    # Sessions 4 and 5 are refused, repeatedly.
    refused = 0
    for rnd in range(3):
        for i, c in enumerate(cs[3:], start=3):
            c.send(b"refused-%d-%d" % (i, rnd))
            refused += 1
    for c in cs[3:]:
        c.expect_silence(0.5)
    assert echo_v4.count() == 3

    # The existing sessions keep working, on their original upstream ports.
    for i, c in enumerate(cs[:3]):
        assert c.request(b"still-%d" % i) == (b"still-%d" % i, ("127.0.0.1", p.port))
    assert echo_v4.sources()[3:] == first_sources

    full = p.wait_log("session table full")
    assert len(full) == 1, full
    assert [r["level"] for r in p.records() if "session table full" in record_text(r)] == ["WARN"]

    p.signal(signal.SIGTERM)
    p.wait_log("shutting down")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(3) == 0
    assert len(p.find("session table full")) == 1
    assert p.find(f"dropped {refused} packets: session limit reached"), p.log_tail()
    assert totals(p)["sessions_created"] == 3


def test_dead_endpoint_does_not_disturb_live_one(proxy, echo_v4, clients):
    dead4 = fmt_addr("127.0.0.1", closed_port("127.0.0.1"))
    dead6 = fmt_addr("::1", closed_port("::1"))
    config = f"""\
clusters:
  - endpoints:
      - address: {dead4}
      - address: {echo_v4.addr}
      - address: "{dead6}"
"""
    p = proxy(config=config)
    cs = [clients(p.port), clients(p.port), clients(p.port, host="::1")]
    for rnd in range(10):
        for i, c in enumerate(cs):
            msg = b"live-%d-%d" % (i, rnd)
            data, src = c.request(msg)
            assert data == msg
            assert src == (c.host, p.port)
    for c in cs:
        c.expect_silence(0.3)       # exactly one reply per datagram
    got = echo_v4.snapshot()
    assert len(got) == 30
    # every client kept one upstream port to the live endpoint
    by_client = {}
    for d, src in got:
        by_client.setdefault(d.split(b"-")[1], set()).add(src)
    assert all(len(s) == 1 for s in by_client.values()), by_client
    assert len({next(iter(s)) for s in by_client.values()}) == 3
    assert p.running()


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if want < 2600:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} too low for 1000 clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _collect(socks, pending, deadline):
    """Receive replies for the sockets in ``pending`` (fd -> index) until empty or deadline."""
    replies = {}
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select([socks[i] for i in pending.values()], [], [],
                                    max(0.0, deadline - time.monotonic()))
        for s in ready:
            idx = pending.pop(s.fileno())
            data, src = s.recvfrom(65536)
            replies[idx] = (data, (src[0], src[1]))
    return replies


def test_thousand_clients_burst(many_fds, proxy, echo_v4):
    n, group = 1000, 100
    p = proxy("--to", echo_v4.addr)
    socks = []
    replies = {}
    resent = 0
    try:
        for base in range(0, n, group):
            batch = []
            for i in range(base, base + group):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
                batch.append(i)
            for i in batch:
                socks[i].sendto(b"client-%04d" % i, ("127.0.0.1", p.port))
            pending = {socks[i].fileno(): i for i in batch}
            got = _collect(socks, pending, time.monotonic() + 3)
            # bounded retry for anything a kernel buffer dropped
            for _ in range(2):
                if not pending:
                    break
                for i in pending.values():
                    socks[i].sendto(b"client-%04d" % i, ("127.0.0.1", p.port))
                    resent += 1
                got.update(_collect(socks, pending, time.monotonic() + 3))
            replies.update(got)

        missing = [i for i in range(n) if i not in replies]
        assert not missing, f"{len(missing)} clients got no reply (resent {resent}): {missing[:10]}"
        for i in range(n):
            assert replies[i] == (b"client-%04d" % i, ("127.0.0.1", p.port)), i
        upstream_ports = {src for _, src in echo_v4.snapshot()}
        assert len(upstream_ports) == n

        p.signal(signal.SIGTERM)
        p.wait_log("shutting down")
        p.signal(signal.SIGTERM)
        assert p.wait_exit(10) == 0
        t = totals(p)
        assert t["sessions_created"] == n
        assert t["read_packets"] == n + resent
        assert not p.find("session table full")
    finally:
        for s in socks:
            s.close()
