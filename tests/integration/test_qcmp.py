"""QCMP (spec qcmp.md): the proxy's responder on --qcmp-port over IPv4 and IPv6, what it
ignores, its counters, and the `quilkin qcmp ping` client (exit 0 / 1 / 2).

Expected values: packet bytes, what is answered and the client's output fields are the
spec's (qcmp.md sections 2-6, with its test vectors); `qcmp ping` exiting 1 without a
successful ping is a deliberate deviation (spec README), the kind="..." counters and the
per-source rate limit (20/s, burst 40) are quilkin-c extensions (README "QCMP", "Security";
docs/test-expectations.md E3, E4, E5)."""

import json
import re
import select
import socket
import struct
import time

import pytest

from admin_helpers import decode_reply, qcmp_ping, qcmp_reply, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import SILENCE, closed_port, fmt_addr, record_text, run_quilkin

CLOCK_SLACK_NS = 5 * 10**9

V1 = bytes.fromhex("514c4b4e00000009bf0000000063b6e957")
V2 = bytes.fromhex("514c4b4e000000092a17979cfe3d85cd15")
V3 = bytes.fromhex("514c4b4e000100192a17979cfe3d85cd1517979cfe3d9cb07517979cfe3d9cfe95")

# Datagrams the responder must ignore (qcmp.md section 6 negative vectors and more).
INVALID = [
    ("empty", b""),
    ("hello", b"hello"),
    ("magic-only", b"QLKN"),
    ("unknown-version", b"QLKN\x01"),
    ("version-1-full-ping", b"QLKN\x01" + V2[5:]),
    ("type-ff-no-length", b"QLKN\x00\xff"),
    ("command-code-2", bytes.fromhex("514c4b4e00020009") + b"\x00" * 9),
    ("ping-length-25", bytes.fromhex("514c4b4e00000019") + b"\x00" * 25),
    ("trailing-byte", V2 + b"\x00"),
    ("truncated", V2[:-1]),
    ("header-only", V2[:8]),
    ("reply-type-with-ping-length", V1[:5] + b"\x01" + V1[6:]),
    ("ping-reply", V3),
    ("1000-bytes-ping-prefix", V2 + b"\x00" * (1000 - len(V2))),
    ("1000-bytes-length-matches", bytes.fromhex("514c4b4e0000") + struct.pack(">H", 992)
     + b"\x2a" * 992),
    ("1000-bytes-junk", bytes(range(256)) * 3 + b"\xff" * 232),
    ("64-bytes", V2 + b"\x00" * (64 - len(V2))),
    ("60000-bytes", V2 + b"\x01" * (60000 - len(V2))),
    ("not-magic", b"QLKM" + V2[4:]),
]


def udp_socket(host):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def recv_within(sock, timeout):
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, src = sock.recvfrom(65536)
    return data, (src[0], src[1])


def expect_no_datagram(sock, timeout=SILENCE):
    got = recv_within(sock, timeout)
    assert got is None, f"unexpected datagram {got[0][:60]!r} from {got[1]}"


def ping_and_check(sock, host, port, nonce):
    t_before = time.time_ns()
    sock.sendto(qcmp_ping(nonce, t_before), (host, port))
    got = recv_within(sock, 2.0)
    t_after = time.time_ns()
    assert got is not None, f"no PingReply from {host}:{port}"
    data, src = got
    assert src == (host, port), src
    r_nonce, r_client, r_recv, r_send = decode_reply(data)
    assert r_nonce == nonce
    assert r_client == t_before
    assert r_recv <= r_send
    assert t_before - CLOCK_SLACK_NS <= r_recv <= t_after + CLOCK_SLACK_NS
    assert t_before - CLOCK_SLACK_NS <= r_send <= t_after + CLOCK_SLACK_NS
    return data


# --------------------------------------------------------------------------
# the responder
# --------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ping_reply_bytes(quilkin, echo_v4, host):
    p = quilkin("--to", echo_v4.addr)
    s = udp_socket(host)
    try:
        data = ping_and_check(s, host, p.qcmp_port, 0xBF)
        assert data[:9] == bytes.fromhex("514c4b4e00010019bf")
        # a fixed client timestamp (spec vector V2) comes back verbatim
        s.sendto(V2, (host, p.qcmp_port))
        got = recv_within(s, 2.0)
        assert got is not None
        assert got[0][:17] == V3[:17]
        expect_no_datagram(s, 0.2)   # exactly one reply per ping
    finally:
        s.close()
    m = wait_metric(p, "quilkin_qcmp_packets_total", 2, kind="ping")
    assert m.value("quilkin_qcmp_packets_total", kind="reply") == 2
    assert m.value("quilkin_qcmp_packets_total", kind="invalid") == 0
    # QCMP never touches sessions or packet metrics, and is never forwarded
    assert m.value("quilkin_session_total") == 0
    assert m.families["quilkin_packets_total"].samples == []
    assert echo_v4.count() == 0


def test_ipv4_mapped_source_gets_reply_on_dual_stack_socket(quilkin, echo_v4):
    """An AF_INET6 client sending to ::ffff:127.0.0.1 reaches the dual-stack responder."""
    p = quilkin("--to", echo_v4.addr)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:127.0.0.1", 0))
        s.sendto(qcmp_ping(9, time.time_ns()), ("::ffff:127.0.0.1", p.qcmp_port))
        got = recv_within(s, 2.0)
        assert got is not None
        assert decode_reply(got[0])[0] == 9
    finally:
        s.close()


def test_burst_of_pings_all_answered(quilkin, echo_v4):
    """Without the per-source reply limit (extension, issue 9) every ping of a burst is
    answered; the default limit is tested below."""
    p = quilkin("--to", echo_v4.addr, "--qcmp-source-rate", "0")
    s = udp_socket("127.0.0.1")
    try:
        sent = {}
        for nonce in range(100):
            ts = time.time_ns()
            sent[nonce] = ts
            s.sendto(qcmp_ping(nonce, ts), ("127.0.0.1", p.qcmp_port))
        got = {}
        deadline = time.monotonic() + 3
        while len(got) < 100 and time.monotonic() < deadline:
            r = recv_within(s, 0.5)
            if r is None:
                continue
            nonce, client, recv_ts, send_ts = decode_reply(r[0])
            assert nonce not in got
            got[nonce] = client
        assert got == sent
    finally:
        s.close()
    wait_metric(p, "quilkin_qcmp_packets_total", 100, kind="reply")


def test_invalid_datagrams_are_ignored_and_counted(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    for host in ("127.0.0.1", "::1"):
        s = udp_socket(host)
        try:
            for _, data in INVALID:
                s.sendto(data, (host, p.qcmp_port))
            expect_no_datagram(s)
            # still answering afterwards, and only to the ping
            ping_and_check(s, host, p.qcmp_port, 0x77)
            expect_no_datagram(s, 0.2)
        finally:
            s.close()
    m = wait_metric(p, "quilkin_qcmp_packets_total", 2 * len(INVALID), kind="invalid")
    assert m.value("quilkin_qcmp_packets_total", kind="ping") == 2
    assert m.value("quilkin_qcmp_packets_total", kind="reply") == 2
    assert echo_v4.count() == 0
    assert p.running()


@pytest.mark.parametrize("name,data", INVALID, ids=[n for n, _ in INVALID])
def test_each_invalid_datagram_gets_no_reply(quilkin, echo_v4, name, data):
    p = quilkin("--to", echo_v4.addr)
    s = udp_socket("127.0.0.1")
    try:
        s.sendto(data, ("127.0.0.1", p.qcmp_port))
        s.sendto(qcmp_ping(0x42, time.time_ns()), ("127.0.0.1", p.qcmp_port))
        got = recv_within(s, 2.0)
        assert got is not None, "no reply to the ping that followed"
        assert decode_reply(got[0])[0] == 0x42   # the first datagram back is the ping's
        expect_no_datagram(s, 0.15)
    finally:
        s.close()
    wait_metric(p, "quilkin_qcmp_packets_total", 1, kind="invalid")


def test_qlkn_on_game_port_is_forwarded_not_answered(quilkin, echo_v4, clients):
    p = quilkin("--to", echo_v4.addr)
    c = clients(p.port)
    ping = qcmp_ping(0x2A, time.time_ns())
    data, src = c.request(ping)
    assert data == ping                      # the echo server's copy, not a PingReply
    assert src == ("127.0.0.1", p.port)
    assert echo_v4.wait_for(ping)
    c.send(V3)
    assert c.recv()[0] == V3
    c.expect_silence(0.2)
    m = wait_metric(p, "quilkin_packets_total", 2, event="read", asn="", ip_prefix="")
    assert m.value("quilkin_qcmp_packets_total", kind="ping") == 0
    assert m.value("quilkin_qcmp_packets_total", kind="invalid") == 0


def test_qcmp_port_zero_picks_a_port(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr, qcmp_port=0)
    line = p.wait_log(re.compile(r"QCMP responder listening on \[::\]:\d+"))[0]
    port = int(re.search(r"\]:(\d+)", line).group(1))
    assert port != 0
    s = udp_socket("127.0.0.1")
    try:
        ping_and_check(s, "127.0.0.1", port, 1)
    finally:
        s.close()


# --------------------------------------------------------------------------
# `quilkin qcmp ping`
# --------------------------------------------------------------------------

def run_ping(args, timeout=15, global_args=()):
    return run_quilkin([*global_args, "qcmp", "ping", *args], timeout=timeout)


def messages(stdout):
    out = []
    for line in stdout.splitlines():
        rec = json.loads(line)           # auto format = JSON when stdout is not a terminal
        out.append((rec["level"], record_text(rec)))
    return out


FINAL_RE = re.compile(r"^final results median_millis=(\d+(?:\.\d{1,2})?) "
                      r"average_millis=(\d+(?:\.\d{1,2})?) "
                      r"attempts=(\d+) successful_attempts=(\d+)$")
OK_RE = re.compile(r"^successful ping delay_millis=(\d+(?:\.\d{1,2})?)$")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_qcmp_ping_command_against_proxy(quilkin, echo_v4, host):
    p = quilkin("--to", echo_v4.addr)
    r = run_ping([fmt_addr(host, p.qcmp_port), "-a", "3"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stderr == ""
    msgs = messages(r.stdout)
    oks = [m for lvl, m in msgs if OK_RE.match(m)]
    assert len(oks) == 3, msgs
    assert all(lvl == "INFO" for lvl, m in msgs if OK_RE.match(m) or FINAL_RE.match(m))
    finals = [FINAL_RE.match(m) for _, m in msgs if FINAL_RE.match(m)]
    assert len(finals) == 1, msgs
    median, avg, attempts, ok = finals[0].groups()
    assert (attempts, ok) == ("3", "3")
    delays = sorted(float(OK_RE.match(m).group(1)) for m in oks)
    assert float(median) == pytest.approx(delays[1], abs=0.011)
    assert float(avg) == pytest.approx(sum(delays) / 3, abs=0.02)
    assert float(median) < 1000
    assert not [m for lvl, m in msgs if lvl == "ERROR"]
    wait_metric(p, "quilkin_qcmp_packets_total", 3, kind="ping")


def test_qcmp_ping_long_option_and_default_amount(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    r = run_ping([f"127.0.0.1:{p.qcmp_port}", "--amount", "2"])
    assert r.returncode == 0, r.stdout
    assert any("attempts=2 successful_attempts=2" in m for _, m in messages(r.stdout))
    r = run_ping([f"127.0.0.1:{p.qcmp_port}"])
    assert r.returncode == 0, r.stdout
    assert any("attempts=5 successful_attempts=5" in m for _, m in messages(r.stdout))


def test_qcmp_ping_quiet_prints_nothing(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    r = run_ping([f"127.0.0.1:{p.qcmp_port}", "-a", "2"], global_args=["-q"])
    assert r.returncode == 0
    assert (r.stdout, r.stderr) == ("", "")
    wait_metric(p, "quilkin_qcmp_packets_total", 2, kind="ping")


def test_qcmp_ping_plain_format(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr)
    r = run_ping([f"127.0.0.1:{p.qcmp_port}", "-a", "1"], global_args=["--log-format", "plain"])
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    num = r"\d+(?:\.\d{1,2})?"  # milliseconds to two decimals, as numbers print
    assert any(re.search(rf"\bINFO\b.*successful ping delay_millis={num}$", ln)
               for ln in lines), lines
    assert any(re.search(rf"final results median_millis={num} average_millis={num} "
                         r"attempts=1 successful_attempts=1$", ln) for ln in lines), lines


def test_qcmp_ping_closed_port_exits_1(tmp_path):
    port = closed_port()
    t0 = time.monotonic()
    r = run_ping([f"127.0.0.1:{port}", "-a", "1"])
    elapsed = time.monotonic() - t0
    assert r.returncode == 1, (r.stdout, r.stderr)
    msgs = messages(r.stdout)
    assert ("ERROR", "no successful results") in msgs
    assert any(lvl == "ERROR" and "exceeded timeout duration" in m for lvl, m in msgs), msgs
    assert not any(FINAL_RE.match(m) for _, m in msgs)
    assert 0.9 <= elapsed < 5


class FakeResponder:
    """A UDP socket that answers each Ping with whatever ``make(ping_bytes)`` returns."""

    def __init__(self, servers, make):
        def reply(data):
            return make(data)
        self.server = servers("127.0.0.1", echo=reply)
        self.addr = self.server.addr


def _ping_fields(data):
    nonce, ts = struct.unpack(">Bq", data[8:17])
    return nonce, ts


def test_qcmp_ping_garbage_reply_counts_as_failure(servers):
    f = FakeResponder(servers, lambda data: b"definitely not QCMP")
    r = run_ping([f.addr, "-a", "2"])
    assert r.returncode == 1, r.stdout
    msgs = messages(r.stdout)
    assert ("ERROR", "no successful results") in msgs
    assert f.server.count() == 2          # both attempts sent a Ping anyway
    for data, _ in f.server.snapshot():
        assert len(data) == 17 and data[:8] == bytes.fromhex("514c4b4e00000009")


def test_qcmp_ping_mismatched_nonce_counts_as_failure(servers):
    def wrong_nonce(data):
        nonce, ts = _ping_fields(data)
        return qcmp_reply((nonce + 1) % 256, ts, ts, ts)
    f = FakeResponder(servers, wrong_nonce)
    r = run_ping([f.addr, "-a", "2"])
    assert r.returncode == 1, r.stdout
    msgs = messages(r.stdout)
    mism = [m for lvl, m in msgs if lvl == "ERROR" and "mismatched nonces" in m]
    assert len(mism) == 2, msgs
    m = re.search(r"sent_nonce=(\d+) recv_nonce=(\d+)", mism[0])
    assert m and (int(m.group(1)) + 1) % 256 == int(m.group(2))


def test_qcmp_ping_rtt_excludes_server_processing_time(servers):
    """RTT = (t_client_recv - client_ts) - (server_send - server_recv): a responder claiming
    it held the ping for 10 s still yields a small, non-negative delay."""
    def slow_server(data):
        nonce, ts = _ping_fields(data)
        return qcmp_reply(nonce, ts, ts, ts + 10 * 10**9)
    f = FakeResponder(servers, slow_server)
    r = run_ping([f.addr, "-a", "1"])
    assert r.returncode == 0, r.stdout
    msgs = messages(r.stdout)
    delays = [float(OK_RE.match(m).group(1)) for _, m in msgs if OK_RE.match(m)]
    assert delays == [0.0], msgs

    def honest(data):
        nonce, ts = _ping_fields(data)
        now = time.time_ns()
        return qcmp_reply(nonce, ts, now, now)
    f2 = FakeResponder(servers, honest)
    r = run_ping([f2.addr, "-a", "1"])
    assert r.returncode == 0, r.stdout
    delays = [float(OK_RE.match(m).group(1)) for _, m in messages(r.stdout) if OK_RE.match(m)]
    assert len(delays) == 1 and 0.0 <= delays[0] < 1000


@pytest.mark.parametrize("args", [
    ["localhost:7600"],
    ["127.0.0.1"],
    ["nonsense"],
    ["[::1]"],
    ["::1:7600"],
    ["127.0.0.1:70000"],
    ["udp://127.0.0.1:7600"],
    ["127.0.0.1:7600", "-a", "0"],
    ["127.0.0.1:7600", "-a", "x"],
    ["127.0.0.1:7600", "127.0.0.1:7601"],
    [],
])
def test_qcmp_ping_bad_arguments_exit_2(args):
    r = run_ping(args, timeout=5)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert r.stderr.strip(), args
    assert r.stdout == ""


def test_qcmp_without_ping_subcommand_exits_2():
    r = run_quilkin(["qcmp"], timeout=5)
    assert r.returncode == 2
    assert r.stderr.strip()


def test_reply_rate_is_limited_per_source(quilkin, echo_v4):
    """Issue 9 #4: QCMP replies are 1.9x the ping's bytes, so each source address gets at
    most 20 replies/s after a burst of 40 (default); the rest are counted, not answered. A
    client pinging a few times a second from another address is never limited."""
    p = quilkin("--to", echo_v4.addr)
    flood = udp_socket("127.0.0.1")
    player = udp_socket("127.0.0.2")
    try:
        for nonce in range(200):
            flood.sendto(qcmp_ping(nonce % 256, time.time_ns()), ("127.0.0.1", p.qcmp_port))
        answered = 0
        while recv_within(flood, 0.5) is not None:
            answered += 1
        assert 40 <= answered <= 45, answered  # the burst, plus what refilled meanwhile
        m = wait_metric(p, "quilkin_qcmp_packets_total", 200 - answered, kind="limited_source")
        assert m.value("quilkin_qcmp_packets_total", kind="ping") == 200
        for nonce in range(10):
            player.sendto(qcmp_ping(nonce, time.time_ns()), ("127.0.0.1", p.qcmp_port))
            assert recv_within(player, 1.0) is not None
            time.sleep(0.2)
    finally:
        flood.close()
        player.close()
