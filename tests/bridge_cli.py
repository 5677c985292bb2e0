"""Running ``postmaster-bridge`` in-process from tests, and waiting for what it does.

Tests that call ``main`` mark themselves with ``pytest.mark.usefixtures("restore_logging")``
(conftest.py): ``main`` reconfigures the root logger for its stderr.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from connector.cli import main


def run_cli(*argv: str) -> tuple[int, list[str]]:
    """``postmaster-bridge -q ARGV``: exit code and the lines it printed."""
    out = io.StringIO()
    code = main(["-q", *argv], out=out)
    return code, out.getvalue().splitlines()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
