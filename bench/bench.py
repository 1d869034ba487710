#!/usr/bin/env python3
"""bench.py BUILD_DIR: the body of `make bench` (bench/bench.sh calls it). Runs bench_echo,
nginx's UDP stream proxy and one or more quilkin-c variants side by side on loopback, measures
each path with bench_loadgen in rounds whose order rotates, and prints markdown tables, one
row per path: latency, saturation throughput, a paced load at a fixed offered rate with the
proxies' RTT and CPU per round trip, ratios to direct, to nginx and to the first variant, and
system calls and context switches per round trip. It builds nothing and asserts nothing: it
exits non-zero only when a tool is missing, bench_echo or nginx never forwards, or no quilkin-c
variant starts. A variant that does not start (an option an older binary lacks) is reported
as FAILED with the proxy's output and left out of the tables; the others run. Stdlib only.

Environment (all optional):
  BENCH_QUICK       1: every scenario once, briefly (about 70 s with the three default
                    variants; `make bench-short`)
  BENCH_TARGETS     which paths, in round-1 order (default "direct nginx quilkin"); "quilkin"
                    stands for every variant of BENCH_QUILKIN_VARIANTS, in their order
  BENCH_QUILKIN_VARIANTS  the quilkin-c proxies to run, each its own path: entries separated
                    by ";", each LABEL=ARGS, where ARGS are shell words appended after
                    `proxy ...` and LABEL (letters, digits, ".", "_", "-") names the row
                    (LABEL alone: no arguments; ARGS cannot hold ";"). The label "quilkin" is
                    shown as "quilkin-c". Unset or empty: the default,
                    "quilkin=;quilkin-epoll=--io-backend epoll;quilkin-batch=--coalesce-us 500"
  BENCH_SCENARIOS   subset of "latency throughput paced syscalls" (default all)
  BENCH_ROUNDS      rounds of the latency and paced scenarios; medians are printed (3)
  BENCH_TP_ROUNDS   rounds of the throughput rows (1)
  BENCH_SAMPLES     latency samples per run (20000); BENCH_LAT_SPIN 1: busy-poll replies
  BENCH_DURATION    seconds per throughput run (3)
  BENCH_PACED_RATE  paced: datagrams/s offered over all sessions (20000)
  BENCH_PACED_SESSIONS  paced: session counts, one scenario each ("64 1000")
  BENCH_PACED_SECS  paced: measured seconds per run (10), after a 1 s warm-up
  BENCH_SYSCALL_TOOL  auto (perf, else strace), perf, strace or none
  BENCH_CONFIG      run quilkin with `-c FILE` (@ECHO_PORT@, @PROXY_PORT@ substituted)
                    instead of `--to`
  BENCH_PROXY_ARGS  extra quilkin arguments before `proxy` (word-split), every variant
  BENCH_PROXY_SUBCMD_ARGS  extra arguments after `proxy ...`, e.g. "--workers 1", every
                    variant (before the variant's own ARGS)
  BENCH_NGINX       nginx binary (/usr/sbin/nginx); BENCH_NGINX_MODULE its stream module
  BENCH_NGINX_WORKERS  nginx worker_processes (default: the core count, as quilkin's workers)
The QUILKIN_* variables of the environment (QUILKIN_IO_BACKEND, ...) reach every variant;
the report lists those that are set.
"""

import os
import random
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

NAMES = {"direct": "direct", "nginx": "nginx", "quilkin": "quilkin-c"}
DEFAULT_VARIANTS = "quilkin=;quilkin-epoll=--io-backend epoll;quilkin-batch=--coalesce-us 500"
VARIANT_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
# quilkin's exit status for a usage error (an unknown option): starting again cannot help
USAGE_STATUS = 2
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# The system calls counted by name; the rest are summed as "other" (raw_syscalls:sys_enter
# counts them all). One tracepoint per name: perf opens each on every thread, so the whole
# syscalls:sys_enter_* set (~360) would take seconds to attach and disturb the run.
SYSCALLS = ("epoll_wait epoll_pwait epoll_pwait2 epoll_ctl recvmmsg sendmmsg recvmsg sendmsg "
            "recvfrom sendto read write readv writev io_uring_enter futex poll ppoll select "
            "pselect6 nanosleep clock_nanosleep clock_gettime gettimeofday timerfd_settime "
            "socket connect bind close setsockopt getsockopt getsockname ioctl openat "
            "sched_yield getpid rt_sigprocmask rt_sigtimedwait mmap munmap madvise brk").split()
TRACEFS = ("/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls")


def die(msg):
    print(f"bench.py: {msg}", file=sys.stderr)
    sys.exit(1)


def env_int(name, default, lo=1, hi=10**9):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    if not re.fullmatch(r"\d+", raw) or not lo <= int(raw) <= hi:
        die(f"{name} must be a whole number in [{lo}, {hi}], got {raw!r}")
    return int(raw)


def env_words(name, default):
    return os.environ.get(name, default).replace(",", " ").split()


def display_name(key):
    """A path's name in the tables: the variant label "quilkin" is shown as "quilkin-c"."""
    return NAMES.get(key, key)


def parse_variants(text):
    """BENCH_QUILKIN_VARIANTS ("LABEL=ARGS;LABEL=ARGS", see the top of this file) as a list
    of (label, [arg, ...]). Raises ValueError naming what is wrong."""
    out = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        label, _, args = entry.partition("=")
        label = label.strip()
        if not VARIANT_LABEL.fullmatch(label):
            raise ValueError(f"bad label {label!r} in {entry.strip()!r}: letters, digits, "
                             "'.', '_' and '-', up to 40, not starting with a punctuation mark")
        if label in ("direct", "nginx"):
            raise ValueError(f"label {label!r} names a path that is not a quilkin-c variant")
        if label in (x for x, _ in out):
            raise ValueError(f"label {label!r} given twice")
        if display_name(label) in (display_name(x) for x, _ in out):
            raise ValueError(f"two variants would be shown as {display_name(label)!r}")
        try:
            out.append((label, shlex.split(args)))
        except ValueError as e:
            raise ValueError(f"{label}: {e} in {args.strip()!r}") from None
    if not out:
        raise ValueError(f"no variant in {text!r}")
    return out


class Settings:
    """Everything the environment chooses, read once."""

    def __init__(self):
        self.is_quick = os.environ.get("BENCH_QUICK", "0") == "1"
        q = self.is_quick
        self.targets = env_words("BENCH_TARGETS", "direct nginx quilkin")
        try:
            self.variants = parse_variants(os.environ.get("BENCH_QUILKIN_VARIANTS", "")
                                           or DEFAULT_VARIANTS)
        except ValueError as e:
            die(f"BENCH_QUILKIN_VARIANTS: {e}")
        self.scenarios = env_words("BENCH_SCENARIOS", "latency throughput paced syscalls")
        self.rounds = env_int("BENCH_ROUNDS", 1 if q else 3, hi=100)
        self.tp_rounds = env_int("BENCH_TP_ROUNDS", 1, hi=100)
        self.samples = env_int("BENCH_SAMPLES", 3000 if q else 20000)
        self.lat_warmup = 500 if q else 2000
        self.lat_spin = env_int("BENCH_LAT_SPIN", 0, lo=0, hi=1)
        self.tp_secs = env_int("BENCH_DURATION", 1 if q else 3, hi=3600)
        self.tp_warmup_ms = 200 if q else 300
        self.rate = env_int("BENCH_PACED_RATE", 20000, hi=10**7)
        self.paced_sessions = [int(s) for s in env_words("BENCH_PACED_SESSIONS", "64 1000")
                               if s.isdigit() and 1 <= int(s) <= 4096]
        self.paced_secs = env_int("BENCH_PACED_SECS", 2 if q else 10, hi=3600)
        self.paced_warmup_ms = 300 if q else 1000
        self.paced_drain_ms = 500 if q else 1000
        self.syscall_tool = os.environ.get("BENCH_SYSCALL_TOOL", "auto")
        self.config = os.environ.get("BENCH_CONFIG", "")
        self.proxy_args = shlex.split(os.environ.get("BENCH_PROXY_ARGS", ""))
        self.subcmd_args = shlex.split(os.environ.get("BENCH_PROXY_SUBCMD_ARGS", ""))
        self.nginx = os.environ.get("BENCH_NGINX", "/usr/sbin/nginx")
        self.nginx_module = os.environ.get("BENCH_NGINX_MODULE", NGINX_MODULE)
        self.nginx_workers = env_int("BENCH_NGINX_WORKERS", os.cpu_count() or 1, hi=64)
        for t in self.targets:
            if t not in NAMES:
                die(f"BENCH_TARGETS: unknown target {t!r} (direct, nginx, quilkin)")
        if len(set(self.targets)) != len(self.targets):
            die(f"BENCH_TARGETS: a target named twice in {self.targets}")
        for s in self.scenarios:
            if s not in ("latency", "throughput", "paced", "syscalls"):
                die(f"BENCH_SCENARIOS: unknown scenario {s!r}")
        if self.syscall_tool not in ("auto", "perf", "strace", "none"):
            die("BENCH_SYSCALL_TOOL must be auto, perf, strace or none")
        if self.config and not os.access(self.config, os.R_OK):
            die(f"BENCH_CONFIG={self.config} is not readable")


# --- /proc readings -----------------------------------------------------------------------

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def children_of(ppid):
    """Pids whose parent is ppid (nginx's workers)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            stat = read(f"/proc/{d}/stat")
            rest = stat[stat.rfind(")") + 2:].split()
            if len(rest) > 1 and rest[1] == str(ppid):
                out.append(int(d))
    return out


def tasks(pid):
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def usage(pids):
    """CPU ns (on-CPU time of every thread, /proc/PID/task/TID/schedstat) and voluntary and
    nonvoluntary context switches summed over pids. A thread that exits between two readings
    takes its share with it; the proxies' threads live for the whole bench."""
    cpu = vcs = nvcs = 0
    for pid in pids:
        for tid in tasks(pid):
            fields = read(f"/proc/{pid}/task/{tid}/schedstat").split()
            if fields:
                cpu += int(fields[0])
            for line in read(f"/proc/{pid}/task/{tid}/status").splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vcs += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    nvcs += int(line.split()[1])
    return {"t": time.monotonic(), "cpu_ns": cpu, "vcs": vcs, "nvcs": nvcs}


def hwm_kib(pids):
    total = 0
    for pid in pids:
        m = re.search(r"^VmHWM:\s+(\d+)", read(f"/proc/{pid}/status"), re.M)
        total += int(m.group(1)) if m else 0
    return total


def loadavg():
    return " ".join(read("/proc/loadavg").split()[:3]) or "n/a"


def fields_of(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def num(d, key):
    try:
        return float(d[key])
    except (KeyError, TypeError, ValueError):
        return None


# --- processes ----------------------------------------------------------------------------

def free_port():
    """A UDP port below the ephemeral range (client sockets never take it) that is free on
    127.0.0.1 now. Racy by nature; callers retry a failed start."""
    for _ in range(200):
        p = random.randrange(20000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    die("no free UDP port found")


def wait_exit(proc, secs):
    try:
        proc.wait(timeout=secs)
        return True
    except subprocess.TimeoutExpired:
        return False


def stop(proc, extra_pids=(), signals=(signal.SIGTERM,)):
    """Ends proc (one of ours) with each of signals in turn, then SIGKILL, and waits; then
    SIGKILLs extra_pids (nginx workers) that are still nginx processes."""
    if proc is None:
        return
    for i, sig in enumerate(signals):
        if proc.poll() is None:
            proc.send_signal(sig)
            # by position: (SIGTERM, SIGTERM) gives the first one 0.3 s, not the last one's 3 s
            wait_exit(proc, 3 if i == len(signals) - 1 else 0.3)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pid in extra_pids:
        if read(f"/proc/{pid}/comm").strip() == "nginx":
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class StartError(Exception):
    """A process that never forwarded: how it ended (status), its argv and the last lines of
    its output (standard output and error)."""

    def __init__(self, status, argv, tail):
        super().__init__(f"{status}: {shlex.join(argv)}")
        self.status, self.argv, self.tail = status, argv, tail

    def summary(self):
        """The status and the first line of output that says something."""
        said = [x.strip() for x in self.tail if x.strip()]
        return f"{self.status}: {said[0]}" if said else self.status


class Target:
    """One path to the echo server: direct, or through a proxy process we started. key names
    it ("direct", "nginx" or a variant's label), kind is "direct", "nginx" or "quilkin"."""

    def __init__(self, key, kind, port, proc=None, desc=""):
        self.key, self.kind, self.port, self.proc, self.desc = key, kind, port, proc, desc
        self.name = display_name(key)

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        if self.kind == "nginx":
            return [self.proc.pid] + children_of(self.proc.pid)
        return [self.proc.pid]

    def is_alive(self):
        return self.proc is None or self.proc.poll() is None

    def usage(self):
        return usage(self.pids())


class Bench:
    def __init__(self, build, st):
        self.build, self.st = build, st
        self.quilkin = os.path.join(build, "quilkin")
        self.echo_bin = os.path.join(build, "bench_echo")
        self.loadgen = os.path.join(build, "bench_loadgen")
        for exe in (self.quilkin, self.echo_bin, self.loadgen):
            if not os.access(exe, os.X_OK):
                die(f"missing executable {exe} (build first: make build)")
        if "nginx" in st.targets:
            if not os.access(st.nginx, os.X_OK) or not os.access(st.nginx_module, os.R_OK):
                die(f"nginx target needs {st.nginx} and {st.nginx_module} "
                    "(scripts/install-deps.sh --bench installs them)")
        self.tmp = tempfile.mkdtemp(prefix="quilkin-bench.")
        self.procs = []  # (Popen, how to stop it)
        self.err = open(os.path.join(self.tmp, "loadgen.err"), "wb")
        self.targets = {}  # key -> Target, in round-1 order
        self.failed = {}   # variant label -> the StartError that says why it did not start
        self.raw = []  # (label, RESULT line) of every run, for the raw section
        self.round = 0  # 1-based round of the runs now under way (0: the syscall pass)

    def start(self, argv, log):
        f = open(os.path.join(self.tmp, log), "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        return p

    def probe(self, port, ms):
        r = subprocess.run([self.loadgen, "--target", f"127.0.0.1:{port}", "--mode", "probe",
                            "--timeout-ms", str(ms)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=ms / 1000 + 5, check=False)
        return r.returncode == 0

    def start_until_up(self, what, make_argv, log, kind=None, attempts=3):
        """Starts make_argv(port) on fresh ports until it forwards (probes in 1 s slices for
        up to 10 s, noticing an early exit; a usage error is not retried) and stops a failed
        attempt as stop_proc stops kind (default: what). Returns (Popen, port); raises
        StartError when the last attempt failed."""
        for attempt in range(attempts):
            port = free_port()
            argv = make_argv(port)
            p = self.start(argv, log)
            is_up = False
            for _ in range(10):
                if p.poll() is not None:
                    break
                if self.probe(port, 1000):
                    is_up = True
                    break
            if is_up:
                return p, port
            code = p.poll()
            status = ("did not forward within 10 s" if code is None
                      else f"exited with status {code}" if code >= 0
                      else f"killed by signal {-code}")
            tail = read(os.path.join(self.tmp, log)).splitlines()[-10:]
            print(f"bench.py: {what} {status} (attempt {attempt + 1}): "
                  f"{shlex.join(argv)}\n  " + "\n  ".join(tail), file=sys.stderr)
            self.stop_proc(p, kind or what)
            if code == USAGE_STATUS:
                break
        raise StartError(status, argv, tail)

    def stop_proc(self, p, what):
        if what == "nginx":
            workers = children_of(p.pid)
            stop(p, workers)
        elif what == "quilkin":
            # one SIGTERM makes quilkin drain its sessions for up to 60 s; the second ends it
            stop(p, signals=(signal.SIGTERM, signal.SIGTERM))
        else:
            stop(p)

    def setup(self):
        """Starts bench_echo, nginx and every quilkin-c variant (dies if echo or nginx does
        not forward, or if no variant does; a variant that does not start goes to failed)."""
        try:
            echo, eport = self.start_until_up("bench_echo",
                                              lambda p: [self.echo_bin, str(p)], "echo.log")
            self.procs.append((echo, "echo"))
            self.echo_port = eport
            for kind in self.st.targets:
                if kind == "direct":
                    self.targets[kind] = Target(kind, kind, eport,
                                                desc=f"bench_echo 127.0.0.1:{eport}")
                elif kind == "nginx":
                    p, port = self.start_until_up("nginx", self.nginx_argv, "nginx.log")
                    self.procs.append((p, "nginx"))
                    self.targets[kind] = Target(kind, kind, port, p, self.nginx_desc)
                else:
                    for label, args in self.st.variants:
                        self.start_variant(label, args)
        except StartError as e:
            die(f"failed to start ({e.summary()}): {shlex.join(e.argv)}")
        if "quilkin" in self.st.targets and len(self.failed) == len(self.st.variants):
            die("no quilkin-c variant started: "
                + "; ".join(f"{k}: {e.summary()}" for k, e in self.failed.items()))

    def start_variant(self, label, args):
        try:
            p, port = self.start_until_up(label, lambda port: self.quilkin_argv(port, args),
                                          f"{label}.log", kind="quilkin")
        except StartError as e:
            self.failed[label] = e
            return
        self.procs.append((p, "quilkin"))
        desc = self.quilkin_desc + "".join(f" {shlex.quote(a)}" for a in args)
        self.targets[label] = Target(label, "quilkin", port, p, desc)

    def nginx_argv(self, port):
        # proxy_responses is left unset (unlimited): a UDP session then lives until it has
        # been idle for proxy_timeout, like a Quilkin session (60 s). `proxy_responses 1`
        # would end the session after each reply, which is DNS, not game traffic.
        # Each UDP session is two connections (client side, upstream) and one descriptor;
        # 1,000-session runs repeat while earlier sessions wait out proxy_timeout.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if nofile == resource.RLIM_INFINITY or nofile > 1 << 20:
            nofile = 1 << 20
        conns = max(1024, min(16384, nofile - 64))
        d = self.tmp
        conf = f"""load_module {self.st.nginx_module};
daemon off;
master_process on;
user root;
worker_processes {self.st.nginx_workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections {conns}; }}
stream {{
    server {{
        listen 127.0.0.1:{port} udp reuseport;
        proxy_pass 127.0.0.1:{self.echo_port};
        proxy_timeout 60s;
    }}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.nginx_desc = (f"nginx {self.st.nginx_workers} workers, udp reuseport, "
                           f"proxy_timeout 60s, worker_connections {conns}")
        return [self.st.nginx, "-p", d, "-c", os.path.join(d, "nginx.conf"),
                "-e", os.path.join(d, "nginx-error.log")]

    def quilkin_argv(self, port, variant_args=()):
        qport = free_port()  # QCMP: not the default 7600, which another proxy may hold
        st = self.st
        if st.config:
            with open(st.config) as f:
                text = f.read()
            # one file per proxy: quilkin watches its file, a rewrite would reload a variant
            cfg = os.path.join(self.tmp, f"config-{port}.yaml")
            with open(cfg, "w") as f:
                f.write(text.replace("@ECHO_PORT@", str(self.echo_port))
                        .replace("@PROXY_PORT@", str(port)))
            self.quilkin_desc = f"config {st.config}"
            return [self.quilkin, "--no-admin", *st.proxy_args, "-c", cfg, "proxy", "--port",
                    str(port), "--qcmp-port", str(qport), *st.subcmd_args, *variant_args]
        self.quilkin_desc = f"--to 127.0.0.1:{self.echo_port}"
        return [self.quilkin, "--no-admin", *st.proxy_args, "proxy", "--port", str(port),
                "--qcmp-port", str(qport), "--to", f"127.0.0.1:{self.echo_port}",
                *st.subcmd_args, *variant_args]

    def close(self):
        for p, what in reversed(self.procs):
            self.stop_proc(p, what)
        self.procs = []
        self.err.close()
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    # --- running the load generator ------------------------------------------------------

    def loadgen_run(self, target, args, timeout_s, on_mark=None, label=""):
        """Runs bench_loadgen against target; calls on_mark("start"|"end") as the paced mode
        prints its MARK lines. Returns the RESULT fields (dict) or None."""
        if not target.is_alive():
            return None
        cmd = [self.loadgen, "--target", f"127.0.0.1:{target.port}", *args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err)
        fd, buf, result = p.stdout.fileno(), b"", None
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    if text.startswith("MARK ") and on_mark:
                        on_mark(text[5:].strip())
                    elif text.startswith("RESULT "):
                        result = fields_of(text)
                        where = f"round {self.round}" if self.round else "syscall pass"
                        self.raw.append((f"{where}, {label}, {target.name}", text))
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        return result

    def latency(self, target):
        st = self.st
        args = ["--mode", "latency", "--size", "64", "--samples", str(st.samples),
                "--warmup", str(st.lat_warmup), "--spin", str(st.lat_spin)]
        return self.loadgen_run(target, args, 75, label="latency")

    def throughput(self, target, size, sessions):
        """One saturation run; the proxy's CPU over the whole run (warm-up included)."""
        st = self.st
        args = ["--mode", "throughput", "--size", str(size), "--sessions", str(sessions),
                "--duration", str(st.tp_secs), "--warmup-ms", str(st.tp_warmup_ms)]
        u0 = target.usage()
        r = self.loadgen_run(target, args, st.tp_secs + 20, label=f"tp{size}x{sessions}")
        u1 = target.usage()
        if r and target.proc is not None:
            add_cost(r, u0, u1, num(r, "received"))
        return r

    def paced_args(self, sessions):
        st = self.st
        return ["--mode", "paced", "--size", "64", "--rate", str(st.rate), "--sessions",
                str(sessions), "--duration", str(st.paced_secs), "--warmup-ms",
                str(st.paced_warmup_ms), "--drain-ms", str(st.paced_drain_ms)]

    def paced_timeout(self):
        st = self.st
        return st.paced_secs + (st.paced_warmup_ms + st.paced_drain_ms) / 1000 + 20

    def paced(self, target, sessions):
        """One paced run; proxy CPU and context switches between the MARK lines only, so the
        warm-up (session creation) and the drain are left out."""
        marks = {}
        r = self.loadgen_run(target, self.paced_args(sessions), self.paced_timeout(),
                             lambda m: marks.setdefault(m, target.usage()),
                             label=f"paced{sessions}")
        if r and "start" in marks and "end" in marks:
            r["wall_s"] = marks["end"]["t"] - marks["start"]["t"]
            if target.proc is not None:
                add_cost(r, marks["start"], marks["end"], num(r, "received"))
        return r


def add_cost(r, u0, u1, rts):
    """Adds the proxy's cost between readings u0 and u1 to result r, per round trip."""
    wall = u1["t"] - u0["t"]
    cpu_s = (u1["cpu_ns"] - u0["cpu_ns"]) / 1e9
    r["cores"] = cpu_s / wall if wall > 0 else None
    if rts:
        r["cpu_us_rt"] = cpu_s * 1e6 / rts
        r["rt_per_cpu_s"] = rts / cpu_s if cpu_s > 0 else None
        r["vcs_rt"] = (u1["vcs"] - u0["vcs"]) / rts
        r["nvcs_rt"] = (u1["nvcs"] - u0["nvcs"]) / rts


# --- system call counting -------------------------------------------------------------------

def syscall_names():
    for d in TRACEFS:
        if os.path.isdir(d):
            return [s for s in SYSCALLS if os.path.isdir(os.path.join(d, f"sys_enter_{s}"))]
    return list(SYSCALLS)


class Fifo:
    """perf's --control pair: commands on ctl, "ack" back on ack. Opened O_RDWR so neither
    open blocks on the other side."""

    def __init__(self, d):
        self.ctl, self.ack = os.path.join(d, "perf.ctl"), os.path.join(d, "perf.ack")
        for p in (self.ctl, self.ack):
            if os.path.exists(p):
                os.unlink(p)
            os.mkfifo(p)
        self.ctl_fd = os.open(self.ctl, os.O_RDWR)
        self.ack_fd = os.open(self.ack, os.O_RDWR)

    def command(self, cmd, timeout_s=10):
        os.write(self.ctl_fd, (cmd + "\n").encode())
        ready, _, _ = select.select([self.ack_fd], [], [], timeout_s)
        return bool(ready) and b"ack" in os.read(self.ack_fd, 64)

    def close(self):
        os.close(self.ctl_fd)
        os.close(self.ack_fd)


def count_perf(bench, target, sessions):
    """count_perf_once, tried a second time if the first run counted nothing."""
    r = count_perf_once(bench, target, sessions)
    return r if r[0] else count_perf_once(bench, target, sessions)


def count_perf_once(bench, target, sessions):
    """Counts target's system calls by name with `perf stat` tracepoints, enabled only between
    the loadgen's MARK lines. Returns (per-name counts, round trips, usage delta, note)."""
    names = syscall_names()
    events = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{s}" for s in names])
    out = os.path.join(bench.tmp, f"perf-{target.key}.csv")
    fifo = Fifo(bench.tmp)
    pids = target.pids()
    with open(out + ".err", "wb") as err:
        perf = subprocess.Popen(["perf", "stat", "-x,", "--no-big-num", "-D", "-1", "--control",
                                 f"fifo:{fifo.ctl},{fifo.ack}", "-o", out, "-e", events, "-p",
                                 ",".join(map(str, pids))],
                                stdout=subprocess.DEVNULL, stderr=err)
    marks = {}

    def on_mark(m):
        marks[m] = target.usage()
        marks[m + "_ok"] = fifo.command("enable" if m == "start" else "disable")

    try:
        # perf answers only once every event is open: wait for that before the load starts
        is_ready = fifo.command("disable", timeout_s=30)
        r = bench.loadgen_run(target, bench.paced_args(sessions), bench.paced_timeout(),
                              on_mark if is_ready else None, label=f"syscalls{sessions}")
    finally:
        stop(perf, signals=(signal.SIGINT,))
        fifo.close()
    if not (r and marks.get("start_ok") and marks.get("end_ok")):
        err = " ".join(read(out + ".err").split())[:200]
        return None, None, None, f"perf did not count (ready={is_ready}): {err}"
    counts = {}
    for line in read(out).splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].isdigit():
            counts[parts[2].split(":")[-1].replace("sys_enter_", "")] = int(parts[0])
    if "sys_enter" not in counts:
        lines = [x for x in read(out).splitlines() if "raw_syscalls" in x]
        return None, None, None, f"perf counted nothing: {lines[:1]}"
    counts["all"] = counts.pop("sys_enter")
    return counts, num(r, "received"), (marks["start"], marks["end"]), \
        "perf stat tracepoints (syscalls:sys_enter_*), counted between the MARK lines"


STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def count_strace(bench, target, sessions):
    """The fallback: `strace -c -f` attached for the whole loadgen run (it cannot be switched
    on and off, so the warm-up is in the counts and in the round trips divided by). strace
    stops the target at every system call: nothing else is measured in this pass."""
    out = os.path.join(bench.tmp, f"strace-{target.key}.txt")
    argv = ["strace", "-c", "-f", "-qq", "-o", out]
    for pid in target.pids():
        argv += ["-p", str(pid)]
    tr = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attaching has no completion signal; it takes milliseconds
        marks = {}
        r = bench.loadgen_run(target, bench.paced_args(sessions), bench.paced_timeout(),
                              lambda m: marks.setdefault(m, target.usage()),
                              label=f"syscalls{sessions}")
    finally:
        stop(tr, signals=(signal.SIGINT,))
    counts = {}
    for line in read(out).splitlines():
        m = STRACE_ROW.match(line)
        if m:
            counts["all" if m.group(2) == "total" else m.group(2)] = int(m.group(1))
    if not r or "all" not in counts:
        return None, None, None, "strace counted nothing"
    rts = (num(r, "received") or 0) + (num(r, "warmup_received") or 0)
    span = (marks["start"], marks["end"]) if "start" in marks and "end" in marks else None
    return counts, rts, span, ("strace -c -f, attached for the whole run (warm-up included); "
                               "strace stops the target at every call, so its batches grow "
                               "and calls per round trip read low; this pass's CPU is unused")


def perf_works(bench):
    """True if perf can count a tracepoint on a process of ours."""
    try:
        r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--",
                            "true"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and re.search(rb"^\d+,", r.stderr, re.M) is not None


# --- reporting ------------------------------------------------------------------------------

def median(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(v, kind):
    if v is None:
        return "n/a"
    return {"us": f"{v:.1f}", "n": f"{v:,.0f}", "cores": f"{v:.3f}", "per": f"{v:.2f}",
            "x": f"{v:.2f}x", "pct": f"{v:.2f}"}[kind]


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def table(headers, rows):
    """A markdown table padded to line up in a terminal."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()


class Report:
    """Collects per-round results and prints the tables, one row per path (direct, nginx and
    each quilkin-c variant that started), in round-1 order."""

    def __init__(self, bench):
        self.b, self.st = bench, bench.st
        self.kinds = list(bench.targets)
        self.proxies = [k for k in self.kinds if bench.targets[k].kind != "direct"]
        self.variants = [k for k in self.kinds if bench.targets[k].kind == "quilkin"]
        self.lat = {k: [] for k in self.kinds}
        self.tp = {}      # (size, sessions) -> key -> [results]
        self.paced = {}   # sessions -> key -> [results]
        self.sys = {}     # key -> (counts, rts, span, note)

    def name(self, k):
        return self.b.targets[k].name

    def med(self, runs, key):
        return median([num(r, key) if r else None for r in runs])

    def bases(self):
        """What the ratios divide by: direct, nginx and, with two variants or more, the
        first variant (the others are compared with it)."""
        out = [k for k in ("direct", "nginx") if k in self.kinds]
        return out + self.variants[:1] if len(self.variants) > 1 else out

    def ratio_cells(self, k, get, bases):
        """k's value divided by each base's ("" where k is the base)."""
        return ["" if k == b else fmt(ratio(get(k), get(b)), "x") for b in bases]

    def print_latency(self):
        n = len(self.lat[self.kinds[0]])
        print(f"## Latency: one client ping-pong, 64 B (µs, median of {n} round(s))\n")
        cols = (("min_us", "min"), ("p50_us", "p50"), ("p99_us", "p99"),
                ("p999_us", "p99.9"))
        rows = [[self.name(k)] + [fmt(self.med(self.lat[k], key), "us") for key, _ in cols]
                + [fmt(self.med(self.lat[k], "lost"), "n")] for k in self.kinds]
        table(["path"] + [label for _, label in cols] + ["lost"], rows)

    def print_throughput(self):
        print(f"## Saturation throughput (echoed round trips/s, {self.st.tp_secs} s runs, "
              f"median of {self.st.tp_rounds} round(s))\n")
        bases = [k for k in ("direct", "nginx") if k in self.kinds]
        rows = []
        for (size, sessions), per in self.tp.items():
            def pps(k, per=per):
                return self.med(per[k], "pps")
            for k in self.kinds:
                rows.append([f"{size} B x {sessions}", self.name(k), fmt(pps(k), "n")]
                            + self.ratio_cells(k, pps, bases)
                            + [fmt(self.med(per[k], "cpu_us_rt"), "per"),
                               fmt(self.med(per[k], "loss_pct"), "pct")])
        table(["size x sessions", "path", "round trips/s"]
              + [f"/ {self.name(b)}" for b in bases] + ["proxy CPU µs/rt", "loss %"], rows)

    PACED_COLS = (
        ("sent_pps", "sent/s", "n"),
        ("sent", "sent", "n"),
        ("lost", "lost", "n"),
        ("late", "late", "n"),
        ("skipped", "skipped", "n"),
        ("p50_us", "RTT p50 µs", "us"),
        ("p99_us", "RTT p99 µs", "us"),
        ("p999_us", "RTT p99.9 µs", "us"),
        ("cores", "cores", "cores"),
        ("rt_per_cpu_s", "rt/CPU-s", "n"),
        ("cpu_us_rt", "CPU µs/rt", "per"),
        ("vcs_rt", "wake-ups/rt", "per"),
        ("nvcs_rt", "nonvol cs/rt", "per"),
    )

    def print_paced(self):
        for sessions, per in self.paced.items():
            n = max(len(v) for v in per.values())
            pps = self.st.rate / sessions
            print(f"## Paced: {sessions} sessions x 64 B, {self.st.rate:,} datagrams/s offered "
                  f"({pps:g} per session), {self.st.paced_secs} s (median of {n} round(s))\n")
            rows = [[self.name(k)] + [fmt(self.med(per[k], key), kind)
                                      for key, _, kind in self.PACED_COLS]
                    for k in self.kinds]
            table(["path"] + [label for _, label, _ in self.PACED_COLS], rows)
        if self.paced:
            print("sent/s: the offered rate achieved; lost: sent - received; late: sent >200 µs "
                  "after its slot; skipped: slots skipped (sender >2 ms behind); cores: proxy "
                  "CPU-s / wall-s; rt/CPU-s: round trips per proxy CPU-second; wake-ups/rt and "
                  "nonvol cs/rt: the proxy's voluntary and nonvoluntary context switches per "
                  "round trip\n")

    def ratio_metrics(self):
        """(label, get(key)) of every metric the ratio table compares."""
        out = []
        for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
            if self.lat[self.kinds[0]]:
                out.append((f"latency {label}", lambda k, key=key: self.med(self.lat[k], key)))
        if (64, 64) in self.tp:
            out.append(("throughput 64 B x 64 sessions",
                        lambda k, p=self.tp[(64, 64)]: self.med(p[k], "pps")))
        for sessions, per in self.paced.items():
            for key, label in (("p50_us", "RTT p50"), ("p99_us", "RTT p99"),
                               ("p999_us", "RTT p99.9"), ("cpu_us_rt", "CPU per round trip"),
                               ("vcs_rt", "wake-ups per round trip")):
                out.append((f"paced {sessions} sessions: {label}",
                            lambda k, p=per, key=key: self.med(p[k], key)))
        return out

    def print_ratios(self):
        bases = self.bases()
        if not (self.variants and len(self.kinds) > 1):
            return
        rows = []
        for label, get in self.ratio_metrics():
            for k in self.proxies:
                # nginx is compared with direct only, a variant with every base
                cells = self.ratio_cells(k, get, bases)
                if k not in self.variants:
                    cells = [c if b == "direct" else "" for c, b in zip(cells, bases)]
                if any(c not in ("", "n/a") for c in cells):  # CPU has no direct counterpart
                    rows.append([label, self.name(k)] + cells)
        print("## Ratios: each path divided by the others (RTT, CPU, wake-ups: below 1 is "
              "better; throughput: above 1 is better)\n")
        table(["metric", "path"] + [f"/ {self.name(b)}" for b in bases], rows)

    def print_syscalls(self):
        if not self.sys:
            return
        kinds = [k for k in self.proxies if k in self.sys]
        ok = {k: v for k, v in self.sys.items() if v[0]}
        sessions = self.st.paced_sessions[0]
        print(f"## System calls and context switches per round trip (paced {sessions} sessions, "
              f"{self.st.rate:,}/s, one run each)\n")
        for k in kinds:
            print(f"{self.name(k)}: {self.sys[k][3]}")
        print()
        if not ok:
            return
        per = {k: {n: c / v[1] for n, c in v[0].items()} if v[1] else {} for k, v in ok.items()}
        names = sorted({n for p in per.values() for n, x in p.items()
                        if n != "all" and x >= 0.005},
                       key=lambda n: -max(p.get(n, 0) for p in per.values()))
        rows = []
        for k in kinds:
            p, v = per.get(k), ok.get(k)
            if p is None:
                rows.append([self.name(k)] + ["n/a"] * (len(names) + 5))
                continue
            other = p.get("all", 0) - sum(x for n, x in p.items() if n in names)
            cs = [fmt((v[2][1][key] - v[2][0][key]) / v[1], "per") if v[2] and v[1] else "n/a"
                  for key in ("vcs", "nvcs")]
            rows.append([self.name(k), fmt(p.get("all"), "per")]
                        + [fmt(p.get(n, 0.0), "per") for n in names]
                        + [fmt(other, "per")] + cs + [fmt(v[1], "n")])
        table(["path", "all calls"] + names + ["other", "wake-ups", "nonvol cs",
                                               "round trips"], rows)


# --- the run ----------------------------------------------------------------------------------

def rotated(kinds, r):
    return kinds[r % len(kinds):] + kinds[:r % len(kinds)]


def run(bench, rep):
    st = bench.st
    kinds = rep.kinds
    tp_rows = [(64, 1), (64, 64), (1200, 1), (1200, 64)]
    for r in range(max(st.rounds, st.tp_rounds)):
        order = rotated(kinds, r)
        bench.round = r + 1
        print(f"round {r + 1}: {', '.join(rep.name(k) for k in order)}", file=sys.stderr)
        if "latency" in st.scenarios and r < st.rounds:
            for k in order:
                rep.lat[k].append(bench.latency(bench.targets[k]))
        if "throughput" in st.scenarios and r < st.tp_rounds:
            for size, sessions in tp_rows:
                for k in order:
                    rep.tp.setdefault((size, sessions), {x: [] for x in kinds})[k].append(
                        bench.throughput(bench.targets[k], size, sessions))
        if "paced" in st.scenarios and r < st.rounds:
            for sessions in st.paced_sessions:
                for k in order:
                    rep.paced.setdefault(sessions, {x: [] for x in kinds})[k].append(
                        bench.paced(bench.targets[k], sessions))
    bench.round = 0
    if "syscalls" in st.scenarios and st.syscall_tool != "none" and st.paced_sessions:
        tool = st.syscall_tool
        if tool == "auto":
            tool = "perf" if perf_works(bench) else "strace"
        for k in rep.proxies:
            target = bench.targets[k]
            print(f"syscall pass ({tool}): {target.name}", file=sys.stderr)
            if not target.is_alive():
                rep.sys[k] = (None, None, None, "not counted: the proxy exited during the run")
                continue
            count = count_perf if tool == "perf" else count_strace
            rep.sys[k] = count(bench, target, st.paced_sessions[0])


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        die("usage: bench.py BUILD_DIR")
    st = Settings()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:  # 1,000 sessions: nginx, quilkin and the loadgen inherit the whole hard limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    load_before = loadavg()
    t_start = time.monotonic()
    bench = Bench(os.path.abspath(sys.argv[1]), st)
    try:
        bench.setup()
        rep = Report(bench)
        run(bench, rep)
        print_report(bench, rep, load_before, time.monotonic() - t_start)
    finally:
        bench.close()
    return 0


def print_report(bench, rep, load_before, secs):
    st = bench.st
    order = ", ".join(rep.name(k) for k in rep.kinds)
    print(f"\n# quilkin-c bench: {order} ({'quick' if st.is_quick else 'full'})\n")
    u = os.uname()
    print(f"- host: {os.cpu_count()} cores, Linux {u.release}; loadavg before: {load_before}, "
          f"after: {loadavg()} (1/5/15 min; above {os.cpu_count()} the bench shares its cores)")
    for k in rep.kinds:
        t = bench.targets[k]
        extra = ""
        if t.proc is not None:
            pids = t.pids()
            extra = (f"; {len(pids)} process(es), peak RSS {hwm_kib(pids) / 1024:.1f} MiB"
                     if pids else "; EXITED during the run")
        print(f"- {t.name}: 127.0.0.1:{t.port} {t.desc}{extra}")
    for label, e in bench.failed.items():
        print(f"- {display_name(label)}: FAILED to start ({e.status}), in no table: "
              f"{shlex.join(e.argv)}" + "".join(f"\n    {x}" for x in e.tail if x.strip()))
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("QUILKIN_")]
    if env and rep.variants:
        print(f"- environment of every quilkin-c variant: {' '.join(env)}")
    print(f"- rounds: {st.rounds} (latency, paced), {st.tp_rounds} (throughput); the order of "
          f"the paths rotates each round; each row is the median of the rounds, metric by "
          f"metric; {secs:.0f} s in all")
    print("- RTT: bench_loadgen's clock from send to echo; paced percentiles from a log-linear "
          "histogram (1.6 % buckets); proxy CPU: schedstat of every proxy thread (nginx: "
          "master and workers) over the measured window\n")
    if rep.lat[rep.kinds[0]]:
        rep.print_latency()
    if rep.tp:
        rep.print_throughput()
    if rep.paced:
        rep.print_paced()
    rep.print_ratios()
    rep.print_syscalls()
    print("raw results:")
    for label, line in bench.raw:
        print(f"  {label}: {line}")
    errs = read(os.path.join(bench.tmp, "loadgen.err")).splitlines()
    if errs:
        print("loadgen stderr:")
        for line in sorted(set(errs))[:5]:
            print(f"  {line}")
    for t in bench.targets.values():
        if not t.is_alive():
            log = "nginx-error.log" if t.kind == "nginx" else f"{t.key}.log"
            print(f"WARNING: {t.name} exited during the run; last log lines:")
            for line in read(os.path.join(bench.tmp, log)).splitlines()[-10:]:
                print(f"  {line}")
    for label, e in bench.failed.items():
        print(f"FAILED: {display_name(label)} did not start ({e.summary()})")


if __name__ == "__main__":
    sys.exit(main())
