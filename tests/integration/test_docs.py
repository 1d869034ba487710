"""The documentation stays true: every YAML example in docs/*.md that starts with
`version: v1alpha1` loads in the proxy (one start each, on free ports, up to "Quilkin is
ready"); every relative link in README.md and docs/*.md names a file of the repository (and
an anchor of it, when one is given); the README links nowhere outside the repository and
keeps `make run` and `make test` as its first two commands."""

import pathlib
import re
import subprocess

import pytest

from conftest import QUILKIN_BIN, stop_all
from start_helpers import start_ready

TOP = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted((TOP / "docs").glob("*.md"))
PAGES = [TOP / "README.md", *DOCS]


def yaml_examples():
    out = []
    for page in DOCS:
        text = page.read_text()
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.M | re.S):
            block = m.group(1)
            if block.startswith("version: v1alpha1"):
                line = text[: m.start()].count("\n") + 2
                out.append(pytest.param(block, id=f"{page.name}:{line}"))
    return out


def test_the_docs_have_examples():
    assert len(yaml_examples()) >= 15


@pytest.mark.parametrize("block", yaml_examples())
def test_example_config_loads(block, tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(block)
    p = start_ready(lambda udp, tcp: [
        QUILKIN_BIN, "--log-format", "json", "-c", str(path), "--admin-address",
        f"127.0.0.1:{tcp()}", "proxy", "--port", str(udp()), "--qcmp-port", str(udp())],
        cwd=tmp_path)
    try:
        assert p.find(f"loaded {path}")
    finally:
        stop_all([p])


def anchors(page):
    """GitHub's anchors for the headings of a markdown page."""
    out = set()
    for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    checked = 0
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue                                      # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_relative_to(TOP), f"{page.name}: {target} leaves the repository"
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: no heading #{anchor} in {path}"
        checked += 1
    if page.parent == TOP / "docs":
        assert checked > 0, f"{page.name} links nowhere"


def test_readme_stays_inside_the_repository_and_starts_with_make_run_and_test():
    text = (TOP / "README.md").read_text()
    assert "../" not in text and "/work/" not in text, "README points outside the repository"
    assert not re.search(r"\]\(/", text), "README has an absolute link"
    first_block = re.search(r"^```sh\n(.*?)^```", text, re.M | re.S).group(1).splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")
    assert "docs/README.md" in text


def test_cli_page_names_every_option_and_environment_variable():
    """docs/cli.md against the binary's own --help texts."""
    helps = "".join(subprocess.run([QUILKIN_BIN, *cmd, "--help"], capture_output=True,
                                   text=True, timeout=10).stdout
                    for cmd in ([], ["proxy"], ["manage"]))
    page = (TOP / "docs/cli.md").read_text()
    options = set(re.findall(r"(--[a-z][a-z0-9-]+)", helps))
    env = set(re.findall(r"env: ([A-Z_]+)", helps))
    assert len(options) > 30 and len(env) > 20
    assert sorted(o for o in options if o not in page) == []
    assert sorted(e for e in env if e not in page) == []
