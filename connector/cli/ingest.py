"""``import`` (files, mbox, Maildir) and ``deliver`` (one mail from an MTA pipe)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from connector.cli.common import EX_FAILURE, EX_OK, EX_TEMPFAIL, account_for, build, load
from connector.errors import ConfigError, FetchError


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    from connector.fetch.files import iter_files
    from connector.service.pipeline import Outcome
    from connector.service.runner import AccountSummary

    config = load(args)
    account = account_for(config, args.account)
    parts = build(config, out)
    store, pipeline = parts.store, parts.pipeline(account)
    summary = AccountSummary(account.name)
    try:
        for message in iter_files([Path(p) for p in args.paths]):
            result = pipeline.process(f"file:{message.ref}", message.raw, message.size)
            summary.add(result.outcome, already_recorded=result.already_recorded)
            if result.outcome in (Outcome.FAILED, Outcome.RETRY):
                print(f"{message.ref}: {result.outcome.value}: {result.reason}",
                      file=sys.stderr)
        store.make_durable()  # the ledger was written without fsyncs: on disk before "done"
    finally:
        store.close()
    print(summary.line(), file=out)
    return EX_FAILURE if summary.counts["failed"] or summary.counts["retry"] else EX_OK


def cmd_deliver(args: argparse.Namespace, out: TextIO) -> int:
    """One message on stdin (MTA pipe): 0 once recorded, 75 on a temporary failure."""
    from connector.fetch.files import read_stdin_message
    from connector.service.pipeline import Outcome

    try:
        config = load(args)
        account = account_for(config, args.account)
        message = read_stdin_message(account=account.name)
        parts = build(config, out)
        store = parts.store
    except (ConfigError, FetchError) as exc:
        print(f"postmaster-bridge: {exc}", file=sys.stderr)
        return EX_TEMPFAIL  # a broken config must not bounce the customer's mail
    try:
        pipeline = parts.pipeline(account)
        result = pipeline.process(message.ref, message.raw, message.size)
        # Exit 0 tells the MTA to drop its copy: the ledger, written without fsyncs, must be
        # on disk first.
        store.make_durable()
    except Exception as exc:  # any surprise: keep the mail at the MTA
        print(f"postmaster-bridge: temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        store.close()
    print(f"{result.outcome.value}" + (f" ticket #{result.ticket_id}" if result.ticket_id
                                       else "") + (f": {result.reason}" if result.reason
                                                   else ""), file=out)
    if result.outcome == Outcome.RETRY:
        return EX_TEMPFAIL
    # FAILED is recorded too (with the raw bytes in the archive, if configured); the MTA has
    # nothing better to do with it than we do.
    return EX_OK
