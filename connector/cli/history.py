"""``import --history``: old mail as tickets that keep their dates (the host's import API)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from connector.cli.common import account_for, build, load
from connector.errors import NotFoundError
from connector.exitcodes import EX_USAGE, for_mail


def cmd_import_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A progress bar on a terminal (plain lines otherwise) and the summary on ``err``; on
    ``out`` the dry-run host's calls."""
    from connector.fetch.files import iter_files
    from connector.service.history import import_history
    from connector.service.progress import progress_for

    config = load(args)
    account = account_for(config, args.account)
    policy = replace(account.history, **{k: v for k, v in (("status", args.status),
                                                          ("archive", args.archive or None))
                                         if v is not None})
    if policy.archive and policy.status != "closed":
        print("postmaster-bridge: --archive needs the tickets imported as closed "
              "(--status closed)", file=err)
        return EX_USAGE
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise NotFoundError(f"no such file or directory: {', '.join(missing)}")
    parts = build(config, out)
    # The same refs as a plain import, so either recognises what the other recorded.
    messages = (replace(m, ref=f"file:{m.ref}")
                for m in iter_files(paths, max_size=account.max_size))
    stream = err if err is not None else sys.stderr
    try:
        summary = import_history(
            parts.pipeline(account), messages, policy, progress=lambda total: progress_for(
                stream, total, label=f"history {account.name}",
                interval=args.progress_interval))
    finally:
        parts.store.close()
    print(summary.line(), file=err)
    return for_mail(failed=summary.counts["failed"], held=summary.counts["retry"])
