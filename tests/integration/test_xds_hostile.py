"""`quilkin manage` against bench_xds_fleet's hostile clients (issue 10, items 7 and 9): a
client that opens many streams and sends most of a large message on each cannot make the
server hold more than its per-connection buffer cap, and a client that never reads its
responses is reset (and counted) instead of queueing versions forever. The full-size runs
and their numbers are `make xds-bench` (bench/xds_fleet.py); these are short forms.

Expected values: the limits and metrics of README "Fleet: xDS" (quilkin-c's;
docs/test-expectations.md E4, E5)."""

import json
import os
import subprocess
import time

import pytest

from admin_helpers import scrape
from conftest import wait_until
from xds_helpers import TYPE_CLUSTER, subscribe, write_by_rename
from xds_helpers import ads_clients, manage, xds_pb  # noqa: F401  (fixtures)

MIB = 1 << 20
# grpc_server_limits_default() (src/xds/grpc.h): per-connection request buffer cap
CONN_BUFFER = 8 * MIB
# Under ASan freed blocks wait in a quarantine (256 MiB by default) instead of being reused,
# so RSS would measure the allocator, not what the server holds: turn it off for the RSS
# test (harmless without ASan)
NO_QUARANTINE = {"ASAN_OPTIONS": ":".join(
    filter(None, [os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=0"]))}


def fleet_tool(quilkin_bin):
    path = os.path.join(os.path.dirname(quilkin_bin), "bench_xds_fleet")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not built (it is part of the default CMake target)")
    return path


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def run_hostile(tool, target, scenario, args, timeout):
    out = subprocess.run([tool, "hostile", "--target", target, "--scenario", scenario, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                         check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def big_file(n, port_base):
    eps = "\n".join(f"      - address: 127.0.0.1:{port_base + i}" for i in range(n))
    return f"version: v1alpha1\nclusters:\n  - endpoints:\n{eps}\n"


def test_half_received_messages_are_capped_per_connection(quilkin_bin, manage, ads_clients):
    # streams whose partial message fits under the cap wait for the rest: the first-request
    # timeout (1 s here) ends them within the tool's 3 s watch after its last byte
    m = manage(big_file(2, 29000), "--first-request-timeout-secs", "1", env=NO_QUARANTINE)
    pid = m.proc.pid
    before = status_kib(pid, "VmRSS")
    conns, streams = 2, 20
    # 2 x 20 streams x 3.5 MiB = 140 MiB offered, each message under the 4 MiB request
    # limit; the cap allows 2 x 8 MiB
    a = run_hostile(fleet_tool(quilkin_bin), m.target, "half-messages",
                    ["--conns", str(conns), "--streams", str(streams),
                     "--declared-bytes", str(4 * MIB), "--partial-bytes", str(7 * MIB // 2),
                     "--duration-s", "30"], timeout=60)
    peak = status_kib(pid, "VmHWM")
    assert a["connected"] == conns, a
    assert a["streams_submitted"] == conns * streams, a
    # streams are refused with RESOURCE_EXHAUSTED (8) once their connection's buffer is full;
    # the few whose partial message fitted under the cap (which ones depends on how the
    # client's writes interleave) end with DEADLINE_EXCEEDED (4) at the first-request
    # timeout; none is left hanging
    st = a["grpc_status"]
    assert set(st) <= {"8", "4"} and sum(st.values()) == conns * streams, a
    assert st.get("8", 0) >= conns * (streams - 5), a
    assert a["streams_open_at_end"] == 0, a
    assert a["request_bytes_sent"] < conns * streams * 7 * MIB // 2, a
    # what the server kept: at most the cap per connection (plus allocator slack), never
    # the 140 MiB offered
    print(f"manage RSS {before} KiB, peak {peak} KiB")
    assert (peak - before) * 1024 < conns * CONN_BUFFER + 24 * MIB, (before, peak)
    mt = scrape(m)
    assert mt.value("quilkin_xds_server_limit_events_total", event="request_buffer_full") >= 1
    wait_until(lambda: scrape(m).value("quilkin_xds_server_buffered_request_bytes") == 0, 5.0,
               what="buffered request bytes back to 0 after the hostile client left")
    # and a well-behaved client is still served
    c = ads_clients(m.target)
    resp = subscribe(c, TYPE_CLUSTER, node_id="after-hostile")
    assert len(resp.resources) >= 1


def test_reader_that_never_reads_is_reset_and_counted(quilkin_bin, manage, tmp_path):
    m = manage(big_file(200, 30000))
    tool = fleet_tool(quilkin_bin)
    proc = subprocess.Popen([tool, "hostile", "--target", m.target, "--scenario",
                             "slow-reader", "--hold-s", "12"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the stream subscribes to every type with a 1 KiB window: its first responses
        # (200 endpoints, ~6 KiB) stall; each change queues more until the cap is met
        wait_until(lambda: scrape(m).value("quilkin_xds_server_connections") >= 1, 5.0,
                   what="the slow reader connected")
        time.sleep(0.5)
        for i in range(1, 21):
            write_by_rename(m.file_path, big_file(200, 30000 + 7 * i))
            time.sleep(0.15)
            if scrape(m).value("quilkin_xds_send_failures_total", reason="slow_reader"):
                break
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err.decode(errors="replace")
    a = json.loads(out.decode().strip().splitlines()[-1])
    assert scrape(m).value("quilkin_xds_send_failures_total", reason="slow_reader") >= 1
    m.wait_log("slow", timeout=5.0)
    # its trailers wait behind the half-sent response; the client never reads them, so after
    # the 5 s grace (src/xds/grpc_server.c ABORT_GRACE_NS) the stream is reset with
    # ENHANCE_YOUR_CALM (gRPC's RESOURCE_EXHAUSTED), not left open
    assert a["streams_open_at_end"] == 0, a
    assert a["streams_reset"] == 1 and a["rst_codes"] == {"ENHANCE_YOUR_CALM": 1}, a
