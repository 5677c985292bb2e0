"""``import`` (files, mbox, Maildir) and ``deliver`` (one mail from an MTA pipe)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from connector.cli.common import account_for, build, load
from connector.cli.report import (
    CallTap,
    calls_of,
    counts,
    dump,
    message_entry,
    message_line,
)
from connector.errors import ConfigError, FetchError, NotFoundError, StoreCorruptError
from connector.exitcodes import EX_DATAERR, EX_OK, EX_TEMPFAIL, EX_USAGE, for_mail


def cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One line per mail and a summary on ``err``; on ``out`` the dry-run host's calls
    (with ``--calls`` or ``-v``) or, with ``--json``, one document."""
    from connector.fetch.files import iter_files
    from connector.service.runner import AccountSummary

    if args.history:
        from connector.cli.history import cmd_import_history

        return cmd_import_history(args, out, err)
    if args.status or args.archive:
        print("postmaster-bridge: --status and --archive apply to --history only", file=err)
        return EX_USAGE
    config = load(args)
    account = account_for(config, args.account)
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise NotFoundError(f"no such file or directory: {', '.join(missing)}")
    tap = CallTap()
    parts = build(config, tap)
    store, pipeline = parts.store, parts.pipeline(account)
    show_calls = (args.calls or args.verbose > 0) and not args.json
    summary = AccountSummary(account.name)
    entries: list[dict[str, Any]] = []
    calls_total = 0
    try:
        for message in iter_files(paths, max_size=account.max_size):
            result = pipeline.process(f"file:{message.ref}", message.raw, message.size)
            summary.add_result(result)
            record = store.get_message_by_id(result.record_id) if result.record_id else None
            entry = message_entry(message.ref, result, record)
            calls = tap.take()
            calls_total += len(calls)
            if args.json:
                if parts.dry_run:
                    entry["calls"] = calls_of(calls)
                entries.append(entry)
                continue
            print(message_line(entry), file=err)
            if show_calls:
                out.writelines(line + "\n" for line in calls)
                out.flush()
        store.make_durable()  # the ledger was written without fsyncs: on disk before "done"
    except FetchError as exc:  # a file that cannot be read: the rest was recorded
        raise NotFoundError(str(exc)) from None
    finally:
        store.close()
    code = for_mail(failed=summary.counts["failed"], held=summary.counts["retry"])
    if args.json:
        dump({"command": "import", "account": account.name, "dry_run": parts.dry_run,
              "exit_code": code, "counts": counts(summary), "messages": entries}, out)
        return code
    print(summary.line(), file=err)
    if parts.dry_run:
        print(f"dry run: nothing was changed; {calls_total} helpdesk call(s) not made"
              + ("" if show_calls else " (--calls prints them)"), file=err)
    return code


def cmd_deliver(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One message on stdin (MTA pipe): 0 once recorded, 75 (the MTA keeps the mail and
    retries) on a temporary failure and on any error of ours, 65 (the MTA returns it to the
    sender) when it failed for good, unless ``--keep-failed``."""
    from connector.fetch.files import read_stdin_message
    from connector.service.pipeline import Outcome
    from connector.service.runner import INTEGRITY_CHECK_SECONDS

    try:
        config = load(args)
        account = account_for(config, args.account)
        message = read_stdin_message(account=account.name, max_size=account.max_size)
        # Once per mail: the full-file quick_check at most every INTEGRITY_CHECK_SECONDS.
        parts = build(config, out, checked_within=INTEGRITY_CHECK_SECONDS)
        store = parts.store
    except (ConfigError, FetchError, StoreCorruptError) as exc:
        print(f"postmaster-bridge: {exc}", file=err)
        return EX_TEMPFAIL  # a broken config or ledger must not bounce the customer's mail
    try:
        pipeline = parts.pipeline(account)
        result = pipeline.process(message.ref, message.raw, message.size)
        # Exit 0 tells the MTA to drop its copy: the ledger, written without fsyncs, must be
        # on disk first.
        store.make_durable()
    except Exception as exc:  # any surprise: keep the mail at the MTA
        print(f"postmaster-bridge: temporary failure: {exc}", file=err)
        return EX_TEMPFAIL
    finally:
        store.close()
    print(f"{result.outcome.value}" + (f" ticket #{result.ticket_id}" if result.ticket_id
                                       else "") + (f": {result.reason}" if result.reason
                                                   else ""), file=err)
    if result.outcome == Outcome.RETRY:
        return EX_TEMPFAIL
    if message.raw is None:
        # Over max_size and not kept: the MTA bounces it to the sender with this reason
        # (as a mailbox over its size limit does) instead of dropping it, --keep-failed or not.
        print(f"postmaster-bridge: {result.reason}", file=err)
        return EX_DATAERR
    if result.outcome == Outcome.FAILED:
        # Recorded, with its raw bytes in `errors list`. The MTA bounces it on 65 and the
        # sender learns it did not reach the helpdesk; --keep-failed spares forged senders
        # (spam) that bounce, and leaves the mail to the admin alone.
        return EX_OK if args.keep_failed else EX_DATAERR
    return EX_OK
