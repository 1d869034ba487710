"""xDS over TLS (issue 10): the proxy reaches https:// management servers (OpenSSL, ALPN h2,
the system CA store by default, --xds-tls-ca for a private CA, --xds-tls-cert/--xds-tls-key
for mTLS) and `quilkin manage` serves TLS (--tls-cert/--tls-key, --tls-client-ca to require
client certificates).

Peers are grpcio (the Python control plane and ADS client, BoringSSL inside) and our own
counterpart; every certificate is made by the test with the openssl CLI: a test CA, a
server certificate for localhost/127.0.0.1/::1, a client certificate, and a second,
unrelated CA whose certificates must be refused.

Expected values: TLS for xDS is a quilkin-c extension (README "Fleet: xDS", TLS); its
start-up errors exit 255 (spec cli.md section 5; docs/test-expectations.md E3), its log
lines are docs/test-expectations.md E1."""

import json
import subprocess

import grpc
import pytest

from admin_helpers import admin_get, wait_admin_ready
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import READY_TIMEOUT, run_quilkin, wait_until
from xds_helpers import (TYPE_CLUSTER, client_tls_credentials, cluster, endpoint, ready_status,
                         server_endpoint, subscribe, wait_ready_status)
from xds_helpers import ads_clients, control_plane, manage, xds_pb  # noqa: F401  (fixtures)

PROXY_CFG = "version: v1alpha1\nid: tls-proxy\n"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, ca, name, cn, ext):
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=d)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Paths: ca, server (cert/key for localhost, 127.0.0.1, ::1), client (cert/key),
    other_ca, other_server (signed by other_ca, same names), wrong_name (signed by ca, for
    other.example only)."""
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    server_ext = ("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
                  "extendedKeyUsage=serverAuth\n")
    _make_leaf(d, "ca", "server", "localhost", server_ext)
    _make_leaf(d, "other-ca", "other-server", "localhost", server_ext)
    _make_leaf(d, "ca", "wrong-name", "other.example",
               "subjectAltName=DNS:other.example\nextendedKeyUsage=serverAuth\n")
    _make_leaf(d, "ca", "client", "proxy-1", "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "other-ca", "other-client", "proxy-2", "extendedKeyUsage=clientAuth\n")

    def pair(name):
        return {"cert": str(d / f"{name}.pem"), "key": str(d / f"{name}.key")}
    return {"dir": d, "ca": str(d / "ca.pem"), "other_ca": str(d / "other-ca.pem"),
            "server": pair("server"), "other_server": pair("other-server"),
            "wrong_name": pair("wrong-name"), "client": pair("client"),
            "other_client": pair("other-client")}


def serve_tls(control_plane, pki, leaf="server", client_ca=None):
    cp = control_plane(tls={**pki[leaf], "client_ca": client_ca})
    # one endpoint, so that /ready is 200 once the state arrived (admin.md section 3)
    cp.set_state(TYPE_CLUSTER, [cluster([endpoint("127.0.0.1", 29001)])], "0")
    return cp


def endpoints_on_config(p):
    cfg = json.loads(admin_get(p, "/config").body)
    return [e["address"] for c in cfg["clusters"] for e in c["endpoints"]]


def assert_never_connects(p, cp, needle):
    """The proxy logs needle (the TLS failure) and stays not ready; the control plane never
    sees a request."""
    p.wait_log(needle, timeout=READY_TIMEOUT)
    assert ready_status(p) == 503
    assert not any(st.requests for st in cp.streams), "a request got through"


# --------------------------------------------------------------------------
# proxy -> TLS control plane
# --------------------------------------------------------------------------

def test_proxy_reaches_an_https_control_plane_with_a_private_ca(quilkin, control_plane, pki,
                                                                servers, clients):
    echo = servers()
    cp = serve_tls(control_plane, pki)
    assert cp.url.startswith("https://127.0.0.1:")
    p = quilkin("-m", cp.url, "--xds-tls-ca", pki["ca"], config=PROXY_CFG)
    st = cp.wait_stream(1)
    resp = cp.push(TYPE_CLUSTER, [cluster([server_endpoint(echo)])], version="1")
    st.wait_reply_to(resp.nonce)
    wait_ready_status(p, 200)
    c = clients(p.port)
    assert c.request(b"over-tls-config")[0] == b"over-tls-config"
    p.wait_log(f"connected to management server {cp.url}")


def test_the_ca_can_come_from_the_environment(quilkin, control_plane, pki):
    cp = serve_tls(control_plane, pki)
    p = quilkin("-m", cp.url, config=PROXY_CFG, env={"QUILKIN_XDS_TLS_CA": pki["ca"]})
    cp.wait_stream(1)
    wait_ready_status(p, 200)


def test_the_system_store_is_the_default_and_is_checked(quilkin, control_plane, pki):
    """Without --xds-tls-ca the server is checked against OpenSSL's default store: our test
    CA is not in it (refused), and SSL_CERT_FILE (OpenSSL's override of the default store)
    pointing at it is honoured."""
    cp = serve_tls(control_plane, pki)
    p = quilkin("-m", cp.url, config=PROXY_CFG)
    assert_never_connects(p, cp, "certificate verify failed")
    p2 = quilkin("-m", cp.url, config=PROXY_CFG, env={"SSL_CERT_FILE": pki["ca"]})
    cp.wait_stream(1)
    wait_ready_status(p2, 200)


def test_a_server_signed_by_another_ca_is_refused(quilkin, control_plane, pki):
    cp = serve_tls(control_plane, pki, leaf="other_server")
    p = quilkin("-m", cp.url, "--xds-tls-ca", pki["ca"], config=PROXY_CFG)
    assert_never_connects(p, cp, "certificate verify failed")


def test_a_certificate_for_another_name_is_refused(quilkin, control_plane, pki):
    cp = serve_tls(control_plane, pki, leaf="wrong_name")
    p = quilkin("-m", cp.url, "--xds-tls-ca", pki["ca"], config=PROXY_CFG)
    assert_never_connects(p, cp, "certificate verify failed")


def test_a_cleartext_server_behind_https_fails_cleanly(quilkin, control_plane, pki):
    cp = control_plane()
    url = cp.url.replace("http://", "https://")
    p = quilkin("-m", url, "--xds-tls-ca", pki["ca"], config=PROXY_CFG)
    p.wait_log("TLS handshake", timeout=READY_TIMEOUT)
    assert ready_status(p) == 503
    assert p.running()


def test_mtls_client_certificate(quilkin, control_plane, pki):
    cp = serve_tls(control_plane, pki, client_ca=pki["ca"])
    # without a certificate the server refuses the handshake
    bare = quilkin("-m", cp.url, "--xds-tls-ca", pki["ca"], config=PROXY_CFG)
    bare.wait_log("refuses our client certificate", timeout=READY_TIMEOUT)
    # a certificate from another CA is refused too
    other = quilkin("-m", cp.url, "--xds-tls-ca", pki["ca"],
                    "--xds-tls-cert", pki["other_client"]["cert"],
                    "--xds-tls-key", pki["other_client"]["key"], config=PROXY_CFG)
    other.wait_log("refuses our client certificate", timeout=READY_TIMEOUT)
    assert not any(st.requests for st in cp.streams)
    # ours is accepted
    ok = quilkin("-m", cp.url, config=PROXY_CFG,
                 env={"QUILKIN_XDS_TLS_CA": pki["ca"],
                      "QUILKIN_XDS_TLS_CERT": pki["client"]["cert"],
                      "QUILKIN_XDS_TLS_KEY": pki["client"]["key"]})
    cp.wait_stream(1)
    wait_ready_status(ok, 200)
    assert ready_status(bare) == 503 and ready_status(other) == 503


def test_tls_options_are_checked_at_start(tmp_path, pki):
    def run(*args):
        return run_quilkin(["--no-admin", "proxy", "--port", "0", *args], cwd=str(tmp_path))
    r = run("-m", "https://127.0.0.1:1", "--xds-tls-cert", pki["client"]["cert"])
    assert r.returncode == 2 and "go together" in r.stderr, r.stderr
    r = run("-m", "https://127.0.0.1:1", "--xds-tls-ca", str(tmp_path / "missing.pem"))
    # README "Exit status": 255 for start-up errors (unreadable TLS files); a crash would
    # give another status
    assert r.returncode == 255 and "missing.pem" in r.stderr + r.stdout, r.stderr
    r = run("-m", "https://127.0.0.1:1", "--xds-tls-ca", pki["ca"],
            "--xds-tls-cert", pki["client"]["cert"], "--xds-tls-key", pki["server"]["key"])
    assert r.returncode == 255 and "cannot load the private key" in r.stderr, r.stderr
    # spec cli.md §5: a management server URL the client cannot use is a start-up error (255)
    r = run("-m", "ftp://127.0.0.1:1")
    assert r.returncode == 255 and "https://" in r.stderr + r.stdout, r.stderr


# --------------------------------------------------------------------------
# manage serving TLS
# --------------------------------------------------------------------------

MANAGE_FILE = "version: v1alpha1\nclusters:\n  - endpoints:\n      - address: 127.0.0.1:29001\n"


def tls_target(m):
    return f"localhost:{m.xds_port}"


def test_manage_serves_tls_to_grpcio_and_to_the_proxy(manage, quilkin, ads_clients, pki):
    m = manage(MANAGE_FILE, "--tls-cert", pki["server"]["cert"],
               "--tls-key", pki["server"]["key"])
    m.wait_log("(gRPC, TLS)")
    c = ads_clients(tls_target(m), credentials=client_tls_credentials(pki["ca"]))
    resp = subscribe(c, TYPE_CLUSTER, "py-node")
    assert len(resp.resources) == 1
    # a cleartext client gets nowhere
    plain = ads_clients(m.target)
    with pytest.raises(AssertionError):
        subscribe(plain, TYPE_CLUSTER, "py-plain", timeout=1.5)
    # our own client over TLS, by IP literal and by name
    for host in ("127.0.0.1", "localhost"):
        p = quilkin("-m", f"https://{host}:{m.xds_port}", "--xds-tls-ca", pki["ca"],
                    config=PROXY_CFG)
        wait_admin_ready(p)
        wait_until(lambda: endpoints_on_config(p) == ["127.0.0.1:29001"], READY_TIMEOUT,
                   what="the endpoint from manage")


def test_manage_requires_client_certificates(manage, quilkin, ads_clients, pki):
    m = manage(MANAGE_FILE, "--tls-cert", pki["server"]["cert"],
               "--tls-key", pki["server"]["key"], "--tls-client-ca", pki["ca"])
    m.wait_log("client certificates required")
    no_cert = ads_clients(tls_target(m), credentials=client_tls_credentials(pki["ca"]))
    with pytest.raises(AssertionError):
        subscribe(no_cert, TYPE_CLUSTER, "py-anon", timeout=1.5)
    other = ads_clients(tls_target(m), credentials=client_tls_credentials(
        pki["ca"], pki["other_client"]["cert"], pki["other_client"]["key"]))
    with pytest.raises(AssertionError):
        subscribe(other, TYPE_CLUSTER, "py-other", timeout=1.5)
    good = ads_clients(tls_target(m), credentials=client_tls_credentials(
        pki["ca"], pki["client"]["cert"], pki["client"]["key"]))
    assert len(subscribe(good, TYPE_CLUSTER, "py-good").resources) == 1
    p = quilkin("-m", f"https://127.0.0.1:{m.xds_port}", "--xds-tls-ca", pki["ca"],
                "--xds-tls-cert", pki["client"]["cert"], "--xds-tls-key",
                pki["client"]["key"], config=PROXY_CFG)
    wait_admin_ready(p)
    wait_until(lambda: endpoints_on_config(p) == ["127.0.0.1:29001"], READY_TIMEOUT,
               what="the endpoint from manage over mTLS")
    # the refused handshakes cost the server nothing lasting
    assert m.running()


def test_manage_tls_options_are_checked(tmp_path, pki):
    path = tmp_path / "p.yaml"
    path.write_text(MANAGE_FILE)

    def run(*args):
        return run_quilkin(["--no-admin", "manage", "--port", "0", *args, "file", str(path)],
                           cwd=str(tmp_path), timeout=10)
    r = run("--tls-cert", pki["server"]["cert"])
    assert r.returncode == 2 and "go together" in r.stderr, r.stderr
    r = run("--tls-client-ca", pki["ca"])
    assert r.returncode == 2, r.stderr
    r = run("--tls-cert", pki["server"]["cert"], "--tls-key", pki["client"]["key"])
    assert r.returncode == 255 and "cannot load the private key" in r.stderr, r.stderr
