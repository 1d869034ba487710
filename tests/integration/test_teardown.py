"""The teardown every fixture relies on (conftest.stop_all) cannot let a failure through:
a process still running is stopped with SIGTERM, SIGTERM (the second only once the first was
taken), must exit 0, and any sanitizer report, ThreadSanitizer's exit status 66 or a death by
a signal nobody sent fails the test. Stand-in processes (Python one-liners) play the failing
parts; the leak check runs against the real ASan binary."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import QUILKIN_BIN, Proxy, free_port, stop_all, wait_until

# A stand-in that takes SIGTERM the way quilkin does (blocked, then read synchronously:
# quilkin reads a signalfd) and does what the test asks on the first and second one.
STAND_IN = r"""
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
signal.sigwait({signal.SIGTERM})
print("first SIGTERM", flush=True)
%s
signal.sigwait({signal.SIGTERM})
print("second SIGTERM", flush=True)
%s
sys.exit(0)
"""


def stand_in(tmp_path, on_first="", on_second=""):
    p = Proxy([sys.executable, "-c", STAND_IN % (on_first, on_second)], cwd=str(tmp_path))
    p.wait_log("ready")
    return p


def teardown_failure(p):
    """The message stop_all fails with for ``p`` (AssertionError if it does not fail)."""
    with pytest.raises(pytest.fail.Exception) as exc:
        stop_all([p])
    return str(exc.value)


def test_a_clean_stop_passes_and_takes_two_separate_signals(tmp_path):
    p = stand_in(tmp_path)
    stop_all([p])  # does not fail
    assert p.proc.returncode == 0
    assert p.find("first SIGTERM") and p.find("second SIGTERM"), p.log_tail()


@pytest.mark.parametrize("text", [
    "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010",
    "==1==ERROR: LeakSanitizer: detected memory leaks",
    "src/proxy/worker.c:10:5: runtime error: signed integer overflow",
    "WARNING: ThreadSanitizer: data race (pid=1)",
    "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior",
])
def test_a_sanitizer_report_fails_even_with_exit_0(tmp_path, text):
    p = stand_in(tmp_path, on_second=f"print({text!r}, file=sys.stderr, flush=True)")
    msg = teardown_failure(p)
    assert p.proc.returncode == 0
    assert "sanitizer report" in msg and text in msg, msg


def test_threadsanitizer_exit_status_fails(tmp_path):
    p = stand_in(tmp_path, on_second="sys.exit(66)")
    msg = teardown_failure(p)
    assert "exit status 66" in msg, msg


def test_a_non_zero_status_after_sigterm_fails(tmp_path):
    p = stand_in(tmp_path, on_first="sys.exit(1)")
    msg = teardown_failure(p)
    assert "exit status 1 after SIGTERM, SIGTERM (expected 0)" in msg, msg


def test_a_process_that_does_not_exit_fails(tmp_path, monkeypatch):
    import conftest
    monkeypatch.setattr(conftest, "STOP_TIMEOUT", 1.0)
    p = Proxy([sys.executable, "-c", "import signal, time\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               "print('ready', flush=True)\ntime.sleep(60)\n"], cwd=str(tmp_path))
    p.wait_log("ready")
    msg = teardown_failure(p)
    assert "still running" in msg, msg
    assert not p.running()


def test_an_earlier_crash_fails_but_a_deliberate_kill_does_not(tmp_path):
    crashed = Proxy([sys.executable, "-c", "import os, signal\n"
                     "os.kill(os.getpid(), signal.SIGABRT)\n"], cwd=str(tmp_path))
    wait_until(lambda: not crashed.running(), 10, what="the stand-in to abort")
    msg = teardown_failure(crashed)
    assert f"died from signal {int(__import__('signal').SIGABRT)}" in msg, msg

    killed = stand_in(tmp_path)
    killed.kill()
    stop_all([killed])  # SIGKILLed by the test: not a crash


def _is_asan_build(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def test_leak_sanitizer_runs_when_a_proxy_is_stopped(tmp_path, echo_v4):
    """A real proxy with one leaked allocation (a preloaded library's constructor drops its
    pointer) must fail the teardown: LeakSanitizer runs at a graceful exit, never after
    SIGKILL, which the fixtures used to send."""
    if not _is_asan_build(QUILKIN_BIN):
        pytest.skip(f"{QUILKIN_BIN} is not an AddressSanitizer build (LeakSanitizer comes "
                    f"with it)")
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (make deps installs gcc)"
    src = tmp_path / "leak.c"
    src.write_text("#include <stdlib.h>\n#include <string.h>\n"
                   "__attribute__((constructor)) static void leak(void)\n"
                   "{\n    char *p = malloc(4321);\n    memset(p, 7, 4321);\n}\n")
    lib = tmp_path / "leak.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(lib), str(src)], check=True,
                   capture_output=True, timeout=60)
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": str(lib),
           # the ASan runtime need not come first: the library only calls malloc
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0:"
                                                          "detect_leaks=1"}
    p = Proxy([QUILKIN_BIN, "--no-admin", "proxy", "--port", str(free_port()),
               "--qcmp-port", str(free_port()), "--to", echo_v4.addr],
              cwd=str(tmp_path), env=env)
    p.wait_ready()
    msg = teardown_failure(p)
    assert "LeakSanitizer" in msg and "4321 byte(s)" in msg, msg
