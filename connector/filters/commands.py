"""The ``postmaster-bridge filters check`` and ``filters test`` commands (the CLI wires them).

Both write to ``out`` and return an exit code; neither has side effects beyond that.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from connector.errors import ParseError
from connector.exitcodes import EX_CONFIG, EX_DATAERR, EX_OK
from connector.filters.chain import HostCheck
from connector.filters.loader import FilterLoadError, load_chain
from connector.filters.outcome import FilterError
from connector.filters.report import render_json, render_text

EXIT_OK = EX_OK
EXIT_INVALID = EX_CONFIG  # filter files have errors
EXIT_UNPROCESSABLE = EX_DATAERR  # the test mail cannot be parsed or filtered


def filters_check(
    dirs: Sequence[Path | str],
    *,
    out: TextIO | None = None,
    host_check: HostCheck | None = None,
) -> int:
    """Validate every filter file; print ``file:line: message`` per error. 0 when all valid."""
    out = out or sys.stdout
    try:
        chain = load_chain(dirs)
    except FilterLoadError as exc:
        for line in exc.errors:
            print(line, file=out)
        print(f"{len(exc.errors)} error(s)", file=out)
        return EXIT_INVALID
    errors = chain.host_errors(host_check) if host_check else []
    for line in errors:
        print(line, file=out)
    if errors:
        print(f"{len(errors)} error(s)", file=out)
        return EXIT_INVALID
    print(f"OK: {len(chain.filters)} filter(s) in {len(chain.files)} file(s)", file=out)
    return EXIT_OK


def filters_test(
    raw: bytes,
    *,
    understand: Callable[[bytes], Mapping[str, Any]],
    as_json: bool = False,
    out: TextIO | None = None,
    authserv_ids: Sequence[str] = (),
) -> int:
    """Understand one mail without side effects and print its trace and decision.

    ``understand`` is the path ``run`` takes (:func:`connector.understand.understand`), which
    returns the trace ``run`` records: the filter steps, the PEC unwrapping, the requester and
    the decision (new ticket with which fields, follow-up, internal note, ignore or hold).
    """
    out = out or sys.stdout
    try:
        trace = understand(raw)
    except ParseError as exc:
        print(f"cannot parse the mail: {exc}", file=out)
        return EXIT_UNPROCESSABLE
    except FilterError as exc:
        print(f"filtering failed in {exc.stage}: {exc}", file=out)
        return EXIT_UNPROCESSABLE
    render = render_json if as_json else render_text
    out.write(render(trace, trace.get("decision")))
    return EXIT_OK
