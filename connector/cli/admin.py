"""The admin commands over the ledger: ``accounts``, ``log``, ``errors``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from connector.cli.common import EX_FAILURE, EX_OK, EX_USAGE, admin_store, build, load


def cmd_accounts(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.service.admin import accounts_report

    config = load(args)
    store = admin_store(config)
    try:
        action = getattr(args, "accounts_command", None)
        if action in ("enable", "disable"):
            account = config.account(args.name)
            store.set_account_enabled(account.name, action == "enable",
                                      "disabled by the admin" if action == "disable" else None)
            store.log_event(level="notice", kind="connection", account=account.name,
                            event=f"account {action}d", detail="by the admin")
            print(f"{account.name}: {action}d", file=out)
            if action == "enable" and not account.enabled:
                print(f"{account.name}: note: the config file still says 'enabled: false', "
                      "which keeps it off", file=out)
            return EX_OK
        accounts_report(config, store, out, as_json=args.json)
        return EX_OK
    finally:
        store.close()


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.service.admin import print_log

    config = load(args)
    store = admin_store(config)
    try:
        print_log(store, out, account=args.account, level=args.level, since=args.since,
                  message=args.message, as_json=args.json, limit=args.limit)
    finally:
        store.close()
    return EX_OK


def cmd_errors(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.fetch import open_mailbox
    from connector.service import admin

    config = load(args)
    if args.errors_command == "replay":
        parts = build(config, out)
        store = parts.store
        if parts.dry_run:
            print("replay needs a real host: a dry run records nothing", file=sys.stderr)
            store.close()
            return EX_USAGE
    else:
        store = admin_store(config)
    try:
        if args.errors_command == "list":
            admin.errors_list(store, out, account=args.account, as_json=args.json)
        elif args.errors_command == "show":
            admin.errors_show(store, out, args.id)
        elif args.errors_command == "export":
            path = admin.errors_export(store, args.id, Path(args.output))
            print(f"wrote {path}", file=out)
        else:
            failures = 0
            for record_id in args.ids:
                record = store.get_message_by_id(record_id)
                if record is None:
                    print(f"{record_id}: no such message", file=out)
                    failures += 1
                    continue
                account = config.account(record.account)
                pipeline = parts.pipeline(account)
                outcome = admin.errors_replay(store, record_id, account, pipeline,
                                              open_mailbox, out)
                failures += outcome.value in ("failed", "retry")
            return EX_FAILURE if failures else EX_OK
    finally:
        store.close()
    return EX_OK
