"""The ``postmaster-bridge`` command: one module per group of commands, ``parser`` for the
command line, ``common`` for what they share."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from connector.cli.common import (
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    Parts,
    build,
    setup_logging,
)
from connector.cli.parser import build_parser
from connector.errors import BridgeError, ConfigError

#: ``bench/run.py`` assembles its pipeline exactly as ``run`` does, through this name.
_build = build

__all__ = ["EX_CONFIG", "EX_FAILURE", "EX_OK", "EX_TEMPFAIL", "EX_USAGE", "Parts", "build",
           "build_parser", "main"]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose, sys.stderr)
    try:
        return int(args.func(args, out))
    except ConfigError as exc:
        print(f"postmaster-bridge: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except BridgeError as exc:
        print(f"postmaster-bridge: {exc}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return 130
