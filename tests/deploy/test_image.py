"""`make image`: the FROM-scratch container image holds exactly the binary, the shared
objects it needs (the closure of DT_NEEDED, the loader included), a passwd entry for the
non-root user it runs as and the default configuration; where podman can run containers
here, the image runs and passes a datagram to a loopback echo server (host network)."""

import io
import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import time
import uuid

import pytest

from conftest import free_tcp_port, BUILD_DIR, TOP, itc, run

IMAGE = os.environ.get("QK_IMAGE", "localhost/quilkin-c:0.7.0")


@pytest.fixture(scope="module")
def image():
    if shutil.which("podman") is None and shutil.which("buildah") is None:
        pytest.fail("neither podman nor buildah is installed (make deploy-deps)")
    run(["make", "-s", "-C", str(TOP), "image", f"IMAGE={IMAGE}", f"BUILD={BUILD_DIR}"],
        timeout=900)
    return IMAGE


@pytest.fixture(scope="module")
def rootfs(image, tmp_path_factory):
    """The image's files, from `podman export` of a created (never started) container."""
    name = f"quilkin-export-{uuid.uuid4().hex[:8]}"
    run(["podman", "create", "--name", name, image], timeout=60)
    try:
        data = subprocess.run(["podman", "export", name], capture_output=True, timeout=120,
                              check=True).stdout
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
    root = tmp_path_factory.mktemp("rootfs")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root)
    return root


def needed(path):
    out = run(["readelf", "-d", str(path)], timeout=10).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def interp(path):
    out = run(["readelf", "-l", str(path)], timeout=10).stdout
    return re.search(r"Requesting program interpreter: ([^\]]+)\]", out).group(1)


def test_image_metadata(image):
    info = json.loads(run(["podman", "image", "inspect", image], timeout=60).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/usr/bin/quilkin"]
    assert cfg["Cmd"] == ["--config", "/etc/quilkin/quilkin.yaml", "proxy"]
    assert {"7777/udp", "7600/udp", "8000/tcp"} <= set(cfg["ExposedPorts"])
    print(f"\nimage {image}: {info['Size'] / 1e6:.1f} MB")
    assert info["Size"] < 40e6, info["Size"]


def test_image_holds_exactly_the_binary_and_its_libraries(rootfs):
    binary = rootfs / "usr/bin/quilkin"
    files = {"/" + str(p.relative_to(rootfs)) for p in rootfs.rglob("*")
             if p.is_file() or p.is_symlink()}
    libdirs = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64")
    # The closure of DT_NEEDED over the files in the image, looked up where the loader
    # looks (no ld.so.cache in the image: its trusted directories).
    want, todo = {interp(binary)}, [binary]
    while todo:
        for soname in needed(todo.pop()):
            hits = [d + "/" + soname for d in libdirs if d + "/" + soname in files]
            assert hits, f"{soname} is needed but not in the image"
            if hits[0] not in want:
                want.add(hits[0])
                todo.append(rootfs / hits[0].lstrip("/"))
    libs = {f for f in files if f.startswith(libdirs)}
    assert libs == want, (sorted(libs - want), sorted(want - libs))
    assert files - libs == {"/usr/bin/quilkin", "/etc/passwd", "/etc/group",
                            "/etc/nsswitch.conf", "/etc/quilkin/quilkin.yaml"}
    assert "quilkin:x:65532:65532:" in (rootfs / "etc/passwd").read_text()
    assert (rootfs / "etc/quilkin/quilkin.yaml").read_text() == \
        (TOP / "packaging/quilkin.yaml").read_text()


def podman_run_argv():
    """podman run options that work on this kind of host: runc when present (crun refuses
    hosts with hybrid cgroups), and explicit ulimits no higher than ours (podman's defaults
    are higher, and raising a limit needs CAP_SYS_RESOURCE, which this sandbox lacks)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    argv = ["podman", "run", "--rm", "--network", "host",
            "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
    if shutil.which("runc"):
        argv[2:2] = ["--runtime", "runc"]
    return argv


def test_image_runs_and_forwards_over_loopback(image, servers, clients):
    probe = subprocess.run(podman_run_argv() + [image, "--version"], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("podman cannot run containers on this host, so the image is built and "
                    f"inspected but not run: {probe.stderr.strip()[-400:]}")
    assert probe.stdout.splitlines()[0] == "quilkin 0.7.0"  # scripts parse the first line
    echo = servers("127.0.0.1")
    port, qcmp, admin = itc.free_port(), itc.free_port(), free_tcp_port()
    name = f"quilkin-test-{uuid.uuid4().hex[:8]}"
    p = itc.Proxy(podman_run_argv() + ["--name", name, image, "--log-format", "json",
                                       "--admin-address", f"127.0.0.1:{admin}", "proxy",
                                       "--port", str(port), "--qcmp-port", str(qcmp),
                                       "--to", echo.addr], cwd=TOP)
    try:
        p.wait_ready(timeout=60)
        assert p.find("loaded /etc/quilkin/quilkin.yaml")
        c = clients(port)
        data, src = c.request(b"through the container")
        assert data == b"through the container" and src == ("127.0.0.1", port)
        echo.wait_for(b"through the container")
        top = run(["podman", "top", name, "user"], timeout=60).stdout.split()
        assert top[1:] and set(top[1:]) == {"quilkin"}, top
        # SIGTERM through podman: the drain with no session left ends at once, status 0.
        t0 = time.monotonic()
        run(["podman", "stop", "-t", "20", name], timeout=60)
        assert p.wait_exit(30) == 0
        assert time.monotonic() - t0 < 20
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
        p.kill()
