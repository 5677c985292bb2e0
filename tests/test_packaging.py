"""The wheel carries the example configuration and filters, for ``postmaster-bridge init``.

In git, ``connector/_examples/config.example.yaml`` and ``connector/_examples/filters`` are
symlinks to the top-level ``config.example.yaml`` and ``filters/`` (one copy of each file);
setup.cfg's package_data puts real files at those paths in the wheel. The test builds the
wheel (``pip wheel --no-deps``) from a copy of the source and compares the bytes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("connector", "config.example.yaml", "filters", "README.md", "setup.cfg",
          "pyproject.toml")


def test_the_examples_are_package_resources_in_the_checkout() -> None:
    examples = files("connector") / "_examples"
    assert (examples / "config.example.yaml").read_bytes() == (
        REPO / "config.example.yaml").read_bytes()
    shipped = sorted(p.name for p in (examples / "filters").iterdir() if p.name.endswith(".yaml"))
    assert shipped == sorted(p.name for p in (REPO / "filters").glob("*.yaml"))


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of the source into ``tmp_path/dist``."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("postmaster_bridge-*.whl")
    return wheel


def test_the_wheel_carries_the_example_config_and_filters(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        inside = {name: archive.read(name) for name in archive.namelist()
                  if name.startswith("connector/_examples/")}
        anchors = {name for name in archive.namelist()
                   if name.startswith("connector/pec/trust_anchors/")}
    # The PEC trust anchors and the README naming their sources travel with the package.
    assert anchors == {f"connector/pec/trust_anchors/{p.name}"
                       for p in (REPO / "connector" / "pec" / "trust_anchors").iterdir()}
    expected = {"connector/_examples/config.example.yaml": REPO / "config.example.yaml"}
    for path in sorted((REPO / "filters").glob("*.yaml")):
        expected[f"connector/_examples/filters/{path.name}"] = path
    assert len(expected) > 2
    assert set(inside) == set(expected)
    for name, path in expected.items():
        assert inside[name] == path.read_bytes(), name
