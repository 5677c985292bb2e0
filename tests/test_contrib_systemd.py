"""contrib/systemd/postmaster-bridge.service, checked by systemd's own tools.

``systemd-analyze verify`` parses the unit as systemd would load it, but reports an unknown
directive or a bad value only as a warning (exit status 0), so a warning that names the unit
counts as a failure here. It also needs the ExecStart program to exist: the test writes a copy
of the unit whose ExecStart names this machine's postmaster-bridge. ``systemd-analyze
security --offline`` scores the hardening; the unit must stay in the "OK" band.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "postmaster-bridge.service"
SHIPPED_EXEC = "/usr/local/bin/postmaster-bridge"
#: systemd-analyze security's exposure on its 0-100 scale: 20 = 2.0, the top of "OK".
MAX_EXPOSURE = 20


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze not found: run scripts/install-test-deps.sh", pytrace=False)
    return found


def local_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at an executable that exists on this machine."""
    program = shutil.which("postmaster-bridge") or f"{sys.executable} -m connector.cli"
    path = tmp_path / UNIT.name
    path.write_text(text.replace(SHIPPED_EXEC, program))
    return path


def verify(unit: Path) -> list[str]:
    """What systemd-analyze verify says about this unit (an empty list: nothing)."""
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True,
                            text=True, check=False)
    said = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    if result.returncode != 0:
        said.append(f"exit status {result.returncode}")
    return said


def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    assert verify(local_copy(tmp_path, UNIT.read_text())) == []


@pytest.mark.parametrize("broken", [
    ("ProtectSystem=strict", "ProtectSytem=strict"),
    ("Restart=on-failure", "Restart=on-failur"),
    ("KillSignal=SIGTERM", "KillSignal=SIGTREM"),
])
def test_a_broken_unit_is_caught(tmp_path: Path, broken: tuple[str, str]) -> None:
    good, bad = broken
    text = UNIT.read_text()
    assert good in text
    assert verify(local_copy(tmp_path, text.replace(good, bad))) != []


def test_a_missing_program_is_caught(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(SHIPPED_EXEC, "/nonexistent/postmaster-bridge"))
    assert verify(unit) != []


def test_the_hardening_scores_ok(tmp_path: Path) -> None:
    unit = local_copy(tmp_path, UNIT.read_text())
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--threshold={MAX_EXPOSURE}",
         "--no-pager", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_the_unit_runs_the_bridge_as_the_readme_says() -> None:
    """What the service promises an admin, read back from the shipped file."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["ExecStart"].split() == [
        SHIPPED_EXEC, "--config", "/etc/postmaster-bridge/config.yaml", "run"]
    assert service["User"] == "postmaster-bridge"
    assert service["Restart"] == "on-failure"
    # A configuration error, a damaged ledger: no retry loop.
    assert service["RestartPreventExitStatus"].split() == ["78", "74"]
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert service["StateDirectory"] == service["ConfigurationDirectory"] == "postmaster-bridge"
    assert service["ProtectSystem"] == "strict"
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
