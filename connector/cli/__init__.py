"""The ``postmaster-bridge`` command: one module per group of commands, ``parser`` for the
command line, ``common`` for what they share."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from connector.cli.common import Parts, build, setup_logging
from connector.cli.parser import build_parser
from connector.cli.report import dump
from connector.errors import (
    BridgeError,
    ConfigError,
    NotFoundError,
    StoreCorruptError,
    StoreUnavailableError,
    UsageError,
)
from connector.exitcodes import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_FAILURE,
    EX_INTERRUPTED,
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
    EX_OSERR,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
)

#: ``bench/run.py`` assembles its pipeline exactly as ``run`` does, through this name.
_build = build

#: The exit codes (connector/exitcodes.py) are importable from here too.
__all__ = ["EX_CANTCREAT", "EX_CONFIG", "EX_DATAERR", "EX_FAILURE", "EX_INTERRUPTED", "EX_IOERR",
           "EX_NOINPUT", "EX_OK", "EX_OSERR", "EX_SOFTWARE", "EX_TEMPFAIL", "EX_UNAVAILABLE",
           "EX_USAGE", "Parts", "build", "build_parser", "main"]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Machine-readable output (``--json``, the dry-run host's calls) goes to ``out``;
    summaries, progress and errors for a person go to ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose, sys.stderr)
    try:
        return int(args.func(args, out, err))
    except ConfigError as exc:
        problems = getattr(exc, "problems", None) or [exc]
        head = "configuration error" if len(problems) == 1 else \
            f"{len(problems)} configuration errors"
        print(f"postmaster-bridge: {head}:" + (f" {problems[0]}" if len(problems) == 1 else
              "".join(f"\n  {p}" for p in problems)), file=err)
        if getattr(args, "json", False):  # a script reading the document learns why too
            dump({"command": args.command, "exit_code": EX_CONFIG, "config_errors": [
                {"file": p.path, "key": p.key, "problem": p.reason} for p in problems]}, out)
        return EX_CONFIG
    except StoreCorruptError as exc:
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_IOERR
    except StoreUnavailableError as exc:  # PostgreSQL down or refusing: try again later
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_TEMPFAIL
    except NotFoundError as exc:
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_NOINPUT
    except UsageError as exc:
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_USAGE
    except BridgeError as exc:
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_INTERRUPTED
