"""Fixtures for the packaging tests (`make deploy-test`): they install, package and
containerise the release build (QK_BUILD_DIR, default build/) and run what they produced,
on loopback only. The process and UDP helpers are the integration suite's, loaded from
tests/integration/conftest.py under another module name so both suites can share them."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD_DIR = pathlib.Path(os.environ.get("QK_BUILD_DIR", TOP / "build"))
JOBS = os.environ.get("QK_JOBS", "2")

_spec = importlib.util.spec_from_file_location(
    "integration_conftest", TOP / "tests" / "integration" / "conftest.py")
itc = importlib.util.module_from_spec(_spec)
sys.modules["integration_conftest"] = itc
_spec.loader.exec_module(itc)
# The names admin_helpers imports from `conftest` (which, in this directory, is this file).
Proxy, READY_TIMEOUT, free_port, free_tcp_port, fmt_addr, stop_all = (
    itc.Proxy, itc.READY_TIMEOUT, itc.free_port, itc.free_tcp_port, itc.fmt_addr, itc.stop_all)
_spec = importlib.util.spec_from_file_location(
    "admin_helpers", TOP / "tests" / "integration" / "admin_helpers.py")
admin_helpers = importlib.util.module_from_spec(_spec)
sys.modules["admin_helpers"] = admin_helpers
_spec.loader.exec_module(admin_helpers)

# Re-exported fixtures (pytest registers the ones named here).
servers = itc.servers
clients = itc.clients


def run(argv, timeout, **kw):
    """Runs a command to completion (bounded); fails the test with its output if it fails."""
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, **kw)
    if res.returncode != 0:
        pytest.fail(f"{argv} exited {res.returncode}\nstdout:\n{res.stdout[-3000:]}\n"
                    f"stderr:\n{res.stderr[-3000:]}")
    return res


def proxy_roundtrip(argv, servers, clients, env=None, cwd=None):
    """Starts `argv` (a quilkin proxy command line ending in options this adds: a free game
    port, QCMP port and loopback admin address, and --to an echo server), waits for "Quilkin
    is ready", passes one datagram each way, then SIGKILLs it. Returns the log lines."""
    echo = servers("127.0.0.1")
    port, qcmp, admin = itc.free_port(), itc.free_port(), free_tcp_port()
    full = [argv[0], "--log-format", "json", "--admin-address", f"127.0.0.1:{admin}",
            *argv[1:], "proxy", "--port", str(port), "--qcmp-port", str(qcmp),
            "--to", echo.addr]
    p = itc.Proxy(full, cwd=cwd or TOP, env=env)
    try:
        p.wait_ready()
        c = clients(port)
        data, src = c.request(b"through the packaged proxy")
        assert data == b"through the packaged proxy"
        assert src == ("127.0.0.1", port)
        echo.wait_for(b"through the packaged proxy")
        return p.messages()
    finally:
        p.kill()
