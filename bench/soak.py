#!/usr/bin/python3
"""bench/soak.py: the field harness (issue 8), `make soak` (full) and `make soak-short`.

Runs, on loopback only and for the whole run: thousands of game clients (bench_soak_client)
through a file-config proxy (A) and an xDS proxy (B, fed by `quilkin manage file`), with
session churn; healthy echo endpoints plus an ICMP (closed port), a blackhole (bench_echo
--sink) and a come-back endpoint (an echo server killed and restarted); config reloads on A
(in-place write, temp + rename, Kubernetes ConfigMap ..data swap, SIGHUP); control-plane
SIGKILLs and restarts; /metrics scrapes and /live probes. It then accounts for every lost
packet, prints a table, writes JSON (build/soak/report.json or $SOAK_REPORT) and exits 1 when
an invariant fails (the list is in README.md, "Field harness").

Python's standard library only; run with Debian's /usr/bin/python3. Every wait is bounded,
every process started is killed on any exit.

Environment (all optional): SOAK_REPORT (JSON path), SOAK_BUILD (directory with quilkin and
the bench tools, default build/), SOAK_QUILKIN (the proxy binary, e.g. an ASan build),
SOAK_DURATION (seconds of client traffic), SOAK_RELOADS, SOAK_CP_KILLS (counts, for
development runs), SOAK_SCALE (multiplies every client count), SOAK_ACTIVE_SCALE (multiplies
the number of clients at game rate),
SOAK_WORKDIR (where logs and configs go, default build/soak/run).
"""

import argparse
import atexit
import base64
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Client groups of proxy A: (name, role, clients, active). Active clients send at 20-60
# packets/s each (uniform per client), the others keep their session alive at IDLE_PPS.
# The rates were chosen by measurement on the 2-core VM (README, "Field harness"): the whole
# box (clients, proxies, echo servers, harness) sustains these without loss; twice the full
# profile's active clients overflowed proxy A's socket queues.
PROFILES = {
    "full": {
        "duration": 300, "ramp": 15, "session_timeout": 30, "reloads": 100, "cp_kills": 10,
        "groups_a": [("h0", "healthy", 4600, 275), ("h1", "healthy", 4600, 275),
                     ("icmp", "icmp", 250, 15), ("blackhole", "blackhole", 250, 15),
                     ("comeback", "comeback", 300, 20)],
        "group_b": ("xds", "healthy", 1000, 50),
        "cb_up": 20, "cb_down": 4, "cp_down": 3, "warmup_extra": 5,
    },
    "short": {
        "duration": 42, "ramp": 3, "session_timeout": 20, "reloads": 10, "cp_kills": 2,
        "groups_a": [("h0", "healthy", 900, 150), ("h1", "healthy", 900, 150),
                     ("icmp", "icmp", 60, 10), ("blackhole", "blackhole", 60, 10),
                     ("comeback", "comeback", 80, 15)],
        "group_b": ("xds", "healthy", 200, 40),
        "cb_up": 8, "cb_down": 3, "cp_down": 3, "warmup_extra": 2,
    },
}
PPS = (20, 60)
IDLE_PPS = 1.0
CHURN_PCT = 1.0          # % of every group's clients replaced per second
DRAIN_MS = 2000          # replies collected after the clients stop sending
RELOAD_GAP_MIN = 0.5     # s between reload events: the proxy debounces 100 ms
RELOAD_DEADLINE = 5.0    # s for a reload to show in quilkin_config_reloads_total
XDS_DEADLINE = 10.0      # s for a manage file change to reach proxy B's /config
CP_RECONNECT_DEADLINE = 45.0  # the proxy's xDS backoff is at most 30 s + 2 s jitter
PROBE_HZ = 5
RSS_SLACK_RATIO, RSS_SLACK_MIB = 1.25, 8
HTTP_TIMEOUT = 2.0

CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
TOKEN_ROUTER = "quilkin.filters.token_router.v1alpha1.TokenRouter"
PASS = "quilkin.filters.pass.v1alpha1.Pass"
RATE_LIMIT = "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit"
SEND_FAILED = "OS level error: send to endpoint failed"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def token_of(name):
    """The 4-byte routing token of a group (what Capture's suffix takes off)."""
    return (name[:2].upper() + "ok").encode()[:4].ljust(4, b"-")


# --------------------------------------------------------------------------------------
# ports, HTTP, metrics, /proc
# --------------------------------------------------------------------------------------

def _ports_in_use():
    used = set()
    for f in ("udp", "udp6", "tcp", "tcp6"):
        try:
            with open(f"/proc/net/{f}") as fh:
                next(fh)
                for line in fh:
                    used.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return used


_handed_out = set()


def free_ports(n):
    """n ports below the ephemeral range (so no session socket can take one) that nothing on
    this host has bound, checked by binding TCP and UDP on 127.0.0.1 and ::1."""
    used = _ports_in_use()
    out = []
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(5000):
        if len(out) == n:
            return out
        p = rng.randrange(20000, 32000)
        if p in used or p in _handed_out:
            continue
        ok = True
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for typ in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(fam, typ)
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            _handed_out.add(p)
            out.append(p)
    raise RuntimeError("could not find free ports")


def http_get(host, port, path, timeout=HTTP_TIMEOUT):
    """One bounded GET; returns (status, body bytes); raises OSError/HTTPException."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {name: [(labels dict, value)]}."""
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            v = float(m.group(4))
        except ValueError:
            continue
        out.setdefault(m.group(1), []).append((labels, v))
    return out


def metric(ms, name, **want):
    """Sum of the samples of name whose labels include want."""
    total = 0.0
    for labels, v in ms.get(name, []):
        if all(labels.get(k) == val for k, val in want.items()):
            total += v
    return total


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def socket_inodes(pid):
    """Socket inodes held by pid (from /proc/PID/fd)."""
    out = set()
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        try:
            t = os.readlink(f"{d}/{n}")
        except OSError:
            continue
        if t.startswith("socket:["):
            out.add(int(t[8:-1]))
    return out


def _hex_addr(h):
    ip, port = h.split(":")
    port = int(port, 16)
    if len(ip) == 8:
        b = bytes.fromhex(ip)[::-1]
        return socket.inet_ntop(socket.AF_INET, b), port
    raw = b"".join(bytes.fromhex(ip[i:i + 8])[::-1] for i in range(0, 32, 8))
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:]), port
    return socket.inet_ntop(socket.AF_INET6, raw), port


def udp_table():
    """{inode: (local (ip, port), remote (ip, port), rx_queue bytes, drops)} for every UDP
    socket of this network namespace."""
    out = {}
    for f in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    p = line.split()
                    if len(p) < 13:
                        continue
                    out[int(p[9])] = (p[1], p[2], int(p[4].split(":")[1], 16), int(p[12]))
        except OSError:
            pass
    return out


def softnet_dropped():
    total = 0
    try:
        with open("/proc/net/softnet_stat") as f:
            for line in f:
                total += int(line.split()[1], 16)
    except (OSError, IndexError, ValueError):
        pass
    return total


def snmp_udp():
    out = {}
    try:
        with open("/proc/net/snmp") as f:
            lines = [l.split() for l in f if l.startswith("Udp:")]
        out = {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open("/proc/net/snmp6") as f:
            for line in f:
                k, v = line.split()
                if k in ("Udp6NoPorts", "Udp6InErrors", "Udp6RcvbufErrors"):
                    out[k] = int(v)
    except (OSError, ValueError):
        pass
    return out


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------

class Proc:
    """One child process. `expected` says whether it should be running now: a process that
    exits while expected is a crash."""

    def __init__(self, h, name, role, argv, env=None):
        self.name, self.role, self.argv = name, role, argv
        self.log_path = os.path.join(h.work, f"{name}.log")
        self.logf = open(self.log_path, "ab")
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("QUILKIN_") or k in ("RUST_LOG", "NO_ADMIN", "QUIET", "MMDB"):
                del e[k]
        e.update(env or {})
        # RLIMIT_NOFILE was raised in this process and is inherited (no preexec_fn: children
        # are also started from threads, where preexec_fn is unsafe).
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=e, cwd=h.work)
        self.pid = self.p.pid
        self.expected = True
        self.started = time.monotonic()
        h.all_pids[self.pid] = (name, role)

    def alive(self):
        return self.p.poll() is None

    def tail(self, n=8):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join("    " + l[:300] for l in lines[-n:])
        except OSError:
            return ""

    def signal(self, sig):
        if self.alive():
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        self.expected = False
        if self.alive():
            try:
                self.p.kill()
            except ProcessLookupError:
                pass
        self.wait(5)
        self.logf.close()


# --------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------

def b64(t):
    return base64.b64encode(t).decode()


def endpoint_yaml(addr, tokens, gen=None, indent=6):
    pad = " " * indent
    out = [f"{pad}- address: \"{addr}\"", f"{pad}  metadata:", f"{pad}    quilkin.dev:",
           f"{pad}      tokens: [{', '.join(repr(b64(t)) for t in tokens)}]"]
    if gen is not None:
        out.append(f"{pad}    soak: {{ generation: {gen} }}")
    return out


def chain_yaml(has_pass, has_limit):
    out = ["filters:"]
    if has_limit:
        # far above any client's rate: never drops, only rebuilds per-client state
        out += [f"  - name: {RATE_LIMIT}", "    config:", "      max_packets: 1000000000",
                "      period: 1"]
    if has_pass:
        out += [f"  - name: {PASS}"]
    out += [f"  - name: {CAPTURE}", "    config:", "      suffix:", "        size: 4",
            "        remove: true", f"  - name: {TOKEN_ROUTER}"]
    return out


class ConfigA:
    """Proxy A's config: every group's endpoint with its token, plus what reloads toggle:
    a spare endpoint (token nobody sends), a metadata generation, a Pass and a LocalRateLimit
    filter. No toggle changes where an existing client is routed."""

    def __init__(self, endpoints):
        self.endpoints = endpoints      # [(addr, token)]
        self.spare_addr = None
        self.has_spare = False
        self.gen = 0
        self.has_pass = False
        self.has_limit = False

    def text(self):
        out = ["version: v1alpha1", "id: soak-proxy-a", "clusters:", "  - endpoints:"]
        for addr, tok in self.endpoints:
            out += endpoint_yaml(addr, [tok], self.gen)
        if self.has_spare:
            out += endpoint_yaml(self.spare_addr, [b"SPAR"], self.gen)
        out += chain_yaml(self.has_pass, self.has_limit)
        return "\n".join(out) + "\n"

    def expect(self):
        """What /config must show: (endpoint count, filter names)."""
        names = ([RATE_LIMIT] if self.has_limit else []) + ([PASS] if self.has_pass else []) + \
            [CAPTURE, TOKEN_ROUTER]
        return len(self.endpoints) + (1 if self.has_spare else 0), names


class ConfigMapVolume:
    """DIR laid out as kubelet's AtomicWriter lays out a ConfigMap volume:
    DIR/quilkin.yaml -> ..data/quilkin.yaml, DIR/..data -> ..2026_12_05_..._N/."""

    def __init__(self, root, text, key="quilkin.yaml"):
        self.root, self.key, self.n = root, key, 0
        os.makedirs(root, exist_ok=True)
        self.current = self._new_dir(text)
        os.symlink(self.current, os.path.join(root, "..data"))
        os.symlink(os.path.join("..data", key), os.path.join(root, key))

    @property
    def path(self):
        return os.path.join(self.root, self.key)

    def _new_dir(self, text):
        self.n += 1
        name = time.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{self.n:09d}"
        os.mkdir(os.path.join(self.root, name))
        with open(os.path.join(self.root, name, self.key), "w") as f:
            f.write(text)
        return name

    def swap(self, text):
        """kubelet's update: new dir, new ..data_tmp symlink renamed over ..data, old dir
        deleted."""
        old = self.current
        self.current = self._new_dir(text)
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(self.current, tmp)
        os.rename(tmp, os.path.join(self.root, "..data"))
        shutil.rmtree(os.path.join(self.root, old))

    def write_in_place(self, text):
        with open(self.path, "w") as f:     # follows the symlinks into the current dir
            f.write(text)

    def write_rename(self, text):
        d = os.path.join(self.root, "..data")
        tmp = os.path.join(d, f".{self.key}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(d, self.key))


def write_rename(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# --------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------

class Harness:
    def __init__(self, profile_name, prof, build, quilkin, work, report_path):
        self.profile_name, self.prof = profile_name, prof
        self.build, self.quilkin, self.work, self.report_path = build, quilkin, work, report_path
        self.procs = []
        self.all_pids = {}
        self.failures = []
        self.notes = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.events = []               # (t, what)
        self.t0 = time.monotonic()
        self.crashes = []
        self.probe = {}                # name -> {"ok", "fail", "last_error"}
        self.scrape = {}               # name -> {"ok", "fail", "peak_sessions", "last"}
        self.samples = {}              # name -> [(t, rss_kib, cpu_s)]
        self.inode_owner = {}          # inode -> (pid, name, role)
        self.inode_info = {}           # inode -> [local, remote, rx_queue, max drops]
        self.reloads = []
        self.cp_cycles = []
        self.cb_cycles = []
        self.manage_n = 0
        self.threads = []

    # ---- bookkeeping ----

    def now(self):
        return time.monotonic() - self.t0

    def event(self, what):
        with self.lock:
            self.events.append((round(self.now(), 3), what))

    def fail(self, msg):
        with self.lock:
            self.failures.append(msg)
        log("FAIL: " + msg)

    def start(self, name, role, argv, env=None):
        p = Proc(self, name, role, argv, env)
        with self.lock:
            self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.alive():
                p.expected = False
                try:
                    p.p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait(5)
            try:
                p.logf.close()
            except Exception:  # noqa: BLE001  best effort at exit
                pass

    def spawn(self, target, name):
        t = threading.Thread(target=self._guard, args=(target, name), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _guard(self, target, name):
        try:
            target()
        except Exception as e:  # noqa: BLE001  a harness bug must fail the run, loudly
            self.fail(f"harness thread {name} raised {type(e).__name__}: {e}")

    def sleep(self, s):
        """Sleep that ends early when the run stops; returns False if it did."""
        return not self.stop.wait(max(0.0, s))

    # ---- waits ----

    def wait_http(self, host, port, path, want=200, timeout=15.0, proc=None):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.p.returncode}):\n{proc.tail()}")
            try:
                st, body = http_get(host, port, path, timeout=1.0)
                if st == want:
                    return body
                last = st
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"http://{host}:{port}{path} not {want} within {timeout}s ({last})")

    def metrics_of(self, px):
        st, body = http_get(px["admin"][0], px["admin"][1], "/metrics")
        if st != 200:
            raise OSError(f"/metrics status {st}")
        return parse_metrics(body.decode())

    def config_of(self, px):
        st, body = http_get(px["admin"][0], px["admin"][1], "/config")
        if st != 200:
            raise OSError(f"/config status {st}")
        return json.loads(body)

    # ---- background loops ----

    def watch_crashes(self):
        while not self.stop.wait(0.25):
            for p in list(self.procs):
                if p.expected and not p.alive():
                    p.expected = False
                    self.crashes.append({"name": p.name, "rc": p.p.returncode,
                                         "t": round(self.now(), 1)})
                    self.fail(f"{p.name} exited unexpectedly with status {p.p.returncode}:\n"
                              f"{p.tail()}")

    def prober(self, name, host, port):
        st = self.probe.setdefault(name, {"ok": 0, "fail": 0, "last_error": None})
        period = 1.0 / PROBE_HZ
        nxt = time.monotonic()
        while not self.stop.is_set():
            nxt += period
            try:
                code, _ = http_get(host, port, "/live")
                if code == 200:
                    st["ok"] += 1
                else:
                    st["fail"] += 1
                    st["last_error"] = f"status {code}"
            except (OSError, http.client.HTTPException) as e:
                st["fail"] += 1
                st["last_error"] = repr(e)
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
            elif self.stop.wait(delay):
                break

    def scraper(self, name, px):
        st = self.scrape.setdefault(name, {"ok": 0, "fail": 0, "peak_sessions": 0,
                                           "last": None, "last_error": None})
        nxt = time.monotonic()
        while not self.stop.is_set():
            nxt += 1.0
            try:
                ms = self.metrics_of(px)
                st["ok"] += 1
                st["last"] = ms
                s = metric(ms, "quilkin_session_active")
                st["peak_sessions"] = max(st["peak_sessions"], int(s))
            except (OSError, http.client.HTTPException, ValueError) as e:
                st["fail"] += 1
                st["last_error"] = repr(e)
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
            elif self.stop.wait(delay):
                break

    def monitor(self):
        """RSS and CPU of the proxies once a second; UDP drop counters of every process we
        started every 2 s (fd -> inode ownership refreshed every 6 s)."""
        i = 0
        while not self.stop.is_set():
            t = self.now()
            for p in (self.px_a["proc"], self.px_b["proc"]):
                if p.alive():
                    self.samples.setdefault(p.name, []).append(
                        (round(t, 1), proc_rss_kib(p.pid), proc_cpu_s(p.pid)))
            if i % 6 == 0:
                self.map_inodes()
            if i % 2 == 0:
                self.scan_udp()
            i += 1
            if self.stop.wait(1.0):
                break

    def map_inodes(self):
        for p in list(self.procs):
            if not p.alive():
                continue
            for ino in socket_inodes(p.pid):
                self.inode_owner.setdefault(ino, (p.pid, p.name, p.role))

    def scan_udp(self):
        table = udp_table()
        for ino, (loc, rem, rxq, drops) in table.items():
            if ino not in self.inode_owner:
                continue
            info = self.inode_info.get(ino)
            if info is None:
                self.inode_info[ino] = [loc, rem, rxq, drops]
            else:
                info[2] = rxq
                info[3] = max(info[3], drops)

    # ---- scenario loops ----

    def reloader(self):
        """Proxy A: N reload events, evenly over the run, each verified (applied +1, rejected
        unchanged, /config shows the new endpoints and chain) before the next."""
        n = self.prof["reloads"]
        if n == 0:
            return
        first = self.prof["ramp"] + 2.0
        last = self.prof["duration"] - 4.0
        gap = max(RELOAD_GAP_MIN, (last - first) / max(1, n))
        px = self.px_a
        cfg, vol = self.cfg_a, self.vol
        applied0 = metric(self.metrics_of(px), "quilkin_config_reloads_total", result="applied")
        start = self.client_t0 + first
        for i in range(n):
            at = start + i * gap
            if not self.sleep(at - self.now()):
                return
            mode = ("in-place", "rename", "configmap", "sighup")[i % 4]
            kind = ("endpoints", "filters")[(i // 4 + i) % 2]
            sub = (i // 2) % 2
            if kind == "endpoints":
                if sub == 0:
                    cfg.has_spare = not cfg.has_spare
                else:
                    cfg.gen += 1
            else:
                if sub == 0:
                    cfg.has_pass = not cfg.has_pass
                else:
                    cfg.has_limit = not cfg.has_limit
            text = cfg.text()
            t_write = time.monotonic()
            if mode == "in-place":
                vol.write_in_place(text)
            elif mode == "rename":
                vol.write_rename(text)
            elif mode == "configmap":
                vol.swap(text)
            else:
                # a quarter of the events: new content by swap or rename, then SIGHUP
                (vol.swap if (i // 4) % 2 == 0 else vol.write_rename)(text)
                px["proc"].signal(signal.SIGHUP)
            want = applied0 + i + 1
            rec = {"i": i, "mode": mode, "kind": kind, "t": round(self.now(), 2)}
            deadline = t_write + RELOAD_DEADLINE
            got = None
            while time.monotonic() < deadline:
                try:
                    ms = self.metrics_of(px)
                    got = metric(ms, "quilkin_config_reloads_total", result="applied")
                    rej = metric(ms, "quilkin_config_reloads_total", result="rejected")
                    if rej:
                        self.fail(f"reload {i} ({mode}): rejected = {rej:.0f}")
                        return
                    if got >= want:
                        break
                except (OSError, http.client.HTTPException, ValueError):
                    pass
                time.sleep(0.02)
            rec["applied_ms"] = round((time.monotonic() - t_write) * 1000, 1)
            if got != want:
                rec["error"] = f"applied counter {got} (want {want})"
                self.reloads.append(rec)
                self.fail(f"reload {i} ({mode}, {kind}): applied counter {got}, want {want} "
                          f"within {RELOAD_DEADLINE}s")
                return
            n_eps, names = cfg.expect()
            try:
                c = self.config_of(px)
                eps = sum(len(cl.get("endpoints", [])) for cl in c.get("clusters", []))
                fl = [f["name"] for f in c.get("filters", [])]
                if eps != n_eps or fl != names:
                    rec["error"] = f"/config shows {eps} endpoints, {fl}"
                    self.fail(f"reload {i} ({mode}, {kind}): /config shows {eps} endpoints "
                              f"and {fl}, want {n_eps} and {names}")
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.fail(f"reload {i}: /config: {e!r}")
            self.reloads.append(rec)
            self.event(f"reload {i} {mode} {kind}")

    def start_manage(self):
        argv = [self.quilkin, "--admin-address", f"127.0.0.1:{self.manage_admin}", "manage",
                "--port", str(self.xds_port), "file", self.manage_file]
        p = self.start(f"manage-{self.manage_n}", "manage", argv)
        self.manage_n += 1
        self.manage = p
        self.wait_http("127.0.0.1", self.manage_admin, "/ready", proc=p, timeout=15)
        return p

    def manage_text(self):
        st = self.mstate
        out = ["version: v1alpha1", "id: soak-manage", "clusters:", "  - endpoints:"]
        out += endpoint_yaml(self.echo_x_addr, [token_of("xds")])
        if st["spare"]:
            out += endpoint_yaml(f"127.0.0.1:{self.spare_port}", [b"SPAR"])
        out += chain_yaml(st["pass"], False)
        return "\n".join(out) + "\n"

    def xds_update(self, k):
        """Changes the manage file (alternately the spare endpoint and a Pass filter) and
        waits until proxy B's /config shows it."""
        st = self.mstate
        if k % 2 == 0:
            st["spare"] = not st["spare"]
        else:
            st["pass"] = not st["pass"]
        text = self.manage_text()
        if k % 3 == 2:
            with open(self.manage_file, "w") as f:
                f.write(text)
        else:
            write_rename(self.manage_file, text)
        t = time.monotonic()
        want_eps = 2 if st["spare"] else 1
        want_f = ([PASS] if st["pass"] else []) + [CAPTURE, TOKEN_ROUTER]
        while time.monotonic() - t < XDS_DEADLINE:
            try:
                c = self.config_of(self.px_b)
                eps = sum(len(cl.get("endpoints", [])) for cl in c.get("clusters", []))
                if eps == want_eps and [f["name"] for f in c.get("filters", [])] == want_f:
                    return round((time.monotonic() - t) * 1000, 1)
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if self.stop.wait(0.05):
                return None
        self.fail(f"manage file update {k} did not reach proxy B within {XDS_DEADLINE}s")
        return None

    def cp_chaos(self):
        """The control plane: SIGKILLed and restarted cp_kills times, evenly over the run;
        while it is up and proxy B has reconnected, its file is updated once."""
        n = self.prof["cp_kills"]
        first = self.prof["ramp"] + 3.0
        span = self.prof["duration"] - 12.0 - first   # the last restart >= 9 s before the end
        gap = span / max(1, n)
        k = 0
        for i in range(n):
            # one file update in the first half of each cycle, while manage is up
            if not self.sleep(self.client_t0 + first + i * gap + gap * 0.3 - self.now()):
                return
            ms = self.xds_update(k)
            k += 1
            if not self.sleep(self.client_t0 + first + (i + 1) * gap - self.cp_down - self.now()):
                return
            rec = {"kill_t": round(self.now(), 2), "update_ms": ms}
            self.manage.expected = False
            self.manage.p.kill()
            self.manage.wait(5)
            self.event(f"manage SIGKILL {i}")
            if not self.sleep(self.cp_down):
                return
            rec["restart_t"] = round(self.now(), 2)
            self.start_manage()
            self.event(f"manage restarted {i}")
            # the proxy reconnects with its own backoff; /ready is 200 again once the new
            # stream delivered
            t = time.monotonic()
            try:
                self.wait_http(*self.px_b["admin"], "/ready", timeout=CP_RECONNECT_DEADLINE)
                rec["reconnect_s"] = round(time.monotonic() - t, 2)
            except RuntimeError as e:
                self.fail(f"proxy B did not reconnect to the restarted control plane: {e}")
                return
            self.cp_cycles.append(rec)

    def comeback_chaos(self):
        """The come-back endpoint: up cb_up s, SIGKILLed, down cb_down s, restarted."""
        up, down = self.prof["cb_up"], self.prof["cb_down"]
        t = self.client_t0 + self.prof["ramp"] + up
        end = self.client_t0 + self.prof["duration"] - down - 2
        i = 0
        while t < end:
            if not self.sleep(t - self.now()):
                return
            rec = {"kill_t": round(self.now() - self.client_t0, 2)}
            self.cb.expected = False
            self.cb.p.kill()
            self.cb.wait(5)
            if not self.sleep(down):
                return
            self.cb = self.start_echo(f"echo-comeback-{i + 1}", "comeback", self.cb_port)
            rec["restart_t"] = round(self.now() - self.client_t0, 2)
            self.cb_cycles.append(rec)
            i += 1
            t = self.now() + up

    def start_echo(self, name, role, port, extra=()):
        stats = os.path.join(self.work, f"{name}.json")
        return self.start(name, role, [os.path.join(self.build, "bench_echo"), str(port),
                                       "--count", "--stats", stats, *extra])

    # ---- the run ----

    def run(self):
        prof = self.prof
        scale = float(os.environ.get("SOAK_SCALE", "1"))
        ascale = scale * float(os.environ.get("SOAK_ACTIVE_SCALE", "1"))
        groups_a = [(n, r, max(1, int(c * scale)), min(int(c * scale), int(a * ascale)))
                    for n, r, c, a in prof["groups_a"]]
        gb = prof["group_b"]
        group_b = (gb[0], gb[1], max(1, int(gb[2] * scale)),
                   min(int(gb[2] * scale), int(gb[3] * ascale)))
        self.cp_down = prof["cp_down"]
        timeout = prof["session_timeout"]
        (p_a, q_a, p_b, q_b, e_h0, e_h1, e_x, e_cb, e_bh, e_icmp, e_spare,
         adm_a, adm_b, adm_m, xds) = free_ports(15)
        self.cb_port, self.spare_port, self.xds_port, self.manage_admin = e_cb, e_spare, xds, adm_m
        self.ports = {"proxy_a": p_a, "proxy_b": p_b, "icmp": e_icmp, "spare": e_spare,
                      "xds": xds, "admin_a": adm_a, "admin_b": adm_b, "admin_manage": adm_m}
        self.soft0 = softnet_dropped()
        self.snmp0 = snmp_udp()

        # endpoints
        echo_h0 = self.start_echo("echo-h0", "healthy", e_h0)
        echo_h1 = self.start_echo("echo-h1", "healthy", e_h1)
        echo_x = self.start_echo("echo-xds", "healthy", e_x, ("--ipv6",))
        self.cb = self.start_echo("echo-comeback-0", "comeback", e_cb)
        sink = self.start_echo("sink-blackhole", "blackhole", e_bh, ("--sink",))
        self.echo_x_addr = f"[::1]:{e_x}"
        role_addr = {"h0": f"127.0.0.1:{e_h0}", "h1": f"127.0.0.1:{e_h1}",
                     "icmp": f"127.0.0.1:{e_icmp}", "blackhole": f"127.0.0.1:{e_bh}",
                     "comeback": f"127.0.0.1:{e_cb}"}
        self.endpoint_group = {("127.0.0.1", e_h0): "h0", ("127.0.0.1", e_h1): "h1",
                               ("127.0.0.1", e_icmp): "icmp", ("127.0.0.1", e_bh): "blackhole",
                               ("127.0.0.1", e_cb): "comeback", ("::1", e_x): "xds"}
        self.echo_stats = {"h0": echo_h0, "h1": echo_h1, "xds": echo_x, "blackhole": sink}

        # proxy A: file config in a ConfigMap-style volume
        self.cfg_a = ConfigA([(role_addr[n], token_of(n)) for n, _, _, _ in groups_a])
        self.cfg_a.spare_addr = f"127.0.0.1:{e_spare}"
        self.vol = ConfigMapVolume(os.path.join(self.work, "configmap"), self.cfg_a.text())
        pa = self.start("proxy-a", "proxy", [
            self.quilkin, "--admin-address", f"127.0.0.1:{adm_a}", "-c", self.vol.path,
            "proxy", "--port", str(p_a), "--qcmp-port", str(q_a),
            "--session-timeout-secs", str(timeout)])
        self.px_a = {"proc": pa, "admin": ("127.0.0.1", adm_a), "name": "proxy-a"}

        # control plane and proxy B
        self.manage_file = os.path.join(self.work, "manage.yaml")
        self.mstate = {"spare": False, "pass": False}
        write_rename(self.manage_file, self.manage_text())
        self.start_manage()
        b_cfg = os.path.join(self.work, "proxy-b.yaml")
        write_rename(b_cfg, "version: v1alpha1\nid: soak-proxy-b\n")
        pb = self.start("proxy-b", "proxy", [
            self.quilkin, "--admin-address", f"[::1]:{adm_b}", "-c", b_cfg, "proxy",
            "--port", str(p_b), "--qcmp-port", str(q_b), "-m", f"http://127.0.0.1:{xds}",
            "--session-timeout-secs", str(timeout)])
        self.px_b = {"proc": pb, "admin": ("::1", adm_b), "name": "proxy-b"}
        self.wait_http(*self.px_a["admin"], "/ready", proc=pa)
        self.wait_http(*self.px_b["admin"], "/ready", proc=pb)
        t = time.monotonic()
        while True:     # the Listener too, not only the Cluster
            c = self.config_of(self.px_b)
            if [f["name"] for f in c.get("filters", [])] == [CAPTURE, TOKEN_ROUTER]:
                break
            if time.monotonic() - t > 15:
                raise RuntimeError(f"proxy B never got the filter chain: {c}")
            time.sleep(0.05)
        log(f"proxies up: A udp {p_a} admin {adm_a}; B udp {p_b} admin [::1]:{adm_b}; "
            f"manage xds {xds}")

        for name, px in (("proxy-a", self.px_a), ("proxy-b", self.px_b)):
            self.spawn(lambda n=name, x=px: self.prober(n, *x["admin"]), f"probe-{name}")
            self.spawn(lambda n=name, x=px: self.scraper(n, x), f"scrape-{name}")
        self.spawn(self.watch_crashes, "crashes")

        # clients
        def client(name, target, groups, base):
            argv = [os.path.join(self.build, "bench_soak_client"), "--target", target,
                    "--duration", str(prof["duration"]), "--ramp", str(prof["ramp"]),
                    "--drain-ms", str(DRAIN_MS), "--addr-base", str(base), "--linger", "120",
                    "--report", os.path.join(self.work, f"{name}.json"),
                    "--seed", str(random.randrange(1, 1 << 40))]
            for n, _, c, a in groups:
                argv += ["--group", f"name={n},clients={c},active={a},pps={PPS[0]}:{PPS[1]},"
                                    f"idle={IDLE_PPS},churn={CHURN_PCT},"
                                    f"token={token_of(n).decode()}"]
            return self.start(name, "client", argv)

        self.groups_a, self.group_b = groups_a, group_b
        self.client_t0 = self.now()
        ca = client("client-a", f"127.0.0.1:{p_a}", groups_a, 16)
        cb = client("client-b", f"127.0.0.1:{p_b}", [group_b], 100)
        self.clients = (ca, cb)
        n_a = sum(g[2] for g in groups_a)
        log(f"{n_a} clients -> proxy A, {group_b[2]} -> proxy B; "
            f"{prof['duration']} s of traffic, {prof['reloads']} reloads, "
            f"{prof['cp_kills']} control-plane kills")
        self.spawn(self.monitor, "monitor")
        self.spawn(self.reloader, "reloader")
        self.spawn(self.cp_chaos, "cp-chaos")
        self.spawn(self.comeback_chaos, "comeback")

        # warm-up RSS: once the ramp is done and churned sessions have begun to expire
        warm_at = self.client_t0 + prof["ramp"] + timeout + prof["warmup_extra"]
        self.sleep(warm_at - self.now())
        self.rss_warm = {p["name"]: proc_rss_kib(p["proc"].pid) for p in (self.px_a, self.px_b)}
        log(f"after warm-up: RSS {self.rss_warm} KiB")

        # the clients stop, drain, write their reports and linger until SIGTERM
        deadline = self.client_t0 + prof["duration"] + DRAIN_MS / 1000 + 30
        reports = [os.path.join(self.work, f"{c.name}.json") for c in self.clients]
        last_log = self.now()
        while not all(os.path.exists(r) for r in reports):
            if self.now() > deadline:
                raise RuntimeError("the clients did not write their reports in time")
            if any(not c.alive() for c in self.clients):
                raise RuntimeError("a client exited before writing its report:\n" +
                                   "\n".join(c.tail() for c in self.clients))
            if self.now() - last_log > 30:
                last_log = self.now()
                sa = self.scrape.get("proxy-a", {})
                log(f"t={self.now() - self.client_t0:.0f}s sessions(A, peak)="
                    f"{sa.get('peak_sessions')} reloads={len(self.reloads)} "
                    f"cp-kills={len(self.cp_cycles)} failures={len(self.failures)}")
            time.sleep(0.2)
        self.client_reports = [json.load(open(r)) for r in reports]
        return self.finish()

    def finish(self):
        """Final counts (after the clients' drain), then the ordered shutdown."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=HTTP_TIMEOUT * 3)
        final = {}
        for px in (self.px_a, self.px_b):
            try:
                final[px["name"]] = self.metrics_of(px)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.fail(f"final scrape of {px['name']}: {e!r}")
                final[px["name"]] = {}
        self.rss_end = {p["name"]: proc_rss_kib(p["proc"].pid) for p in (self.px_a, self.px_b)}
        self.cpu_all = {}
        for p in self.procs:
            c = proc_cpu_s(p.pid) if p.alive() else None
            if c is not None:
                key = re.sub(r"-\d+$", "", p.name) if p.role in ("comeback", "manage") else p.name
                self.cpu_all[key] = round(c, 1)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_all["harness (soak.py)"] = round(ru.ru_utime + ru.ru_stime, 1)
        self.cpu_end = {p["name"]: proc_cpu_s(p["proc"].pid) for p in (self.px_a, self.px_b)}
        self.map_inodes()
        self.scan_udp()
        self.soft1 = softnet_dropped()
        self.snmp1 = snmp_udp()

        # endpoints write their per-group counts on SIGTERM
        stats = {}
        for role, p in list(self.echo_stats.items()) + [("comeback", self.cb)]:
            p.expected = False
            p.signal(signal.SIGTERM)
        for role, p in list(self.echo_stats.items()) + [("comeback", self.cb)]:
            rc = p.wait(10)
            path = os.path.join(self.work, f"{p.name}.json")
            if rc != 0 or not os.path.exists(path):
                self.fail(f"{p.name} did not stop cleanly (status {rc})")
                continue
            if role != "comeback":
                stats[role] = json.load(open(path))
        for c in self.clients:
            c.expected = False
            c.signal(signal.SIGTERM)
            if c.wait(10) != 0:
                self.fail(f"{c.name} exited with {c.p.returncode}")

        # proxies: SIGTERM (drain), then a second SIGTERM (exit now); manage: SIGTERM
        exit_codes = {}
        for px in (self.px_a, self.px_b):
            p = px["proc"]
            p.expected = False
            p.signal(signal.SIGTERM)
            time.sleep(0.3)
            p.signal(signal.SIGTERM)
        for px in (self.px_a, self.px_b):
            rc = px["proc"].wait(15)
            exit_codes[px["name"]] = rc
            if rc != 0:
                self.fail(f"{px['name']} exit status {rc} after SIGTERM, SIGTERM (want 0):\n"
                          f"{px['proc'].tail()}")
        self.manage.expected = False
        self.manage.signal(signal.SIGTERM)
        rc = self.manage.wait(10)
        exit_codes["manage"] = rc
        if rc != 0:
            self.fail(f"manage exit status {rc} after SIGTERM (want 0)")
        return self.account(final, stats, exit_codes)

    # ---- accounting ----

    def kernel_drops(self):
        """Kernel drops per process name and per proxy socket kind, from /proc/net/udp."""
        per_proc = {}
        per_proxy = {}   # proxy name -> {"game": n, "upstream": {group: n}, "other": n}
        rxq = {}
        for ino, (loc, rem, q, drops) in self.inode_info.items():
            pid, name, role = self.inode_owner[ino]
            key = re.sub(r"-\d+$", "", name) if role in ("comeback", "manage") else name
            per_proc[key] = per_proc.get(key, 0) + drops
            rxq[key] = rxq.get(key, 0) + q
            if role != "proxy":
                continue
            d = per_proxy.setdefault(name, {"game": 0, "upstream": {}, "other": 0})
            lport = _hex_addr(loc)[1]
            raddr = _hex_addr(rem)
            game_port = self.ports["proxy_a" if name == "proxy-a" else "proxy_b"]
            if raddr[1] == 0 and lport == game_port:
                d["game"] += drops
            elif raddr[1] != 0:
                g = self.endpoint_group.get(raddr, "other")
                d["upstream"][g] = d["upstream"].get(g, 0) + drops
            else:
                d["other"] += drops
        return per_proc, per_proxy, rxq

    def account(self, final, stats, exit_codes):
        per_proc, per_proxy, rxq = self.kernel_drops()
        backlog = self.soft1 - self.soft0
        backlog_left = backlog
        snmp = {k: self.snmp1.get(k, 0) - self.snmp0.get(k, 0) for k in self.snmp1}
        report = {"profile": self.profile_name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "machine": f"{os.cpu_count()} cores, {os.uname().release}",
                  "duration_s": self.prof["duration"], "proxies": {}, "groups": [],
                  "kernel": {"drops_per_process": per_proc, "rx_queue_bytes_at_end": rxq,
                             "softnet_backlog_drops": backlog, "udp_snmp_delta": snmp}}
        crep = {"proxy-a": self.client_reports[0], "proxy-b": self.client_reports[1]}
        roles = {n: r for n, r, _, _ in self.groups_a}
        roles[self.group_b[0]] = self.group_b[1]

        for pname, ms in final.items():
            cr = crep[pname]
            read = metric(ms, "quilkin_packets_total", event="read")
            write = metric(ms, "quilkin_packets_total", event="write")
            drops = {}
            for labels, v in ms.get("quilkin_packets_dropped_total", []):
                drops[f'{labels.get("event")}: {labels.get("source")}'] = v
            errors = sum(v for _, v in ms.get("quilkin_errors_total", []))
            d_send = sum(v for k, v in drops.items() if k == f"read: {SEND_FAILED}")
            d_pre = sum(v for k, v in drops.items() if k.startswith("read: ")) - d_send
            d_post = sum(v for k, v in drops.items() if k.startswith("write: "))
            kd = per_proxy.get(pname, {"game": 0, "upstream": {}, "other": 0})
            sent = sum(g["sent"] for g in cr["groups"])
            # leg 1: every client datagram is counted exactly once: forwarded (read), dropped
            # by reason (before the send, or its send failed) or dropped by the kernel on the
            # proxy's game sockets
            resid1 = sent - read - d_pre - d_send - kd["game"]
            use = min(max(resid1, 0), backlog_left)
            backlog_left -= use
            ingress_unaccounted = resid1 - use
            samples = self.samples.get(pname, [])
            cpu = self.cpu_end.get(pname) or (samples[-1][2] if samples else 0)
            pkts = read + write
            rss_w, rss_e = self.rss_warm.get(pname), self.rss_end.get(pname)
            prep = {
                "packets_read": read, "packets_write": write, "dropped": drops,
                "errors_total": errors, "peak_sessions": self.scrape[pname]["peak_sessions"],
                "session_total": metric(ms, "quilkin_session_total"),
                "kernel_drops_game_sockets": kd["game"],
                "kernel_drops_upstream_sockets": kd["upstream"],
                "client_datagrams": sent, "ingress_unaccounted": ingress_unaccounted,
                "cpu_s": round(cpu, 2),
                "cpu_ms_per_1000_packets": round(1000 * cpu * 1000 / pkts, 2) if pkts else None,
                "rss_warm_kib": rss_w, "rss_end_kib": rss_e,
                "probes": self.probe.get(pname), "scrapes": {
                    k: v for k, v in self.scrape.get(pname, {}).items() if k != "last"},
                "exit_code": exit_codes.get(pname),
            }
            report["proxies"][pname] = prep
            if ingress_unaccounted != 0:
                self.fail(f"{pname}: {ingress_unaccounted:.0f} client datagrams neither "
                          f"forwarded, nor dropped by reason, nor dropped by the kernel")
            if rss_w and rss_e and rss_e > rss_w * RSS_SLACK_RATIO + RSS_SLACK_MIB * 1024:
                self.fail(f"{pname}: RSS grew from {rss_w} KiB after warm-up to {rss_e} KiB")
            pr = self.probe.get(pname, {})
            if pr.get("fail"):
                self.fail(f"{pname}: {pr['fail']} /live probe failures ({pr['last_error']})")
            sc = self.scrape.get(pname, {})
            if sc.get("fail"):
                self.fail(f"{pname}: {sc['fail']} /metrics scrape failures ({sc['last_error']})")
            rej = metric(ms, "quilkin_config_reloads_total", result="rejected")
            if rej:
                self.fail(f"{pname}: {rej:.0f} rejected reloads")
            applied = metric(ms, "quilkin_config_reloads_total", result="applied")
            prep["reloads_applied"] = applied
            if pname == "proxy-a" and applied != len(self.reloads):
                self.fail(f"proxy-a: {applied:.0f} reloads applied for {len(self.reloads)} "
                          f"reload events")

            # anomalies the client saw: each is a proxy defect
            for k in ("misrouted", "corrupt", "wrong_source", "unknown_rx"):
                if cr.get(k):
                    self.fail(f"{pname}: client saw {cr[k]} {k} replies")

            # healthy groups: sent - received must be covered by counters
            client_drops = sum(s["drops"] for s in cr["sockets"])
            max_refused = sum(g["sent"] for g in cr["groups"]
                              if roles[g["name"]] in ("icmp", "comeback"))
            shared_up = kd["game"] + d_pre + max(0.0, d_send - max_refused)
            shared_down = d_post + client_drops
            for g in cr["groups"]:
                role = roles[g["name"]]
                es = stats.get(g["name"] if g["name"] in stats else role, {})
                eg = es.get("groups", {}).get(str(g["id"]), {"rx": 0, "tx": 0, "tx_fail": 0})
                row = {"proxy": pname, "group": g["name"], "role": role,
                       "clients": g["clients"], "active": g["active"], "joined": g["joined"],
                       "sent": g["sent"], "received": g["received"],
                       "bytes_sent": g["sent_bytes"], "bytes_received": g["recv_bytes"],
                       "client_send_fail": g["send_fail"], "dups": g["dups"],
                       "late_replies": g["late"], "latency_us": g["latency_us"],
                       "endpoint_rx": eg["rx"], "endpoint_tx": eg["tx"]}
                if role == "healthy":
                    if g["dups"]:
                        self.fail(f"{pname}/{g['name']}: {g['dups']} duplicate replies")
                    loss = g["sent"] - g["received"]
                    up = g["sent"] - eg["rx"]
                    down = eg["tx"] - g["received"]
                    own_up = per_proc.get(self.echo_stats[g["name"]].name, 0) if g["name"] in \
                        self.echo_stats else 0
                    own_down = kd["upstream"].get(g["name"], 0)
                    ex_up = min(max(up, 0), own_up)
                    rest = max(up, 0) - ex_up
                    take = min(rest, shared_up)
                    shared_up -= take
                    ex_up += take
                    rest -= take
                    take = min(rest, backlog_left)
                    backlog_left -= take
                    ex_up += take
                    ex_down = min(max(down, 0), own_down)
                    rest_d = max(down, 0) - ex_down
                    take = min(rest_d, shared_down)
                    shared_down -= take
                    ex_down += take
                    rest_d -= take
                    take = min(rest_d, backlog_left)
                    backlog_left -= take
                    ex_down += take
                    ex_echo = eg["tx_fail"]
                    unacc = loss - ex_up - ex_down - ex_echo
                    row.update({"loss": loss, "loss_before_endpoint": up,
                                "endpoint_send_fail": eg["tx_fail"],
                                "loss_after_endpoint": down, "accounted": ex_up + ex_down +
                                ex_echo, "unaccounted": unacc})
                    if unacc != 0:
                        self.fail(f"{pname}/{g['name']}: unaccounted loss {unacc:.0f} "
                                  f"(sent {g['sent']}, received {g['received']}, endpoint rx "
                                  f"{eg['rx']} tx {eg['tx']})")
                elif role == "blackhole":
                    row["sink_rx"] = eg["rx"]
                    row["sink_kernel_drops"] = per_proc.get("sink-blackhole", 0)
                    row["not_at_sink"] = g["sent"] - eg["rx"]
                    if g["received"]:
                        self.fail(f"{pname}/blackhole: {g['received']} replies from a sink")
                elif role == "icmp":
                    row["proxy_send_failed_all_groups"] = d_send
                    row["kernel_noports_delta_all"] = snmp.get("NoPorts", 0)
                    if g["received"]:
                        self.fail(f"{pname}/icmp: {g['received']} replies from a closed port")
                elif role == "comeback":
                    row.update(self.comeback_summary(g))
                report["groups"].append(row)
        # closed ports (icmp, and comeback while down): every datagram the proxy sent there
        # is a kernel NoPorts, every one it could not send is a "send to endpoint failed"
        # drop; what remains is what the killed come-back echo had queued (informative)
        byname = {g["group"]: g for g in report["groups"] if g["proxy"] == "proxy-a"}
        if "icmp" in byname and "comeback" in byname:
            fa = report["proxies"]["proxy-a"]["dropped"].get(f"read: {SEND_FAILED}", 0)
            lost = byname["icmp"]["sent"] + byname["comeback"]["sent"] - \
                byname["comeback"]["received"]
            report["closed_ports"] = {
                "icmp_sent_plus_comeback_lost": lost, "kernel_noports": snmp.get("NoPorts", 0),
                "proxy_send_failed": fa,
                "remainder_lost_in_killed_echo": lost - snmp.get("NoPorts", 0) - fa}
        report["reloads"] = {"events": len(self.reloads), "planned": self.prof["reloads"],
                             "modes": self._count(self.reloads, "mode"),
                             "kinds": self._count(self.reloads, "kind"),
                             "applied_ms_max": max((r.get("applied_ms", 0)
                                                    for r in self.reloads), default=None),
                             "list": self.reloads}
        report["control_plane"] = {"kills": len(self.cp_cycles),
                                   "planned": self.prof["cp_kills"], "cycles": self.cp_cycles,
                                   "xds_during_downtime": self.downtime_summary()}
        report["comeback_cycles"] = self.cb_cycles
        # a sanitizer build (SOAK_QUILKIN=build-asan/quilkin) reports into the logs
        for p in self.procs:
            if p.role in ("proxy", "manage"):
                try:
                    with open(p.log_path, "rb") as f:
                        text = f.read().decode("utf-8", "replace")
                except OSError:
                    continue
                for marker in SANITIZER_MARKERS:
                    if marker in text:
                        self.fail(f"{p.name}: '{marker}' in its log ({p.log_path})")
                        break
        report["clients"] = {c.name: {k: v for k, v in r.items() if k != "groups"}
                             for c, r in zip(self.clients, self.client_reports)}
        report["cpu_s_by_process"] = self.cpu_all
        report["crashes"] = self.crashes
        report["exit_codes"] = exit_codes
        report["backlog_unused"] = backlog_left
        if len(self.reloads) != self.prof["reloads"]:
            self.fail(f"{len(self.reloads)} of {self.prof['reloads']} reloads done")
        if len(self.cp_cycles) != self.prof["cp_kills"]:
            self.fail(f"{len(self.cp_cycles)} of {self.prof['cp_kills']} control-plane "
                      f"restarts done")
        report["failures"] = list(self.failures)
        report["passed"] = not self.failures
        report["events"] = self.events
        return report

    @staticmethod
    def _count(rows, key):
        out = {}
        for r in rows:
            out[r[key]] = out.get(r[key], 0) + 1
        return out

    def comeback_summary(self, g):
        """Replies per second of the come-back group around each restart (client clock:
        second i of the series is [client start + i, + i + 1))."""
        rx = g["per_second_received"]
        out = {"restarts": len(self.cb_cycles), "cycles": []}
        for c in self.cb_cycles:
            k, r = int(c["kill_t"]), int(c["restart_t"])
            during = sum(rx[k + 1:r]) if r > k + 1 else 0
            first = next((i - r for i in range(r, len(rx)) if rx[i]), None)
            out["cycles"].append({"kill_s": c["kill_t"], "restart_s": c["restart_t"],
                                  "replies_5s_before": sum(rx[max(0, k - 5):k]),
                                  "replies_while_down": during,
                                  "first_reply_s_after_restart": first,
                                  "replies_5s_after": sum(rx[r + 1:r + 6])})
        return out

    def downtime_summary(self):
        """xDS group: replies while the control plane was down (it must keep forwarding)."""
        g = self.client_reports[1]["groups"][0]
        sent, rx = g["per_second_sent"], g["per_second_received"]
        s = r = 0
        for c in self.cp_cycles:
            k = int(c["kill_t"] - self.client_t0) + 1
            e = int(c["restart_t"] - self.client_t0)
            s += sum(sent[k:e])
            r += sum(rx[k:e])
        return {"sent_while_down": s, "received_while_down": r}


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------

def print_table(rep, header):
    print()
    print(header)
    print(f"{'group':<16}{'clients':>8}{'active':>7}{'sent':>11}{'received':>11}"
          f"{'loss':>8}{'unacc.':>7}{'p50 ms':>8}{'p99 ms':>8}{'p99.9':>8}")
    for g in rep["groups"]:
        lat = g["latency_us"]
        loss = g["sent"] - g["received"]
        un = g.get("unaccounted", "-")
        un = f"{un:.0f}" if isinstance(un, float) else str(un)
        print(f"{g['proxy'][-1] + '/' + g['group']:<16}{g['clients']:>8}{g['active']:>7}"
              f"{g['sent']:>11}{g['received']:>11}{loss:>8}{un:>7}"
              f"{lat['p50'] / 1000:>8.2f}{lat['p99'] / 1000:>8.2f}{lat['p999'] / 1000:>8.2f}")
    for name, c in rep["clients"].items():
        print(f"{name}: {c['sent_total'] / c['duration_s']:.0f} datagrams/s offered, "
              f"{c['clients_total']} distinct clients ({c['concurrent_clients']} at a time), "
              f"schedule max lag {c['max_lag_ms']:.1f} ms, {c['late_sends']} sends >10 ms late")
    print()
    for name, p in rep["proxies"].items():
        rw = p["rss_warm_kib"] or 0
        re_ = p["rss_end_kib"] or 0
        print(f"{name}: read {p['packets_read']:.0f} write {p['packets_write']:.0f} "
              f"errors {p['errors_total']:.0f} peak sessions {p['peak_sessions']} "
              f"(created {p['session_total']:.0f})")
        for k, v in sorted(p["dropped"].items()):
            print(f"    dropped {v:>9.0f}  {k}")
        print(f"    kernel drops: game sockets {p['kernel_drops_game_sockets']}, upstream "
              f"{p['kernel_drops_upstream_sockets'] or 0}; ingress unaccounted "
              f"{p['ingress_unaccounted']:.0f}")
        print(f"    RSS {rw / 1024:.1f} MiB after warm-up, {re_ / 1024:.1f} MiB at end; CPU "
              f"{p['cpu_s']} s ({p['cpu_ms_per_1000_packets']} ms per 1,000 packets); "
              f"/live {p['probes']['ok']} ok {p['probes']['fail']} failed; /metrics "
              f"{p['scrapes']['ok']} ok {p['scrapes']['fail']} failed; exit {p['exit_code']}")
    k = rep["kernel"]
    print(f"kernel drops per process: {k['drops_per_process']}; softnet backlog drops "
          f"{k['softnet_backlog_drops']}; UDP NoPorts +{k['udp_snmp_delta'].get('NoPorts', 0)} "
          f"RcvbufErrors +{k['udp_snmp_delta'].get('RcvbufErrors', 0)}")
    rl = rep["reloads"]
    print(f"reloads: {rl['events']}/{rl['planned']} applied, modes {rl['modes']}, kinds "
          f"{rl['kinds']}, slowest {rl['applied_ms_max']} ms")
    cp = rep["control_plane"]
    rec = [c.get("reconnect_s") for c in cp["cycles"]]
    print(f"control plane: {cp['kills']}/{cp['planned']} SIGKILL+restart, proxy B reconnect s "
          f"{rec}; while down: sent {cp['xds_during_downtime']['sent_while_down']}, received "
          f"{cp['xds_during_downtime']['received_while_down']}")
    for g in rep["groups"]:
        if g["role"] == "blackhole":
            print(f"blackhole: sink received {g['sink_rx']} of {g['sent']} (sink kernel drops "
                  f"{g['sink_kernel_drops']})")
        elif g["role"] == "icmp":
            print(f"icmp: {g['sent']} sent, 0 replies expected; proxy 'send to endpoint "
                  f"failed' (all groups) {g['proxy_send_failed_all_groups']:.0f}, kernel "
                  f"NoPorts +{g['kernel_noports_delta_all']}")
        elif g["role"] == "comeback":
            cyc = g["cycles"]
            around = [(c["replies_5s_before"], c["replies_while_down"], c["replies_5s_after"])
                      for c in cyc]
            print(f"comeback: {g['restarts']} kills+restarts; replies 5 s before / while down "
                  f"/ 5 s after each: {around}"
                  f"; first reply (s after restart): "
                  f"{[c['first_reply_s_after_restart'] for c in cyc]}")
    cp = rep.get("closed_ports")
    if cp:
        print(f"closed ports: icmp sent + comeback lost = {cp['icmp_sent_plus_comeback_lost']}"
              f"; kernel NoPorts {cp['kernel_noports']} + proxy send failed "
              f"{cp['proxy_send_failed']:.0f}; remainder (queued in the killed echo) "
              f"{cp['remainder_lost_in_killed_echo']:.0f}")
    print(f"CPU s by process (last incarnation): {rep['cpu_s_by_process']}")
    print(f"crashes: {len(rep['crashes'])}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    args = ap.parse_args()
    prof = dict(PROFILES[args.profile])
    for key in ("duration", "reloads", "cp_kills"):
        if os.environ.get(f"SOAK_{key.upper()}"):
            prof[key] = int(os.environ[f"SOAK_{key.upper()}"])
    build = os.path.abspath(os.environ.get("SOAK_BUILD", os.path.join(REPO, "build")))
    quilkin = os.path.abspath(os.environ.get("SOAK_QUILKIN", os.path.join(build, "quilkin")))
    for exe in (quilkin, os.path.join(build, "bench_echo"),
                os.path.join(build, "bench_soak_client")):
        if not os.access(exe, os.X_OK):
            sys.exit(f"soak.py: missing {exe} (run make build)")
    work = os.path.abspath(os.environ.get("SOAK_WORKDIR", os.path.join(build, "soak", "run")))
    report_path = os.path.abspath(os.environ.get(
        "SOAK_REPORT", os.path.join(build, "soak", "report.json")))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.makedirs(os.path.dirname(report_path), exist_ok=True)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    h = Harness(args.profile, prof, build, quilkin, work, report_path)
    atexit.register(h.kill_all)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t_start = time.monotonic()
    try:
        rep = h.run()
    except SystemExit:
        log("interrupted: stopping everything")
        raise
    except (RuntimeError, OSError, http.client.HTTPException, ValueError) as e:
        h.stop.set()
        log(f"FAIL: the run could not complete: {e}")
        for p in h.procs:
            if p.alive() or p.p.returncode not in (0, None, -9):
                log(f"{p.name} log tail:\n{p.tail()}")
        return 1
    finally:
        h.stop.set()
        h.kill_all()
    rep["wall_s"] = round(time.monotonic() - t_start, 1)
    na = sum(g[2] for g in h.groups_a)
    header = (f"quilkin-c field harness ({args.profile}): {rep['date']}, {rep['machine']}; "
              f"{prof['duration']} s of traffic, wall {rep['wall_s']} s\n"
              f"clients: {na} on proxy A (file config) + {h.group_b[2]} on proxy B (xDS), "
              f"{sum(g[3] for g in h.groups_a) + h.group_b[3]} active at {PPS[0]}-{PPS[1]} "
              f"pkt/s each, the rest keep-alive at {IDLE_PPS:g} pkt/s; payload 64-1200 B; "
              f"churn {CHURN_PCT:g} %/s; session timeout {prof['session_timeout']} s")
    rep["header"] = header
    with open(report_path + ".tmp", "w") as f:
        json.dump(rep, f, indent=1)
    os.rename(report_path + ".tmp", report_path)
    print_table(rep, header)
    print(f"report: {report_path}; logs: {work}")
    if rep["failures"]:
        print("SOAK FAILED:")
        for m in rep["failures"]:
            print("  - " + m.splitlines()[0])
        return 1
    print("SOAK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
