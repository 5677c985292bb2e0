"""Running ``postmaster-bridge`` in-process from tests, and waiting for what it does."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from connector.cli import main


def cli_output(*argv: str) -> tuple[int, str]:
    """``postmaster-bridge ARGV`` as the command line calls it: exit code and what it printed
    on stdout (stderr is left to sys.stderr, for capsys)."""
    code, out, _ = _main(argv, capture_err=False)
    return code, out


def cli_streams(*argv: str) -> tuple[int, str, str]:
    """``postmaster-bridge ARGV``: exit code, stdout and stderr (logging aside)."""
    return _main(argv, capture_err=True)


def _main(argv: tuple[str, ...], *, capture_err: bool) -> tuple[int, str, str]:
    """``main`` configures logging for the whole process; the root logger is put back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    err = io.StringIO() if capture_err else None
    try:
        code = main(list(argv), out=out, err=err)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    return code, out.getvalue(), err.getvalue() if err is not None else ""


def run_cli(*argv: str) -> tuple[int, list[str]]:
    """``postmaster-bridge -q ARGV``: exit code and the lines it printed."""
    code, text = cli_output("-q", *argv)
    return code, text.splitlines()


def run_report(*argv: str) -> tuple[int, list[str]]:
    """``postmaster-bridge -q ARGV``: exit code and the lines it printed for a person
    (stderr: the summaries of run --once, import and deliver)."""
    code, _, err = cli_streams("-q", *argv)
    return code, err.splitlines()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
