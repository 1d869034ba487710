"""Starting a quilkin process on free ports when other programs on the machine take ports
at the same time: the ports are picked (free_port / free_tcp_port), then bound by the
process, and another program can bind one in between. `start_ready` retries such a start
with fresh ports, a bounded number of times; any other failure fails at once."""

from admin_helpers import free_tcp_port
from conftest import Proxy, free_port

PORT_RACE = ("Address already in use", "address in use")


def start_ready(make_argv, cwd, attempts=4):
    """`make_argv(udp_port, tcp_port)` -> argv (ports from fresh free_port/free_tcp_port
    calls each attempt). Returns a Proxy that logged "Quilkin is ready"; the caller stops
    it (stop_all)."""
    for attempt in range(attempts):
        p = Proxy(make_argv(free_port, free_tcp_port), cwd=cwd)
        try:
            p.wait_ready()
            return p
        except AssertionError:
            p.kill()
            if attempt + 1 == attempts or not any(s in p.log_tail() for s in PORT_RACE):
                raise
    raise AssertionError("unreachable")
