"""examples/kubernetes: every manifest parses, is one of the kinds we have a strict schema
for (tests/integration/k8s_schemas, generated from the upstream API definitions) and
validates against it, so a misspelt field fails; the probes and ports agree with the
proxy's; and every configuration embedded in a ConfigMap loads in the binary the way the
pod runs it (proxy or manage)."""

import copy
import json
import pathlib
import shlex

import jsonschema
import pytest
import yaml

from conftest import QUILKIN_BIN, stop_all
from start_helpers import start_ready

TOP = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = TOP / "examples/kubernetes"
SCHEMAS = pathlib.Path(__file__).resolve().parent / "k8s_schemas"
KINDS = {
    ("apps/v1", "Deployment"): "apps-v1-Deployment.json",
    ("v1", "Service"): "v1-Service.json",
    ("v1", "ConfigMap"): "v1-ConfigMap.json",
    ("agones.dev/v1", "GameServer"): "agones.dev-v1-GameServer.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com-v1-PodMonitor.json",
}


def manifests():
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def validator(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    assert key in KINDS, f"no schema for {key}: add it to scripts/gen-k8s-schemas.py"
    schema = json.loads((SCHEMAS / KINDS[key]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(doc):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(doc).iter_errors(doc)]


def pod_templates(docs):
    """(file, owner name, pod template) for every Deployment and GameServer."""
    return [(f, d["metadata"].get("name") or d["metadata"].get("generateName"),
             d["spec"]["template"]) for f, d in docs
            if d["kind"] in ("Deployment", "GameServer")]


def test_examples_exist_and_cover_every_kind():
    kinds = {(d["apiVersion"], d["kind"]) for _, d in manifests()}
    assert kinds == set(KINDS), kinds ^ set(KINDS)


@pytest.mark.parametrize("name,doc", manifests(),
                         ids=lambda x: x if isinstance(x, str) else x["kind"])
def test_manifest_matches_its_api_schema(name, doc):
    assert errors(doc) == []


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["spec"]["template"]["spec"]["containers"][1].update(
        livenesProbe=d["spec"]["template"]["spec"]["containers"][1].pop("livenessProbe")),
     "livenesProbe"),
    (lambda d: d["spec"]["ports"][0].update(containerPor=7777), "containerPor"),
    (lambda d: d["spec"].update(portPolicy="Dynamic"), "portPolicy"),
    (lambda d: d["spec"]["ports"][0].update(portPolicy="dynamic"), "dynamic"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][1]["readinessProbe"]["httpGet"]
     .update(paht="/ready"), "paht"),
])
def test_a_misspelt_field_fails_the_check(mutate, where):
    gs = next(d for _, d in manifests() if d["kind"] == "GameServer")
    assert gs["spec"]["template"]["spec"]["containers"][1]["name"] == "quilkin"
    bad = copy.deepcopy(gs)
    mutate(bad)
    found = errors(bad)
    assert found and any(where in e for e in found), found


def test_probes_and_ports_match_the_proxy():
    docs = manifests()
    for f, owner, tmpl in pod_templates(docs):
        for c in tmpl["spec"]["containers"]:
            if not c["image"].startswith("localhost/quilkin-c"):
                continue
            ports = {p["name"]: p for p in c.get("ports", [])}
            assert ports["admin"]["containerPort"] == 8000, (f, owner)   # admin.md §1
            assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "admin"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            # kubelet never updates a subPath mount: the hot reload needs the directory
            assert all("subPath" not in m for m in c.get("volumeMounts", [])), (f, owner)
    gs = next(d for _, d in docs if d["kind"] == "GameServer")
    quilkin = next(c for c in gs["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "quilkin")
    args = quilkin["args"]
    (port,) = gs["spec"]["ports"]
    assert port["container"] == "quilkin" and port["protocol"] == "UDP"
    assert str(port["containerPort"]) == args[args.index("--port") + 1]


def embedded_configs():
    """(description, command, config text) for each ConfigMap file a container reads:
    the container's args name a path under the volume's mountPath."""
    docs = manifests()
    maps = {d["metadata"]["name"]: d["data"] for _, d in docs if d["kind"] == "ConfigMap"}
    out = []
    for f, owner, tmpl in pod_templates(docs):
        volumes = {v["name"]: v["configMap"]["name"] for v in tmpl["spec"].get("volumes", [])
                   if "configMap" in v}
        for c in tmpl["spec"]["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    continue
                data = maps[volumes[m["name"]]]
                paths = [a for a in c["args"] if a.startswith(m["mountPath"] + "/")]
                assert paths, f"{f} {owner}: {c['name']} mounts {m['name']} but reads no file"
                for path in paths:
                    key = path[len(m["mountPath"]) + 1:]
                    assert key in data, f"{f}: ConfigMap has no key {key}"
                    command = "manage" if "manage" in c["args"] else "proxy"
                    out.append((f"{f}:{owner}:{key}", command, data[key]))
    return out


def test_every_configmap_config_is_read_by_a_container():
    docs = manifests()
    keys = {(d["metadata"]["name"], k) for _, d in docs if d["kind"] == "ConfigMap"
            for k in d["data"]}
    assert len(embedded_configs()) == len(keys) > 0


@pytest.mark.parametrize("what,command,text", embedded_configs(), ids=lambda x: x
                         if isinstance(x, str) and "\n" not in x else "")
def test_embedded_config_loads_in_the_binary(what, command, text, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    def argv(udp, tcp):
        if command == "manage":
            return [QUILKIN_BIN, "--log-format", "json", "--admin-address",
                    f"127.0.0.1:{tcp()}", "manage", "--port", str(tcp()), "file", str(path)]
        return [QUILKIN_BIN, "--log-format", "json", "-c", str(path), "--admin-address",
                f"127.0.0.1:{tcp()}", "proxy", "--port", str(udp()), "--qcmp-port",
                str(udp())]
    p = start_ready(argv, cwd=tmp_path)
    try:
        assert p.find(f"serving {path}" if command == "manage" else f"loaded {path}"), \
            shlex.join(p.argv) + "\n" + p.log_tail()
    finally:
        stop_all([p])
