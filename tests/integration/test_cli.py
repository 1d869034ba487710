"""Command line, exit statuses, config errors and config lookup (cli.md, config.md).

Expected values: option names, env vars, defaults, the `Starting Quilkin` record and exit
statuses 0/2/255 (a bad config, no endpoint, a port that cannot be bound) are the spec's
(cli.md sections 1, 2, 5); config error texts are the v0.7.0 messages spec config.md quotes
(with file:line:col and the key path, README). 255 for relay/agent/manage agones, the
`listening on` and `--relay is not supported` lines and the bind error's wording are
quilkin-c's (docs/test-expectations.md E1, E3)."""

import json
import os
import re
import signal
import socket

import pytest

from conftest import Proxy, free_port, record_text, run_quilkin, stop_all


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


# --------------------------------------------------------------------------
# a port somebody else holds: exit 255 (spec cli.md section 5, README Exit status)
# --------------------------------------------------------------------------

def _hold_udp_port():
    """A dual-stack UDP socket on [::]:P without SO_REUSEPORT: the proxy's SO_REUSEPORT bind
    of the same port fails (spec cli.md section 4: only sockets that all set SO_REUSEPORT
    share a port)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    return s


@pytest.mark.parametrize("which", ["game", "qcmp"])
def test_a_taken_udp_port_exits_255(quilkin_bin, tmp_path, which):
    holder = _hold_udp_port()
    try:
        taken = holder.getsockname()[1]
        game = taken if which == "game" else free_port()
        qcmp = taken if which == "qcmp" else free_port()
        r = run_quilkin(["--no-admin", "proxy", "--port", str(game), "--qcmp-port", str(qcmp),
                         "--to", "127.0.0.1:9"], cwd=tmp_path)
    finally:
        holder.close()
    assert r.returncode == 255, (r.returncode, r.stdout, r.stderr)
    # the message names the port (its wording is quilkin-c's: spec cli.md leaves it free)
    assert f"[::]:{taken}" in r.stderr and "Address already in use" in r.stderr, r.stderr
    if which == "qcmp":
        assert "QCMP" in r.stderr, r.stderr
    assert "Quilkin is ready" not in r.stdout


# --------------------------------------------------------------------------
# commands and options that are accepted but not implemented (README "Not implemented yet")
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["relay"], "the `relay` command is not implemented yet"),
    (["relay", "file", "x.yaml"], "the `relay` command is not implemented yet"),
    (["agent"], "the `agent` command is not implemented yet"),
    (["agent", "--relay", "http://127.0.0.1:7900"], "the `agent` command is not implemented"),
    # spec cli.md section 3: the Agones provider MAY be left out; it must then fail clearly
    (["manage", "agones"], "the agones provider is not supported by this build"),
])
def test_unimplemented_commands_exit_255(quilkin_bin, tmp_path, args, needle):
    """Exit 255, the status of a run that cannot proceed (spec cli.md section 5), not 2: the
    command line is valid Quilkin v0.7.0 syntax."""
    r = run_quilkin(["--no-admin", *args], cwd=tmp_path)
    assert r.returncode == 255, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Quilkin is ready" not in r.stdout


def test_manage_relay_is_ignored_with_a_warning_and_sigint_ends_manage(quilkin_bin, tmp_path):
    """`manage --relay URL` (spec cli.md section 2.3) is accepted and ignored with a WARN line
    (README: not supported); manage serves as without it, and exits 0 at once on SIGINT
    (spec cli.md section 5: `manage` exits 0 promptly)."""
    provider = tmp_path / "provider.yaml"
    provider.write_text("clusters:\n  - endpoints:\n      - address: 127.0.0.1:9\n")
    p = Proxy([quilkin_bin, "--no-admin", "manage", "--port", "0", "--relay",
               "http://127.0.0.1:7900", "file", str(provider)], cwd=str(tmp_path))
    try:
        p.wait_ready()
        warn = [r for r in p.records() if r.get("level") == "WARN"]
        assert [record_text(r) for r in warn] == [
            "--relay is not supported by this build; ignoring http://127.0.0.1:7900"], warn
        p.signal(signal.SIGINT)
        assert p.wait_exit(5) == 0, p.log_tail()
    finally:
        stop_all([p])
