"""README: "no heap allocation or lock per packet" (STYLE.md hot-path rules), counted.

The optimised proxy (build/quilkin: an ASan build replaces malloc, so this test needs the
plain one) runs under tests/tools/alloccount.c, an LD_PRELOAD library that counts malloc,
calloc, realloc, free (and the aligned forms) and pthread mutex/rwlock/spin locks per
thread in a file this test maps. Sessions are set up first (a session's socket and table
slot are set up once, not per packet); then the counters are read, N client datagrams go
through the proxy and come back (2N packets on the data path), and the counters are read
again. Every thread together, the admin-less proxy's control and log threads included, must
have made fewer than N/100 heap calls and N/100 lock calls in that window: not one per
packet, whatever the data path's design.

QUILKIN_PLAIN_BIN and ALLOCCOUNT_LIB override where the binary and the library are
(default build/quilkin and build/liballoccount.so, which `make build` makes; `make
integration` builds them).

Expected values: the claim is README's ("no heap allocation or lock per packet",
STYLE.md's hot-path rules); the bound N/100 is the test's (docs/test-expectations.md E7)."""

import mmap
import os
import struct

import pytest

from conftest import REPO, Proxy, free_port, stop_all

PLAIN_BIN = os.environ.get("QUILKIN_PLAIN_BIN", os.path.join(REPO, "build", "quilkin"))
SHIM = os.environ.get("ALLOCCOUNT_LIB", os.path.join(REPO, "build", "liballoccount.so"))

N = 10_000          # client datagrams in the measured window (each also comes back)
CLIENTS = 8
WINDOW = 25         # datagrams in flight per client (well inside the socket buffers)

# tests/tools/alloccount.c: struct page and struct slot
MAGIC = 0x41434E54
HEADER = struct.Struct("<IIII48x")
SLOT = struct.Struct("<q5Q16x")
COUNTERS = ("malloc", "calloc", "realloc", "free", "lock")


def read_counts(path):
    """{tid: {counter: value}} from the shim's file."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            magic, slot_size, n_slots, max_slots = HEADER.unpack_from(m, 0)
            assert magic == MAGIC and slot_size == SLOT.size, (hex(magic), slot_size)
            out = {}
            for i in range(min(n_slots, max_slots)):
                tid, *values = SLOT.unpack_from(m, HEADER.size + i * SLOT.size)
                out[tid] = dict(zip(COUNTERS, values))
            return out
        finally:
            m.close()


def thread_names(pid):
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except OSError:
            pass
    return names


def diff(before, after):
    out = {}
    for tid, counts in after.items():
        base = before.get(tid, dict.fromkeys(COUNTERS, 0))
        d = {k: counts[k] - base[k] for k in COUNTERS}
        if any(d.values()):
            out[tid] = d
    return out


def test_no_heap_call_or_lock_per_packet(tmp_path, servers, clients):
    for path, what in ((PLAIN_BIN, "the optimised binary"), (SHIM, "the counting library")):
        if not os.path.isfile(path):
            pytest.fail(f"{what} is missing at {path}: run `make build` (make integration "
                        f"builds it)")
    counts = tmp_path / "alloccount"
    echo = servers("127.0.0.1")
    port = free_port()
    p = Proxy([PLAIN_BIN, "--no-admin", "proxy", "--port", str(port), "--qcmp-port",
               str(free_port()), "--to", echo.addr, "--workers", "2"], cwd=str(tmp_path),
              port=port, env={"LD_PRELOAD": SHIM, "ALLOCCOUNT_FILE": str(counts)})
    try:
        p.wait_ready()
        cs = [clients(port) for _ in range(CLIENTS)]
        for k, c in enumerate(cs):  # warm-up: every session exists, every path was taken
            for i in range(5):
                assert c.request(b"warm %d %d" % (k, i))[0] == b"warm %d %d" % (k, i)
        before = read_counts(counts)
        sent = 0
        while sent < N:
            for k, c in enumerate(cs):
                for i in range(WINDOW):
                    c.send(b"pkt %d %d" % (k, sent + i))
            for k, c in enumerate(cs):
                got = c.recv_n(WINDOW, timeout=5)
                assert [d for d, _ in got] == [b"pkt %d %d" % (k, sent + i)
                                               for i in range(WINDOW)]
            sent += WINDOW * CLIENTS
        after = read_counts(counts)
        names = thread_names(p.proc.pid)
    finally:
        stop_all([p])
    assert sent == N
    # the shim is really in place: start-up allocated and locked (config, threads, RCU)
    assert sum(c["malloc"] for c in before.values()) > 100, before
    assert sum(c["lock"] for c in before.values()) > 0, before
    spent = diff(before, after)
    report = {f"{names.get(tid, '?')} ({tid})": d for tid, d in spent.items()}
    heap = sum(d["malloc"] + d["calloc"] + d["realloc"] + d["free"] for d in spent.values())
    locks = sum(d["lock"] for d in spent.values())
    print(f"{N} datagrams each way: {heap} heap calls, {locks} lock calls: {report}")
    assert heap < N // 100, f"{heap} heap calls for {N} datagrams: {report}"
    assert locks < N // 100, f"{locks} lock calls for {N} datagrams: {report}"
    # the window really went through the proxy: its exit totals count every datagram
    total = [m for m in p.messages() if m.startswith("totals:")]
    assert total and f"read {N + 5 * CLIENTS} packets" in total[0], p.log_tail()
