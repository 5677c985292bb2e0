"""``postmaster-bridge init DIR`` and ``--version``."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bridge_cli import cli_streams
from test_packaging import build_wheel

from connector.exitcodes import EX_CANTCREAT, EX_OK

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FILTERS = sorted(p.name for p in (REPO / "filters").glob("*.yaml"))


def test_init_writes_the_example_config_and_filters_into_a_new_directory(
    tmp_path: Path,
) -> None:
    target = tmp_path / "etc" / "postmaster-bridge"

    code, out, err = cli_streams("init", str(target))

    assert code == EX_OK, err
    assert (target / "config.yaml").read_bytes() == (REPO / "config.example.yaml").read_bytes()
    assert sorted(p.name for p in (target / "filters").iterdir()) == SHIPPED_FILTERS
    for name in SHIPPED_FILTERS:
        assert (target / "filters" / name).read_bytes() == (REPO / "filters" / name).read_bytes()
    assert out.splitlines() == [f"wrote {target / 'config.yaml'}"] + [
        f"wrote {target / 'filters' / name}" for name in SHIPPED_FILTERS]
    assert f"postmaster-bridge -c {target / 'config.yaml'} check" in err
    # The written config finds the written filters (filters.filter_dirs: [filters]).
    code, out, _ = cli_streams("-c", str(target / "config.yaml"), "filters", "check")
    assert code == EX_OK and out.startswith("OK: ") and f"in {len(SHIPPED_FILTERS)} file(s)" \
        in out


def test_init_refuses_to_overwrite_and_then_writes_nothing(tmp_path: Path) -> None:
    mine = tmp_path / "config.yaml"
    mine.write_text("accounts: []  # the admin's own\n")

    code, out, err = cli_streams("init", str(tmp_path))

    assert (code, out) == (EX_CANTCREAT, "")
    assert "init writes nothing: 1 file(s) exist already and are not overwritten:" in err
    assert f"  {mine}" in err.splitlines()
    assert mine.read_text() == "accounts: []  # the admin's own\n"
    assert not (tmp_path / "filters").exists()

    mine.unlink()
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / SHIPPED_FILTERS[0]).write_text("[]\n")
    assert cli_streams("init", str(tmp_path))[0] == EX_CANTCREAT
    assert not mine.exists()
    assert (tmp_path / "filters" / SHIPPED_FILTERS[0]).read_text() == "[]\n"


def test_init_from_the_installed_wheel_writes_the_same_files(tmp_path: Path) -> None:
    """The wheel's files, not the checkout's symlinks: the package unpacked on its own."""
    with zipfile.ZipFile(build_wheel(tmp_path)) as archive:
        archive.extractall(tmp_path / "site")
    target = tmp_path / "new-install"
    result = subprocess.run([sys.executable, "-m", "connector.cli", "init", str(target)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                            capture_output=True, text=True, check=False)
    assert result.returncode == EX_OK, result.stderr
    assert f"{tmp_path / 'site'}" in subprocess.run(
        [sys.executable, "-c", "import connector; print(connector.__file__)"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, capture_output=True,
        text=True, check=True).stdout  # the unpacked wheel was the one that ran
    assert (target / "config.yaml").read_bytes() == (REPO / "config.example.yaml").read_bytes()
    assert sorted(p.name for p in (target / "filters").iterdir()) == SHIPPED_FILTERS


def test_version_is_the_packaged_one(capsys: pytest.CaptureFixture[str]) -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    with pytest.raises(SystemExit) as exit_:
        cli_streams("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"postmaster-bridge {setup['metadata']['version']}\n"
