"""bench_loadgen's paced mode against bench_echo (issue 11): one-second smokes on loopback that
the schedule is kept to the slot, every echo is matched to its send, the RESULT line carries
every field bench/bench.py reads, and 1,000 sessions open under a low descriptor limit
(the load generator raises its own soft limit). Timing itself is judged only in bench/
(STYLE.md section 4): nothing here asserts a latency or a rate achieved."""

import os
import resource
import subprocess

import pytest

from conftest import free_port

PACED_FIELDS = ("mode", "size", "rate", "sessions", "secs", "sent", "received", "lost", "late",
                "skipped", "sent_pps", "min_us", "p50_us", "p99_us", "p999_us", "max_us",
                "warmup_sent", "warmup_received", "stray", "errors", "partial")


def tool(quilkin_bin, name):
    path = os.path.join(os.path.dirname(quilkin_bin), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not built (bench tools are part of the default CMake target)")
    return path


@pytest.fixture
def echo_port(quilkin_bin):
    port = free_port()
    proc = subprocess.Popen([tool(quilkin_bin, "bench_echo"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # bounded: the probe mode gives up after 5 s
        probe = subprocess.run([tool(quilkin_bin, "bench_loadgen"), "--target",
                                f"127.0.0.1:{port}", "--mode", "probe", "--timeout-ms", "5000"],
                               capture_output=True, timeout=15, check=False)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def paced(quilkin_bin, port, rate, sessions, preexec_fn=None):
    out = subprocess.run([tool(quilkin_bin, "bench_loadgen"), "--target", f"127.0.0.1:{port}",
                          "--mode", "paced", "--rate", str(rate), "--sessions", str(sessions),
                          "--duration", "1", "--warmup-ms", "200", "--drain-ms", "3000"],
                         capture_output=True, timeout=30, check=False, preexec_fn=preexec_fn)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    lines = out.stdout.decode().splitlines()
    assert lines[:2] == ["MARK start", "MARK end"], lines
    assert lines[2].startswith("RESULT "), lines
    fields = dict(kv.split("=", 1) for kv in lines[2].split()[1:])
    missing = [f for f in PACED_FIELDS if f not in fields]
    assert not missing, f"RESULT lacks {missing}: {lines[2]}"
    return fields


def check_accounting(r, rate, sessions):
    n = {k: float(v) for k, v in r.items() if k != "mode"}
    assert r["mode"] == "paced" and n["rate"] == rate and n["sessions"] == sessions
    # every slot of the measured second is either sent or skipped (sender too far behind)
    assert n["sent"] + n["skipped"] == rate
    assert n["sent"] > 0 and n["received"] == n["sent"] and n["lost"] == 0
    assert n["warmup_sent"] > 0 and n["warmup_received"] == n["warmup_sent"]
    assert n["stray"] == 0 and n["errors"] == 0 and n["partial"] == 0
    assert 0 < n["min_us"] <= n["p50_us"] <= n["p99_us"] <= n["p999_us"] <= n["max_us"]


def test_paced_sends_the_schedule_and_matches_every_echo(quilkin_bin, echo_port):
    check_accounting(paced(quilkin_bin, echo_port, 2000, 8), 2000, 8)


def test_paced_opens_1000_sessions_under_a_low_soft_fd_limit(quilkin_bin, echo_port):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is below 1,000 sessions")

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    # 1,000 sockets at 2 datagrams/s each: every session sends twice in the measured second
    check_accounting(paced(quilkin_bin, echo_port, 2000, 1000, low_soft_limit), 2000, 1000)
