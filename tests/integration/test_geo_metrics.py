"""ASN enrichment with `proxy --mmdb` (spec admin.md §4.1, §4.2, §4.6) and the
quilkin_packet_jitter gauge (§4.1). The database is written by the test with
libmaxmind-db-writer-perl (tests/support/write_mmdb.pl), the clients send from loopback
addresses the database knows (127.0.0.0/16, 127.1.0.0/16)."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from admin_helpers import quilkin, scrape  # noqa: F401  (fixture)
from conftest import RECV_TIMEOUT, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
WRITER = os.path.join(HERE, "..", "support", "write_mmdb.pl")

GEOLITE_NET = "127.0.0.0/16"   # GeoLite2-ASN style: the prefix is the network looked up
IPINFO_NET = "127.1.0.0/16"    # IPinfo style: `as`, `prefix` and friends in the record


def write_db(path, geolite_asn, ipinfo_asn=64511):
    networks = [
        {"network": GEOLITE_NET,
         "data": {"autonomous_system_number": geolite_asn,
                  "autonomous_system_organization": f"Org {geolite_asn}"}},
        {"network": IPINFO_NET,
         "data": {"as": ipinfo_asn, "as_name": "IPinfo \"Org\"", "as_cc": "NZ",
                  "prefix": IPINFO_NET, "prefix_entity": "ENT-1", "prefix_name": "loop-1"}},
    ]
    r = subprocess.run(["perl", WRITER, str(path)], input=json.dumps(networks), text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def need_writer():
    r = subprocess.run(["perl", "-MMaxMind::DB::Writer::Tree", "-e", "1"], capture_output=True)
    if r.returncode != 0:
        pytest.skip("libmaxmind-db-writer-perl is not installed (scripts/install-deps.sh)")


def client(src, dst_port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(RECV_TIMEOUT)
    s.connect(("127.0.0.1", dst_port))
    return s


def exchange(s, n=3, gap=0.0):
    for i in range(n):
        s.send(b"ping-%d" % i)
        assert s.recv(2048) == b"ping-%d" % i
        if gap:
            time.sleep(gap)


def labelled(m, name, **labels):
    """Samples of `name` whose labels include `labels`."""
    return [(l, v) for _, l, v in m.samples(name) if all(l.get(k) == x for k, x in labels.items())]


def test_asn_and_prefix_labels_from_both_database_styles(quilkin, echo_v4, tmp_path,
                                                         need_writer):
    db = tmp_path / "asn.mmdb"
    write_db(db, 64500)
    p = quilkin("--to", echo_v4.addr, "--mmdb", str(db), "--workers", "1")
    assert p.find("maxmind database updated")
    exchange(client("127.0.0.1", p.port))   # GeoLite2 style record
    exchange(client("127.1.0.1", p.port))   # IPinfo style record
    exchange(client("127.2.0.1", p.port))   # not in the database

    def ready():
        m = scrape(p)
        return m if m.value("quilkin_packets_total", asn="", event="write", ip_prefix="") == 3 \
            and m.value("quilkin_packets_total", asn="64511", event="write",
                        ip_prefix=IPINFO_NET) == 3 else None
    m = wait_until(ready, 3, what="labelled packet counts")
    for event in ("read", "write"):
        assert m.value("quilkin_packets_total", asn="64500", event=event,
                       ip_prefix=GEOLITE_NET) == 3, m.text
        assert m.value("quilkin_packets_total", asn="64511", event=event,
                       ip_prefix=IPINFO_NET) == 3, m.text
        assert m.value("quilkin_packets_total", asn="", event=event, ip_prefix="") == 3, m.text
        assert m.value("quilkin_bytes_total", asn="64500", event=event,
                       ip_prefix=GEOLITE_NET) == 3 * len(b"ping-0"), m.text
    assert m.value("quilkin_session_active", asn="64500", country_code="",
                   ip_prefix=GEOLITE_NET, organization="Org 64500", prefix_entity="",
                   prefix_name="") == 1, m.text
    assert m.value("quilkin_session_active", asn="64511", country_code="NZ",
                   ip_prefix=IPINFO_NET, organization='IPinfo "Org"', prefix_entity="ENT-1",
                   prefix_name="loop-1") == 1, m.text
    assert m.value("quilkin_session_active", asn="0", country_code="", ip_prefix="",
                   organization="", prefix_entity="", prefix_name="") == 1, m.text
    # the labelled jitter series exist too
    assert labelled(m, "quilkin_packet_jitter", asn="64511", ip_prefix=IPINFO_NET,
                    event="read"), m.text


def test_drops_carry_the_clients_labels(quilkin, echo_v4, tmp_path, need_writer):
    db = tmp_path / "asn.mmdb"
    write_db(db, 64500)
    # a Firewall that lets 127.0.0.1 open its session, then drops its packets on a port rule
    p = quilkin("--to", echo_v4.addr, "--mmdb", str(db), "--workers", "1",
                config="filters:\n  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                       "    config: { prefix: { size: 2 } }\n")
    c = client("127.0.0.1", p.port)
    exchange(c, n=1)                         # 2+ bytes: captured, passes
    c.send(b"x")                             # 1 byte: "no value captured"
    source = "filter  error: no value captured"

    def dropped():
        m = scrape(p)
        return m if m.value("quilkin_packets_dropped_total", asn="64500", event="read",
                            ip_prefix=GEOLITE_NET, source=source) == 1 else None
    m = wait_until(dropped, 3, what="a labelled drop")
    assert m.value("quilkin_errors_total", asn="64500", event="read", ip_prefix=GEOLITE_NET,
                   display=source) == 1, m.text
    assert m.value("quilkin_packets_dropped_total", asn="", event="read", ip_prefix="",
                   source=source) is None, m.text


def test_database_reload_applies_to_new_sessions(quilkin, echo_v4, tmp_path, need_writer):
    db = tmp_path / "asn.mmdb"
    write_db(db, 64500)
    p = quilkin("--to", echo_v4.addr, "--mmdb", str(db), "--workers", "1")
    first = client("127.0.0.1", p.port)
    exchange(first, n=2)
    write_db(db, 64501)                      # replaced by rename, as the writer does
    p.wait_log("maxmind database updated", count=2)
    second = client("127.0.0.1", p.port)     # a new port: a new session
    exchange(second, n=2)
    exchange(first, n=1)                     # the old session keeps its labels

    def ready():
        m = scrape(p)
        return m if m.value("quilkin_packets_total", asn="64501", event="write",
                            ip_prefix=GEOLITE_NET) == 2 and \
            m.value("quilkin_packets_total", asn="64500", event="write",
                    ip_prefix=GEOLITE_NET) == 3 else None
    wait_until(ready, 3, what="counts under the old and the new ASN")

    # a bad file is logged and the database in use stays
    with open(db, "wb") as f:
        f.write(b"not a maxmind database")
    p.wait_log("maxmind database not loaded", count=1, timeout=5)
    third = client("127.0.0.1", p.port)
    exchange(third, n=1)
    wait_until(lambda: scrape(p).value("quilkin_packets_total", asn="64501", event="write",
                                       ip_prefix=GEOLITE_NET) == 3, 3,
               what="the previous database still labelling new sessions")
    assert p.running()


def test_missing_database_is_an_error_not_fatal(quilkin, echo_v4, tmp_path):
    p = quilkin("--to", echo_v4.addr, "--mmdb", str(tmp_path / "nope.mmdb"))
    assert p.find("maxmind database not loaded")
    exchange(client("127.0.0.1", p.port), n=1)
    m = wait_until(lambda: (lambda m: m if m.value("quilkin_packets_total", asn="", event="read",
                                                   ip_prefix="") == 1 else None)(scrape(p)), 3,
                   what="unlabelled counts")
    assert m.value("quilkin_session_active", asn="0", country_code="", ip_prefix="",
                   organization="", prefix_entity="", prefix_name="") == 1, m.text


# --------------------------------------------------------------------------
# quilkin_packet_jitter
# --------------------------------------------------------------------------

def test_jitter_gauge_of_paced_packets(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr, "--workers", "1")
    c = client("127.0.0.1", p.port)
    gap = 0.05
    exchange(c, n=8, gap=gap)                # one datagram per batch, ~50 ms apart
    m = wait_until(lambda: (lambda m: m if m.value("quilkin_packet_jitter", asn="",
                                                   event="write", ip_prefix="") else None)(
        scrape(p)), 3, what="the jitter gauge")
    fam = m.families["quilkin_packet_jitter"]
    assert fam.type == "gauge"
    assert {tuple(sorted(l)) for _, l, _ in fam.samples} == {("asn", "event", "ip_prefix")}
    for event in ("read", "write"):
        ns = m.value("quilkin_packet_jitter", asn="", event=event, ip_prefix="")
        # nanoseconds between the last two datagrams: the pacing gap, give or take the
        # round trip and a slow (sanitized) build; never accumulated over the 8 packets
        assert gap * 0.5e9 <= ns <= gap * 1e9 + 0.4e9, (event, ns)


def test_jitter_absent_before_two_datagrams(quilkin, echo_v4):
    p = quilkin("--to", echo_v4.addr, "--workers", "1")
    m = scrape(p)
    assert "quilkin_packet_jitter" in m.families  # the family is always declared
    assert not m.samples("quilkin_packet_jitter"), m.text
    exchange(client("127.0.0.1", p.port), n=1)
    time.sleep(0.1)
    assert not scrape(p).samples("quilkin_packet_jitter")  # one datagram: no interval yet
