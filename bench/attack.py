#!/usr/bin/env python3
"""The attack harness (issue 9): `make attack` (about 2 minutes) and `make attack-short`
(about 45 s, run by `make test`). Loopback only; every loop is bounded in count and time.

While 200 legitimate clients play at 30 packets/s each (bench_soak_client, each client its
own 127.16.x.y address), it runs, one phase at a time, after a baseline without attack:
  regex       1,200-byte "aaa...ab" datagrams: exponential for a backtracking regex engine,
              through a chain whose first filter is Capture with `(?:a|aa)+$|^.`
  spoof       a routed datagram from a new source address every time (sessions nobody uses)
  admin-idle  hundreds of idle TCP connections on the admin port (and 40 from one peer)
  qcmp        QCMP pings claiming 4 victim addresses as their source (a reflection attack)
  junk        random bytes at 100,000 datagrams/s
and reports per phase: legitimate loss and p99 round trip (and its ratio to the baseline),
the proxy workers' CPU, /live success while it ran, and the counters that named the attack.

It exits 1 when the proxy crashes, a /live probe fails, or a counter that must name an
attack did not move. Loss and latency are reported, never asserted: they depend on the
machine. Usage: bench/attack.py --profile full|short [--build DIR] [--report FILE]."""

import argparse
import base64
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PROFILES = {
    "full": {"phase_s": 15, "quiet_s": 3},
    "short": {"phase_s": 5, "quiet_s": 1},
}
LEGIT_CLIENTS = 200
LEGIT_PPS = 30
TOKEN = "LGok"
RATES = {"regex": 2000, "spoof": 1000, "qcmp": 20000, "junk": 100000}
IDLE_CONNS = 200          # idle TCP connections, 10 per peer address (the server takes 256)
GREEDY_CONNS = 40         # from one peer: all but 16 must be refused
UNCONFIRMED_S = 3
PHASES = ["baseline", "regex", "spoof", "admin-idle", "qcmp", "junk"]
CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"


def log(msg):
    print(f"[attack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(ms, name, **want):
    return sum(v for (n, labels), v in ms.items()
               if n == name and all((k, w) in labels for k, w in want.items()))


class Harness:
    def __init__(self, build, profile, report):
        self.build = build
        self.prof = PROFILES[profile]
        self.profile = profile
        self.report_path = report
        self.work = tempfile.mkdtemp(prefix="quilkin-attack-")
        self.procs = []
        self.failures = []

    # -- processes --------------------------------------------------------------------
    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def fail(self, msg):
        log("FAIL: " + msg)
        self.failures.append(msg)

    # -- the proxy ----------------------------------------------------------------------
    def start_proxy(self):
        self.echo_port = free_port()
        self.game_port, self.qcmp_port = free_port(), free_port()
        self.admin_port = free_port(socket.SOCK_STREAM)
        self.echo = self.start([os.path.join(self.build, "bench_echo"), str(self.echo_port)])
        token = base64.b64encode(TOKEN.encode()).decode()
        cfg = os.path.join(self.work, "quilkin.yaml")
        with open(cfg, "w") as f:
            f.write(f"""version: v1alpha1
id: attack
clusters:
  - endpoints:
      - address: 127.0.0.1:{self.echo_port}
        metadata: {{quilkin.dev: {{tokens: ["{token}"]}}}}
filters:
  - name: {CAPTURE}
    config: {{metadataKey: attack.probe, regex: {{pattern: '(?:a|aa)+$|^.'}}}}
  - name: {CAPTURE}
    config: {{suffix: {{size: 4, remove: true}}}}
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
""")
        self.proxy_log = open(os.path.join(self.work, "proxy.log"), "w")
        binary = os.environ.get("ATTACK_QUILKIN", os.path.join(self.build, "quilkin"))
        self.proxy = self.start(
            [binary, "--admin-address", f"127.0.0.1:{self.admin_port}", "-c", cfg, "proxy",
             "--port", str(self.game_port), "--qcmp-port", str(self.qcmp_port),
             "--workers", "2", "--unconfirmed-session-timeout-secs", str(UNCONFIRMED_S)],
            stdout=self.proxy_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.http("/ready", 1).startswith("ok"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proxy.poll() is not None:
                raise SystemExit("attack: the proxy did not become ready")
            time.sleep(0.05)

    def http(self, path, timeout=2.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                    timeout=timeout) as r:
            return r.read().decode()

    def metrics(self):
        return parse_metrics(self.http("/metrics", 5))

    def worker_cpu_s(self):
        hz = os.sysconf("SC_CLK_TCK")
        total_ticks = 0
        for tid in os.listdir(f"/proc/{self.proxy.pid}/task"):
            try:
                with open(f"/proc/{self.proxy.pid}/task/{tid}/comm") as f:
                    if not f.read().startswith("qk-worker"):
                        continue
                with open(f"/proc/{self.proxy.pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total_ticks += int(fields[11]) + int(fields[12])
            except OSError:
                continue
        return total_ticks / hz

    # -- one phase ------------------------------------------------------------------------
    def prober(self, stop, stats):
        while not stop.is_set():
            stats["probes"] += 1
            try:
                if self.http("/live", 1.0).startswith("ok"):
                    stats["ok"] += 1
            except OSError as e:
                stats["last_error"] = str(e)
            stop.wait(0.1)

    def attacker(self, phase, secs):
        gen = os.path.join(self.build, "bench_attack_gen")
        if phase in ("regex", "spoof", "junk"):
            argv = [gen, "--target", f"127.0.0.1:{self.game_port}", "--mode", phase,
                    "--rate", str(RATES[phase]), "--duration", str(secs), "--token", TOKEN]
        elif phase == "qcmp":
            argv = [gen, "--target", f"127.0.0.1:{self.qcmp_port}", "--mode", "qcmp",
                    "--rate", str(RATES["qcmp"]), "--duration", str(secs)]
        else:
            return None
        return self.start(argv, stdout=subprocess.PIPE, text=True)

    def idle_flood(self):
        held = []
        for k in range(IDLE_CONNS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((f"127.0.50.{k // 10 + 1}", 0))
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", self.admin_port))
            except OSError:
                pass
            held.append(s)
        for _ in range(GREEDY_CONNS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.60.1", 0))
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", self.admin_port))
            except OSError:
                pass
            held.append(s)
        return held

    def run_phase(self, phase, secs=None):
        secs = secs or self.prof["phase_s"]
        before, cpu0, t0 = self.metrics(), self.worker_cpu_s(), time.monotonic()
        report = os.path.join(self.work, f"legit-{phase}.json")
        legit = self.start(
            [os.path.join(self.build, "bench_soak_client"), "--target",
             f"127.0.0.1:{self.game_port}", "--group",
             f"name=legit,clients={LEGIT_CLIENTS},active={LEGIT_CLIENTS},"
             f"pps={LEGIT_PPS}:{LEGIT_PPS},idle=1,token={TOKEN}",
             "--duration", str(secs), "--ramp", "0", "--drain-ms", "1000", "--sockets", "2",
             "--addr-base", "16", "--report", report],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop, probe = threading.Event(), {"probes": 0, "ok": 0, "last_error": ""}
        th = threading.Thread(target=self.prober, args=(stop, probe), daemon=True)
        th.start()
        attack = self.attacker(phase, secs)
        held = self.idle_flood() if phase == "admin-idle" else []
        attack_out = {}
        if attack:
            out, _ = attack.communicate(timeout=secs + 30)
            attack_out = json.loads(out.strip().splitlines()[-1])
        legit.wait(timeout=secs + 30)
        elapsed = time.monotonic() - t0
        cpu = (self.worker_cpu_s() - cpu0) / elapsed
        stop.set()
        th.join(3)
        for s in held:
            s.close()
        after = self.metrics()
        with open(report) as f:
            g = json.load(f)["groups"][0]
        sent, received = g["sent"], g["received"]
        row = {"phase": phase, "legit_sent": sent, "legit_received": received,
               "legit_loss_pct": round(100.0 * (sent - received) / sent, 3) if sent else None,
               "legit_p50_ms": g["latency_us"]["p50"] / 1000,
               "legit_p99_ms": g["latency_us"]["p99"] / 1000,
               "worker_cores": round(cpu, 3),
               "live_ok": probe["ok"], "live_probes": probe["probes"],
               "attack": attack_out, "counters": self.named(phase, before, after, attack_out)}
        if probe["ok"] != probe["probes"]:
            self.fail(f"{phase}: /live answered {probe['ok']} of {probe['probes']} "
                      f"({probe['last_error']})")
        if self.proxy.poll() is not None:
            self.fail(f"{phase}: the proxy exited with {self.proxy.returncode}")
        return row

    def named(self, phase, before, after, attack):
        """The counters that named the attack: their movement during the phase."""
        def d(name, **labels):
            return total(after, name, **labels) - total(before, name, **labels)
        c = {}
        sent = attack.get("sent", 0) - attack.get("send_fail", 0)
        if phase == "regex":
            labels = {"filter": CAPTURE}
            n = d("quilkin_filter_read_duration_seconds_count", **labels)
            s = d("quilkin_filter_read_duration_seconds_sum", **labels)
            c["capture_runs"] = n
            c["capture_mean_us"] = round(1e6 * s / n, 2) if n else None
            c["dropped_no_token"] = d("quilkin_packets_dropped_total",
                                      source="filter  error: no endpoint matched token")
            if n < 0.9 * sent:
                self.fail(f"regex: Capture ran {n:.0f} times for {sent} bomb datagrams")
        elif phase == "spoof":
            c["sessions_created"] = d("quilkin_session_total")
            c["unconfirmed_expired"] = d("quilkin_session_expired_total", state="unconfirmed")
            c["refused"] = {r: d("quilkin_packets_dropped_total", source=r)
                            for r in ("session limit reached", "per-IP session limit reached",
                                      "OS level error: no free ephemeral port for an "
                                      "upstream socket")}
            if c["sessions_created"] < 0.5 * sent:
                self.fail(f"spoof: {c['sessions_created']:.0f} sessions for {sent} datagrams")
            if c["unconfirmed_expired"] <= 0:
                self.fail("spoof: no unconfirmed session expired during the phase")
        elif phase == "admin-idle":
            c["admin_refused_per_peer"] = d("quilkin_admin_connections_total",
                                            result="refused_per_peer")
            c["admin_accepted"] = d("quilkin_admin_connections_total", result="accepted")
            if c["admin_refused_per_peer"] < GREEDY_CONNS - 16:
                self.fail(f"admin-idle: {c['admin_refused_per_peer']:.0f} per-peer refusals")
        elif phase == "qcmp":
            for k in ("ping", "reply", "limited_source", "limited_global"):
                c[k] = d("quilkin_qcmp_packets_total", kind=k)
            c["reflected_bytes_per_sent_byte"] = round(
                attack.get("reply_bytes", 0) / max(1, attack.get("sent_bytes", 1)), 4)
            if c["limited_source"] + c["limited_global"] <= 0:
                self.fail("qcmp: nothing was rate limited")
            if c["reflected_bytes_per_sent_byte"] >= 1:
                self.fail(f"qcmp: reflected {c['reflected_bytes_per_sent_byte']} bytes per "
                          f"byte sent")
        elif phase == "junk":
            drops = {}
            for (n, labels), v in after.items():
                if n == "quilkin_packets_dropped_total" and ("event", "read") in labels:
                    src = dict(labels)["source"]
                    dv = v - before.get((n, labels), 0)
                    if dv:
                        drops[src] = dv
            c["dropped_by_reason"] = drops
            c["kernel_drops_game"] = d("quilkin_kernel_drops_total", socket="game")
        c["kernel_drops"] = d("quilkin_kernel_drops_total")
        return c

    # -- the run --------------------------------------------------------------------------
    def run(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.start_proxy()
        log(f"proxy up: udp {self.game_port}, qcmp {self.qcmp_port}, admin {self.admin_port}; "
            f"{LEGIT_CLIENTS} legitimate clients at {LEGIT_PPS} pkt/s, "
            f"{self.prof['phase_s']} s per phase")
        self.run_phase("warmup", 2)  # sessions opened, caches warm: not reported
        rows = []
        for phase in PHASES:
            rows.append(self.run_phase(phase))
            log(f"{phase}: loss {rows[-1]['legit_loss_pct']} %, p99 "
                f"{rows[-1]['legit_p99_ms']:.2f} ms, workers {rows[-1]['worker_cores']} cores")
            time.sleep(self.prof["quiet_s"])
        # a clean stop: two signals, exit 0
        self.proxy.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        self.proxy.send_signal(signal.SIGTERM)
        try:
            rc = self.proxy.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:
            self.fail(f"the proxy exited with {rc} after SIGTERM, SIGTERM")
        with open(os.path.join(self.work, "proxy.log")) as f:
            text = f.read()
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            if marker in text:
                self.fail(f"sanitizer report in the proxy's output: {marker}")
        self.print_table(rows)
        out = {"profile": self.profile, "date": time.strftime("%Y-%m-%d %H:%M"),
               "phases": rows, "failures": self.failures, "work_dir": self.work}
        os.makedirs(os.path.dirname(self.report_path) or ".", exist_ok=True)
        with open(self.report_path, "w") as f:
            json.dump(out, f, indent=1)
        log(f"report: {self.report_path}; logs: {self.work}")
        return 0 if not self.failures else 1

    def print_table(self, rows):
        base = rows[0]["legit_p99_ms"] or 1e-9
        print(f"\nquilkin-c attack harness ({self.profile}): {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores; {LEGIT_CLIENTS} clients x {LEGIT_PPS} pkt/s, "
              f"{self.prof['phase_s']} s per phase")
        print(f"{'phase':<11} {'attack rate':>11} {'loss %':>7} {'p99 ms':>7} {'x base':>6} "
              f"{'workers':>7} {'/live':>9}  counters")
        for r in rows:
            a = r["attack"]
            rate = f"{a.get('rate', 0):.0f}/s" if a else ("-" if r["phase"] == "baseline"
                                                          else f"{IDLE_CONNS + GREEDY_CONNS} tcp")
            counters = ", ".join(f"{k}={v}" for k, v in r["counters"].items()
                                 if k != "kernel_drops" or v)
            print(f"{r['phase']:<11} {rate:>11} {r['legit_loss_pct']:>7} "
                  f"{r['legit_p99_ms']:>7.2f} {r['legit_p99_ms'] / base:>6.1f} "
                  f"{r['worker_cores']:>7.2f} {r['live_ok']:>4}/{r['live_probes']:<4}  {counters}")
        print("ATTACK " + ("PASSED" if not self.failures else "FAILED: " + "; ".join(
            self.failures)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--build", default="build")
    ap.add_argument("--report", default=None)
    a = ap.parse_args()
    report = a.report or os.path.join(a.build, "attack", "report.json")
    for exe in ("quilkin", "bench_echo", "bench_soak_client", "bench_attack_gen"):
        if not os.access(os.path.join(a.build, exe), os.X_OK):
            raise SystemExit(f"attack: {a.build}/{exe} missing (make build first)")
    h = Harness(a.build, a.profile, report)
    try:
        rc = h.run()
    finally:
        h.stop_all()
    sys.exit(rc)


if __name__ == "__main__":
    main()
