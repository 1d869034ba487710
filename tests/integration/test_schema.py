"""`quilkin generate-config-schema` (spec cli.md §2.6): one YAML-serialised JSON Schema per
filter, named as v0.7.0 names them, that accepts the shipped examples and rejects what the
proxy rejects (a wrong type or an unknown enum value fails both)."""

import glob
import json
import os
import re

import jsonschema
import pytest
import yaml

from conftest import run_quilkin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_FILTERS = os.path.join(REPO, "..", "shared", "spec", "filters.md")

NAMES = [
    "quilkin.filters.capture.v1alpha1.Capture",
    "quilkin.filters.compress.v1alpha1.Compress",
    "quilkin.filters.concatenate.v1alpha1.Concatenate",
    "quilkin.filters.debug.v1alpha1.Debug",
    "quilkin.filters.drop.v1alpha1.Drop",
    "quilkin.filters.firewall.v1alpha1.Firewall",
    "quilkin.filters.load_balancer.v1alpha1.LoadBalancer",
    "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit",
    "quilkin.filters.match.v1alpha1.Match",
    "quilkin.filters.pass.v1alpha1.Pass",
    "quilkin.filters.timestamp.v1alpha1.Timestamp",
    "quilkin.filters.token_router.v1alpha1.TokenRouter",
]


def file_name(name):
    # v0.7.0: the name with its last dot-separated part replaced by "yaml"
    return name.rsplit(".", 1)[0] + ".yaml"


def records(stdout):
    return [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory, quilkin_bin):
    out = tmp_path_factory.mktemp("schemas")
    r = run_quilkin(["generate-config-schema", "--output-directory", str(out)], cwd=out)
    assert r.returncode == 0, (r.stdout, r.stderr)
    got = {}
    for name in NAMES:
        with open(out / file_name(name)) as f:
            got[name] = yaml.safe_load(f)
    return got


def validator(schemas, name):
    return jsonschema.Draft7Validator(schemas[name])


def test_one_schema_file_per_filter_named_as_v070_does(quilkin_bin, tmp_path):
    r = run_quilkin(["generate-config-schema", "-o", str(tmp_path)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(file_name(n) for n in NAMES)
    for n in NAMES:
        doc = yaml.safe_load((tmp_path / file_name(n)).read_text())
        assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert doc["title"] == n
        jsonschema.Draft7Validator.check_schema(doc)
    written = [rec["fields"]["message"] for rec in records(r.stdout)
               if rec["fields"]["message"].startswith("Writing ")]
    assert len(written) == len(NAMES), written


def test_default_directory_and_all_in_any_case(quilkin_bin, tmp_path):
    r = run_quilkin(["generate-config-schema", "ALL"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(tmp_path)) == len(NAMES)


def test_selected_ids_and_unknown_ids(quilkin_bin, tmp_path):
    r = run_quilkin(["generate-config-schema", "-o", str(tmp_path),
                     "quilkin.filters.pass.v1alpha1.Pass", "nope",
                     "quilkin.filters.drop.v1alpha1.Drop"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # an unknown id is logged and skipped
    assert sorted(os.listdir(tmp_path)) == ["quilkin.filters.drop.v1alpha1.yaml",
                                            "quilkin.filters.pass.v1alpha1.yaml"]
    errors = [rec["fields"]["message"] for rec in records(r.stdout) if rec["level"] == "ERROR"]
    assert errors == ["nope not found in filter set."], r.stdout


def test_unwritable_directory_fails(quilkin_bin, tmp_path):
    r = run_quilkin(["generate-config-schema", "-o", str(tmp_path / "missing")], cwd=tmp_path)
    assert r.returncode == 255
    assert "cannot write" in r.stderr


# --------------------------------------------------------------------------
# the schemas agree with the parsers
# --------------------------------------------------------------------------

def filter_entries(doc):
    """Every (name, config) in a config document, Match branches and fallthroughs included."""
    out = []

    def walk(entry):
        out.append((entry["name"], entry.get("config")))
        cfg = entry.get("config")
        if entry["name"].endswith(".Match") and isinstance(cfg, dict):
            for d in ("on_read", "on_write"):
                dc = cfg.get(d)
                if not isinstance(dc, dict):
                    continue
                for b in dc.get("branches") or []:
                    walk(b)
                if dc.get("fallthrough"):
                    walk(dc["fallthrough"])

    for entry in (doc or {}).get("filters") or []:
        walk(entry)
    return out


def shipped_examples():
    docs = []
    # Quilkin configurations only: examples/kubernetes holds Kubernetes manifests (their
    # embedded configs are checked by test_k8s_manifests.py)
    paths = glob.glob(os.path.join(REPO, "examples", "*.yaml")) + \
        glob.glob(os.path.join(REPO, "examples", "filters", "*.yaml"))
    for path in sorted(paths):
        with open(path) as f:
            docs.append((os.path.relpath(path, REPO), f.read()))
    with open(os.path.join(REPO, "README.md")) as f:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", f.read(), re.S)):
            docs.append((f"README.md yaml block {i}", block))
    return docs


def spec_examples():
    if not os.path.exists(SPEC_FILTERS):
        return []
    with open(SPEC_FILTERS) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    return [(f"spec filters.md yaml block {i}", "filters:\n" + b) for i, b in enumerate(blocks)]


def test_shipped_examples_validate(schemas, quilkin_bin, tmp_path):
    examples = shipped_examples()
    assert len(examples) >= 12, examples
    seen = set()
    for where, text in examples:
        for name, config in filter_entries(yaml.safe_load(text)):
            seen.add(name)
            errors = list(validator(schemas, name).iter_errors(config))
            assert not errors, (where, name, [e.message for e in errors])
        if "clusters" in text:  # a whole config: the proxy accepts it too
            path = tmp_path / "example.yaml"
            path.write_text(text)
            r = run_quilkin(["--no-admin", "-c", str(path), "proxy", "--check"], cwd=tmp_path)
            assert r.returncode == 0, (where, r.stderr)
    assert seen == set(NAMES), set(NAMES) - seen  # every filter has a shipped example


def test_spec_examples_validate(schemas):
    examples = spec_examples()
    if not examples:
        pytest.skip(f"{SPEC_FILTERS} is not beside this checkout")
    for where, text in examples:
        for name, config in filter_entries(yaml.safe_load(text)):
            errors = list(validator(schemas, name).iter_errors(config))
            assert not errors, (where, name, [e.message for e in errors])


CAPTURE = "quilkin.filters.capture.v1alpha1.Capture"
COMPRESS = "quilkin.filters.compress.v1alpha1.Compress"
CONCAT = "quilkin.filters.concatenate.v1alpha1.Concatenate"
DEBUG = "quilkin.filters.debug.v1alpha1.Debug"
DROP = "quilkin.filters.drop.v1alpha1.Drop"
FIREWALL = "quilkin.filters.firewall.v1alpha1.Firewall"
LB = "quilkin.filters.load_balancer.v1alpha1.LoadBalancer"
RL = "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit"
MATCH = "quilkin.filters.match.v1alpha1.Match"
TIMESTAMP = "quilkin.filters.timestamp.v1alpha1.Timestamp"
TOKEN = "quilkin.filters.token_router.v1alpha1.TokenRouter"

# (filter, config as YAML flow text, what is wrong): the schema rejects it and so does the proxy
INVALID = [
    (CAPTURE, "{ prefix: { size: -1 } }", "negative size"),
    (CAPTURE, "{ prefix: { size: '3' } }", "size as a string"),
    (CAPTURE, "{ prefix: { size: 3, remove: 1 } }", "remove as a number"),
    (CAPTURE, "{ metadataKey: k }", "no strategy"),
    (CAPTURE, "{ prefix: { size: 1 }, suffix: { size: 1 } }", "two strategies"),
    (CAPTURE, "{ regex: { pattern: a }, extra: 1 }", "unknown top-level key"),
    (CAPTURE, "{ regex: {} }", "regex without pattern"),
    (COMPRESS, "{ on_read: compress, on_write: DECOMPRESS }", "lower-case enum"),
    (COMPRESS, "{ on_read: COMPRESS }", "on_write missing"),
    (COMPRESS, "{ mode: LZ4, on_read: COMPRESS, on_write: DECOMPRESS }", "unknown mode"),
    (CONCAT, "{ on_read: APPEND }", "bytes missing"),
    (CONCAT, "{ on_read: SUFFIX, bytes: dG9r }", "unknown strategy"),
    (CONCAT, "{ bytes: [1] }", "bytes as a list"),
    (CONCAT, "{ bytes: 'dG9r=' }", "bad base64"),
    (DEBUG, "{ id: [1] }", "id as a list"),
    (DROP, "{}", "a config for a configless filter"),
    (FIREWALL, "{ on_read: [] }", "on_write missing"),
    (FIREWALL, "{ on_read: [ { action: ACCEPT, sources: [], ports: [] } ], on_write: [] }",
     "unknown action"),
    (FIREWALL, "{ on_read: [ { action: ALLOW, sources: 10.0.0.0/8, ports: [] } ], on_write: [] }",
     "sources not a list"),
    (FIREWALL, "{ on_read: [ { action: ALLOW, sources: [], ports: [ 65535 ] } ], on_write: [] }",
     "port 65535"),
    (FIREWALL, "{ on_read: [ { action: ALLOW, sources: [], ports: [ 'x-y' ] } ], on_write: [] }",
     "port range not numbers"),
    (LB, "{ policy: LEAST_CONNECTIONS }", "unknown policy"),
    (LB, "null", "null config"),
    (RL, "{ max_packets: 10, period: 0 }", "period 0"),
    (RL, "{ max_packets: '10', period: 1 }", "max_packets as a string"),
    (RL, "{ max_packets: 10 }", "period missing"),
    (MATCH, "{}", "neither direction"),
    (MATCH, "{ on_read: { metadataKey: k, branches: [] }, extra: 1 }", "unknown top-level key"),
    (MATCH, "{ on_read: { branches: [] } }", "metadataKey missing"),
    (MATCH, "{ on_read: { metadataKey: k, branches: [ { value: -1, name: "
            "quilkin.filters.pass.v1alpha1.Pass } ] } }", "negative branch value"),
    (MATCH, "{ on_read: { metadataKey: k, branches: [ { value: { a: 1 }, name: "
            "quilkin.filters.pass.v1alpha1.Pass } ] } }", "map branch value"),
    (MATCH, "{ on_read: { metadataKey: k, branches: [ { value: 1, name: "
            "quilkin.filters.nope.v1alpha1.Nope } ] } }", "unknown branch filter"),
    (MATCH, "{ on_read: { metadataKey: k, branches: [ { name: "
            "quilkin.filters.pass.v1alpha1.Pass } ] } }", "branch without value"),
    (TIMESTAMP, "{}", "metadataKey missing"),
    (TOKEN, "{ metadataKey: [a] }", "metadataKey as a list"),
    (TOKEN, "[]", "a list as the config"),
]

# accepted by both: the less obvious forms the parser takes
VALID = [
    (CAPTURE, "{ suffix: { size: 0 }, metadataKey: 5 }"),
    (CAPTURE, "{ regex: { pattern: '[a-z]+' } }"),
    (COMPRESS, "{ mode: null, on_read: DO_NOTHING, on_write: DO_NOTHING }"),
    (CONCAT, "{ bytes: '' }"),
    (DEBUG, "null"),
    (DEBUG, "{ id: null, other: ignored }"),
    (FIREWALL, "{ on_read: [ { action: DENY, sources: [ '::1' ], ports: [ 0, '+1-+9' ] } ], "
               "on_write: [] }"),
    (LB, "{}"),
    (RL, "{ max_packets: 0, period: 4294967295 }"),
    (MATCH, "{ on_write: { metadataKey: k, branches: [ { value: [ true, 7, abc ], name: "
            "quilkin.filters.drop.v1alpha1.Drop } ], fallthrough: null }, on_read: null }"),
    (TOKEN, "null"),
]


def proxy_check(tmp_path, name, config_text):
    cfg = ("clusters:\n  - endpoints:\n      - address: 127.0.0.1:9\nfilters:\n"
           f"  - name: {name}\n    config: {config_text}\n")
    path = tmp_path / "filter.yaml"
    path.write_text(cfg)
    return run_quilkin(["--no-admin", "-c", str(path), "proxy", "--check"], cwd=tmp_path)


@pytest.mark.parametrize("name,config,why", INVALID, ids=[f"{n.split('.')[-1]}-{w}"
                                                          for n, _, w in INVALID])
def test_invalid_configs_fail_the_schema_and_the_proxy(schemas, quilkin_bin, tmp_path, name,
                                                       config, why):
    errors = list(validator(schemas, name).iter_errors(yaml.safe_load(config)))
    assert errors, f"the schema accepts {config} ({why})"
    r = proxy_check(tmp_path, name, config)
    assert r.returncode == 255, (why, r.stdout, r.stderr)
    assert "invalid configuration" in r.stderr or "requires" in r.stderr, r.stderr


@pytest.mark.parametrize("name,config", VALID, ids=[f"{n.split('.')[-1]}-{i}"
                                                    for i, (n, _) in enumerate(VALID)])
def test_valid_configs_pass_the_schema_and_the_proxy(schemas, quilkin_bin, tmp_path, name,
                                                     config):
    errors = list(validator(schemas, name).iter_errors(yaml.safe_load(config)))
    assert not errors, [e.message for e in errors]
    r = proxy_check(tmp_path, name, config)
    assert r.returncode == 0, r.stderr
