"""The supported Python versions are said once each in three places, and they agree.

``pyproject.toml`` (``requires-python`` and the classifiers) is what pip and PyPI read, the
README is what users read, and ``.ci/run`` is what gets tested: a version listed in one but not
the others would be promised untested, or tested without being promised.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _classified() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    return [
        c.removeprefix(prefix)
        for c in project["classifiers"]
        if c.startswith(prefix) and re.fullmatch(r"3\.\d+", c.removeprefix(prefix))
    ]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_classifiers_the_readme_and_ci_list_the_same_versions() -> None:
    classified = _classified()
    assert classified, "pyproject.toml classifies no Python version"
    assert classified == sorted(classified, key=_key)
    ci = re.search(r'^SUPPORTED="([^"]*)"$', (ROOT / ".ci/run").read_text(), re.MULTILINE)
    assert ci is not None, ".ci/run names no SUPPORTED versions"
    assert ci.group(1).split() == classified
    readme = re.search(
        r"^Supported Python versions: (.*?)\.(?:\s|$)",
        (ROOT / "README.md").read_text(),
        re.MULTILINE,
    )
    assert readme is not None, "the README names no supported Python versions"
    assert re.findall(r"3\.\d+", readme.group(1)) == classified


def test_requires_python_starts_at_the_oldest_supported_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={_classified()[0]}"
