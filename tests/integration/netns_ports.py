"""Runs INSIDE a fresh network namespace (test_field.py starts it with `unshare -n`): narrows
this namespace's ephemeral port range to 10 ports, so the proxy runs out of local ports for
session sockets after 10 sessions, exactly as a host does at ~28k sessions with Linux's
default range. Prints one JSON object with what it observed; the calling test asserts.

usage: netns_ports.py QUILKIN_BIN exhaust|fanout
  exhaust: 20 clients, one endpoint: one port per session, so the 11th client finds none
  fanout:  one client whose datagrams go to 20 endpoints: its 20 sessions share one local
           port (issue 11), so 10 ports are plenty; each endpoint echoes with its own tag
           and every reply must reach the client
Everything is bounded: each wait is a poll with a deadline; the proxy is stopped with two
SIGTERMs (then SIGKILL) and waited for."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

RANGE = (40000, 40009)
WIDE = (40000, 40099)
N = 20  # clients (exhaust) or endpoints (fanout)
SINK_PORT = 6000


def set_range(lo, hi):
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(f"{lo} {hi}")


def metrics():
    with urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=3) as r:
        return r.read().decode()


def value(text, name, **labels):
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(json.dumps({"error": f"timed out waiting for {what}"}))
        time.sleep(0.05)


def sessions():
    return value(metrics(), "quilkin_session_active", asn="0") or 0


class Sink(socket.socket):
    """A UDP socket that remembers the peers it echoed to (set by echo_tagged)."""


def udp(addr):
    s = Sink(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    return s


def exhaust(out):
    clients = [udp(("127.0.0.1", 5000 + k)) for k in range(N)]
    # one endpoint, a session per client: only 10 can get a port; the 11th client's send
    # fails and (spec proxy.md section 3 step 5) its datagram is dropped
    for c in clients[:15]:
        c.sendto(b"p", ("127.0.0.1", 7777))
        time.sleep(0.05)
    wait_for(lambda: sessions() == 10, 10, "10 sessions")
    reason = "OS level error: no free ephemeral port for an upstream socket"
    wait_for(lambda: value(metrics(), "quilkin_packets_dropped_total", source=reason,
                           event="read") == 5, 10, "5 drops")
    text = metrics()
    out["sessions_exhausted"] = value(text, "quilkin_session_active", asn="0")
    out["drops"] = value(text, "quilkin_packets_dropped_total", source=reason, event="read")
    out["errors"] = value(text, "quilkin_errors_total", display=reason, event="read")
    # the host's range is widened: new sessions open again
    set_range(*WIDE)
    for c in clients:
        c.sendto(b"after", ("127.0.0.1", 7777))
    wait_for(lambda: sessions() == N, 10, f"{N} sessions")
    out["sessions_after"] = sessions()


def fanout(out):
    client = udp(("127.0.0.1", 5000))
    client.settimeout(0.2)
    for i in range(3):
        client.sendto(b"f%d" % i, ("127.0.0.1", 7777))
        time.sleep(0.05)
    wait_for(lambda: sessions() == N, 10, f"{N} sessions")
    replies = set()
    deadline = time.monotonic() + 10
    while len(replies) < 3 * N and time.monotonic() < deadline:
        try:
            replies.add(client.recv(64))
        except socket.timeout:
            pass
    text = metrics()
    out["sessions"] = sessions()
    out["replies"] = len(replies)
    out["port_drops"] = value(text, "quilkin_packets_dropped_total", event="read",
                              source="OS level error: no free ephemeral port for an "
                                     "upstream socket") or 0


def echo_tagged(sock, tag, stop):
    sock.settimeout(0.1)
    seen = sock.seen = []
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(64)
        except socket.timeout:
            continue
        except OSError:
            return
        seen.append(peer)
        sock.sendto(tag + b":" + data, peer)


def main():
    binary, mode = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    set_range(*RANGE)
    tmp = f"/tmp/qk-netns-{os.getpid()}.yaml"
    n_eps = N if mode == "fanout" else 1
    eps = "".join(f"      - address: 127.3.0.{k + 1}:{SINK_PORT}\n" for k in range(n_eps))
    with open(tmp, "w") as f:
        f.write(f"version: v1alpha1\nid: ports\nclusters:\n  - endpoints:\n{eps}")
    sinks = [udp((f"127.3.0.{k + 1}", SINK_PORT)) for k in range(n_eps)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUILKIN", "RUST_LOG"))}
    p = subprocess.Popen([binary, "--admin-address", "127.0.0.1:8000", "--log-format", "json",
                          "-c", tmp, "proxy", "--port", "7777", "--qcmp-port", "7600",
                          "--workers", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = {}
    stop = threading.Event()
    echoes = []
    if mode == "fanout":
        for k, s in enumerate(sinks):
            t = threading.Thread(target=echo_tagged, args=(s, b"e%d" % k, stop), daemon=True)
            t.start()
            echoes.append(t)
    try:
        def ready():
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, 15, "/ready")
        if mode == "fanout":
            fanout(out)
            stop.set()
            for t in echoes:
                t.join(2)
            # the (proxy address, port) each endpoint saw: one port for all 20
            out["proxy_source_ports"] = sorted({port for s in sinks
                                                for _, port in getattr(s, "seen", [])})
        else:
            exhaust(out)
    finally:
        stop.set()
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        os.unlink(tmp)
    out["exit"] = p.returncode
    out["stderr"] = stderr.decode(errors="replace")[-4000:]
    out["log"] = [json.loads(l) for l in stdout.decode(errors="replace").splitlines()
                  if l.startswith("{")]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
