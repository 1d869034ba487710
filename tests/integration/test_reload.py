"""Config hot reload (-c FILE is watched) and logging (-q, --log-format, RUST_LOG).

A valid change to the file (in-place write or replace-by-rename) becomes a new snapshot about
100 ms later while traffic keeps flowing through the same proxy port; an invalid one is
rejected ("reload rejected" log, quilkin_config_reloads_total{result="rejected"}) and the
old configuration keeps serving.

Expected values: the spec has no hot reload for `proxy` (spec README: v0.7.0 never re-reads
the file); all of it is quilkin-c's documented extension (README "Config hot reload"): the
100 ms debounce, quilkin_config_reloads_total, the `config reloaded` / `reload rejected`
lines and their fields (docs/test-expectations.md E1, E4, E5). Log formats and levels
(-q, --log-format, RUST_LOG) are the spec's (cli.md section 1)."""

import json
import os
import re
import select
import signal
import threading
import time

import pytest

from admin_helpers import admin_get, scrape, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import closed_port, record_text, wait_until

SWITCH_TIMEOUT = 3.0
NO_GEO = {"asn": "", "ip_prefix": ""}


def config_for(*addrs, filters=""):
    eps = "".join(f"      - address: {a}\n" for a in addrs)
    text = f"version: v1alpha1\nid: reload-test\nclusters:\n  - endpoints:\n{eps}"
    if filters:
        text += "filters:\n" + filters
    return text


def write_in_place(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_by_rename(path, text):
    tmp = f"{path}.tmp-{time.monotonic_ns()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def tagged(servers, tag):
    """An echo server whose replies are ``TAG|payload``."""
    return servers("127.0.0.1", echo=lambda d: tag + b"|" + d)


class Streamer:
    """Sends ``seq:N`` every ``interval`` seconds from one client socket and records every
    reply as (seq, tag, source)."""

    def __init__(self, client, interval=0.05):
        self.client = client
        self.interval = interval
        self.sent = 0
        self.replies = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        next_send = time.monotonic()
        sock = self.client.sock
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                with self._lock:
                    seq = self.sent
                    self.sent += 1
                self.client.send(b"seq:%d" % seq)
                next_send += self.interval
            ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            if ready:
                data, src = sock.recvfrom(65536)
                tag, _, body = data.partition(b"|")
                with self._lock:
                    self.replies.append((int(body.split(b":")[1]), tag, (src[0], src[1])))

    def snapshot(self):
        with self._lock:
            return self.sent, list(self.replies)

    def stop_sending(self):
        """Stops sending; keeps receiving until every sent packet got its reply (bounded)."""
        self._stop.set()
        self._thread.join(2)
        sock = self.client.sock
        deadline = time.monotonic() + 2.0
        while len(self.replies) < self.sent and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                data, src = sock.recvfrom(65536)
                tag, _, body = data.partition(b"|")
                self.replies.append((int(body.split(b":")[1]), tag, (src[0], src[1])))
        return self.sent, list(self.replies)


@pytest.fixture
def streamers():
    made = []

    def make(client, interval=0.05):
        s = Streamer(client, interval)
        made.append(s)
        return s

    yield make
    for s in made:
        s._stop.set()
        s._thread.join(2)


def count_tag(streamer, tag):
    return sum(1 for _, t, _ in streamer.snapshot()[1] if t == tag)


# --------------------------------------------------------------------------
# switching endpoints under traffic
# --------------------------------------------------------------------------

@pytest.mark.parametrize("writer", [write_in_place, write_by_rename],
                         ids=["in-place", "rename"])
def test_reload_switches_endpoint_under_traffic(quilkin, servers, clients, streamers, writer):
    a = tagged(servers, b"A")
    b = tagged(servers, b"B")
    p = quilkin(config=config_for(a.addr))
    path = p.config_path
    c = clients(p.port)
    st = streamers(c)
    wait_until(lambda: count_tag(st, b"A") >= 5, 3, what="5 replies from A")
    t_write = time.monotonic()
    writer(path, config_for(b.addr))
    wait_until(lambda: b.count() >= 1, SWITCH_TIMEOUT, what="first packet at B")
    switch_delay = time.monotonic() - t_write
    a_after_switch = a.count()
    b_now = b.count()
    wait_until(lambda: b.count() >= b_now + 5, 3, what="5 more packets at B")
    assert a.count() == a_after_switch, "old endpoint still receives traffic"
    sent, replies = st.stop_sending()

    assert switch_delay < SWITCH_TIMEOUT
    # every packet got exactly one reply, all from the proxy's one port
    seqs = sorted(s for s, _, _ in replies)
    assert seqs == list(range(sent)), f"missing replies: {set(range(sent)) - set(seqs)}"
    assert {src for _, _, src in replies} == {("127.0.0.1", p.port)}
    # a clean cut: every packet before the switch went to A, every one after to B
    a_seqs = [s for s, t, _ in replies if t == b"A"]
    b_seqs = [s for s, t, _ in replies if t == b"B"]
    assert a_seqs and b_seqs
    assert max(a_seqs) < min(b_seqs)
    assert len(a_seqs) == a.count() and len(b_seqs) == b.count()

    p.wait_log(f"config reloaded path={path} endpoints=1 filters=0")
    m = wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    assert m.value("quilkin_config_reloads_total", result="rejected") == 0
    assert m.value("quilkin_cluster_active_endpoints") == 1
    cfg = json.loads(admin_get(p, "/config").text)
    assert [e["address"] for e in cfg["clusters"][0]["endpoints"]] == [b.addr]
    # sessions are per (client, endpoint) (proxy.md): B got a new one, A's stays until it
    # expires
    assert m.value("quilkin_session_total") == 2
    assert m.value("quilkin_session_active", asn="0", country_code="", ip_prefix="",
                   organization="", prefix_entity="", prefix_name="") == 2


def test_reload_to_two_endpoints_and_back(quilkin, servers, clients):
    a = tagged(servers, b"A")
    b = tagged(servers, b"B")
    p = quilkin(config=config_for(a.addr))
    c = clients(p.port)
    assert c.request(b"seq:0")[0] == b"A|seq:0"
    write_in_place(p.config_path, config_for(a.addr, b.addr))
    p.wait_log(" endpoints=2 filters=0")
    c.send(b"seq:1")
    got = sorted(d for d, _ in c.recv_n(2))
    assert got == [b"A|seq:1", b"B|seq:1"]
    write_in_place(p.config_path, config_for(a.addr))
    p.wait_log(" endpoints=1 filters=0")
    assert c.request(b"seq:2")[0] == b"A|seq:2"
    c.expect_silence(0.3)
    assert b.count() == 1
    wait_metric(p, "quilkin_config_reloads_total", 2, result="applied")
    m = scrape(p)
    assert m.value("quilkin_cluster_active_endpoints") == 1


# --------------------------------------------------------------------------
# rejected reloads
# --------------------------------------------------------------------------

BROKEN = [
    ("bad-yaml", "clusters: [\n  - endpoints: {\n"),
    ("unknown-filter", None),          # filled in with B's address below
    ("bad-filter-config", None),
    ("no-endpoints", "version: v1alpha1\nclusters: []\n"),
    ("empty-file", ""),
    ("unknown-key", "port: 7777\n"),
    ("bad-token", None),
]


def broken_text(name, b_addr):
    if name == "unknown-filter":
        return config_for(b_addr, filters="  - name: quilkin.filters.nope.v1alpha1.Nope\n")
    if name == "bad-filter-config":
        return config_for(b_addr, filters="  - name: quilkin.filters.concatenate.v1alpha1."
                                          "Concatenate\n    config:\n      on_read: SIDEWAYS\n"
                                          "      bytes: dG9r\n")
    if name == "bad-token":
        return (f"clusters:\n  - endpoints:\n      - address: {b_addr}\n        metadata:\n"
                f"          quilkin.dev:\n            tokens: [\"not base64!\"]\n")
    return dict(BROKEN)[name]


def test_rejected_reloads_keep_the_old_config(quilkin, servers, clients):
    a = tagged(servers, b"A")
    b = tagged(servers, b"B")
    p = quilkin(config=config_for(a.addr))
    c = clients(p.port)
    assert c.request(b"seq:0")[0] == b"A|seq:0"
    for i, (name, _) in enumerate(BROKEN, 1):
        write_in_place(p.config_path, broken_text(name, b.addr))
        wait_metric(p, "quilkin_config_reloads_total", i, result="rejected")
        p.wait_log("reload rejected", count=i)
        # the old endpoint keeps serving
        assert c.request(b"seq:%d" % i)[0] == b"A|seq:%d" % i, name
    assert b.count() == 0
    m = scrape(p)
    assert m.value("quilkin_config_reloads_total", result="applied") == 0
    assert m.value("quilkin_cluster_active_endpoints") == 1
    assert json.loads(admin_get(p, "/config").text)["clusters"][0]["endpoints"][0][
        "address"] == a.addr
    # rejection messages are ERROR records naming the problem
    errors = [record_text(r) for r in p.records()
              if r.get("level") == "ERROR" and "reload rejected" in record_text(r)]
    assert len(errors) == len(BROKEN)
    assert any("quilkin.filters.nope.v1alpha1.Nope" in e for e in errors), errors
    # the watch is still alive: a valid file is applied after all those rejections
    write_by_rename(p.config_path, config_for(b.addr))
    wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    assert c.request(b"seq:99")[0] == b"B|seq:99"
    assert p.running()


def test_rejected_reload_under_traffic_loses_nothing(quilkin, servers, clients, streamers):
    a = tagged(servers, b"A")
    p = quilkin(config=config_for(a.addr))
    c = clients(p.port)
    st = streamers(c)
    wait_until(lambda: count_tag(st, b"A") >= 3, 3, what="3 replies from A")
    write_in_place(p.config_path, "clusters: [\n")
    wait_metric(p, "quilkin_config_reloads_total", 1, result="rejected")
    n = count_tag(st, b"A")
    wait_until(lambda: count_tag(st, b"A") >= n + 3, 3, what="3 more replies from A")
    sent, replies = st.stop_sending()
    assert sorted(s for s, _, _ in replies) == list(range(sent))
    assert {t for _, t, _ in replies} == {b"A"}


# --------------------------------------------------------------------------
# reloading the filter chain
# --------------------------------------------------------------------------

DROP = "  - name: quilkin.filters.drop.v1alpha1.Drop\n"
CONCAT = ("  - name: quilkin.filters.concatenate.v1alpha1.Concatenate\n"
          "    config:\n      on_read: APPEND\n      bytes: dG9r\n")


def test_reload_adds_and_removes_a_drop_filter(quilkin, echo_v4, clients):
    p = quilkin(config=config_for(echo_v4.addr))
    c = clients(p.port)
    assert c.request(b"before")[0] == b"before"
    write_in_place(p.config_path, config_for(echo_v4.addr, filters=DROP))
    p.wait_log(f"config reloaded path={p.config_path} endpoints=1 filters=1")
    wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    for i in range(3):
        c.send(b"dropped %d" % i)
    c.expect_silence()
    assert echo_v4.count() == 1
    wait_metric(p, "quilkin_packets_dropped_total", 3, event="read",
                source="filter  error: intentionally dropped", **NO_GEO)
    write_in_place(p.config_path, config_for(echo_v4.addr))
    p.wait_log(f"config reloaded path={p.config_path} endpoints=1 filters=0")
    assert c.request(b"after")[0] == b"after"
    assert [d for d, _ in echo_v4.snapshot()] == [b"before", b"after"]


def test_reload_changes_filter_config_on_the_wire(quilkin, servers, clients):
    recorder = servers("127.0.0.1", echo=False)
    p = quilkin(config=config_for(recorder.addr))
    c = clients(p.port)
    c.send(b"one")
    recorder.wait_for(b"one")
    write_by_rename(p.config_path, config_for(recorder.addr, filters=CONCAT))
    p.wait_log(" endpoints=1 filters=1")
    c.send(b"two")
    recorder.wait_for(b"twotok")
    write_by_rename(p.config_path, config_for(recorder.addr, filters=CONCAT.replace(
        "APPEND", "PREPEND").replace("dG9r", "W1td")))
    p.wait_log(" endpoints=1 filters=1", count=2)
    c.send(b"three")
    recorder.wait_for(b"[[]three")
    assert [d for d, _ in recorder.snapshot()] == [b"one", b"twotok", b"[[]three"]
    cfg = json.loads(admin_get(p, "/config").text)
    assert cfg["filters"] == [{"name": "quilkin.filters.concatenate.v1alpha1.Concatenate",
                               "label": None,
                               "config": {"on_read": "PREPEND", "bytes": "W1td"}}]


def test_other_files_in_the_directory_do_not_trigger_a_reload(quilkin, echo_v4, tmp_path):
    p = quilkin(config=config_for(echo_v4.addr))
    (tmp_path / "unrelated.yaml").write_text("garbage: [\n")
    (tmp_path / "quilkin-0.yaml.bak").write_text("garbage: [\n")
    # a real reload afterwards is the only one counted
    write_in_place(p.config_path, config_for(echo_v4.addr, "127.0.0.1:9"))
    m = wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    assert m.value("quilkin_config_reloads_total", result="rejected") == 0
    assert not p.find("reload rejected")


# --------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------

PLAIN_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z +(ERROR|WARN|INFO|DEBUG|TRACE) "
                      r"\S+: .+$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


def test_quiet_prints_nothing_at_all(quilkin, servers, clients):
    """-q: no logger. Start-up, traffic, an applied and a rejected reload, QCMP and the
    graceful shutdown all happen without one byte on stdout or stderr."""
    a = tagged(servers, b"A")
    b = tagged(servers, b"B")
    p = quilkin("--session-timeout-secs", "1", config=config_for(a.addr), admin=False,
                global_args=["-q"], wait=False)
    c = clients(p.port)

    def answered():
        c.send(b"seq:0")
        try:
            return c.recv(0.2)
        except AssertionError:
            return None
    assert wait_until(answered, 10, what="proxy answering")[0] == b"A|seq:0"
    # an applied reload (would log INFO); the rejected one (ERROR) is covered with the admin
    # server below, where its counter shows when it happened
    write_by_rename(p.config_path, config_for(b.addr))

    def switched():
        c.send(b"seq:1")
        try:
            return c.recv(0.2)[0] == b"B|seq:1"
        except AssertionError:
            return False
    wait_until(switched, SWITCH_TIMEOUT, what="reload to B")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0
    assert p.stdout_lines == []
    assert p.stderr_lines == []


def test_quiet_with_admin_prints_nothing(quilkin, echo_v4, clients):
    p = quilkin(config=config_for(echo_v4.addr), global_args=["--quiet"], wait="admin")
    c = clients(p.port)
    assert c.request(b"x")[0] == b"x"
    write_in_place(p.config_path, "clusters: [\n")
    wait_metric(p, "quilkin_config_reloads_total", 1, result="rejected")
    write_in_place(p.config_path, config_for(echo_v4.addr, "127.0.0.1:9"))
    wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    assert p.stop() == 0
    assert p.stdout_lines == []
    assert p.stderr_lines == []


@pytest.mark.parametrize("fmt", ["plain", "pretty"])
def test_plain_log_format(quilkin, echo_v4, fmt):
    p = quilkin(config=config_for(echo_v4.addr), global_args=["--log-format", fmt])
    write_in_place(p.config_path, "clusters: [\n")
    p.wait_log("reload rejected")
    lines = list(p.stdout_lines)
    assert len(lines) >= 5
    for line in lines:
        assert PLAIN_RE.match(line), line
        with pytest.raises(ValueError):
            json.loads(line)
    assert any(re.search(r" INFO \S+: Quilkin is ready$", ln) for ln in lines)
    assert any(re.search(r" ERROR \S+: reload rejected", ln) for ln in lines)


@pytest.mark.parametrize("args", [["--log-format", "json"], []], ids=["json", "auto"])
def test_json_log_format(quilkin, echo_v4, args):
    p = quilkin(config=config_for(echo_v4.addr), global_args=args)
    write_in_place(p.config_path, "clusters: [\n")
    p.wait_log("reload rejected")
    lines = list(p.stdout_lines)
    assert len(lines) >= 5
    recs = []
    for line in lines:
        rec = json.loads(line)
        assert list(rec) == ["timestamp", "level", "fields", "target"], rec
        assert TS_RE.match(rec["timestamp"]), rec
        assert rec["level"] in ("ERROR", "WARN", "INFO", "DEBUG", "TRACE"), rec
        assert rec["target"].startswith("quilkin::"), rec
        recs.append(rec)
    assert any(r["level"] == "INFO" and r["fields"]["message"] == "Quilkin is ready"
               for r in recs)
    rejected = [r for r in recs if r["level"] == "ERROR"
                and r["fields"]["message"].startswith("reload rejected")]
    assert rejected and rejected[0]["fields"]["path"] == p.config_path, rejected
    assert not [r for r in recs if r["level"] in ("DEBUG", "TRACE")]


def _upstream_errors(p):
    m = scrape(p)
    return sum(v for _, _, v in m.samples("quilkin_errors_total"))


def _provoke_upstream_error(quilkin, clients, env):
    """A proxy whose endpoint is a closed port: the ICMP error on the session socket is an
    upstream receive error, which is logged at DEBUG."""
    dead = closed_port()
    p = quilkin(config=config_for(f"127.0.0.1:{dead}"), env=env,
                wait="admin" if env and env.get("RUST_LOG") == "warn" else True)
    c = clients(p.port)
    c.send(b"anyone there?")
    wait_until(lambda: _upstream_errors(p) >= 1, 3, what="an upstream receive error")
    return p


@pytest.mark.parametrize("level", ["debug", "quilkin=debug", "trace", "DEBUG"])
def test_rust_log_debug_shows_debug_lines(quilkin, clients, level):
    p = _provoke_upstream_error(quilkin, clients, {"RUST_LOG": level})
    p.wait_log(re.compile(r"^upstream 127\.0\.0\.1:\d+: "))
    recs = [r for r in p.records() if r.get("level") == "DEBUG"]
    assert recs, p.log_tail()
    assert any(r["fields"]["message"].startswith("upstream 127.0.0.1:") for r in recs)


def test_default_level_hides_debug_lines(quilkin, clients):
    p = _provoke_upstream_error(quilkin, clients, None)
    assert p.find("Quilkin is ready")
    levels = {r.get("level") for r in p.records()}
    assert "DEBUG" not in levels and "TRACE" not in levels, levels
    assert not p.find(re.compile(r"^upstream "))


def test_rust_log_warn_hides_info(quilkin, clients):
    p = _provoke_upstream_error(quilkin, clients, {"RUST_LOG": "warn"})
    write_in_place(p.config_path, "clusters: [\n")
    p.wait_log("reload rejected")
    levels = {r.get("level") for r in p.records()}
    assert levels <= {"WARN", "ERROR"}, levels
    assert not p.find("Quilkin is ready")
