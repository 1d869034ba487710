"""Shared fixtures and helpers for the quilkin-c integration tests.

Everything here talks to the real binary (env QUILKIN_BIN, default this checkout's ASan
build, build-asan/quilkin) over loopback only (127.0.0.1 and ::1).  Rules (STYLE.md
section 4):

* every wait is a bounded poll (``wait_until`` / ``Proxy.wait_log`` /
  ``UdpServer.wait_count`` / ``Client.recv``), never a bare sleep where a
  poll works;
* every process still running at teardown is stopped the way an operator stops it
  (SIGTERM, then a second SIGTERM once the first was taken: cli.md section 5), must exit 0
  within a bound, and fails the test on any sanitizer report (AddressSanitizer,
  LeakSanitizer, which only runs on a normal exit, UndefinedBehaviorSanitizer,
  ThreadSanitizer and its exit status 66); a process that ended earlier must not have died
  from a signal nobody sent (``stop_all``);
* tests assert bytes on the wire and log lines.
"""

import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUILKIN_BIN = os.environ.get("QUILKIN_BIN", os.path.join(REPO, "build-asan", "quilkin"))

# Default receive timeout for "this datagram must arrive".
RECV_TIMEOUT = 2.0
# How long we listen to conclude "nothing arrives".
SILENCE = 0.7
READY_TIMEOUT = 10.0
MAX_DGRAM = 65536

# Environment variables the binary reads; cleared so the caller's
# environment cannot change what a test exercises.
_CLEARED_ENV = (
    "QUILKIN_CONFIG", "QUILKIN_PORT", "QUILKIN_DEST", "QUILKIN_QCMP_PORT",
    "QUILKIN_MANAGEMENT_SERVER", "QUILKIN_ADMIN_ADDRESS", "QUILKIN_SESSION_TIMEOUT_SECS",
    "QUILKIN_MAX_SESSIONS", "QUILKIN_WORKERS", "QUILKIN_IDLE_REQUEST_INTERVAL_SECS",
    "NO_ADMIN", "QUIET", "MMDB", "RUST_LOG", "QUILKIN_REGION", "QUILKIN_ZONE",
    "QUILKIN_SUB_ZONE", "QUILKIN_UNCONFIRMED_SESSION_TIMEOUT_SECS", "QUILKIN_MAX_SESSIONS_PER_IP",
    "QUILKIN_QCMP_SOURCE_RATE", "QUILKIN_QCMP_GLOBAL_RATE", "QUILKIN_FS_PATH",
    "QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS", "QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS",
    "QUILKIN_XDS_TLS_CA", "QUILKIN_XDS_TLS_CERT", "QUILKIN_XDS_TLS_KEY", "QUILKIN_TLS_CERT",
    "QUILKIN_TLS_KEY", "QUILKIN_TLS_CLIENT_CA", "SSL_CERT_FILE", "SSL_CERT_DIR",
)

# Any of these in a process's output is a sanitizer report (or a sanitizer that could not
# run, e.g. "LeakSanitizer has encountered a fatal error"): the test fails.
_SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer",
                      "UndefinedBehaviorSanitizer", "runtime error:")
# The exit status `make tsan` gives ThreadSanitizer (TSAN_OPTIONS exitcode=66; also its
# default), so a report is seen even when its text was lost.
TSAN_EXIT = 66
# Teardown: how long a process may take to exit after SIGTERM, SIGTERM (a leak check of a
# large ASan heap included).
STOP_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------

def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll ``pred`` until it returns a truthy value or ``timeout`` expires."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def expect_quiet(check, within=SILENCE, interval=0.02):
    """A negative check as a bounded poll: ``check()`` raises AssertionError once something
    that must not happen has happened; it is called every ``interval`` for ``within`` seconds,
    so a violation fails at once instead of after a sleep through the whole window."""
    deadline = time.monotonic() + within
    while True:
        check()
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


_handed_out_ports = set()
_port_rng = random.Random()


def _ports_outside_the_ephemeral_range():
    """[(first, last)] port ranges the kernel never picks for an unbound socket's connect()
    or bind(0) (net.ipv4.ip_local_port_range), from 10000 up."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    out = []
    # 20000-32000 is left to the harnesses the suite runs (bench/bench.py, bench/soak.py pick
    # their ports there), so that they never take a port a test holds
    for a, b in ((10000, min(lo - 1, 19999)), (max(10000, 32001), lo - 1), (hi + 1, 65535)):
        if b - a >= 1000:
            out.append((a, b))
    # QK_TEST_PORT_SLICE=K/N: this run takes the K-th of N equal parts of each range, so that
    # N runs of the suite at once (`make test` runs both I/O backends side by side) never
    # hand out the same port (quilkin binds with SO_REUSEPORT, so a shared port would split
    # traffic silently instead of failing)
    k, _, n = os.environ.get("QK_TEST_PORT_SLICE", "0/1").partition("/")
    k, n = int(k), int(n or 1)
    if n > 1:
        out = [(a + (b - a + 1) * k // n, a + (b - a + 1) * (k + 1) // n - 1) for a, b in out]
    return out


def pick_port(try_bind):
    """A port no test of this session had, that ``try_bind(port)`` could bind (and released).

    Ports come from outside the kernel's ephemeral range: a port from bind(0) is free only
    until any process on the host (other test suites included) connects an unbound socket,
    which the kernel may give that very port; a port outside the range can only be taken by
    an explicit bind. Falls back to bind(0) when the range leaves no room."""
    ranges = _ports_outside_the_ephemeral_range()
    for _ in range(200):
        if ranges:
            first, last = _port_rng.choice(ranges)
            want = _port_rng.randint(first, last)
        else:
            want = 0
        if want in _handed_out_ports:
            continue
        try:
            port = try_bind(want)
        except OSError:
            continue
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("could not find a free port")


def _bind_and_close(family, kind, host, port, dual_stack=False):
    s = socket.socket(family, kind)
    try:
        if dual_stack:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, port))
        return s.getsockname()[1]
    finally:
        s.close()


def free_port():
    """A UDP port that is currently free on both 127.0.0.1 and ::1 (a dual-stack socket on
    [::] binds it for both families), outside the ephemeral range, never handed out twice
    in one test session (pick_port)."""
    return pick_port(lambda port: _bind_and_close(socket.AF_INET6, socket.SOCK_DGRAM, "::",
                                                  port, dual_stack=True))


def closed_port(host="127.0.0.1"):
    """A UDP port on ``host`` with nothing listening (ICMP port unreachable)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return pick_port(lambda port: _bind_and_close(fam, socket.SOCK_DGRAM, host, port))


def free_tcp_port(host="127.0.0.1"):
    """A TCP port currently free on ``host``, chosen as free_port chooses."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return pick_port(lambda port: _bind_and_close(fam, socket.SOCK_STREAM, host, port))


def fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def signal_pending(pid, sig):
    """True while ``sig`` sent to process ``pid`` has not been taken yet (quilkin blocks it in
    every thread and reads it from a signalfd, so it stays pending until then)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("ShdPnd:", "SigPnd:")) and \
                        int(line.split()[1], 16) & (1 << (sig - 1)):
                    return True
    except (OSError, ValueError):
        return False
    return False


def sigterm_twice(proc, timeout=5.0):
    """SIGTERM to the Popen ``proc``, and once it has taken that one, a second SIGTERM
    (cli.md section 5: the second ends a proxy's drain at once). Two signals sent before
    the first is taken would merge into one."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and signal_pending(proc.pid, signal.SIGTERM) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    # LeakSanitizer is on by default for ASan on x86-64 Linux; say so, so that a caller's
    # ASAN_OPTIONS cannot turn it off (the last setting of an option wins).
    asan = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "detect_leaks=1"
    if extra:
        env.update(extra)
    return env


def sanitizer_markers(text):
    """The sanitizer markers found in ``text``."""
    return [m for m in _SANITIZER_MARKERS if m in text]


def run_quilkin(args, cwd=None, timeout=10, env=None):
    """Run the binary to completion (for CLI tests); returns CompletedProcess. A sanitizer
    report in its output, or ThreadSanitizer's exit status, fails the test here, whatever
    status the caller expects."""
    r = subprocess.run([QUILKIN_BIN, *args], cwd=cwd, env=clean_env(env),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    found = sanitizer_markers(r.stdout + r.stderr)
    if found or r.returncode == TSAN_EXIT:
        pytest.fail(f"quilkin {args}: sanitizer report {found} (exit {r.returncode})\n"
                    + r.stderr[-6000:])
    return r


def _plain_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str) and not any(ch in v for ch in ' "='):
        return v
    return json.dumps(v)


def record_text(rec):
    """A parsed JSON log record (tracing-subscriber shape: the message and the structured
    fields in a `fields` object) as the plain format prints it: `message k=v k=v`."""
    if "raw" in rec and "fields" not in rec:
        return rec["raw"]
    fields = dict(rec.get("fields", {}))
    text = fields.pop("message", "")
    return text + "".join(f" {k}={_plain_value(v)}" for k, v in fields.items())


# --------------------------------------------------------------------------
# UDP servers and clients
# --------------------------------------------------------------------------

class UdpServer:
    """A UDP server thread that records (data, source) and optionally replies.

    ``echo`` is True (send the datagram back), False (record only) or a
    callable ``data -> bytes`` giving the reply.
    """

    def __init__(self, host="127.0.0.1", echo=True, port=0):
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.received = []          # list of (bytes, (ip, port))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"udp-server-{host}-{self.port}")
        self._thread.start()

    @property
    def addr(self):
        """The endpoint address in config/--to syntax."""
        return fmt_addr(self.host, self.port)

    def _run(self):
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data, src = self.sock.recvfrom(MAX_DGRAM)
            except OSError:
                continue
            src = (src[0], src[1])
            with self._cond:
                self.received.append((data, src))
                self._cond.notify_all()
            if self.echo:
                reply = self.echo(data) if callable(self.echo) else data
                try:
                    self.sock.sendto(reply, src)
                except OSError:
                    pass

    def snapshot(self):
        with self._cond:
            return list(self.received)

    def count(self):
        with self._cond:
            return len(self.received)

    def wait_count(self, n, timeout=RECV_TIMEOUT):
        """Wait until at least ``n`` datagrams were received; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"server {self.addr}: expected >= {n} datagrams within {timeout}s, "
                        f"got {len(self.received)}")
                self._cond.wait(left)
            return list(self.received)

    def wait_for(self, data, timeout=RECV_TIMEOUT):
        """Wait for a datagram with exactly ``data``; return its source."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for d, src in self.received:
                    if d == data:
                        return src
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"server {self.addr}: {data[:40]!r} not received within {timeout}s "
                        f"(got {len(self.received)} datagrams)")
                self._cond.wait(left)

    def sources(self):
        with self._cond:
            return [src for _, src in self.received]

    def sendto(self, data, addr):
        self.sock.sendto(data, addr)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Client:
    """A bound UDP client socket talking to the proxy."""

    def __init__(self, proxy_port, host="127.0.0.1"):
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.target = (host, proxy_port)

    @property
    def addr(self):
        return (self.host, self.port)

    def send(self, data):
        self.sock.sendto(data, self.target)

    def recv(self, timeout=RECV_TIMEOUT):
        """Receive one datagram (bounded); returns (data, (ip, port))."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise AssertionError(f"client {self.addr}: nothing received within {timeout}s")
        data, src = self.sock.recvfrom(MAX_DGRAM)
        return data, (src[0], src[1])

    def recv_n(self, n, timeout=RECV_TIMEOUT):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"client {self.addr}: got {len(out)} of {n} datagrams "
                                     f"within {timeout}s: {out!r}")
            out.append(self.recv(left))
        return out

    def expect_silence(self, timeout=SILENCE):
        """Assert that nothing arrives within ``timeout``."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if ready:
            data, src = self.sock.recvfrom(MAX_DGRAM)
            raise AssertionError(f"client {self.addr}: unexpected datagram {data[:60]!r} from {src}")

    def request(self, data, timeout=RECV_TIMEOUT):
        self.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# the proxy process
# --------------------------------------------------------------------------

class Proxy:
    """A running ``quilkin`` process with its stdout/stderr captured by threads."""

    def __init__(self, argv, cwd, port=None, env=None, preexec_fn=None):
        """``preexec_fn`` runs in the child before exec (e.g. to set its resource limits)."""
        self.argv = argv
        self.port = port
        self.proc = subprocess.Popen(argv, cwd=cwd, env=clean_env(env),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=preexec_fn)
        self.stdout_lines = []      # raw text lines
        self.stderr_lines = []
        self.killed = False         # SIGKILLed on purpose (kill()): its status is no crash
        self.stopping = False       # stop_all_begin sent it the first SIGTERM
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        stream.close()

    # -- logs -------------------------------------------------------------
    def records(self):
        """Parsed JSON log records (lines that are not JSON become {'raw': line})."""
        with self._cond:
            lines = list(self.stdout_lines)
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    rec = {"raw": line}
            except ValueError:
                rec = {"raw": line}
            out.append(rec)
        return out

    def messages(self):
        """Each record as text: the message followed by its fields as `key=value`, the way
        the plain format prints them (so one pattern matches either format)."""
        return [record_text(r) for r in self.records()]

    def find(self, pattern):
        """All log messages matching ``pattern`` (substring, or compiled regex)."""
        if isinstance(pattern, str):
            return [m for m in self.messages() if pattern in m]
        return [m for m in self.messages() if pattern.search(m)]

    def wait_log(self, pattern, timeout=5.0, count=1):
        """Wait until ``count`` log messages match; returns the matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.find(pattern)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"log {pattern!r} (x{count}) not seen within {timeout}s; "
                        f"log tail:\n" + self.log_tail())
                self._cond.wait(min(left, 0.1))

    def log_tail(self, n=30):
        with self._cond:
            out = self.stdout_lines[-n:]
            err = self.stderr_lines[-n:]
        return "stdout:\n  " + "\n  ".join(out) + "\nstderr:\n  " + "\n  ".join(err)

    def stderr_text(self):
        with self._cond:
            return "\n".join(self.stderr_lines)

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.find("Quilkin is ready"):
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"quilkin exited with {self.proc.returncode} before it was ready; "
                        f"argv={self.argv}\n" + self.log_tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"quilkin not ready within {timeout}s\n" + self.log_tail())
                self._cond.wait(min(left, 0.1))

    # -- process control --------------------------------------------------
    def signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"quilkin did not exit within {timeout}s\n" + self.log_tail())
        for t in self._readers:
            t.join(5)
        return rc

    def running(self):
        return self.proc.poll() is None

    def signal_pending(self, sig):
        return signal_pending(self.proc.pid, sig)

    def stop(self, timeout=None):
        """Stops the process as an operator does and returns its exit status: SIGTERM, then,
        once the process has taken it, a second SIGTERM (cli.md section 5: the first starts a
        proxy's drain, the second ends it at once; `manage` exits on the first). Two signals
        sent before the first is taken would merge into one. When it is still running after
        ``timeout`` seconds (default STOP_TIMEOUT) it is SIGKILLed and None returned."""
        stop_all_begin([self])
        return stop_all_finish([self], timeout)[0]

    def kill(self):
        """SIGKILL: for tests that simulate a crash or need the process gone at once (no
        leak check runs)."""
        if self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._readers:
            t.join(5)

    def sanitizer_reports(self):
        text = self.stderr_text() + "\n" + "\n".join(self.stdout_lines)
        return sanitizer_markers(text)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def quilkin_bin():
    if not (os.path.isfile(QUILKIN_BIN) and os.access(QUILKIN_BIN, os.X_OK)):
        pytest.fail(f"quilkin binary not found at {QUILKIN_BIN} (set QUILKIN_BIN)")
    return QUILKIN_BIN


@pytest.fixture
def servers():
    """Factory: ``servers(host='127.0.0.1', echo=True, port=0)`` -> UdpServer, closed at
    teardown."""
    made = []

    def make(host="127.0.0.1", echo=True, port=0):
        s = UdpServer(host, echo=echo, port=port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def echo_v4(servers):
    return servers("127.0.0.1")


@pytest.fixture
def echo_v6(servers):
    return servers("::1")


@pytest.fixture
def clients():
    """Factory: ``clients(proxy_port, host='127.0.0.1')`` -> Client, closed at teardown."""
    made = []

    def make(proxy_port, host="127.0.0.1"):
        c = Client(proxy_port, host)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def write_config(tmp_path):
    """Factory: ``write_config(yaml_text)`` -> path of a new file in tmp_path."""
    counter = [0]

    def write(text, name=None):
        counter[0] += 1
        path = tmp_path / (name or f"config-{counter[0]}.yaml")
        path.write_text(text)
        return str(path)

    return write


def stop_all_begin(procs):
    """The first SIGTERM to every process of ``procs`` still running."""
    for p in procs:
        p.stopping = p.running()
        if p.stopping:
            p.proc.send_signal(signal.SIGTERM)


def stop_all_finish(procs, timeout=None):
    """After stop_all_begin: the second SIGTERM once the first was taken, then a bounded wait
    (``timeout``, default STOP_TIMEOUT) for all; returns their exit statuses (None: did not
    exit, SIGKILLed)."""
    timeout = STOP_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + 5.0
    for p in procs:
        if not p.stopping:
            continue
        while p.running() and p.signal_pending(signal.SIGTERM) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        if p.running():
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
        try:
            rc = p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(10)
            rc = None
        for t in p._readers:
            t.join(5)
        out.append(rc)
    return out


def stop_all(started):
    """Teardown of every process in ``started``: those still running are stopped gracefully
    (Proxy.stop, all at once) and must exit 0; every one must be free of sanitizer reports,
    must not have exited with ThreadSanitizer's status, and must not have died from a signal
    other than the SIGKILL of Proxy.kill(). Fails the test otherwise."""
    stop_all_begin(started)
    statuses = stop_all_finish(started)
    problems = []
    for p, rc in zip(started, statuses):
        what = []
        if p.stopping and rc is None:
            what.append(f"still running {STOP_TIMEOUT:.0f} s after SIGTERM, SIGTERM "
                        f"(SIGKILLed)")
        elif p.stopping and rc != 0:
            what.append(f"exit status {rc} after SIGTERM, SIGTERM (expected 0)")
        elif rc == TSAN_EXIT:
            what.append(f"exit status {TSAN_EXIT} (ThreadSanitizer)")
        elif rc is not None and rc < 0 and not p.killed:
            what.append(f"died from signal {-rc}")
        found = p.sanitizer_reports()
        if found:
            what.append(f"sanitizer report {found}")
        if what:
            problems.append(f"{p.argv}: {'; '.join(what)}\n{p.log_tail(80)}")
    if problems:
        pytest.fail("process teardown:\n" + "\n".join(problems))


@pytest.fixture
def proxy(quilkin_bin, tmp_path):
    """Factory that starts a proxy and waits for "Quilkin is ready".

    ``proxy(*proxy_args, config=None, port=None, global_args=(), env=None, wait=True,
    port_style="--port", preexec_fn=None)``

    ``config`` is YAML text (written to a file passed with ``-c``).
    ``proxy_args`` go after the ``proxy`` sub-command (the port is added as
    ``--port P``, ``-p P`` or ``--port=P`` according to ``port_style``).
    Every process still running at teardown is stopped with SIGTERM, SIGTERM and must exit
    0; a sanitizer report on its output fails the test (``stop_all``).
    """
    started = []

    def start(*proxy_args, config=None, port=None, global_args=(), env=None, wait=True,
              port_style="--port", preexec_fn=None):
        port = port if port is not None else free_port()
        if port_style.endswith("="):
            port_args = [f"{port_style}{port}"]
        else:
            port_args = [port_style, str(port)]
        argv = [quilkin_bin, "--no-admin"]
        if config is not None:
            path = tmp_path / f"proxy-{len(started)}.yaml"
            path.write_text(config)
            argv += ["-c", str(path)]
        argv += list(global_args)
        # A private QCMP port too, so proxies never share the default 7600.
        argv += ["proxy", *port_args, "--qcmp-port", str(free_port()),
                 *[str(a) for a in proxy_args]]
        p = Proxy(argv, cwd=str(tmp_path), port=port, env=env, preexec_fn=preexec_fn)
        started.append(p)
        if wait:
            p.wait_ready()
        return p

    yield start
    stop_all(started)
