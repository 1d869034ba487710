#!/usr/bin/python3
"""bench/xds_fleet.py: the xDS server harness, `make xds-bench` (200 streams, 20 changes) and
`make xds-bench-short` (50 streams, 3 changes, small hostile scenarios).

Measures `quilkin manage file PATH` (spec xds.md §7, §8.1) on loopback:
  fleet    N ADS streams from one process (bench_xds_fleet fleet), each subscribed to Cluster
           and Listener and ACKing every response at once. Reports manage's RSS per stream,
           its CPU per change, and the propagation time from a provider file change (write to
           a temporary file + rename, timed with CLOCK_REALTIME) to each stream's ACK of the
           new Cluster version: p50/p99/max per (stream, change), and per change until the
           last stream ACKed ("every stream").
  hostile  each scenario of bench_xds_fleet hostile in turn, against a fresh manage with a few
           legitimate streams: manage's peak RSS (sampled every 50 ms; manage is killed above
           2 GiB), RSS afterwards, what the server answered, whether /live stayed 200, whether
           the legitimate streams still received a change pushed during the attack, and
           whether a new stream could subscribe during it.
Prints Markdown tables and writes a JSON report (default build/xds_fleet/report.json). It
reports, it never asserts: exit 1 only when the harness itself could not run (manage never
ready, the fleet never subscribed). Every wait is bounded; every process is SIGKILLed at the
end. The small helpers (ports, HTTP, metrics, /proc) are bench/soak.py's.

Usage: bench/xds_fleet.py --build DIR [--streams 200] [--changes 20] [--hostile full|small|none]
       [--report FILE]
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import (b64, free_ports, http_get, metric, parse_metrics,  # noqa: E402
                  proc_cpu_s, proc_rss_kib, write_rename)

ENDPOINTS = 100
LEGIT_STREAMS = 4
RSS_CAP_KIB = 2 * 1024 * 1024  # manage is killed above this
SAMPLE_S = 0.05
PER_PEER_CAP = 256  # > the 200-stream fleet and its few legitimate extras
READY_DEADLINE = 15.0
SUBSCRIBE_DEADLINE = 60.0
PROPAGATION_DEADLINE = 15.0
CHANGE_PAUSE = 1.0
ATTACK_CHANGE_AT = 2.0      # s into a hostile scenario: push a change, start a newcomer
NEWCOMER_DEADLINE = 10.0
CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
TOKEN_ROUTER = "quilkin.filters.token_router.v1alpha1.TokenRouter"

# (scenario, arguments, the longest it may take in s)
HOSTILE = {
    "full": [
        ("half-messages", ["--conns", "12", "--streams", "100", "--declared-bytes",
                           str(8 << 20), "--partial-bytes", str(7 << 20), "--duration-s", "60"],
         75),
        ("many-names", ["--names", "1000000", "--repeats", "3", "--hold-s", "5"], 90),
        ("idle-conns", ["--conns", "1100", "--source-ip", "127.0.0.2", "--hold-s", "20"], 40),
        ("slow-reader", ["--conns", "1", "--streams", "1", "--hold-s", "20"], 35),
        ("no-first-request", ["--conns", "1100", "--source-ip", "127.0.0.2", "--hold-s", "20"],
         40),
    ],
    "small": [
        ("half-messages", ["--conns", "2", "--streams", "10", "--declared-bytes",
                           str(1 << 20), "--partial-bytes", str(1 << 19), "--duration-s", "10"],
         25),
        ("many-names", ["--names", "100000", "--repeats", "2", "--hold-s", "3"], 30),
        ("idle-conns", ["--conns", "1100", "--source-ip", "127.0.0.2", "--hold-s", "12"], 30),
        ("slow-reader", ["--hold-s", "6"], 20),
        ("no-first-request", ["--conns", "50", "--source-ip", "127.0.0.2", "--hold-s", "6"],
         20),
    ],
    "none": [],
}


def log(msg):
    print(f"[xds-fleet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values, p):
    """The p-th percentile (nearest rank) of values; None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))]


def cpu_s(pid):
    """CPU seconds of pid's live threads in ns resolution (/proc/PID/task/*/schedstat), or
    /proc/PID/stat's 10 ms ticks when schedstat is missing."""
    total, seen = 0, False
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                    seen = True
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return None
    return total / 1e9 if seen else proc_cpu_s(pid)


def fmt(v, unit="", nd=1):
    return "-" if v is None else f"{v:.{nd}f}{unit}"


class Provider:
    """The manage provider file: ENDPOINTS unlocated endpoints with tokens, one located group
    (so resource names have something to match) and a Capture + TokenRouter chain. Each
    change moves one endpoint to a new port."""

    def __init__(self, path):
        self.path = path
        self.ports = [40000 + i for i in range(ENDPOINTS)]
        self.changes = 0

    def text(self):
        out = ["version: v1alpha1", "clusters:", "  - endpoints:"]
        for i, port in enumerate(self.ports):
            out.append(f"      - address: 127.0.0.1:{port}")
            out.append(f"        metadata: {{quilkin.dev: {{tokens: [{b64(b'tok%05d' % i)}]}}}}")
        out += ["  - locality: {region: eu, zone: z1}", "    endpoints:",
                "      - address: 127.0.0.1:49999",
                "filters:", f"  - name: {CAPTURE}",
                "    config: {suffix: {size: 3, remove: true}}", f"  - name: {TOKEN_ROUTER}"]
        return "\n".join(out) + "\n"

    def write_first(self):
        with open(self.path, "w") as f:
            f.write(self.text())

    def change(self):
        """Rewrites the file by rename; returns CLOCK_REALTIME ns of the rename."""
        self.changes += 1
        self.ports[(self.changes - 1) % ENDPOINTS] = 50000 + self.changes
        write_rename(self.path, self.text())
        return time.time_ns()


class Lines:
    """Collects a child's stderr lines on a thread; wait() finds one matching a regex."""

    def __init__(self, stream, sink):
        self.lines, self.cv = [], threading.Condition()
        self.sink = sink
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.sink.write(line)
            self.sink.flush()
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()

    def wait(self, pattern, timeout, accept=None):
        """The first line's match of pattern (that accept(match) takes, when given) within
        timeout s, else None."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cv:
            i = 0
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m and (accept is None or accept(m)):
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def wait_version(self, streams, version, timeout):
        """Waits for the fleet to say that all its streams ACKed Cluster `version` or later
        (the line is printed when the lowest ACKed version rises, which may skip one)."""
        if version is None:
            return None
        return self.wait(rf"all {streams} streams acked cluster version (\d+)$", timeout,
                         lambda m: int(m.group(1)) >= version)

    def count(self, pattern):
        with self.cv:
            return sum(1 for line in self.lines if re.search(pattern, line))


class Sampler:
    """Samples a process's RSS every SAMPLE_S; kills it above RSS_CAP_KIB."""

    def __init__(self, proc):
        self.proc, self.peak, self.killed_at_cap = proc, 0, False
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop.is_set() and self.proc.poll() is None:
            rss = proc_rss_kib(self.proc.pid) or 0
            self.peak = max(self.peak, rss)
            if rss > RSS_CAP_KIB and not self.killed_at_cap:
                self.killed_at_cap = True
                log(f"manage RSS {rss // 1024} MiB is over the cap: killing it")
                self.proc.kill()
            self.stop.wait(SAMPLE_S)

    def finish(self):
        self.stop.set()
        self.th.join(2)
        return self.peak


class Prober:
    """GET /live every 0.2 s on a thread while proc runs: how many probes answered 200 (a
    manage killed at the RSS cap is not probed further)."""

    def __init__(self, port, proc):
        self.port, self.proc, self.ok, self.total = port, proc, 0, 0
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop.is_set() and self.proc.poll() is None:
            self.total += 1
            try:
                if http_get("127.0.0.1", self.port, "/live", 1.0)[0] == 200:
                    self.ok += 1
            except OSError:
                pass
            self.stop.wait(0.2)

    def finish(self):
        self.stop.set()
        self.th.join(3)
        return self.ok, self.total


class Harness:
    def __init__(self, build, work):
        self.build, self.work = build, work
        self.procs = []
        self.n_manage = 0
        self.fleet_tool = os.path.join(build, "bench_xds_fleet")

    # -- processes ----------------------------------------------------------------------
    def start(self, name, argv, stderr_lines=False, stdout=None):
        """Starts argv with its output in WORK/name.log (stdout to `stdout` when given);
        with stderr_lines, stderr also goes to p.lines for waiting on."""
        logf = open(os.path.join(self.work, f"{name}.log"), "a")
        if stderr_lines:
            err = subprocess.PIPE
        else:
            err = subprocess.STDOUT if stdout is None else logf
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or logf,
                             stderr=err, text=True)
        p.logf = logf
        p.lines = Lines(p.stderr, logf) if stderr_lines else None
        self.procs.append(p)
        return p

    def kill(self, p, grace=0.0):
        """SIGKILL p (after SIGTERM and up to grace s to exit, when grace) and reap it."""
        for sig_term, timeout in ((True, grace), (False, 10.0)):
            if p.poll() is not None or timeout <= 0:
                continue
            if sig_term:
                p.terminate()
            else:
                p.kill()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{os.path.basename(p.args[0])} (pid {p.pid}) still runs "
                    f"{timeout:g} s after SIG{'TERM' if sig_term else 'KILL'}")

    def kill_all(self):
        for p in self.procs:
            self.kill(p)

    def start_manage(self):
        """A fresh manage on new ports serving a fresh provider file; waits for /ready."""
        self.n_manage += 1
        name = f"manage{self.n_manage}"
        self.admin_port, self.xds_port = free_ports(2)
        own = os.path.join(self.work, "own.yaml")
        with open(own, "w") as f:
            f.write("version: v1alpha1\nid: fleet-manage\n")
        self.provider = Provider(os.path.join(self.work, f"{name}-provider.yaml"))
        self.provider.write_first()
        self.manage = self.start(name, [
            os.path.join(self.build, "quilkin"), "--admin-address",
            f"127.0.0.1:{self.admin_port}", "-c", own, "manage", "--port", str(self.xds_port),
            # the fleet's streams all come from 127.0.0.1 here (each proxy has its own
            # address in the field), so the per-peer cap is raised above the fleet; the
            # hostile clients come from 127.0.0.2 and meet it
            "--max-connections-per-peer", str(PER_PEER_CAP),
            "file", self.provider.path])
        deadline = time.monotonic() + READY_DEADLINE
        while time.monotonic() < deadline and self.manage.poll() is None:
            try:
                if http_get("127.0.0.1", self.admin_port, "/ready", 1.0)[0] == 200:
                    return self.manage
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"xds-fleet: manage did not become ready (see {self.work}/{name}.log)")

    def start_fleet(self, name, streams, duration_s):
        out = os.path.join(self.work, f"{name}.jsonl")
        p = self.start(name, [self.fleet_tool, "fleet", "--target", f"127.0.0.1:{self.xds_port}",
                              "--streams", str(streams), "--out", out,
                              "--duration-s", str(int(duration_s))], stderr_lines=True)
        p.out = out
        return p

    def stop_fleet(self, p):
        """SIGTERM, wait for the records file, parse it: [(stream, type, version, ack_ns)]."""
        self.kill(p, grace=20.0)
        recs = []
        try:
            with open(p.out) as f:
                for line in f:
                    r = json.loads(line)
                    recs.append((r["stream"], r["type"], int(r["version"]), r["ack_ns"]))
        except (OSError, ValueError) as e:
            log(f"cannot read {p.out}: {e}")
        return recs

    def applied(self):
        try:
            st, body = http_get("127.0.0.1", self.admin_port, "/metrics", 2.0)
        except OSError:
            return None
        return int(metric(parse_metrics(body.decode()), "quilkin_config_reloads_total",
                          result="applied")) if st == 200 else None

    # -- the fleet measurement ------------------------------------------------------------
    def run_fleet(self, streams, changes):
        m = self.start_manage()
        sampler = Sampler(m)
        time.sleep(0.5)
        rss0, cpu0 = proc_rss_kib(m.pid), cpu_s(m.pid)
        bound = SUBSCRIBE_DEADLINE + changes * (PROPAGATION_DEADLINE + CHANGE_PAUSE) + 30
        fleet = self.start_fleet("fleet", streams, bound)
        t0 = time.monotonic()
        if not fleet.lines.wait(r"streams subscribed", SUBSCRIBE_DEADLINE):
            raise SystemExit(f"xds-fleet: the fleet did not subscribe within "
                             f"{SUBSCRIBE_DEADLINE:.0f} s (see {self.work}/fleet.log)")
        subscribe_s = time.monotonic() - t0
        time.sleep(CHANGE_PAUSE)  # let the ACKs land
        rss1, cpu1 = proc_rss_kib(m.pid), cpu_s(m.pid)
        log(f"{streams} streams subscribed in {subscribe_s:.2f} s; manage RSS "
            f"{rss0} -> {rss1} KiB")
        writes = []  # (version, write_ns, seconds until the fleet said all ACKed, or None)
        for c in range(changes):
            version = self.applied()
            wns = self.provider.change()
            t = time.monotonic()
            hit = fleet.lines.wait_version(streams, version, PROPAGATION_DEADLINE)
            seen = time.monotonic() - t if hit else None
            writes.append((version, wns, seen))
            if not hit:
                log(f"change {c + 1}: not every stream ACKed version {version} within "
                    f"{PROPAGATION_DEADLINE:.0f} s")
            time.sleep(CHANGE_PAUSE)
        cpu2 = cpu_s(m.pid)
        applied_end = self.applied()
        recs = self.stop_fleet(fleet)
        peak = sampler.finish()
        reconnects = fleet.lines.count(r"ended \(|cannot connect")
        self.kill(m)
        return self.fleet_report(streams, changes, writes, recs, subscribe_s, rss0, rss1, peak,
                                 cpu0, cpu1, cpu2, applied_end, reconnects)

    @staticmethod
    def fleet_report(streams, changes, writes, recs, subscribe_s, rss0, rss1, peak, cpu0, cpu1,
                     cpu2, applied_end, reconnects):
        first = {}  # (stream, type, version) -> first ACK ns
        for s, t, v, ns in recs:
            key = (s, t, v)
            if key not in first or ns < first[key]:
                first[key] = ns
        prop = {"cluster": [], "listener": []}
        every = {"cluster": [], "listener": []}
        missing = {"cluster": 0, "listener": 0}
        for version, wns, _ in writes:
            if version is None:
                continue
            for t in prop:
                worst = None
                for s in range(streams):
                    ns = first.get((s, t, version))
                    if ns is None:
                        missing[t] += 1
                        continue
                    ms = (ns - wns) / 1e6
                    prop[t].append(ms)
                    worst = ms if worst is None else max(worst, ms)
                if worst is not None:
                    every[t].append(worst)
        rep = {
            "streams": streams, "changes": changes, "endpoints": ENDPOINTS,
            "subscribe_all_s": round(subscribe_s, 3),
            "rss_before_kib": rss0, "rss_subscribed_kib": rss1, "rss_peak_kib": peak,
            "rss_per_stream_kib": round((rss1 - rss0) / streams, 2) if rss0 and rss1 else None,
            "cpu_subscribe_s": round(cpu1 - cpu0, 3),
            "cpu_subscribe_per_stream_ms": round(1000 * (cpu1 - cpu0) / streams, 3),
            "cpu_changes_s": round(cpu2 - cpu1, 3),
            "cpu_per_change_ms": round(1000 * (cpu2 - cpu1) / changes, 3) if changes else None,
            "cpu_per_change_per_stream_us":
                round(1e6 * (cpu2 - cpu1) / changes / streams, 2) if changes else None,
            "loads_applied_at_end": applied_end, "reconnects": reconnects,
            "changes_seen_by_all": sum(1 for w in writes if w[2] is not None),
        }
        for t in prop:
            rep[f"{t}_ms_per_stream"] = {"p50": pct(prop[t], 50), "p99": pct(prop[t], 99),
                                         "max": max(prop[t]) if prop[t] else None,
                                         "n": len(prop[t]), "missing": missing[t]}
            rep[f"{t}_ms_every_stream"] = {"p50": pct(every[t], 50), "p99": pct(every[t], 99),
                                           "max": max(every[t]) if every[t] else None}
        return rep

    # -- hostile scenarios ----------------------------------------------------------------
    def run_hostile(self, name, args, bound):
        m = self.start_manage()
        legit = self.start_fleet(f"{name}-legit", LEGIT_STREAMS, bound + 30)
        if not legit.lines.wait(r"streams subscribed", SUBSCRIBE_DEADLINE):
            log(f"{name}: the legitimate streams did not subscribe")
        time.sleep(0.5)
        rss0 = proc_rss_kib(m.pid)
        sampler, prober = Sampler(m), Prober(self.admin_port, m)
        out_path = os.path.join(self.work, f"{name}-hostile.json")
        with open(out_path, "w") as out:
            hostile = self.start(f"{name}-hostile", [
                self.fleet_tool, "hostile", "--target", f"127.0.0.1:{self.xds_port}",
                "--scenario", name] + args, stdout=out)
            t0 = time.monotonic()
            time.sleep(ATTACK_CHANGE_AT)
            version = self.applied()
            wns = self.provider.change()
            newcomer = self.start_fleet(f"{name}-newcomer", 1, NEWCOMER_DEADLINE + 5)
            got = legit.lines.wait_version(LEGIT_STREAMS, version, PROPAGATION_DEADLINE)
            new_ok = newcomer.lines.wait(r"streams subscribed \(([\d.]+) s\)", NEWCOMER_DEADLINE)
            try:
                hostile.wait(max(1.0, bound - (time.monotonic() - t0)))
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                self.kill(hostile)
        time.sleep(1.0)
        alive = m.poll() is None
        rss_after = proc_rss_kib(m.pid) if alive else None
        peak = sampler.finish()
        live_ok, live_total = prober.finish()
        recs = self.stop_fleet(legit)
        self.stop_fleet(newcomer)
        lat = [(ns - wns) / 1e6 for s, t, v, ns in recs if t == "cluster" and v == version]
        try:
            with open(out_path) as f:
                answer = json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            answer = {"error": "no JSON from the hostile client"}
        row = {"scenario": name, "args": args, "rss_before_kib": rss0, "rss_peak_kib": peak,
               "rss_after_kib": rss_after, "killed_at_rss_cap": sampler.killed_at_cap,
               "manage_alive": alive, "manage_exit": m.returncode,
               "hostile_timed_out": timed_out, "live_ok": live_ok, "live_probes": live_total,
               "legit_got_change": bool(got), "legit_change_ms_max": max(lat) if lat else None,
               "newcomer_subscribed": bool(new_ok),
               "newcomer_subscribe_s": float(new_ok.group(1)) if new_ok else None,
               "answer": answer}
        self.kill(m)
        log(f"{name}: peak RSS {peak // 1024} MiB, legit served {bool(got)}, newcomer "
            f"{bool(new_ok)}, /live {live_ok}/{live_total}")
        return row


def summarise(a):
    """One line of what the server did to the hostile client."""
    if "error" in a:
        return a["error"]
    sc = a.get("scenario")
    if sc == "many-names":
        sends = a.get("sends", [])
        first = sends[0].get("response_ms") if sends else None
        return (f"{a['names']} names ({a['message_bytes'] / 1e6:.1f} MB): first response "
                f"{fmt(first, ' ms')}, {a['responses']} responses, "
                f"{'stream kept' if a['survived'] else 'ended: ' + a['end']}")
    if sc == "idle-conns":
        u, s = a["closed_without_a_byte_s"], a["closed_after_settings_s"]
        return (f"{a['connected']}/{a['conns']} connected, {a['greeted_by_server']} got SETTINGS;"
                f" closed unserved {u['n']}, closed after SETTINGS {s['n']} "
                f"(p50 {fmt(s.get('p50'), ' s')}), open at end {a['still_open']}")
    ended = a.get("stream_ended_s", {})
    parts = [f"{a['streams_submitted']} streams: reset {a['streams_reset']} "
             f"{a['rst_codes'] or ''}".rstrip(),
             f"grpc-status {a['grpc_status'] or 'none'}",
             f"open at end {a['streams_open_at_end']}",
             f"conns closed {a['conns_closed_by_server']}/{a['connected']}"]
    if ended.get("n"):
        parts.append(f"ended p50 {fmt(ended.get('p50'), ' s')}")
    if sc == "half-messages":
        b = a["request_bytes_per_stream"]
        parts.append(f"accepted {a['request_bytes_sent'] / 2**20:.0f} MiB "
                     f"(per stream p50 {fmt((b.get('p50') or 0) / 2**20, ' MiB', 2)})")
    if sc == "slow-reader":
        parts.append(f"{a['response_bytes']} response bytes in a {a['window']}-byte window")
    return "; ".join(parts)


def print_tables(rep):
    f = rep.get("fleet")
    if f:
        print(f"\n### manage with {f['streams']} ADS streams, {f['changes']} changes "
              f"({f['endpoints']} endpoints; {os.cpu_count()} cores)\n")
        print("| measure | value |\n|---|---|")
        rows = [
            ("all streams subscribed after", fmt(f["subscribe_all_s"], " s", 2)),
            ("manage RSS before / with streams / peak",
             f"{f['rss_before_kib']} / {f['rss_subscribed_kib']} / {f['rss_peak_kib']} KiB"),
            ("RSS per stream", fmt(f["rss_per_stream_kib"], " KiB", 1)),
            ("CPU to subscribe, per stream", fmt(f["cpu_subscribe_per_stream_ms"], " ms", 3)),
            ("CPU per change (all streams)", fmt(f["cpu_per_change_ms"], " ms", 1)),
            ("CPU per change per stream", fmt(f["cpu_per_change_per_stream_us"], " µs", 1)),
        ]
        for t in ("cluster", "listener"):
            e, s = f[f"{t}_ms_every_stream"], f[f"{t}_ms_per_stream"]
            rows.append((f"{t.title()}: change -> every stream ACKed, p50 / p99 / max",
                         f"{fmt(e['p50'])} / {fmt(e['p99'])} / {fmt(e['max'])} ms"))
            rows.append((f"{t.title()}: change -> one stream's ACK, p50 / p99 / max",
                         f"{fmt(s['p50'])} / {fmt(s['p99'])} / {fmt(s['max'])} ms "
                         f"({s['n']} ACKs, {s['missing']} missing)"))
        rows.append(("changes seen by every stream", f"{f['changes_seen_by_all']}/{f['changes']}"))
        rows.append(("stream reconnects", str(f["reconnects"])))
        for k, v in rows:
            print(f"| {k} | {v} |")
        print("\n(propagation includes manage's 50 ms provider debounce, spec xds.md §8.1)")
    if rep.get("hostile"):
        print(f"\n### hostile clients (manage killed above {RSS_CAP_KIB // 1024} MiB; "
              f"{LEGIT_STREAMS} legitimate streams)\n")
        print("| scenario | manage peak RSS | RSS after | server's answer | /live 200 | "
              "legit streams got a change (slowest ACK) | new stream subscribed (after) |")
        print("|---|---|---|---|---|---|---|")
        for r in rep["hostile"]:
            after = (f"{r['rss_after_kib'] / 1024:.1f} MiB" if r["rss_after_kib"] else
                     "killed at cap" if r["killed_at_rss_cap"] else
                     f"dead (exit {r['manage_exit']})")
            print(f"| {r['scenario']} | {r['rss_peak_kib'] / 1024:.1f} MiB | {after} | "
                  f"{summarise(r['answer'])} | {r['live_ok']}/{r['live_probes']} | "
                  f"{'yes' if r['legit_got_change'] else 'no'} "
                  f"({fmt(r['legit_change_ms_max'], ' ms', 0)}) | "
                  f"{'yes' if r['newcomer_subscribed'] else 'no'} "
                  f"({fmt(r['newcomer_subscribe_s'], ' s', 2)}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--hostile", choices=sorted(HOSTILE), default="full")
    ap.add_argument("--report", default=None)
    a = ap.parse_args()
    if not 1 <= a.streams <= 1000 or not 0 <= a.changes <= 1000:
        raise SystemExit("xds-fleet: --streams 1..1000, --changes 0..1000")
    for exe in ("quilkin", "bench_xds_fleet"):
        if not os.access(os.path.join(a.build, exe), os.X_OK):
            raise SystemExit(f"xds-fleet: {a.build}/{exe} missing (make build first)")
    report = a.report or os.path.join(a.build, "xds_fleet", "report.json")
    work = os.path.join(os.path.dirname(os.path.abspath(report)), "run")
    os.makedirs(work, exist_ok=True)
    # idle-conns holds more than 1024 connections: both ends need the descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    h = Harness(a.build, work)
    rep = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
           "rlimit_nofile": hard, "hostile_profile": a.hostile, "hostile": []}
    try:
        log(f"fleet: {a.streams} streams, {a.changes} changes; logs in {work}")
        rep["fleet"] = h.run_fleet(a.streams, a.changes)
        for name, args, bound in HOSTILE[a.hostile]:
            log(f"hostile: {name} {' '.join(args)}")
            rep["hostile"].append(h.run_hostile(name, args, bound))
    finally:
        h.kill_all()
    with open(report, "w") as f:
        json.dump(rep, f, indent=1)
    print_tables(rep)
    print(f"\nreport: {report}; logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
