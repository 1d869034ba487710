"""I/O backends and coalescing (issue 11; docs/operations.md "I/O backends and coalescing").

Expected values are quilkin-c's own (extensions, no Quilkin equivalent): `--io-backend auto`
uses io_uring when the kernel allows it and says so in the start-up log; a seccomp profile
that refuses io_uring_setup (as Docker's and containerd's defaults do) makes `auto` fall back
to epoll and `io-uring` refuse to start; `--coalesce-us` turns on only under a load from
several sessions, never for one client's ping-pong, and loses nothing. The whole suite runs
on both backends (`make test`: QUILKIN_IO_BACKEND=epoll for the second pass)."""

import ctypes
import os
import time

import pytest

from conftest import QUILKIN_BIN, Proxy, free_port, run_quilkin, stop_all

DENY = os.environ.get("DENY_IO_URING", os.path.join(os.path.dirname(QUILKIN_BIN),
                                                    "deny_io_uring"))
URING_LINE = "workers move datagrams with io_uring"
EPOLL_LINE = "workers move datagrams with epoll"


def host_has_io_uring():
    """io_uring_setup(2) works here (kernel, kernel.io_uring_disabled, seccomp)."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 4, params)  # __NR_io_uring_setup on x86-64 and arm64
    if fd < 0:
        return False
    os.close(fd)
    return True


needs_io_uring = pytest.mark.skipif(not host_has_io_uring(),
                                    reason="this host refuses io_uring_setup")


def backend_line(p):
    lines = p.find("workers move datagrams with")
    assert len(lines) == 1, p.log_tail()
    return lines[0]


def relay_many(p, echo, clients, n_clients=40, rounds=5):
    """Every client sends `rounds` datagrams; every one must come back, in order."""
    cs = [clients(p.port) for _ in range(n_clients)]
    for r in range(rounds):
        for i, c in enumerate(cs):
            c.send(b"%d:%d" % (i, r))
    for i, c in enumerate(cs):
        got = [d for d, _ in c.recv_n(rounds)]
        assert got == [b"%d:%d" % (i, r) for r in range(rounds)], (i, got)
    assert echo.count() == n_clients * rounds


@needs_io_uring
def test_default_backend_is_io_uring_and_relays(proxy, echo_v4, clients):
    if os.environ.get("QUILKIN_IO_BACKEND") == "epoll":
        pytest.skip("this pass runs the suite on epoll")
    p = proxy("--to", echo_v4.addr)
    assert URING_LINE in backend_line(p)
    relay_many(p, echo_v4, clients)


def test_epoll_backend_relays(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, "--io-backend", "epoll")
    assert EPOLL_LINE in backend_line(p)
    relay_many(p, echo_v4, clients)


@needs_io_uring
def test_env_selects_backend(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, env={"QUILKIN_IO_BACKEND": "epoll"})
    assert EPOLL_LINE in backend_line(p)
    p2 = proxy("--to", echo_v4.addr, env={"QUILKIN_IO_BACKEND": "io-uring"})
    assert URING_LINE in backend_line(p2)
    relay_many(p2, echo_v4, clients, n_clients=4)


@pytest.mark.parametrize("args,env", [
    (["--io-backend", "kqueue"], None),
    ([], {"QUILKIN_IO_BACKEND": "select"}),
    (["--coalesce-us", "1001"], None),
    (["--coalesce-us", "-1"], None),
])
def test_bad_values_are_usage_errors(tmp_path, args, env):
    r = run_quilkin(["--no-admin", "proxy", "--port", str(free_port()), "--to",
                     "127.0.0.1:9", *args], cwd=str(tmp_path), env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "io-backend" in r.stderr or "IO_BACKEND" in r.stderr or "coalesce-us" in r.stderr


def start_denied(tmp_path, *args):
    """A proxy run under a seccomp filter that refuses io_uring_setup with EPERM."""
    if not os.access(DENY, os.X_OK):
        pytest.fail(f"{DENY} not built (set DENY_IO_URING)")
    port = free_port()
    argv = [DENY, QUILKIN_BIN, "--no-admin", "proxy", "--port", str(port), "--qcmp-port",
            str(free_port()), *args]
    return Proxy(argv, cwd=str(tmp_path), port=port, env={"QUILKIN_IO_BACKEND": "auto"})


def test_auto_falls_back_to_epoll_when_io_uring_is_refused(tmp_path, echo_v4, clients):
    p = start_denied(tmp_path, "--to", echo_v4.addr)
    try:
        p.wait_ready()
        assert p.find("io_uring is not available (io_uring_setup: Operation not permitted)")
        assert EPOLL_LINE in backend_line(p)
        relay_many(p, echo_v4, clients)
    finally:
        stop_all([p])


def test_io_uring_required_but_refused_fails_to_start(tmp_path, echo_v4):
    p = start_denied(tmp_path, "--to", echo_v4.addr, "--io-backend", "io-uring")
    try:
        code = p.wait_exit(10)
        assert code != 0, p.log_tail()
        assert p.find("--io-backend io-uring: io_uring_setup: Operation not permitted"), \
            p.log_tail()
        assert not p.find("Quilkin is ready")
    finally:
        if p.running():
            p.kill()


def paced_burst(cs, rounds, gap):
    """One datagram from every client per round, `gap` seconds apart."""
    for r in range(rounds):
        for i, c in enumerate(cs):
            c.send(b"%d:%d" % (i, r))
        time.sleep(gap)


def test_coalescing_turns_on_under_many_sessions_and_loses_nothing(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, "--workers", "1", "--coalesce-us", "500",
              env={"RUST_LOG": "debug"})
    cs = [clients(p.port) for _ in range(24)]
    rounds = 150
    paced_burst(cs, rounds, 0.001)  # about 24 datagrams per ms, from 24 sessions
    for i, c in enumerate(cs):
        got = [d for d, _ in c.recv_n(rounds)]
        assert got == [b"%d:%d" % (i, r) for r in range(rounds)], (i, len(got))
    assert p.find("coalescing on"), p.log_tail()


def test_coalescing_never_turns_on_for_one_clients_ping_pong(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr, "--workers", "1", "--coalesce-us", "500",
              env={"RUST_LOG": "debug"})
    c = clients(p.port)
    for i in range(1500):
        assert c.request(b"ping%d" % i)[0] == b"ping%d" % i
    assert not p.find("coalescing on"), p.log_tail()
