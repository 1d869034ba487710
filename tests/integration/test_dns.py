"""DNS endpoint names (spec config.md section 4.1, proxy.md section 7; README "Choices"):
resolved when the configuration snapshot is built, an IPv6 address preferred whenever the
answer has one, and a name that does not resolve leaves its endpoint unusable (packets
dropped and counted) until a reload resolves it.

Loopback only and deterministic: the proxy runs in a private mount namespace where
/etc/hosts is the test's file, /etc/nsswitch.conf says `hosts: files` (no query ever leaves
the host, and a name missing from the file fails at once) and /etc/gai.conf sorts IPv4
before IPv6, so that ending up on IPv6 is the proxy's choice and not the resolver's order.

Expected values: the IPv6 preference is the spec's (proxy.md section 7, "If the answer
contains any IPv6 address, an IPv6 address is used"); resolving once per snapshot instead of
per packet with a 60 s cache is quilkin-c's documented choice (README "Choices"); the drop
reason text "OS level error: endpoint address did not resolve" is quilkin-c's wording of the
spec's `OS level error: ...` (docs/test-expectations.md)."""

import os
import shutil
import subprocess
import time

import pytest

from admin_helpers import wait_drops
from admin_helpers import quilkin  # noqa: F401  (fixture)

UNRESOLVED = "OS level error: endpoint address did not resolve"

# mounts the three files given as $1..$3 over the system's, then execs the rest of argv
_MOUNT = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf && '
          '{ [ ! -e /etc/gai.conf ] || mount --bind "$3" /etc/gai.conf; } && '
          'shift 3 && exec "$@"')


@pytest.fixture
def resolver(tmp_path):
    """Returns (hosts file path, wrapper argv) for the quilkin fixture's ``wrapper``."""
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed: make deps installs it")
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    nss = tmp_path / "nsswitch.conf"
    nss.write_text("hosts: files\n")
    gai = tmp_path / "gai.conf"
    gai.write_text("precedence ::ffff:0:0/96 100\n")  # IPv4 answers first
    last = None
    # root: a mount namespace; otherwise a user namespace too (maps the user to root in it)
    for prefix in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        probe = subprocess.run([*prefix, "--", "sh", "-c", _MOUNT, "sh", str(hosts), str(nss),
                                str(gai), "true"], capture_output=True, text=True, timeout=10)
        if probe.returncode == 0:
            return hosts, [*prefix, "--", "sh", "-c", _MOUNT, "sh", str(hosts), str(nss),
                           str(gai)]
        last = probe.stderr.strip()
    pytest.skip(f"cannot make a private mount namespace here: {last}")


def test_a_name_with_both_families_goes_to_ipv6_and_a_v4_name_to_ipv4(quilkin, resolver,
                                                                     servers, clients):
    hosts, wrapper = resolver
    # the same port on ::1 and 127.0.0.1: only the address family tells them apart
    v6 = servers("::1", echo=lambda d: b"v6:" + d)
    v4_same_port = servers("127.0.0.1", echo=lambda d: b"v4:" + d, port=v6.port)
    v4_only = servers("127.0.0.1", echo=lambda d: b"v4only:" + d)
    hosts.write_text("127.0.0.1 both.quilkin.test\n::1 both.quilkin.test\n"
                     "127.0.0.1 v4only.quilkin.test\n")
    cfg = ("clusters:\n  - endpoints:\n"
           f"      - address: both.quilkin.test:{v6.port}\n"
           f"      - address: v4only.quilkin.test:{v4_only.port}\n")
    p = quilkin(config=cfg, wrapper=wrapper)
    assert not p.find("did not resolve"), p.log_tail()
    c = clients(p.port)
    c.send(b"hello")  # fan-out: both endpoints
    got = sorted(d for d, _ in c.recv_n(2))
    assert got == [b"v4only:hello", b"v6:hello"], got
    assert v6.wait_for(b"hello")[0] == "::1"
    assert v4_only.wait_for(b"hello")[0] == "127.0.0.1"
    assert v4_same_port.count() == 0
    c.expect_silence()


def test_an_unresolved_name_drops_until_a_reload_resolves_it(quilkin, resolver, servers,
                                                            clients):
    hosts, wrapper = resolver
    echo = servers("127.0.0.1")
    cfg = f"clusters:\n  - endpoints:\n      - address: later.quilkin.test:{echo.port}\n"
    p = quilkin(config=cfg, wrapper=wrapper)
    p.wait_log("cannot resolve endpoint later.quilkin.test")
    p.wait_log("1 endpoint names did not resolve")
    c = clients(p.port)
    for i in range(3):
        c.send(b"early %d" % i)
    wait_drops(p, UNRESOLVED, 3)
    assert echo.count() == 0
    # the name appears; nothing happens until the snapshot is rebuilt (a reload) ...
    with open(hosts, "w") as f:  # in place: the bind mount shows this very file
        f.write("127.0.0.1 later.quilkin.test\n")
    c.send(b"still unresolved")
    wait_drops(p, UNRESOLVED, 4)
    # ... which resolves it again
    with open(p.config_path, "a") as f:
        f.write("# touched\n")
    p.wait_log("config reloaded")
    assert c.request(b"now") == (b"now", ("127.0.0.1", p.port))
    assert [d for d, _ in echo.snapshot()] == [b"now"]


def test_no_dns_query_leaves_the_namespace(resolver, tmp_path):
    """The premise of the tests above: in the namespace, a name missing from the hosts file
    fails at once (no resolver is asked), and gai.conf puts IPv4 first."""
    hosts, wrapper = resolver
    hosts.write_text("127.0.0.1 both.quilkin.test\n::1 both.quilkin.test\n")
    t0 = time.monotonic()
    r = subprocess.run([*wrapper, "getent", "ahostsv4", "missing.quilkin.test"],
                       capture_output=True, text=True, timeout=5)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)  # getent: key not found
    assert time.monotonic() - t0 < 2
    r = subprocess.run([*wrapper, "getent", "ahosts", "both.quilkin.test"],
                       capture_output=True, text=True, timeout=5)
    assert r.returncode == 0, r.stderr
    first = r.stdout.split()[0]
    if os.path.exists("/etc/gai.conf"):
        assert first == "127.0.0.1", r.stdout
