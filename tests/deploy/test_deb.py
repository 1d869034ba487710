"""`make deb`: the Debian package is built with debhelper from a copy of the tree, carries
its runtime dependencies (dh_shlibdeps), the conffile and the systemd unit (maintainer
scripts by dh_installsystemd), and what it installs runs: unpacked with dpkg -x into a
scratch root, the binary prints its version and passes a datagram both ways."""

import subprocess

import pytest

from conftest import BUILD_DIR, JOBS, TOP, proxy_roundtrip, run

DEB_DIR = BUILD_DIR / "deb"


@pytest.fixture(scope="module")
def deb():
    run(["make", "-s", "-C", str(TOP), "deb", f"JOBS={JOBS}", f"BUILD={BUILD_DIR}"],
        timeout=900)
    debs = sorted(DEB_DIR.glob("quilkin-c_*.deb"))
    assert len(debs) == 1, debs
    # Nothing of the package build may land in the source tree.
    for leftover in ("obj-deb", "debian/quilkin-c", "debian/.debhelper", "debian/files",
                     "debian/debhelper-build-stamp", "debian/quilkin-c.substvars"):
        assert not (TOP / leftover).exists(), leftover
    return debs[0]


def field(deb, name):
    return run(["dpkg-deb", "-f", str(deb), name], timeout=30).stdout.strip()


def test_control_metadata_and_maintainer_scripts(deb, tmp_path):
    assert field(deb, "Package") == "quilkin-c"
    assert field(deb, "Version") == "0.7.0"
    depends = field(deb, "Depends")
    # dh_shlibdeps derived these from the libraries the binary links.
    for lib in ("libc6", "libyaml-0-2", "liburcu8", "libre2-9", "libmicrohttpd12",
                "libnghttp2-14", "libprotobuf-c1", "libssl3", "libsnappy1v5"):
        assert lib in depends, (lib, depends)
    ctl = tmp_path / "control"
    run(["dpkg-deb", "-e", str(deb), str(ctl)], timeout=30)
    assert (ctl / "conffiles").read_text().split() == ["/etc/quilkin/quilkin.yaml"]
    postinst = (ctl / "postinst").read_text()
    assert "deb-systemd-helper enable 'quilkin.service'" in postinst
    assert "quilkin.service" in (ctl / "prerm").read_text()
    files = run(["dpkg-deb", "-c", str(deb)], timeout=30).stdout
    for path in ("./usr/bin/quilkin", "./usr/share/man/man1/quilkin.1.gz",
                 "./lib/systemd/system/quilkin.service", "./etc/quilkin/quilkin.yaml"):
        assert path in files, path


def test_unpacked_package_runs(deb, tmp_path, servers, clients):
    root = tmp_path / "root"
    run(["dpkg", "-x", str(deb), str(root)], timeout=60)
    binary = root / "usr/bin/quilkin"
    assert run([str(binary), "--version"], timeout=10).stdout.splitlines()[0] == "quilkin 0.7.0"
    # Its libraries are the system's: every one resolves.
    ldd = run(["ldd", str(binary)], timeout=10).stdout
    assert "not found" not in ldd, ldd
    unit = (root / "lib/systemd/system/quilkin.service").read_text()
    assert "ExecStart=/usr/bin/quilkin --config /etc/quilkin/quilkin.yaml proxy" in unit
    conf = root / "etc/quilkin/quilkin.yaml"
    logs = proxy_roundtrip([str(binary), "-c", str(conf)], servers, clients)
    assert any(f"loaded {conf}" in m for m in logs), logs
    man = subprocess.run(["gzip", "-dc", str(root / "usr/share/man/man1/quilkin.1.gz")],
                         capture_output=True, timeout=10, check=True).stdout
    assert man == (TOP / "docs/man/quilkin.1").read_bytes()
