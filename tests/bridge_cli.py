"""Running ``postmaster-bridge`` in-process from tests, and waiting for what it does."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from connector.cli import main


def cli_output(*argv: str) -> tuple[int, str]:
    """``postmaster-bridge ARGV`` as the command line calls it: exit code and what it printed.
    ``main`` configures logging for the whole process; the root logger is put back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        code = main(list(argv), out=out)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    return code, out.getvalue()


def run_cli(*argv: str) -> tuple[int, list[str]]:
    """``postmaster-bridge -q ARGV``: exit code and the lines it printed."""
    code, text = cli_output("-q", *argv)
    return code, text.splitlines()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
