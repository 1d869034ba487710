"""What operators read: the Grafana dashboard (examples/grafana) and the metrics reference
(docs/metrics.md) against a real scrape. A manage, a proxy fed by it over xDS (Capture +
TokenRouter, with traffic, drops and QCMP pings) and a proxy whose chain holds the filters
that export filter metrics are scraped; every metric a dashboard expression uses, and every
metric the reference lists (with exactly its labels), must be in the scrapes, and every
metric the scrapes hold must be documented."""

import json
import pathlib
import re
import subprocess
import urllib.request

import pytest

from conftest import QUILKIN_BIN, Client, UdpServer, stop_all, wait_until
from start_helpers import start_ready

TOP = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = TOP / "examples/grafana/quilkin-c.json"
METRICS_DOC = TOP / "docs/metrics.md"
# Labels Prometheus adds to every series from the scrape target, not from the exporter.
TARGET_LABELS = {"instance", "job", "pod", "namespace"}


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def parse(text):
    """{family: type}, {sample name: set of label names}."""
    types, samples = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)
    return types, samples


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observability")
    echo = UdpServer("127.0.0.1")
    fleet = tmp / "fleet.yaml"
    fleet.write_text(f"""version: v1alpha1
clusters:
  - endpoints:
      - address: {echo.addr}
        metadata: {{ quilkin.dev: {{ tokens: [ "YWJjZA==" ] }} }}
filters:
  - name: quilkin.filters.capture.v1alpha1.Capture
    config: {{ suffix: {{ size: 4, remove: true }} }}
  - name: quilkin.filters.token_router.v1alpha1.TokenRouter
""")
    static = tmp / "static.yaml"
    static.write_text(f"""version: v1alpha1
clusters:
  - endpoints:
      - address: {echo.addr}
filters:
  - name: quilkin.filters.compress.v1alpha1.Compress
    config: {{ on_read: DO_NOTHING, on_write: DO_NOTHING }}
  - name: quilkin.filters.timestamp.v1alpha1.Timestamp
    config: {{ metadataKey: example.org/sent_at }}
  - name: quilkin.filters.match.v1alpha1.Match
    config:
      on_read:
        metadataKey: quilkin.dev/capture
        branches: []
        fallthrough: {{ name: quilkin.filters.pass.v1alpha1.Pass }}
""")
    ports = {}

    def pick(key, fn):
        ports[key] = fn()
        return str(ports[key])

    started = []
    try:
        started.append(start_ready(lambda udp, tcp: [
            QUILKIN_BIN, "--log-format", "json", "--admin-address",
            f"127.0.0.1:{pick('admin0', tcp)}", "manage", "--port", pick("xds", tcp),
            "file", str(fleet)], cwd=tmp))
        started.append(start_ready(lambda udp, tcp: [
            QUILKIN_BIN, "--log-format", "json", "-c", "/dev/null", "--admin-address",
            f"127.0.0.1:{pick('admin1', tcp)}", "proxy", "--port", pick("game", udp),
            "--qcmp-port", pick("qcmp", udp), "-m", f"http://127.0.0.1:{ports['xds']}"],
            cwd=tmp))
        started.append(start_ready(lambda udp, tcp: [
            QUILKIN_BIN, "--log-format", "json", "-c", str(static), "--admin-address",
            f"127.0.0.1:{pick('admin2', tcp)}", "proxy", "--port", str(udp()),
            "--qcmp-port", str(udp())], cwd=tmp))
        admins = [ports["admin0"], ports["admin1"], ports["admin2"]]
        game, qcmp = ports["game"], ports["qcmp"]
        c = Client(game)
        wait_until(lambda: "quilkin_cluster_active_endpoints 1" in scrape(admins[1]), 10,
                   what="the xDS cluster")
        for _ in range(3):
            assert c.request(b"helloabcd")[0] == b"hello"
            c.send(b"hellozzzz")                 # no endpoint holds zzzz: a drop
        subprocess.run([QUILKIN_BIN, "qcmp", "ping", f"127.0.0.1:{qcmp}", "-a", "2"],
                       capture_output=True, timeout=20)
        c.close()
        wait_until(lambda: 'source="filter' in scrape(admins[1]), 5, what="the drop")
        texts = [scrape(a) for a in admins]
    finally:
        stop_all(started)
        echo.close()
    types, samples = {}, {}
    for t in texts:
        ty, sa = parse(t)
        types.update(ty)
        for k, v in sa.items():
            samples.setdefault(k, set()).update(v)
    return types, samples


def family(name, types):
    """The metric family a sample name belongs to (histograms: _bucket, _sum, _count)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) == "histogram":
            return base
    return None


PROMQL_WORDS = {"sum", "by", "without", "rate", "irate", "increase", "histogram_quantile",
                "avg", "max", "min", "count", "topk", "label_values", "on", "ignoring",
                "group_left", "group_right", "and", "or", "unless", "offset", "bool"}


def metric_refs(expr):
    """(metric name, labels of its by() clause) for each metric selector in a PromQL
    expression: strings, label matchers and range selectors are cut first, so only
    identifiers in selector position remain."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    by = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        by |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", e)
    names = []
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if word in PROMQL_WORDS or after.startswith("("):
            continue
        names.append(word)
    return names, by


def dashboard_exprs():
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def test_promql_reference_extraction():
    names, by = metric_refs('histogram_quantile(0.99, sum by (le, event) (rate('
                            'quilkin_x_bucket{instance=~"a|b"}[5m]))) / on() quilkin_y')
    assert names == ["quilkin_x_bucket", "quilkin_y"] and by == {"le", "event"}


def test_dashboard_metrics_exist_in_a_scrape(scraped):
    types, samples = scraped
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    used = set()
    for title, expr in exprs:
        names, by = metric_refs(expr)
        assert names, (title, expr)
        for n in names:
            assert n.startswith("quilkin_"), (title, n)
            assert n in samples and family(n, types), f"{title}: {n} is not in the scrape"
            used.add(family(n, types))
        have = set().union(*(samples[n] for n in names)) | {"le"} | TARGET_LABELS
        assert by <= have, f"{title}: by {sorted(by - have)} not labels of {names}"
    # The dashboard covers the proxy's main families.
    for f in ("quilkin_packets_total", "quilkin_bytes_total", "quilkin_packets_dropped_total",
              "quilkin_session_active", "quilkin_session_duration_secs",
              "quilkin_filter_read_duration_seconds", "quilkin_active_control_planes",
              "quilkin_qcmp_packets_total"):
        assert f in used, f


def documented_metrics():
    """{name: set of labels} from the tables of docs/metrics.md: rows whose first cell
    names metrics in backquotes, and whose third cell lists labels in backquotes (a
    `label=value` or `label` (...) note counts as the label)."""
    out = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`quilkin_"):
            continue
        labels = {re.match(r"[a-z_0-9]+", x).group(0)
                  for x in re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[2]))}
        for name in re.findall(r"`(quilkin_[a-z_0-9]+)`", cells[0]):
            out[name] = labels
    return out


def test_metrics_reference_matches_the_scrape(scraped):
    types, samples = scraped
    docs = documented_metrics()
    assert len(docs) >= 25
    for name, labels in docs.items():
        assert name in types, f"docs/metrics.md lists {name}, which no scrape has"
        seen = set().union(*(v for k, v in samples.items() if family(k, types) == name))
        seen.discard("le")
        assert labels == seen, f"{name}: documented {sorted(labels)}, scraped {sorted(seen)}"
    undocumented = sorted(set(types) - set(docs))
    assert undocumented == [], f"metrics missing from docs/metrics.md: {undocumented}"
