"""Helpers for the admin / QCMP / reload integration tests (test_admin.py, test_qcmp.py,
test_reload.py).

* ``quilkin`` fixture: like conftest's ``proxy`` but with the admin server on an explicit
  loopback address (or ``--no-admin``) and an explicit QCMP port, both exposed on the
  returned ``Proxy`` object (``admin_host``, ``admin_port``, ``qcmp_port``, ``config_path``).
* ``http_request``: one bounded HTTP/1.1 request to the admin server.
* ``parse_prometheus``: a strict parser for the Prometheus text format 0.0.4.
* ``scrape`` / ``wait_metric``: read metric values (bounded polls: workers' counters are
  summed at scrape time, so they are eventually consistent).
* QCMP packet builders and a reply decoder (spec qcmp.md section 2).
* ``listening_tcp_ports``: TCP ports a process is listening on (from /proc), to prove that
  ``--no-admin`` really starts no server.
"""

import http.client
import math
import os
import re
import struct
import time

import pytest

from conftest import Proxy, READY_TIMEOUT, free_port, fmt_addr, stop_all
from conftest import free_tcp_port  # noqa: F401  (re-exported: tests import it from here)

# --------------------------------------------------------------------------
# ports and HTTP
# --------------------------------------------------------------------------

class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # lower-cased names
        self.body = body            # bytes

    @property
    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return f"HttpResult({self.status}, {self.headers}, {self.body[:200]!r})"


def http_request(host, port, path, method="GET", body=None, headers=None, timeout=3.0):
    """One request on a fresh connection; raises on connection errors."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return HttpResult(r.status, hdrs, data)
    finally:
        conn.close()


def admin_get(p, path, method="GET", **kw):
    return http_request(p.admin_host, p.admin_port, path, method=method, **kw)


def wait_admin_ready(p, timeout=READY_TIMEOUT):
    """Poll GET /ready until it answers 200 (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if p.proc.poll() is not None:
            raise AssertionError(f"quilkin exited with {p.proc.returncode} before /ready\n"
                                 + p.log_tail())
        try:
            r = admin_get(p, "/ready", timeout=1.0)
            if r.status == 200:
                return
            last = r
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"/ready not 200 within {timeout}s (last: {last!r})\n"
                                 + p.log_tail())
        time.sleep(0.02)


# --------------------------------------------------------------------------
# the quilkin fixture
# --------------------------------------------------------------------------

@pytest.fixture
def quilkin(quilkin_bin, tmp_path):
    """Factory that starts ``quilkin [global] proxy --port P --qcmp-port Q ARGS``.

    ``quilkin(*proxy_args, config=None, config_path=None, admin=True, admin_host="127.0.0.1",
    global_args=(), env=None, wait=True, port=None, qcmp_port=None, wrapper=(),
    preexec_fn=None)``

    ``config`` is YAML text written to ``config_path`` (default a fresh file in tmp_path)
    and passed with ``-c``. ``admin=False`` passes ``--no-admin``. ``wait`` is True (wait
    for the "Quilkin is ready" log line), "admin" (poll GET /ready, for runs that log
    nothing at INFO) or False. ``wrapper`` is a command that execs the rest of the argv in
    the same process (e.g. ``unshare -m -- sh -c '...; exec "$@"' sh``), ``preexec_fn`` runs
    in the child before exec. Every process still running at teardown is stopped with
    SIGTERM, SIGTERM and must exit 0; a sanitizer report in its output fails the test
    (conftest ``stop_all``).
    """
    started = []

    def start(*proxy_args, config=None, config_path=None, admin=True, admin_host="127.0.0.1",
              global_args=(), env=None, wait=True, port=None, qcmp_port=None, wrapper=(),
              preexec_fn=None):
        port = port if port is not None else free_port()
        qcmp_port = qcmp_port if qcmp_port is not None else free_port()
        argv = [*wrapper, quilkin_bin]
        admin_port = None
        if admin:
            admin_port = free_tcp_port(admin_host)
            argv += ["--admin-address", fmt_addr(admin_host, admin_port)]
        else:
            argv += ["--no-admin"]
        if config is not None:
            if config_path is None:
                config_path = str(tmp_path / f"quilkin-{len(started)}.yaml")
            with open(config_path, "w") as f:
                f.write(config)
        if config_path is not None:
            argv += ["-c", str(config_path)]
        argv += list(global_args)
        argv += ["proxy", "--port", str(port), "--qcmp-port", str(qcmp_port),
                 *[str(a) for a in proxy_args]]
        p = Proxy(argv, cwd=str(tmp_path), port=port, env=env, preexec_fn=preexec_fn)
        p.admin_host = admin_host
        p.admin_port = admin_port
        p.qcmp_port = qcmp_port
        p.config_path = config_path
        started.append(p)
        if wait == "admin":
            wait_admin_ready(p)
        elif wait:
            p.wait_ready()
        return p

    yield start
    stop_all(started)


# --------------------------------------------------------------------------
# Prometheus text format 0.0.4, strictly
# --------------------------------------------------------------------------

_NAME_RE = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SAMPLE_RE = re.compile(rf"^({_NAME_RE})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_VALUE_RE = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class PromError(AssertionError):
    pass


class Family:
    def __init__(self, name, type_):
        self.name = name
        self.type = type_
        self.help = None
        self.samples = []           # (sample_name, labels dict, value float)


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def _parse_labels(text, lineno):
    labels = {}
    pos = 0
    while True:
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise PromError(f"line {lineno}: bad label syntax at {text[pos:]!r}")
        name, value = m.group(1), _unescape(m.group(2))
        if name in labels:
            raise PromError(f"line {lineno}: duplicate label {name}")
        labels[name] = value
        pos = m.end()
        if pos == len(text):
            return labels
        if text[pos] != ",":
            raise PromError(f"line {lineno}: expected ',' at {text[pos:]!r}")
        pos += 1
        if pos == len(text):
            raise PromError(f"line {lineno}: trailing ',' in label set")


def _family_of(sample_name, fam):
    if fam is None:
        return False
    if fam.type == "histogram":
        return sample_name in (fam.name + "_bucket", fam.name + "_sum", fam.name + "_count")
    if fam.type == "summary":
        return sample_name in (fam.name, fam.name + "_sum", fam.name + "_count")
    return sample_name == fam.name


def _check_histogram(fam):
    series = {}
    for sname, labels, value in fam.samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        entry = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            if "le" not in labels:
                raise PromError(f"{fam.name}: bucket without le: {labels}")
            le = labels["le"]
            bound = math.inf if le == "+Inf" else float(le)
            entry["buckets"].append((bound, le, value))
        elif sname.endswith("_sum"):
            if entry["sum"] is not None:
                raise PromError(f"{fam.name}{dict(base)}: two _sum samples")
            entry["sum"] = value
        else:
            if entry["count"] is not None:
                raise PromError(f"{fam.name}{dict(base)}: two _count samples")
            entry["count"] = value
    for base, e in series.items():
        where = f"{fam.name}{dict(base)}"
        b = e["buckets"]
        if not b:
            raise PromError(f"{where}: no buckets")
        bounds = [x[0] for x in b]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise PromError(f"{where}: bucket bounds not strictly increasing: {bounds}")
        if b[-1][1] != "+Inf":
            raise PromError(f"{where}: last bucket is le={b[-1][1]!r}, not +Inf")
        counts = [x[2] for x in b]
        if any(c2 < c1 for c1, c2 in zip(counts, counts[1:])):
            raise PromError(f"{where}: buckets not cumulative: {counts}")
        if e["count"] is None or e["sum"] is None:
            raise PromError(f"{where}: missing _count or _sum")
        if counts[-1] != e["count"]:
            raise PromError(f"{where}: +Inf bucket {counts[-1]} != _count {e['count']}")
        if e["sum"] < 0 or (e["count"] == 0 and e["sum"] != 0):
            raise PromError(f"{where}: implausible _sum {e['sum']} for _count {e['count']}")


class Metrics:
    """A parsed scrape: ``families`` by name, sample lookups by exact label set."""

    def __init__(self, families, text):
        self.families = families
        self.text = text

    def samples(self, name):
        out = []
        for fam in self.families.values():
            for s in fam.samples:
                if s[0] == name:
                    out.append(s)
        return out

    def value(self, name, **labels):
        """The value of the sample with exactly these labels, or None if absent."""
        for sname, slabels, value in self.samples(name):
            if slabels == labels:
                return value
        return None

    def buckets(self, name, **labels):
        """{le text: cumulative count} of a histogram series."""
        out = {}
        for sname, slabels, value in self.samples(name + "_bucket"):
            rest = {k: v for k, v in slabels.items() if k != "le"}
            if rest == labels:
                out[slabels["le"]] = value
        return out


def parse_prometheus(text):
    """Parses and validates exposition text; raises PromError on any deviation."""
    if text and not text.endswith("\n"):
        raise PromError("text does not end with a newline")
    families = {}
    current = None
    seen_samples = set()
    closed = set()                   # families whose sample block has ended
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(_NAME_RE, name):
                    raise PromError(f"line {lineno}: bad metric name {name!r}")
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in _TYPES:
                        raise PromError(f"line {lineno}: bad TYPE line {line!r}")
                    fam = families.get(name)
                    if fam is not None and fam.type is not None:
                        raise PromError(f"line {lineno}: second TYPE for {name}")
                    if fam is not None and fam.samples:
                        raise PromError(f"line {lineno}: TYPE for {name} after its samples")
                    if fam is None:
                        fam = families[name] = Family(name, parts[3])
                    fam.type = parts[3]
                else:
                    fam = families.get(name)
                    if fam is not None and fam.help is not None:
                        raise PromError(f"line {lineno}: second HELP for {name}")
                    if fam is None:
                        fam = families[name] = Family(name, None)
                    fam.help = parts[3] if len(parts) == 4 else ""
                if current is not None and current is not fam:
                    closed.add(current.name)
                if fam.name in closed:
                    raise PromError(f"line {lineno}: metadata for {name} after its block")
                current = fam
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise PromError(f"line {lineno}: not a sample line: {line!r}")
        sname, label_text, value_text = m.group(1), m.group(2), m.group(3)
        if not _VALUE_RE.match(value_text):
            raise PromError(f"line {lineno}: bad value {value_text!r}")
        labels = _parse_labels(label_text, lineno) if label_text is not None else {}
        if not _family_of(sname, current) or current.type is None:
            raise PromError(f"line {lineno}: sample {sname} without a preceding # TYPE of its "
                            f"family (current family: {current.name if current else None})")
        key = (sname, tuple(sorted(labels.items())))
        if key in seen_samples:
            raise PromError(f"line {lineno}: duplicate sample {line!r}")
        seen_samples.add(key)
        value = float(value_text)
        if current.type == "counter" and (value < 0 or math.isnan(value)):
            raise PromError(f"line {lineno}: negative counter {line!r}")
        current.samples.append((sname, labels, value))
    for fam in families.values():
        if fam.type is None:
            raise PromError(f"HELP without TYPE for {fam.name}")
        if fam.type == "histogram":
            _check_histogram(fam)
    return Metrics(families, text)


# The labels of quilkin_session_active (spec admin.md section 4: v0.7.0's geo labels, with
# asn "0" when no ASN database is loaded).
SESSION_LABELS = {"asn": "0", "country_code": "", "ip_prefix": "", "organization": "",
                  "prefix_entity": "", "prefix_name": ""}


def scrape(p):
    r = admin_get(p, "/metrics")
    assert r.status == 200, r
    return parse_prometheus(r.text)


def wait_drops(p, reason, expected, event="read", timeout=3.0):
    """Polls until ``reason`` (the full label text) has ``expected`` drops in both
    quilkin_packets_dropped_total{source} and quilkin_errors_total{display} (spec admin.md
    section 4.1: a dropped packet counts in both); returns the final parse."""
    wait_metric(p, "quilkin_packets_dropped_total", expected, timeout=timeout, asn="",
                ip_prefix="", event=event, source=reason)
    return wait_metric(p, "quilkin_errors_total", expected, timeout=timeout, asn="",
                       ip_prefix="", event=event, display=reason)


def wait_metric(p, name, expected, timeout=3.0, **labels):
    """Poll /metrics until the sample ``name{labels}`` equals ``expected``; returns the
    final parse. Counters are per worker and summed at scrape time, so a fresh value can
    take a moment to show."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(p)
        got = m.value(name, **labels)
        if got == expected:
            return m
        if time.monotonic() >= deadline:
            raise AssertionError(f"{name}{labels} = {got!r}, expected {expected!r} within "
                                 f"{timeout}s; scrape:\n{m.text}")
        time.sleep(0.03)


# --------------------------------------------------------------------------
# QCMP wire format (spec qcmp.md section 2)
# --------------------------------------------------------------------------

MAGIC = b"QLKN"


def qcmp_ping(nonce, client_ts_ns):
    return MAGIC + struct.pack(">BBHBq", 0, 0, 9, nonce, client_ts_ns)


def qcmp_reply(nonce, client_ts, recv_ts, send_ts):
    return MAGIC + struct.pack(">BBHBqqq", 0, 1, 25, nonce, client_ts, recv_ts, send_ts)


def decode_reply(data):
    """Checks the fixed header of a PingReply and returns (nonce, client, recv, send)."""
    assert len(data) == 33, f"reply of {len(data)} bytes: {data.hex()}"
    assert data[:4] == MAGIC, data.hex()
    version, kind, length = struct.unpack(">BBH", data[4:8])
    assert (version, kind, length) == (0, 1, 25), data.hex()
    return struct.unpack(">Bqqq", data[8:])


# --------------------------------------------------------------------------
# /proc: listening sockets of a process
# --------------------------------------------------------------------------

def listening_tcp_ports(pid):
    """Local ports of TCP sockets in LISTEN state held open by process ``pid``."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(m.group(1))
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports
