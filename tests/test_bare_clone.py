"""A fresh clone with nothing beside it runs the suite: what needs ../shared skips, nothing
else is blocked, and ``PMB_REQUIRE_SHARED=1`` (CI) turns the absence into an error.

The clone is of this checkout's committed HEAD, into a temporary folder whose parent has no
``shared``; ``PMB_SHARED_DIR``, ``PMB_REQUIRE_SHARED`` and ``ZENDESK_OAS`` are removed from its
environment. Its conftest puts the clone first on ``sys.path``, so it tests its own code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.fail("this test needs git and a git checkout", pytrace=False)
    target = tmp_path_factory.mktemp("bare") / "repo"
    subprocess.run([git, "clone", "--quiet", str(REPO), str(target)], check=True)
    assert not (target.parent / "shared").exists()
    return target


def pytest_in(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PMB_SHARED_DIR", "PMB_REQUIRE_SHARED", "ZENDESK_OAS", "PYTHONPATH")
             and not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=clone, env={**clean, **env}, capture_output=True, text=True,
                          check=False)


def test_a_bare_clone_collects_every_test_module_without_error(clone: Path) -> None:
    result = pytest_in(clone, "--collect-only", "-q")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert not [line for line in output.splitlines() if line.startswith("ERROR")], output[-3000:]
    assert re.search(r"^\d+ tests collected", output, re.M), output[-3000:]
    collected = {line.split("::")[0] for line in output.splitlines() if "::" in line}
    modules = {f"tests/{p.name}" for p in (clone / "tests").glob("test_*.py")}
    assert modules <= collected


def test_what_needs_shared_is_skipped_with_its_reason(clone: Path) -> None:
    result = pytest_in(clone, "-q", "-rs", "tests/test_pec_samples.py", "tests/test_zendesk.py")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    skips = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert any("needs shared/pec-samples" in line for line in skips), output[-3000:]
    assert any("needs shared/zendesk-oas (Zendesk's OpenAPI description)" in line
               for line in skips), output[-3000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 50, output[-3000:]
    # The fakes ran unchecked; the run says so rather than staying silent.
    assert "were not checked against Zendesk's OAS" in output


def test_ci_makes_the_absence_an_error(clone: Path) -> None:
    result = pytest_in(clone, "--collect-only", "-q", PMB_REQUIRE_SHARED="1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "PMB_REQUIRE_SHARED=1" in output and "needs shared/zendesk-oas" in output


def test_ci_runs_the_readme_command_with_the_requirement() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    command = "sh scripts/install-test-deps.sh && python3 -m pytest -q"
    assert command in readme
    assert "export PMB_REQUIRE_SHARED=1" in ci
    assert ci.strip().splitlines()[-1] == command
