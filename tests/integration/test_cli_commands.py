"""Command line polish (issue 12): `help`, clap's error wording, --version, `proxy --check`,
the missing -c warning, shell completions and the man page made from the option tables."""

import json
import os
import re
import shutil
import socket
import subprocess

import pytest

from conftest import QUILKIN_BIN, clean_env, free_port, run_quilkin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRY_HELP = "For more information, try '--help'."


def records(stdout):
    out = []
    for line in stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# --------------------------------------------------------------------------
# help
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args,usage", [
    (["help"], "Usage: quilkin [OPTIONS] <COMMAND>"),
    (["help", "proxy"], "Usage: quilkin proxy [OPTIONS]"),
    (["help", "qcmp", "ping"], "Usage: quilkin qcmp ping [OPTIONS] <ENDPOINT>"),
    (["qcmp", "--help"], "Usage: quilkin qcmp <COMMAND>"),
    (["qcmp", "help", "ping"], "Usage: quilkin qcmp ping [OPTIONS] <ENDPOINT>"),
    (["qcmp", "ping", "-h"], "Usage: quilkin qcmp ping [OPTIONS] <ENDPOINT>"),
    (["manage", "help", "file"], "Usage: quilkin manage file <PATH>"),
    (["generate-config-schema", "--help"],
     "Usage: quilkin generate-config-schema [OPTIONS] [FILTER_IDS]..."),
])
def test_help_pages(quilkin_bin, tmp_path, args, usage):
    r = run_quilkin(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert usage in r.stdout.splitlines(), r.stdout
    assert r.stderr == ""


def test_help_lists_commands_and_options(quilkin_bin, tmp_path):
    r = run_quilkin(["help"], cwd=tmp_path)
    commands = r.stdout.split("Commands:\n")[1].split("\n\n")[0]
    names = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and
             not line.startswith("   ")]
    assert names == ["agent", "generate-config-schema", "manage", "qcmp", "proxy", "relay",
                     "completions", "help"], names
    assert "man" not in names  # hidden
    qcmp = run_quilkin(["qcmp", "--help"], cwd=tmp_path).stdout
    assert re.search(r"^  ping\s+Pings a QCMP responder", qcmp, re.M), qcmp
    proxy = run_quilkin(["proxy", "--help"], cwd=tmp_path).stdout
    assert ("-p, --port <PORT> The port to listen on for game traffic [env: QUILKIN_PORT] "
            "[default: 7777]") in " ".join(proxy.split()), proxy


def test_command_without_subcommand_prints_help_as_error(quilkin_bin, tmp_path):
    r = run_quilkin(["qcmp"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Usage: quilkin qcmp <COMMAND>" in r.stderr


def test_help_for_an_unknown_command(quilkin_bin, tmp_path):
    r = run_quilkin(["help", "proxxy"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: unrecognized subcommand 'proxxy'\n"), r.stderr
    assert "  tip: a similar subcommand exists: 'proxy'" in r.stderr


# --------------------------------------------------------------------------
# errors in clap's words
# --------------------------------------------------------------------------

def test_unknown_option_names_itself_once_in_claps_words(quilkin_bin, tmp_path):
    r = run_quilkin(["proxy", "--foo"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == ("error: unexpected argument '--foo' found\n\n"
                        "Usage: quilkin proxy [OPTIONS]\n\n" + TRY_HELP + "\n"), r.stderr
    assert r.stderr.count("--foo") == 1


def test_unknown_option_with_a_value_attached(quilkin_bin, tmp_path):
    r = run_quilkin(["proxy", "--foo=bar"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: unexpected argument '--foo' found\n"), r.stderr
    assert "bar" not in r.stderr


def test_similar_option_is_suggested(quilkin_bin, tmp_path):
    r = run_quilkin(["proxy", "--prot", "7000"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == ("error: unexpected argument '--prot' found\n\n"
                        "  tip: a similar argument exists: '--port'\n\n"
                        "Usage: quilkin proxy [OPTIONS]\n\n" + TRY_HELP + "\n"), r.stderr


@pytest.mark.parametrize("args,shown,example", [
    (["proxy", "--no-admin"], "--no-admin", "quilkin --no-admin proxy ..."),
    (["proxy", "-c", "x.yaml"], "-c", "quilkin --config <CONFIG> proxy ..."),
    (["qcmp", "ping", "--log-format", "json", "127.0.0.1:1"], "--log-format",
     "quilkin --log-format <LOG_FORMAT> qcmp ping ..."),
])
def test_global_option_after_the_command_says_so(quilkin_bin, tmp_path, args, shown, example):
    r = run_quilkin(args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"error: unexpected argument '{shown}' found", lines
    assert f"  tip: '{shown}' is a global option: give it before the command, as in " \
           f"'{example}'" in lines, lines
    assert lines[-1] == TRY_HELP


def test_missing_value_and_flag_value(quilkin_bin, tmp_path):
    r = run_quilkin(["proxy", "--port"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(
        "error: a value is required for '--port <PORT>' but none was supplied\n"), r.stderr
    r = run_quilkin(["--no-admin=yes", "proxy"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(
        "error: unexpected value 'yes' for '--no-admin' found; no more were expected"), r.stderr


def test_option_abbreviations_are_not_accepted(quilkin_bin, tmp_path):
    # clap matches long options exactly (GNU getopt_long would take --sess for
    # --session-timeout-secs)
    r = run_quilkin(["--no-admin", "proxy", "--sess", "5"], cwd=tmp_path)
    assert r.returncode == 2
    assert "unexpected argument '--sess' found" in r.stderr


# --------------------------------------------------------------------------
# --version
# --------------------------------------------------------------------------

def test_version_names_quilkin_then_quilkin_c_and_commit(quilkin_bin, tmp_path):
    r = run_quilkin(["--version"], cwd=tmp_path)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "quilkin 0.7.0"  # first, as v0.7.0 prints it: scripts parse it
    m = re.fullmatch(r"quilkin-c (\S+) \(commit ([0-9a-f]{7,40}|unknown)\)", lines[1])
    assert m, lines
    commit = m.group(2)
    if commit != "unknown" and shutil.which("git") and os.path.isdir(os.path.join(REPO, ".git")):
        # the commit the binary was built from is one of this repository's
        rc = subprocess.run(["git", "-C", REPO, "cat-file", "-e", commit + "^{commit}"],
                            capture_output=True)
        assert rc.returncode == 0, commit


# --------------------------------------------------------------------------
# proxy --check, the missing -c warning, "1 worker"
# --------------------------------------------------------------------------

def test_check_binds_nothing(quilkin_bin, tmp_path, write_config):
    cfg = write_config("clusters:\n  - endpoints:\n      - address: 127.0.0.1:9\n"
                       "filters:\n  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                       "    config: { regex: { pattern: 'a+' } }\n")
    port, admin = free_port(), free_port()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", port))          # the game port is taken (no SO_REUSEPORT)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", admin))  # and so is the admin port
    tcp.listen(1)
    try:
        args = ["--admin-address", f"127.0.0.1:{admin}", "-c", str(cfg), "proxy", "--port",
                str(port), "--qcmp-port", str(port)]
        r = run_quilkin(args + ["--check"], cwd=tmp_path)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert any(rec["fields"]["message"].startswith("configuration is valid")
                   for rec in records(r.stdout)), r.stdout
        # the control: without --check the same command fails on the taken ports
        r = run_quilkin(args, cwd=tmp_path)
        assert r.returncode == 255, (r.stdout, r.stderr)
    finally:
        udp.close()
        tcp.close()


@pytest.mark.parametrize("text,needle", [
    ("clusters:\n  - endpoints:\n      - address: 127.0.0.1\n", "port is required"),
    ("clusters:\n  - endpoints:\n      - address: 127.0.0.1:9\nfilters:\n"
     "  - name: quilkin.filters.capture.v1alpha1.Capture\n    config: { regex: { pattern: '(' } }\n",
     "regex parse error"),
    ("clusters: []\n", "requires at least one `to` address"),
])
def test_check_rejects_what_start_up_would(quilkin_bin, tmp_path, write_config, text, needle):
    cfg = write_config(text)
    r = run_quilkin(["--no-admin", "-c", str(cfg), "proxy", "--check"], cwd=tmp_path)
    assert r.returncode == 255, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr


def test_missing_config_path_is_a_warning_naming_it(quilkin_bin, tmp_path):
    if os.path.exists("/etc/quilkin/quilkin.yaml"):
        pytest.skip("/etc/quilkin/quilkin.yaml exists and would be used as the fallback")
    missing = tmp_path / "nope.yaml"
    for how in ("option", "env"):
        args = ["--no-admin"] + (["-c", str(missing)] if how == "option" else [])
        env = {"QUILKIN_CONFIG": str(missing)} if how == "env" else None
        r = run_quilkin(args + ["proxy", "--to", "127.0.0.1:9", "--check"], cwd=tmp_path,
                        env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)
        warns = [rec for rec in records(r.stdout) if rec["level"] == "WARN"]
        assert len(warns) == 1, r.stdout
        assert str(missing) in warns[0]["fields"]["message"]
        assert warns[0]["fields"]["path"] == str(missing)
    # the default path (not named by anyone) falls back silently
    r = run_quilkin(["--no-admin", "proxy", "--to", "127.0.0.1:9", "--check"], cwd=tmp_path)
    assert r.returncode == 0
    assert not [rec for rec in records(r.stdout) if rec["level"] == "WARN"], r.stdout


def test_one_worker_reads_singular(proxy, echo_v4):
    p = proxy("--to", echo_v4.addr, "--workers", "1")
    assert p.find("with 1 worker, session timeout")
    assert not p.find("1 workers")
    p2 = proxy("--to", echo_v4.addr, "--workers", "2")
    assert p2.find("with 2 workers, session timeout")


# --------------------------------------------------------------------------
# completions
# --------------------------------------------------------------------------

def complete_bash(script, words):
    """COMPREPLY of the generated function for `words` (the last one being completed)."""
    code = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
            f"COMP_CWORD={len(words) - 1}\n_quilkin\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_bash_completions(quilkin_bin, tmp_path):
    r = run_quilkin(["completions", "bash"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = r.stdout
    assert complete_bash(script, ["quilkin", "pro"]) == ["proxy"]
    assert sorted(complete_bash(script, ["quilkin", "--log-format", ""])) == \
        ["auto", "json", "plain", "pretty"]
    assert complete_bash(script, ["quilkin", "--no-admin", "proxy", "--po"]) == ["--port"]
    # a value of -c is skipped when finding the command
    assert {"ping", "help"} <= set(complete_bash(script, ["quilkin", "-c", "x.yaml", "qcmp", ""]))
    assert complete_bash(script, ["quilkin", "-c", "x.yaml", "qcmp", "p"]) == ["ping"]
    assert complete_bash(script, ["quilkin", "qcmp", "ping", "--a"]) == ["--amount"]
    # global options are not offered after the command (spec cli.md §1)
    assert complete_bash(script, ["quilkin", "proxy", "--no-"]) == []
    assert sorted(complete_bash(script, ["quilkin", "completions", ""])) == \
        ["--help", "-h", "bash", "fish", "zsh"]
    (tmp_path / "servers.yaml").write_text("")
    got = complete_bash(script, ["quilkin", "manage", "file", str(tmp_path / "ser")])
    assert got == [str(tmp_path / "servers.yaml")], got
    assert "man" not in complete_bash(script, ["quilkin", "m"])


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completions_parse(quilkin_bin, tmp_path, shell):
    r = run_quilkin(["completions", shell], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "management-server" in r.stdout and "generate-config-schema" in r.stdout
    exe = shutil.which(shell)
    if not exe:
        pytest.skip(f"{shell} is not installed (scripts/install-deps.sh installs it)")
    path = tmp_path / f"quilkin.{shell}"
    path.write_text(r.stdout)
    check = subprocess.run([exe, "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr


def test_fish_completions_offer_commands(quilkin_bin, tmp_path):
    exe = shutil.which("fish")
    if not exe:
        pytest.skip("fish is not installed (scripts/install-deps.sh installs it)")
    script = run_quilkin(["completions", "fish"], cwd=tmp_path).stdout
    path = tmp_path / "quilkin.fish"
    path.write_text(script)
    r = subprocess.run([exe, "--no-config", "-c",
                        f"source {path}; complete -C 'quilkin pro'; complete -C 'quilkin proxy --po'"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    words = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert "proxy" in words and "--port" in words, r.stdout


def test_completions_needs_a_known_shell(quilkin_bin, tmp_path):
    r = run_quilkin(["completions", "tcsh"], cwd=tmp_path)
    assert r.returncode == 2
    assert "invalid value 'tcsh'" in r.stderr


# --------------------------------------------------------------------------
# man page
# --------------------------------------------------------------------------

def test_committed_man_page_is_what_the_binary_writes(quilkin_bin, tmp_path):
    r = run_quilkin(["man"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(REPO, "docs", "man", "quilkin.1")) as f:
        committed = f.read()
    assert r.stdout == committed, "docs/man/quilkin.1 is stale: run `make man`"
    for needle in (r"\-\-management\-server", "QUILKIN_PORT", ".SH EXIT STATUS",
                   r"quilkin generate\-config\-schema"):
        assert needle in r.stdout, needle


def test_man_page_renders_without_warnings(quilkin_bin, tmp_path):
    groff = shutil.which("groff")
    if not groff:
        pytest.skip("groff is not installed (scripts/install-deps.sh installs groff-base)")
    page = run_quilkin(["man"], cwd=tmp_path).stdout
    r = subprocess.run([groff, "-man", "-ww", "-z"], input=page, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0 and r.stderr == "", r.stderr
