"""What a published normlab declares: license, metadata, typing marker, versions, changelog.

The built distributions are checked too when ``NORMLAB_DIST`` names a folder
holding one sdist and one wheel (``.ci/run`` builds them and sets it).
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import normlab

if sys.version_info >= (3, 11):
    import tomllib
else:  # a dependency of normlab below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# X.Y.Z, optionally followed by a PEP 440 pre-release or development marker
VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)((a|b|rc)\d+)?(\.dev\d+)?$")


def _release(version: str) -> tuple[int, int, int]:
    m = VERSION.match(version)
    assert m, f"{version!r} is not MAJOR.MINOR.PATCH[preN][.devN]"
    return int(m[1]), int(m[2]), int(m[3])


def test_license_is_an_spdx_expression_with_its_file():
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the normlab developers" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    # PEP 639: a license expression replaces the License classifiers
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_python_classifiers_match_requires_python():
    lowest = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert lowest, PROJECT["requires-python"]
    minors = sorted(int(c.rsplit(".", 1)[1]) for c in PROJECT["classifiers"]
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert minors and minors[0] == int(lowest[1]), minors
    assert minors == list(range(minors[0], minors[-1] + 1)), "a gap in the versions claimed"
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_project_urls():
    base = "https://github.com/normlab/normlab"
    urls = PROJECT["urls"]
    assert urls["Homepage"] == base and urls["Repository"] == base
    assert urls["Issues"] == base + "/issues"
    assert urls["Changelog"] == base + "/blob/main/CHANGELOG.md"


def test_dependencies_core_and_tools():
    deps = PROJECT["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() for d in deps]
    assert sorted(names) == ["numpy", "tomli", "tqdm"]
    tomli = next(d for d in deps if d.startswith("tomli"))
    assert tomli.replace('"', "'").endswith("; python_version < '3.11'"), tomli
    # build and upload tools are for CI and release only
    everything = deps + [d for extra in PROJECT["optional-dependencies"].values() for d in extra]
    assert not [d for d in everything if re.match(r"(twine|build)\b", d)]


def test_py_typed_marker_is_package_data():
    assert (ROOT / "src" / "normlab" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["normlab"]


def test_changelog_has_unreleased_and_each_release_above_the_last():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert headings[0] == "Unreleased", headings
    releases = headings[1:]
    assert releases and all(VERSION.match(v) for v in releases), releases
    assert [_release(v) for v in releases] == sorted((_release(v) for v in releases), reverse=True)
    assert re.search(r"^## \[" + re.escape(releases[0]) + r"\] - \d{4}-\d{2}-\d{2}$", text, flags=re.M)
    assert "Semantic Versioning" in text


def test_version_follows_the_changelog():
    """The package's version is the last release, or a development version of a later one."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    last = re.findall(r"^## \[(\d[^\]]*)\]", text, flags=re.M)[0]
    version = normlab.__version__
    if version == last:
        return
    assert ".dev" in version or re.search(r"(a|b|rc)\d+$", version), version
    assert _release(version) > _release(last), (version, last)


def _dist(kind: str) -> Path:
    folder = os.environ.get("NORMLAB_DIST")
    if not folder:
        pytest.skip("NORMLAB_DIST is not set (.ci/run sets it after building the sdist and wheel)")
    found = sorted(Path(folder).glob("normlab-*.tar.gz" if kind == "sdist" else "normlab-*.whl"))
    assert len(found) == 1, found
    return found[0]


def test_sdist_carries_the_package_and_no_tests():
    with tarfile.open(_dist("sdist")) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert not [n for n in names if n.startswith("tests")], "the sdist carries test files"
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml",
                     "src/normlab/__init__.py", "src/normlab/py.typed"):
        assert required in names, required


def test_wheel_carries_license_and_typing_marker():
    with zipfile.ZipFile(_dist("wheel")) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(meta_name).decode()
    assert "normlab/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith("tests/")]
    assert "License-Expression: MIT" in meta
    assert f"Version: {normlab.__version__}" in meta
    assert 'Requires-Dist: tomli>=1.1; python_version < "3.11"' in meta
