"""Config reload the way deployments trigger it (issue 8 #2, #3): Kubernetes ConfigMap volume
updates (kubelet's atomic writer swaps the `..data` symlink; the watched path itself never
changes), other symlink swaps, the rename of a directory on the path, and SIGHUP from process
managers (systemd ExecReload, supervisord), for `proxy` and `manage file`.

Expected values: all quilkin-c extensions (README "Config hot reload": ConfigMap symlink
swaps, SIGHUP, filters kept with their state); the spec's part is manage's provider
following its file (xds.md section 8.1). Log lines and counters: docs/test-expectations.md
E1, E4."""

import json
import os
import shutil
import signal

from admin_helpers import admin_get, scrape, wait_metric
from admin_helpers import quilkin  # noqa: F401  (fixture)
from conftest import expect_quiet, wait_until
from xds_helpers import manage, xds_pb  # noqa: F401  (fixtures)

SWITCH_TIMEOUT = 5.0


def config_for(*addrs, ident="field-reload"):
    eps = "".join(f"      - address: {a}\n" for a in addrs)
    return f"version: v1alpha1\nid: {ident}\nclusters:\n  - endpoints:\n{eps}"


def tagged(servers, tag):
    return servers("127.0.0.1", echo=lambda d: tag + b"|" + d)


class ConfigMapVolume:
    """A directory laid out as kubelet lays out a ConfigMap volume (its AtomicWriter):

        DIR/quilkin.yaml -> ..data/quilkin.yaml
        DIR/..data -> ..2026_12_05_10_00_00.000000001
        DIR/..2026_12_05_10_00_00.000000001/quilkin.yaml

    ``update`` writes a new timestamped directory, points a new ``..data_tmp`` symlink at it,
    renames that over ``..data`` (the only atomic step) and deletes the old directory."""

    def __init__(self, root, text, key="quilkin.yaml"):
        self.root = str(root)
        self.key = key
        self.generation = 0
        os.makedirs(self.root, exist_ok=True)
        self.current = self._write_dir(text)
        os.symlink(self.current, os.path.join(self.root, "..data"))
        os.symlink(os.path.join("..data", key), os.path.join(self.root, key))

    @property
    def path(self):
        return os.path.join(self.root, self.key)

    def _write_dir(self, text):
        self.generation += 1
        name = f"..2026_12_05_10_00_00.{self.generation:09d}"
        os.mkdir(os.path.join(self.root, name))
        with open(os.path.join(self.root, name, self.key), "w") as f:
            f.write(text)
        return name

    def update(self, text):
        old = self.current
        self.current = self._write_dir(text)
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(self.current, tmp)
        os.rename(tmp, os.path.join(self.root, "..data"))
        shutil.rmtree(os.path.join(self.root, old))


def test_configmap_updates_are_applied(quilkin, servers, clients, tmp_path):
    a, b, c_ = tagged(servers, b"A"), tagged(servers, b"B"), tagged(servers, b"C")
    vol = ConfigMapVolume(tmp_path / "configmap", config_for(a.addr))
    p = quilkin(config_path=vol.path)
    cl = clients(p.port)
    assert cl.request(b"0")[0] == b"A|0"
    # three updates in a row: the watch must follow the new ..data target every time (the
    # directory it watched for the file is deleted by each update)
    for i, (server, tag) in enumerate([(b, b"B"), (c_, b"C"), (a, b"A")], 1):
        vol.update(config_for(server.addr))
        wait_metric(p, "quilkin_config_reloads_total", i, timeout=SWITCH_TIMEOUT,
                    result="applied")
        assert cl.request(b"%d" % i)[0] == tag + b"|%d" % i
    m = scrape(p)
    assert m.value("quilkin_config_reloads_total", result="rejected") == 0
    cfg = json.loads(admin_get(p, "/config").text)
    assert [e["address"] for e in cfg["clusters"][0]["endpoints"]] == [a.addr]


def test_configmap_update_with_a_bad_file_is_rejected_then_fixed(quilkin, servers, clients,
                                                                  tmp_path):
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    vol = ConfigMapVolume(tmp_path / "cm", config_for(a.addr))
    p = quilkin(config_path=vol.path)
    cl = clients(p.port)
    vol.update("clusters: [\n")
    wait_metric(p, "quilkin_config_reloads_total", 1, timeout=SWITCH_TIMEOUT, result="rejected")
    assert cl.request(b"still")[0] == b"A|still"
    vol.update(config_for(b.addr))
    wait_metric(p, "quilkin_config_reloads_total", 1, timeout=SWITCH_TIMEOUT, result="applied")
    assert cl.request(b"now")[0] == b"B|now"


def test_symlink_swap_to_another_file_is_applied(quilkin, servers, clients, tmp_path):
    """The watched name is a symlink to a file elsewhere; it is atomically re-pointed."""
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.yaml").write_text(config_for(a.addr))
    (store / "b.yaml").write_text(config_for(b.addr))
    link = tmp_path / "etc" / "quilkin.yaml"
    link.parent.mkdir()
    os.symlink(store / "a.yaml", link)
    p = quilkin(config_path=str(link))
    cl = clients(p.port)
    assert cl.request(b"0")[0] == b"A|0"
    tmp = tmp_path / "etc" / "quilkin.yaml.new"
    os.symlink(store / "b.yaml", tmp)
    os.rename(tmp, link)
    wait_metric(p, "quilkin_config_reloads_total", 1, timeout=SWITCH_TIMEOUT, result="applied")
    assert cl.request(b"1")[0] == b"B|1"
    # and a write to the file the link now points at is seen too
    (store / "b.yaml").write_text(config_for(a.addr))
    wait_metric(p, "quilkin_config_reloads_total", 2, timeout=SWITCH_TIMEOUT, result="applied")
    assert cl.request(b"2")[0] == b"A|2"


def test_directory_rename_on_the_path_is_applied(quilkin, servers, clients, tmp_path):
    """A whole directory of the path is replaced by rename (a deploy tool swapping a
    release directory)."""
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    live = tmp_path / "release" / "conf"
    live.mkdir(parents=True)
    (live / "quilkin.yaml").write_text(config_for(a.addr))
    p = quilkin(config_path=str(live / "quilkin.yaml"))
    cl = clients(p.port)
    assert cl.request(b"0")[0] == b"A|0"
    staged = tmp_path / "release" / "conf.new"
    staged.mkdir()
    (staged / "quilkin.yaml").write_text(config_for(b.addr))
    os.rename(live, tmp_path / "release" / "conf.old")
    os.rename(staged, live)
    wait_metric(p, "quilkin_config_reloads_total", 1, timeout=SWITCH_TIMEOUT, result="applied")
    assert cl.request(b"1")[0] == b"B|1"


# --------------------------------------------------------------------------
# SIGHUP
# --------------------------------------------------------------------------

def test_sighup_rereads_the_config_and_never_ends_the_process(quilkin, servers, clients):
    a = tagged(servers, b"A")
    p = quilkin(config=config_for(a.addr))
    cl = clients(p.port)
    assert cl.request(b"0")[0] == b"A|0"
    for i in range(1, 6):
        p.signal(signal.SIGHUP)
        wait_metric(p, "quilkin_config_reloads_total", i, result="applied")
        p.wait_log(f"SIGHUP: re-reading {p.config_path}", count=i)
    assert p.running()
    assert cl.request(b"1")[0] == b"A|1"
    # a burst of signals coalesces or not, but never kills it
    for _ in range(20):
        p.signal(signal.SIGHUP)
    wait_until(lambda: len(p.find("SIGHUP: re-reading")) >= 6, 5, what="burst handled")
    assert p.running()
    assert cl.request(b"2")[0] == b"A|2"
    assert scrape(p).value("quilkin_config_reloads_total", result="rejected") == 0


def test_sighup_with_a_bad_file_is_rejected_and_counted(quilkin, servers, clients):
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    p = quilkin(config=config_for(a.addr))
    cl = clients(p.port)
    with open(p.config_path, "w") as f:
        f.write("clusters: {\n")
    wait_metric(p, "quilkin_config_reloads_total", 1, result="rejected")
    p.signal(signal.SIGHUP)
    wait_metric(p, "quilkin_config_reloads_total", 2, result="rejected")
    assert p.running()
    assert cl.request(b"still")[0] == b"A|still"
    with open(p.config_path, "w") as f:
        f.write(config_for(b.addr))
    wait_metric(p, "quilkin_config_reloads_total", 1, result="applied")
    p.signal(signal.SIGHUP)
    wait_metric(p, "quilkin_config_reloads_total", 2, result="applied")
    assert cl.request(b"new")[0] == b"B|new"


def test_sighup_without_a_config_file_is_logged(quilkin, echo_v4, clients, tmp_path):
    p = quilkin("--to", echo_v4.addr)  # cwd has no quilkin.yaml: the built-in default
    p.signal(signal.SIGHUP)
    p.wait_log("SIGHUP: no configuration file was loaded")
    c = clients(p.port)
    assert c.request(b"ok")[0] == b"ok"


def test_sighup_during_drain_does_not_count_as_the_second_signal(quilkin, echo_v4, clients):
    p = quilkin("--to", echo_v4.addr, "--session-timeout-secs", "30")
    c = clients(p.port)
    assert c.request(b"x")[0] == b"x"
    p.signal(signal.SIGTERM)
    p.wait_log("shutting down: draining")
    p.signal(signal.SIGHUP)
    p.wait_log("SIGHUP:")
    assert p.running()
    c.send(b"still forwarded")
    echo_v4.wait_for(b"still forwarded")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0


def test_manage_follows_configmap_updates_and_sighup(manage, quilkin, servers, clients,
                                                     tmp_path):
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    vol = ConfigMapVolume(tmp_path / "cm-manage", config_for(a.addr, ident="fleet"))
    m = manage(None, path=vol.path)
    p = quilkin("-m", m.url, config="version: v1alpha1\nid: field-proxy\n", wait="admin")
    cl = clients(p.port)
    wait_until(lambda: cl.request(b"0")[0] == b"A|0", 5, what="first route")
    vol.update(config_for(b.addr, ident="fleet"))
    wait_metric(m, "quilkin_config_reloads_total", 2, timeout=SWITCH_TIMEOUT, result="applied")
    wait_until(lambda: cl.request(b"1")[0] == b"B|1", SWITCH_TIMEOUT, what="route to B")
    m.signal(signal.SIGHUP)
    m.wait_log(f"SIGHUP: re-reading {vol.path}")
    wait_metric(m, "quilkin_config_reloads_total", 3, result="applied")
    assert m.running()
    # a proxy fed by xDS has no file to re-read: SIGHUP is logged and harmless
    p.signal(signal.SIGHUP)
    p.wait_log("SIGHUP: the configuration comes from the management server")

    def both_running():
        assert p.running() and m.running()
    expect_quiet(both_running, 0.3)
    assert cl.request(b"2")[0] == b"B|2"


# --------------------------------------------------------------------------
# filter state across updates (issue 8 #4, #5)
# --------------------------------------------------------------------------

LIMIT_3 = """\
filters:
  - name: quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit
    config:
      max_packets: 3
      period: 60
"""


def spend_budget(cl, n, tag=b"A"):
    for i in range(n):
        assert cl.request(b"s%d" % i)[0] == tag + b"|s%d" % i
    cl.send(b"over")
    cl.expect_silence()


def test_endpoint_only_reload_keeps_the_rate_limit_budget(quilkin, servers, clients):
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    p = quilkin(config=config_for(a.addr) + LIMIT_3)
    cl = clients(p.port)
    spend_budget(cl, 3)
    # only the endpoints change (one added): the spent budget stays spent
    with open(p.config_path, "w") as f:
        f.write(config_for(a.addr, b.addr) + LIMIT_3)
    p.wait_log("config reloaded", count=1)
    assert p.find("endpoints=2 filters=1 kept_filters=1")
    cl.send(b"still over")
    cl.expect_silence()
    assert b.count() == 0
    # the filter's own config changes: a new instance, a new budget
    with open(p.config_path, "w") as f:
        f.write(config_for(a.addr, b.addr) + LIMIT_3.replace("max_packets: 3", "max_packets: 4"))
    p.wait_log("kept_filters=0")
    cl.send(b"fresh")
    assert sorted(d for d, _ in cl.recv_n(2)) == [b"A|fresh", b"B|fresh"]


def test_round_robin_is_one_sequence_for_all_clients_and_workers(quilkin, servers, clients):
    """Spec filters.md section 8: one counter per filter instance, shared by every client. With
    two workers, clients are spread over both by the kernel's flow hash; per-worker counters
    made the sequence restart on each worker (issue 8 #5)."""
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    lb = ("filters:\n  - name: quilkin.filters.load_balancer.v1alpha1.LoadBalancer\n"
          "    config:\n      policy: ROUND_ROBIN\n")
    p = quilkin("--workers", "2", config=config_for(a.addr, b.addr) + lb)
    tags = []
    for i in range(16):
        cl = clients(p.port)
        tags.append(cl.request(b"c%d" % i)[0].split(b"|")[0])
    # one sequence over the endpoints in address order (config.md section 3: same IP, so
    # by port), starting with the first
    lo, hi = (b"A", b"B") if a.port < b.port else (b"B", b"A")
    assert tags == [lo, hi] * 8, tags
    # an endpoint-only reload keeps the position: the next client continues the sequence
    c_ = tagged(servers, b"C")
    with open(p.config_path, "w") as f:
        f.write(config_for(a.addr, b.addr, c_.addr) + lb)
    p.wait_log("kept_filters=1")
    seen = [clients(p.port).request(b"n%d" % i)[0].split(b"|")[0] for i in range(3)]
    # counter is 16 now: 16 % 3 = 1, then 2, then 0 (endpoints in address order)
    order = sorted([a, b, c_], key=lambda s: s.port)
    tag_of = {a.port: b"A", b.port: b"B", c_.port: b"C"}
    assert seen == [tag_of[order[k].port] for k in (1, 2, 0)], seen


def test_xds_cluster_update_keeps_the_rate_limit_budget(manage, quilkin, servers, clients):
    a, b = tagged(servers, b"A"), tagged(servers, b"B")
    m = manage(config_for(a.addr, ident="fleet") + LIMIT_3)
    p = quilkin("-m", m.url, config="version: v1alpha1\nid: field-proxy\n", wait="admin")
    wait_until(lambda: len(json.loads(admin_get(p, "/config").text)["filters"]) == 1, 5,
               what="the Listener")
    cl = clients(p.port)
    spend_budget(cl, 3)
    with open(m.file_path, "w") as f:
        f.write(config_for(a.addr, b.addr, ident="fleet") + LIMIT_3)
    wait_until(lambda: len(json.loads(admin_get(p, "/config").text)["clusters"][0]
                           ["endpoints"]) == 2, SWITCH_TIMEOUT, what="the new endpoint")
    cl.send(b"still over")
    cl.expect_silence()
    assert b.count() == 0
    assert p.find("applied update endpoints=2 filters=1 kept_filters=1")
