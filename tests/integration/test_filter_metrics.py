"""Per-filter metrics on /metrics (spec admin.md section 4.4, filters.md sections 1.4, 3, 10,
12): Compress byte counters, Match branch counters, the Timestamp age histogram, the
per-filter timing histograms (every run observed), and counters that keep counting across a config reload that
rebuilds the chain.

Expected values: metric names, labels, HELP texts of the filter metrics and what they count
are the spec's (admin.md section 4.4, filters.md sections 1.4, 3, 10, 12); that every call
is observed (so _count is the packet count) and that counters survive a reload are
quilkin-c's (README "Admin endpoints"; docs/test-expectations.md E4)."""

import struct
import time

from admin_helpers import scrape, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import wait_until

COUNTER = "quilkin_filter_int_counter"
HISTOGRAM = "quilkin_filter_histogram"
READ_DURATION = "quilkin_filter_read_duration_seconds"
WRITE_DURATION = "quilkin_filter_write_duration_seconds"

CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
COMPRESS = "quilkin.filters.compress.v1alpha1.Compress"
MATCH = "quilkin.filters.match.v1alpha1.Match"
PASS = "quilkin.filters.pass.v1alpha1.Pass"
TIMESTAMP = "quilkin.filters.timestamp.v1alpha1.Timestamp"

COMPRESSED = dict(id=COMPRESS, label="compressed_bytes_total",
                  help="Total number of compressed bytes either received or sent.")
DECOMPRESSED = dict(id=COMPRESS, label="decompressed_bytes_total",
                    help="Total number of decompressed bytes either received or sent.")
MATCHED = dict(id=MATCH, label="packets_matched_total", event="read",
               help="Total number of packets where the dynamic metadata matches a branch value")
FALLTHROUGH = dict(id=MATCH, label="packets_fallthrough_total", event="read",
                   help="Total number of packets that are processed by the fallthrough "
                        "configuration")
STAMP_KEY = "example.org/sent_at"
AGE = dict(id=TIMESTAMP, label="duration", shared_metadata_1=STAMP_KEY,
           help="duration in seconds of time since the timestamp in metadata compared to now")

# spec admin.md section 4.4
DURATION_BOUNDS = ["0.000125", "0.0003125", "0.00078125", "0.001953125", "0.0048828125",
                   "0.01220703125", "0.030517578125", "0.0762939453125", "0.19073486328125",
                   "0.476837158203125", "1.1920928955078125", "+Inf"]


def config_for(*addrs, filters):
    eps = "".join(f"      - address: {a}\n" for a in addrs)
    return f"version: v1alpha1\nclusters:\n  - endpoints:\n{eps}filters:\n{filters}"


COMPRESS_CHAIN = f"""\
  - name: {COMPRESS}
    config: {{on_read: COMPRESS, on_write: DECOMPRESS}}
"""


def payloads(n):
    """Distinct datagrams, some compressible, some not, of varying sizes."""
    out = []
    for i in range(n):
        if i % 2:
            out.append(b"a" * (40 + i))
        else:
            out.append(bytes((i * 7 + k * 13) % 256 for k in range(10 + i)))
    return out


def test_compress_byte_counters(quilkin, servers, clients):
    server = servers("127.0.0.1")          # echoes the framed bytes back
    p = quilkin(config=config_for(server.addr, filters=COMPRESS_CHAIN))
    c = clients(p.port)
    sent = payloads(20)
    for d in sent:
        c.send(d)
    got = server.wait_count(len(sent))
    replies = c.recv_n(len(sent))
    assert sorted(d for d, _ in replies) == sorted(sent)   # decompressed on the way back
    framed = sum(len(d) for d, _ in got)
    plain = sum(len(d) for d in sent)
    assert framed != plain
    # COMPRESS on read: output to compressed, input to decompressed; DECOMPRESS on write
    # the other way round (spec filters.md section 3)
    wait_metric(p, COUNTER, framed, event="read", **COMPRESSED)
    m = wait_metric(p, COUNTER, framed, event="write", **COMPRESSED)
    assert m.value(COUNTER, event="read", **DECOMPRESSED) == plain
    assert m.value(COUNTER, event="write", **DECOMPRESSED) == plain
    fam = m.families[COUNTER]
    assert fam.type == "counter"
    assert len(fam.samples) == 4


def test_match_counters(quilkin, servers, clients):
    server = servers("127.0.0.1", echo=False)
    chain = f"""\
  - name: {CAPTURE}
    config: {{metadataKey: example.org/version, prefix: {{size: 1, remove: true}}}}
  - name: {MATCH}
    config:
      on_read:
        metadataKey: example.org/version
        branches:
          - {{value: 1, name: {PASS}}}
        fallthrough: {{name: {PASS}}}
"""
    p = quilkin(config=config_for(server.addr, filters=chain))
    c = clients(p.port)
    for i in range(7):
        c.send(b"\x01match%d" % i)
    for i in range(5):
        c.send(b"\x02other%d" % i)
    server.wait_count(12)
    m = wait_metric(p, COUNTER, 7, **MATCHED)
    assert m.value(COUNTER, **FALLTHROUGH) == 5
    # v0.7.0 records both with event="read"; there is no write series
    assert [s for s in m.samples(COUNTER) if s[1]["event"] == "write"] == []


def test_timestamp_histogram(quilkin, servers, clients):
    server = servers("127.0.0.1", echo=False)
    chain = f"""\
  - name: {CAPTURE}
    config: {{metadataKey: {STAMP_KEY}, suffix: {{size: 8, remove: true}}}}
  - name: {TIMESTAMP}
    config: {{metadataKey: {STAMP_KEY}}}
"""
    p = quilkin(config=config_for(server.addr, filters=chain))
    c = clients(p.port)
    n = 15
    for i in range(n):
        # sent "2 s ago": an age of 2 (or 3 if the second turns over meanwhile)
        c.send(b"tick%d" % i + struct.pack(">q", int(time.time()) - 2))
    got = server.wait_count(n)
    assert all(d.startswith(b"tick") for d, _ in got)   # the stamp was removed
    m = wait_metric(p, HISTOGRAM + "_count", n, event="read", **AGE)
    assert m.families[HISTOGRAM].type == "histogram"
    b = m.buckets(HISTOGRAM, event="read", **AGE)
    assert list(b) == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
                       "5", "10", "+Inf"]
    assert b["1"] == 0 and b["5"] == n
    assert 2 * n <= m.value(HISTOGRAM + "_sum", event="read", **AGE) <= 4 * n
    assert m.value(HISTOGRAM + "_count", event="write", **AGE) == 0


def test_filter_durations_observe_every_run(quilkin, servers, clients):
    """Spec admin.md section 4.4: each read/write call of a top-level filter is one
    observation, so `_count` is the filter's packet count (issue 8 #6: it was 1/64 of it)."""
    server = servers("127.0.0.1")
    chain = f"""\
  - name: {PASS}
  - name: {COMPRESS}
    config: {{on_read: COMPRESS, on_write: DECOMPRESS}}
  - name: {PASS}
"""
    p = quilkin(config=config_for(server.addr, filters=chain))
    c = clients(p.port)
    n = 256
    for i in range(n):
        c.send(b"packet %d " % i + b"x" * 50)
        if i % 32 == 31:            # keep well under the socket buffers
            server.wait_count(i + 1)
    server.wait_count(n)
    c.recv_n(n)
    wait_until(lambda: scrape(p).value(WRITE_DURATION + "_count", filter=COMPRESS) == n, 3,
               what=f"{n} timed writes of Compress")
    m = scrape(p)
    for name in (READ_DURATION, WRITE_DURATION):
        assert m.families[name].type == "histogram"
        for f in (PASS, COMPRESS):
            count = m.value(name + "_count", filter=f)
            assert count is not None, f"{name}{{filter={f}}} missing:\n{m.text}"
            assert list(m.buckets(name, filter=f)) == DURATION_BOUNDS
            # every packet, both directions; the two Pass entries share one series
            per_packet = 2 if f == PASS else 1
            assert count == per_packet * n, (name, f, count)
            assert m.buckets(name, filter=f)["+Inf"] == count
            assert 0 < m.value(name + "_sum", filter=f) < count * 0.01  # seconds, not ticks
        # one series per filter name (no duplicates for the two Pass entries)
        assert {s[1]["filter"] for s in m.samples(name + "_count")} == {PASS, COMPRESS}


def test_counters_survive_reload(quilkin, servers, clients):
    a = servers("127.0.0.1", echo=False)
    b = servers("127.0.0.1", echo=False)
    p = quilkin(config=config_for(a.addr, filters=COMPRESS_CHAIN))
    c = clients(p.port)
    first = payloads(10)
    for d in first:
        c.send(d)
    framed_before = sum(len(d) for d, _ in a.wait_count(10))
    wait_metric(p, COUNTER, framed_before, event="read", **COMPRESSED)

    # one more endpoint and a label on the entry: Compress is rebuilt (an unchanged entry
    # would be kept), and its counters continue in the same series
    relabelled = COMPRESS_CHAIN.replace("    config:", "    label: again\n    config:")
    with open(p.config_path, "w") as f:
        f.write(config_for(a.addr, b.addr, filters=relabelled))
    p.wait_log("endpoints=2 filters=1 kept_filters=0")
    m = wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    assert m.value(COUNTER, event="read", **COMPRESSED) == framed_before

    second = payloads(13)[3:]
    for d in second:
        c.send(d)
    got = a.wait_count(20)
    b.wait_count(10)
    framed_after = sum(len(d) for d, _ in got)     # each packet is compressed once
    m = wait_metric(p, COUNTER, framed_after, event="read", **COMPRESSED)
    assert framed_after > framed_before
    assert m.value(COUNTER, event="read", **DECOMPRESSED) == sum(map(len, first + second))
