"""Command line, exit statuses, config errors and config lookup (cli.md, config.md)."""

import json
import os
import re

import pytest

from conftest import free_port, record_text, run_quilkin


def error_records(stdout):
    out = []
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("level") == "ERROR":
            out.append(record_text(rec))
    return out


# --------------------------------------------------------------------------
# help / version
# --------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(quilkin_bin, tmp_path, flag):
    r = run_quilkin([flag], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "quilkin 0.7.0"


def test_help(quilkin_bin, tmp_path):
    r = run_quilkin(["--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Usage: quilkin" in r.stdout
    for word in ("proxy", "--no-admin", "--config", "--log-format", "--version"):
        assert word in r.stdout, word


def test_proxy_help(quilkin_bin, tmp_path):
    r = run_quilkin(["proxy", "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Usage: quilkin proxy" in r.stdout
    for word in ("--port", "--to", "--management-server", "--session-timeout-secs",
                 "--max-sessions", "--workers"):
        assert word in r.stdout, word


# --------------------------------------------------------------------------
# bad configuration files: exit 255, message names file:line:col, key path, problem
# --------------------------------------------------------------------------

BAD_CONFIGS = [
    # id, yaml, line of the problem, substrings the message must contain
    ("unknown-top-level-key",
     "port: 7777\n",
     1, ["unknown field `port`", "`clusters`", "`filters`", "`id`", "`version`"]),
    ("bad-version",
     "version: v2\n",
     1, ["version", "`v2`", "v1alpha1"]),
    ("address-without-port",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1\n",
     3, ["clusters[0].endpoints[0].address", "port is required"]),
    ("tcp-url",
     "clusters:\n  - endpoints:\n      - address: tcp://127.0.0.1:80\n",
     3, ["clusters[0].endpoints[0].address", "non UDP based URLs are not permitted"]),
    ("port-out-of-range",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:70000\n",
     3, ["clusters[0].endpoints[0].address", "invalid port number"]),
    ("duplicate-tokens",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:80\n        metadata:\n"
     "          quilkin.dev:\n            tokens: [ \"YWJjZA==\", \"YWJjZA==\" ]\n",
     6, ["clusters[0].endpoints[0].metadata", "tokens", "duplicate tokens"]),
    ("invalid-base64-token",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:80\n        metadata:\n"
     "          quilkin.dev:\n            tokens:\n              - \"YWJjZA=\"\n",
     7, ["clusters[0].endpoints[0].metadata", "tokens[0]", "base64", "YWJjZA="]),
    ("non-string-metadata-key",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:80\n        metadata:\n"
     "          1: x\n",
     5, ["clusters[0].endpoints[0].metadata", "must be strings"]),
    ("unknown-endpoint-key",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:80\n        port: 1\n",
     4, ["clusters[0].endpoints[0]", "unknown field `port`", "`address`", "`metadata`"]),
    ("clusters-null",
     "clusters: null\n",
     1, ["clusters", "invalid type: null", "expected a sequence"]),
    ("duplicate-localities",
     "clusters:\n  - endpoints: []\n  - endpoints: []\n",
     3, ["clusters[1]", "duplicate localities found in cluster map"]),
    ("unknown-filter-key",
     "filters:\n  - nme: quilkin.filters.pass.v1alpha1.Pass\n",
     2, ["filters[0]", "unknown field `nme`"]),
    ("unknown-filter",
     "clusters:\n  - endpoints:\n      - address: 127.0.0.1:80\n"
     "filters:\n  - name: quilkin.filters.nope.v1alpha1.Nope\n",
     5, ["filters[0]", "filter `quilkin.filters.nope.v1alpha1.Nope` not found"]),
    ("drop-with-config",
     "filters:\n  - name: quilkin.filters.drop.v1alpha1.Drop\n    config: {}\n",
     3, ["filters[0]", "quilkin.filters.drop.v1alpha1.Drop"]),
    ("capture-without-config",
     "filters:\n  - name: quilkin.filters.capture.v1alpha1.Capture\n",
     2, ["filters[0]", "filter `quilkin.filters.capture.v1alpha1.Capture` requires configuration"]),
    ("debug-bad-config",
     "filters:\n  - name: quilkin.filters.debug.v1alpha1.Debug\n    config:\n      id: [1]\n",
     4, ["filters[0]", "quilkin.filters.debug.v1alpha1.Debug", "Deserialization failed"]),
    ("yaml-syntax-error",
     "clusters:\n  - endpoints:\n      - address: \"127.0.0.1:80\n",
     None, []),
]


@pytest.mark.parametrize("yaml_text,line,needles",
                         [pytest.param(y, l, n, id=i) for i, y, l, n in BAD_CONFIGS])
def test_bad_config_exits_255_naming_the_problem(quilkin_bin, tmp_path, yaml_text, line, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    port = free_port()
    r = run_quilkin(["--no-admin", "-c", str(path), "proxy", "--port", str(port),
                     "--to", "127.0.0.1:9"], cwd=tmp_path)
    assert r.returncode == 255, (r.returncode, r.stderr)
    assert "Quilkin is ready" not in r.stdout
    err = r.stderr
    m = re.search(re.escape(str(path)) + r":(\d+):(\d+)", err)
    assert m, f"stderr does not name {path}:LINE:COL: {err!r}"
    if line is not None:
        assert int(m.group(1)) == line, err
    for needle in needles:
        assert needle in err, (needle, err)
    # The same error is logged as an ERROR record on stdout.
    logged = error_records(r.stdout)
    assert logged, r.stdout
    for needle in needles:
        assert any(needle in msg for msg in logged), (needle, logged)


def test_good_config_with_every_valid_form_is_accepted(proxy, echo_v4, clients):
    """Counterpart of the bad-config table: valid variants of the same keys load."""
    config = f"""\
# comment
version: v1alpha1
id: 42
clusters:
  - endpoints:
      - address: udp://{echo_v4.addr}
        metadata:
          canary: false
          nested: {{ a: [1, 2, {{b: null}}] }}
          quilkin.dev:
            tokens: [ "YWJjZA==", "", "AQID" ]
            ignored: true
  - locality: {{}}
    endpoints: []
filters:
  - name: quilkin.filters.pass.v1alpha1.Pass
    config: null
  - name: quilkin.filters.debug.v1alpha1.Debug
    label: null
"""
    p = proxy(config=config)
    client = clients(p.port)
    assert client.request(b"valid") == (b"valid", ("127.0.0.1", p.port))


# --------------------------------------------------------------------------
# usage errors: exit 2
# --------------------------------------------------------------------------

USAGE_ERRORS = [
    ("unknown-global-option", ["--bogus", "proxy", "--to", "127.0.0.1:9"], "--bogus"),
    ("unknown-proxy-option", ["--no-admin", "proxy", "--bogus", "--to", "127.0.0.1:9"], "--bogus"),
    ("port-too-large", ["--no-admin", "proxy", "--port", "70000", "--to", "127.0.0.1:9"], "70000"),
    ("port-not-a-number", ["--no-admin", "proxy", "--port", "abc", "--to", "127.0.0.1:9"], "abc"),
    ("to-hostname", ["--no-admin", "proxy", "--to", "localhost:7000"], "localhost:7000"),
    ("to-without-port", ["--no-admin", "proxy", "--to", "127.0.0.1"], "127.0.0.1"),
    ("to-with-scheme", ["--no-admin", "proxy", "--to", "udp://127.0.0.1:7000"], "udp://127.0.0.1:7000"),
    ("to-and-management-server", ["--no-admin", "proxy", "--to", "127.0.0.1:9",
                                  "--management-server", "http://127.0.0.1:7800"],
     "--management-server"),
    ("global-option-after-command", ["proxy", "--no-admin", "--to", "127.0.0.1:9"], "--no-admin"),
    ("bad-log-format", ["--no-admin", "--log-format", "xml", "proxy", "--to", "127.0.0.1:9"], "xml"),
    ("idle-request-interval-huge",  # issue 10: 4294967295 made the xDS client spin
     ["--no-admin", "proxy", "-m", "http://127.0.0.1:7800", "--idle-request-interval-secs",
      "4294967295"], "--idle-request-interval-secs"),
    ("missing-command", ["--no-admin"], None),
    ("unknown-command", ["--no-admin", "frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("args,needle", [pytest.param(a, n, id=i) for i, a, n in USAGE_ERRORS])
def test_usage_error_exits_2(quilkin_bin, tmp_path, args, needle):
    r = run_quilkin(args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "usage error must explain itself on stderr"
    if needle:
        assert needle in r.stderr, r.stderr
    assert "Quilkin is ready" not in r.stdout


# --------------------------------------------------------------------------
# endpoints required, config lookup
# --------------------------------------------------------------------------

NO_ENDPOINTS = "`quilkin proxy` requires at least one `to` address or `management_server` endpoint."


def test_no_endpoints_exits_255(quilkin_bin, tmp_path):
    r = run_quilkin(["--no-admin", "proxy", "--port", str(free_port())], cwd=tmp_path)
    assert r.returncode == 255, (r.returncode, r.stderr)
    assert NO_ENDPOINTS in r.stderr
    assert NO_ENDPOINTS in error_records(r.stdout)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "clusters:\n", "clusters: []\n",
                                  "clusters:\n  - endpoints: []\n"])
def test_config_without_endpoints_exits_255(quilkin_bin, tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    r = run_quilkin(["--no-admin", "-c", str(path), "proxy", "--port", str(free_port())],
                    cwd=tmp_path)
    assert r.returncode == 255, (r.returncode, r.stderr)
    assert "requires at least one `to` address" in r.stderr


@pytest.fixture
def no_etc_config():
    if os.path.exists("/etc/quilkin/quilkin.yaml"):
        pytest.skip("/etc/quilkin/quilkin.yaml exists and would be used as the fallback")


def test_missing_config_file_falls_back_to_default(quilkin_bin, tmp_path, no_etc_config):
    missing = tmp_path / "does-not-exist.yaml"
    r = run_quilkin(["--no-admin", "-c", str(missing), "proxy", "--port", str(free_port())],
                    cwd=tmp_path)
    # Not a config error: the empty default is used, which then has no endpoints.
    assert r.returncode == 255, (r.returncode, r.stderr)
    assert "requires at least one `to` address" in r.stderr
    assert "invalid configuration" not in r.stderr


def test_missing_config_file_with_to_runs(proxy, echo_v4, clients, tmp_path, no_etc_config):
    missing = tmp_path / "does-not-exist.yaml"
    p = proxy("--to", echo_v4.addr, global_args=["-c", str(missing)])
    client = clients(p.port)
    assert client.request(b"fallback") == (b"fallback", ("127.0.0.1", p.port))


def test_default_config_path_is_quilkin_yaml_in_cwd(proxy, echo_v4, clients, tmp_path):
    (tmp_path / "quilkin.yaml").write_text(
        f"clusters:\n  - endpoints:\n      - address: {echo_v4.addr}\n")
    p = proxy()                                  # no -c, no --to
    client = clients(p.port)
    assert client.request(b"from-cwd") == (b"from-cwd", ("127.0.0.1", p.port))


def test_config_from_env_and_to_from_env(proxy, servers, clients, tmp_path):
    via_file = servers("127.0.0.1", echo=lambda d: b"file:" + d)
    cfg = tmp_path / "env.yaml"
    cfg.write_text(f"clusters:\n  - endpoints:\n      - address: {via_file.addr}\n")
    p = proxy(env={"QUILKIN_CONFIG": str(cfg)})
    client = clients(p.port)
    assert client.request(b"env") == (b"file:env", ("127.0.0.1", p.port))

    via_env = servers("127.0.0.1", echo=lambda d: b"dest:" + d)
    p2 = proxy(env={"QUILKIN_DEST": via_env.addr})
    client2 = clients(p2.port)
    assert client2.request(b"env") == (b"dest:env", ("127.0.0.1", p2.port))


def test_short_and_equals_option_forms(proxy, servers, clients):
    echo = servers("::1")
    p = proxy("-t", echo.addr, "--session-timeout-secs=1",
              "--workers=1", port_style="-p")
    assert p.find(f"listening on [::]:{p.port}")
    assert p.find("with 1 worker, session timeout 1s")
    client = clients(p.port, host="::1")
    assert client.request(b"short") == (b"short", ("::1", p.port))

    p2 = proxy(f"--to={echo.addr}", port_style="--port=")
    assert p2.find(f"listening on [::]:{p2.port}")
    client2 = clients(p2.port)
    assert client2.request(b"equals") == (b"equals", ("127.0.0.1", p2.port))


# --------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------

def test_logs_are_json_lines_when_stdout_is_not_a_tty(proxy, echo_v4, clients):
    p = proxy("--to", echo_v4.addr)
    p.wait_log(f"listening on [::]:{p.port}")
    recs = p.records()
    assert recs and all("raw" not in r for r in recs), p.log_tail()
    for r in recs:
        # tracing-subscriber's JSON shape: the message inside `fields` (issue 8)
        assert list(r) == ["timestamp", "level", "fields", "target"], r
        assert isinstance(r["fields"].get("message"), str), r
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", r["timestamp"]), r
        assert r["level"] in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR"), r
    ready = [r for r in recs if r["fields"]["message"] == "Quilkin is ready"]
    assert ready and ready[0]["level"] == "INFO"
    start = [r for r in recs if r["fields"]["message"] == "Starting Quilkin"]
    assert start and start[0]["fields"]["version"] == "0.7.0", start


def test_plain_log_format(proxy, echo_v4):
    p = proxy("--to", echo_v4.addr, global_args=["--log-format", "plain"])
    lines = p.stdout_lines
    assert any("Quilkin is ready" in l and "INFO" in l for l in lines), lines
    for l in lines:
        assert not l.startswith("{"), l
