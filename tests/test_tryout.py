"""README "Try it locally", run as written: the Zendesk double in the background, two imports of
examples/mail through examples/tryout.yaml, the tickets listed with curl and jq, the double
stopped.

The commands run with ``sh -e`` in a scratch folder holding copies of what they name
(examples/, filters/, tests/zendesk_double.py), so nothing is written into the checkout. Two
things differ from the README, both outside the commands' meaning: the port (8800 there, a free
one here, in the commands and in the copied config alike) and the programs ``python3`` and
``postmaster-bridge``, which run this checkout's code with the interpreter running the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_PORT = "8800"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- try-it-locally -->\n```sh\n(.*?)```", text, re.S)
    assert match, "README has no try-it-locally block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder laid out like the repository for the commands, with shims for the programs."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    (tmp_path / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "zendesk_double.py", tmp_path / "tests")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("python3", f'exec "{sys.executable}" "$@"'),
                          ("postmaster-bridge", f'exec "{sys.executable}" -m connector.cli "$@"')):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\n{command}\n")
        shim.chmod(0o755)
    return tmp_path


def test_the_readme_try_out_makes_four_tickets_and_one_follow_up(scratch: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: run scripts/install-test-deps.sh", pytrace=False)
    port = str(free_port())
    block = readme_block()
    assert README_PORT in block
    config = scratch / "examples" / "tryout.yaml"
    assert f"127.0.0.1:{README_PORT}" in config.read_text()
    config.write_text(config.read_text().replace(README_PORT, port))
    env = {**os.environ, "PATH": f"{scratch / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    try:
        result = subprocess.run(["sh", "-e", "-c", block.replace(README_PORT, port)],
                                cwd=scratch, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
    finally:
        stop_if_left_running(scratch / "var" / "zendesk-double.pid")
    assert result.returncode == 0, result.stdout + result.stderr
    tickets = [line for line in result.stdout.splitlines() if line.startswith("#")]
    subjects = sorted(line.split(" ", 3)[3] for line in tickets)
    assert subjects == sorted([
        "Fattura n. 2024/118: importo IVA errato",
        "Invoice INV-5512 charged twice",
        "Dashboard export fails with error 500",
        "Cannot reset my password",
    ]), result.stdout
    # The second import found every mail in the ledger: still four tickets, all tagged.
    assert all("pmb_demo" in line.split(" ")[2] for line in tickets)
    assert "Zendesk double on http://127.0.0.1:" in result.stdout


def stop_if_left_running(pid_file: Path) -> None:
    """The block stops the double on its last line; a block that failed earlier did not."""
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
