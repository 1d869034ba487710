"""The benchmark's tools. bench_loadgen's paced mode against bench_echo (issue 11): one-second
smokes on loopback that the schedule is kept to the slot, every echo is matched to its send,
the RESULT line carries every field bench/bench.py reads, and 1,000 sessions open under a low
descriptor limit (the load generator raises its own soft limit). bench/bench.py's quilkin-c
variants (BENCH_QUILKIN_VARIANTS): the LABEL=ARGS syntax and its errors, and a short real run
where a variant with an unknown option is reported FAILED while the others get a row in every
table, in rotating rounds, and are stopped at the end. Timing itself is judged only in bench/
(STYLE.md section 4): nothing here asserts a latency or a rate achieved."""

import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, clean_env, free_port

BENCH_PY = os.path.join(REPO, "bench", "bench.py")

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


# --- bench/bench.py's quilkin-c variants ---------------------------------------------------

def bench_module():
    spec = importlib.util.spec_from_file_location("bench_py", BENCH_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_syntax_labels_and_shell_words():
    bench = bench_module()
    assert bench.parse_variants(bench.DEFAULT_VARIANTS) == [
        ("quilkin", []), ("quilkin-epoll", ["--io-backend", "epoll"]),
        ("quilkin-batch", ["--coalesce-us", "500"])]
    # spaces around entries, a bare label, empty entries, quoting, "=" inside an argument
    assert bench.parse_variants(" a = --x 'y z' ;b;; c.2=--k=v -n 1; ") == [
        ("a", ["--x", "y z"]), ("b", []), ("c.2", ["--k=v", "-n", "1"])]
    assert [bench.display_name(k) for k in ("quilkin", "quilkin-epoll", "direct", "nginx")] \
        == ["quilkin-c", "quilkin-epoll", "direct", "nginx"]


@pytest.mark.parametrize("text, message", [
    ("a=;a=--x", "label 'a' given twice"),
    ("quilkin=;quilkin-c=--x", "two variants would be shown as 'quilkin-c'"),
    ("nginx=", "names a path that is not a quilkin-c variant"),
    ("direct", "names a path that is not a quilkin-c variant"),
    ("a=--x 'y", "No closing quotation"),
    (" ; ;", "no variant"),
    ("-a=", "bad label '-a'"),
    ("x y=--z", "bad label 'x y'"),
    ("=--z", "bad label ''"),
])
def test_variant_syntax_errors(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bench_module().parse_variants(text)


def bench_env(**settings):
    """The environment of a bench.py run: no BENCH_* or QUILKIN_* setting of the caller's."""
    env = {k: v for k, v in clean_env().items()
           if not k.startswith(("BENCH_", "QUILKIN_"))}
    env.update(settings)
    return env


def run_bench(quilkin_bin, env, timeout):
    return subprocess.run([sys.executable, BENCH_PY, os.path.dirname(quilkin_bin)],
                          capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)


def test_bench_rejects_a_bad_variant_list_before_starting_anything(quilkin_bin):
    r = run_bench(quilkin_bin, bench_env(BENCH_QUILKIN_VARIANTS="a=;a="), 30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "BENCH_QUILKIN_VARIANTS: label 'a' given twice" in r.stderr
    assert "round 1" not in r.stderr


def test_bench_dies_when_no_variant_starts(quilkin_bin):
    env = bench_env(BENCH_TARGETS="direct quilkin", BENCH_SCENARIOS="latency",
                    BENCH_QUILKIN_VARIANTS="bogus=--no-such-option;bogus2=--no-such-option-2")
    r = run_bench(quilkin_bin, env, 60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no quilkin-c variant started: bogus: exited with status 2" in r.stderr, r.stderr
    assert "bogus2: exited with status 2" in r.stderr, r.stderr
    # a usage error is not retried on other ports
    assert r.stderr.count("bogus exited with status 2 (attempt") == 1, r.stderr
    assert "round 1" not in r.stderr


def tables(stdout):
    """Markdown tables of the report by heading: {heading: (header cells, [row cells])}."""
    out, heading = {}, None
    for line in stdout.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and heading and not line.startswith("|-"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if heading in out:
                out[heading][1].append(cells)
            else:
                out[heading] = (cells, [])
    return out


def proxies_of(port):
    """Pids of processes whose command line names 127.0.0.1:port."""
    pids = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if f"127.0.0.1:{port}".encode() in argv:
            pids.append(int(d))
    return pids


def test_bench_reports_a_failed_variant_and_gives_the_others_a_row_everywhere(quilkin_bin):
    paths = ["direct", "quilkin-c", "quilkin-w1"]
    # strace is a bench dependency (scripts/install-deps.sh --bench), not a test one
    tool = "strace" if shutil.which("strace") else "none"
    env = bench_env(
        BENCH_QUICK="1", BENCH_TARGETS="direct quilkin",
        BENCH_QUILKIN_VARIANTS="quilkin=;quilkin-bogus=--no-such-option 1;"
                               "quilkin-w1=--workers 1",
        BENCH_ROUNDS="2", BENCH_SAMPLES="200", BENCH_DURATION="1", BENCH_PACED_SECS="1",
        BENCH_PACED_RATE="1000", BENCH_PACED_SESSIONS="4", BENCH_SYSCALL_TOOL=tool)
    r = run_bench(quilkin_bin, env, 180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout

    # the failed variant: its status and the proxy's own error, in the header and at the end
    failed = [x for x in out.splitlines() if x.startswith("- quilkin-bogus: FAILED to start")]
    assert failed and "(exited with status 2)" in failed[0] and "--no-such-option 1" in failed[0]
    assert re.search(r"^    .*--no-such-option", out, re.M), out
    assert re.search(r"^FAILED: quilkin-bogus did not start \(exited with status 2: .*"
                     r"--no-such-option", out, re.M), out
    assert re.search(r"^- quilkin-w1: 127\.0\.0\.1:\d+ --to 127\.0\.0\.1:\d+ --workers 1;",
                     out, re.M), out

    # the others, in rotating order
    assert "round 1: direct, quilkin-c, quilkin-w1" in r.stderr, r.stderr
    assert "round 2: quilkin-c, quilkin-w1, direct" in r.stderr, r.stderr
    for label in ("round 1, latency, quilkin-w1", "round 2, paced4, quilkin-c",
                  "round 1, tp1200x64, quilkin-w1"):
        assert f"  {label}: RESULT " in out, label

    t = tables(out)
    lat = next(v for k, v in t.items() if k.startswith("Latency"))
    assert [row[0] for row in lat[1]] == paths
    tp = next(v for k, v in t.items() if k.startswith("Saturation"))
    assert [row[1] for row in tp[1]] == paths * 4
    paced = next(v for k, v in t.items() if k.startswith("Paced: 4 sessions"))
    assert [row[0] for row in paced[1]] == paths
    for col in ("RTT p50 µs", "RTT p99 µs", "CPU µs/rt"):
        cells = [row[paced[0].index(col)] for row in paced[1]]
        assert all(c != "n/a" for c in cells[1 if col.startswith("CPU") else 0:]), (col, cells)
    ratios = next(v for k, v in t.items() if k.startswith("Ratios"))
    assert ratios[0] == ["metric", "path", "/ direct", "/ quilkin-c"]
    p99 = {row[1]: row[2:] for row in ratios[1] if row[0] == "paced 4 sessions: RTT p99"}
    assert list(p99) == ["quilkin-c", "quilkin-w1"]
    assert p99["quilkin-c"][1] == "" and p99["quilkin-w1"][1].endswith("x")
    assert all(c.endswith("x") for c in p99["quilkin-c"][:1] + p99["quilkin-w1"])
    if tool == "strace":
        sys_table = next(v for k, v in t.items() if k.startswith("System calls"))
        assert [row[0] for row in sys_table[1]] == paths[1:]
    assert "quilkin-bogus" not in "".join("".join(sum(v[1], [])) for v in t.values())

    # every proxy the bench started was stopped and waited for
    echo_port = re.search(r"^- direct: 127\.0\.0\.1:(\d+)", out, re.M).group(1)
    assert proxies_of(echo_port) == []
