"""The admin commands over the ledger: ``accounts``, ``log``, ``errors``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from connector.cli.common import admin_store, build, load
from connector.config import Config
from connector.errors import ConfigError
from connector.exitcodes import EX_NOINPUT, EX_OK, EX_USAGE, for_mail, worst
from connector.store.base import MessageState


def cmd_accounts(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.service.admin import accounts_report

    config = load(args, secrets=False)  # the ledger only
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


def cmd_accounts_authorize(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Sign in once for an account's delegated OAuth2 grant (device code)."""
    from connector.auth.authorize import authorize

    config = load(args)
    account = config.account(args.name)
    if account.oauth2 is None:
        raise ConfigError(f"account {account.name} logs in with a password (auth: password)",
                          path=str(config.path), key="accounts")
    authorize(account.oauth2, out)
    store = admin_store(config)
    try:
        health = store.get_health(account.name)
        store.log_event(level="notice", kind="connection", account=account.name,
                        event="oauth2 authorized", detail="device code sign-in")
    finally:
        store.close()
    if not health.enabled:
        print(f"      the account is disabled ({health.disabled_reason}); enable it with "
              f"'postmaster-bridge accounts enable {account.name}'", file=out)
    return EX_OK


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.service.admin import print_log

    config = load(args, secrets=False)  # the ledger only
    store = admin_store(config)
    try:
        print_log(store, out, account=args.account, level=args.level, since=args.since,
                  message=args.message, as_json=args.json, limit=args.limit)
    finally:
        store.close()
    return EX_OK


def cmd_errors(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.service import admin

    # Only a replay logs in anywhere; the rest reads and writes the ledger.
    config = load(args, secrets=args.errors_command == "replay")
    if args.errors_command == "replay":
        return _replay(config, args.ids, out, err)
    store = admin_store(config)
    try:
        if args.errors_command == "list":
            admin.errors_list(store, out, account=args.account, as_json=args.json,
                              include_dismissed=args.all)
        elif args.errors_command == "show":
            admin.messages_show(store, out, args.id, as_json=args.json)
        elif args.errors_command == "dismiss":
            admin.errors_dismiss(store, out, args.id, args.reason)
        else:
            path = admin.errors_export(store, args.id, Path(args.output))
            print(f"wrote {path}", file=out)
    finally:
        store.close()
    return EX_OK


def _replay(config: Config, ids: list[int], out: TextIO, err: TextIO) -> int:
    """Each failed message through the pipeline again; the exit code is ``run --once``'s
    for the lot (66 when an id is not a failed message)."""
    from connector.fetch import open_mailbox
    from connector.service import admin
    from connector.service.pipeline import Outcome

    parts = build(config, out)
    store = parts.store
    try:
        if parts.dry_run:
            print("replay needs a real host: a dry run records nothing", file=err)
            return EX_USAGE
        codes: list[int] = []
        for record_id in ids:
            record = store.get_message_by_id(record_id)
            if record is None or record.state != MessageState.FAILED:
                print(f"{record_id}: no failed message with this id (see 'errors list')",
                      file=err)
                codes.append(EX_NOINPUT)
                continue
            account = config.account(record.account)
            outcome = admin.errors_replay(store, record_id, account, parts.pipeline(account),
                                          open_mailbox, out)
            codes.append(for_mail(failed=outcome == Outcome.FAILED,
                                  held=outcome == Outcome.RETRY))
        return worst(codes)
    finally:
        store.close()


def cmd_held(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Mail held over the per-sender cap: list it, or release it through the same path; the
    exit code of a release is ``run --once``'s for the lot (66 for an id that is not held)."""
    from connector.fetch import open_mailbox
    from connector.service import admin
    from connector.service.pipeline import Outcome

    if args.held_command == "list":
        store = admin_store(load(args, secrets=False))
        try:
            admin.held_list(store, out, account=args.account, as_json=args.json)
        finally:
            store.close()
        return EX_OK
    config = load(args)
    parts = build(config, out)
    try:
        if parts.dry_run:
            print("release needs a real host: a dry run records nothing", file=err)
            return EX_USAGE
        codes: list[int] = []
        for record_id in args.ids:
            record = parts.store.get_message_by_id(record_id)
            if record is None or record.state != MessageState.HELD:
                print(f"{record_id}: no held message with this id (see 'held list')", file=err)
                codes.append(EX_NOINPUT)
                continue
            account = config.account(record.account)
            outcome = admin.held_release(parts.store, record_id, account,
                                         parts.pipeline(account), open_mailbox, out)
            codes.append(for_mail(failed=outcome == Outcome.FAILED,
                                  held=outcome == Outcome.RETRY))
        return worst(codes)
    finally:
        parts.store.close()


def cmd_messages(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``messages show``: any message the bridge processed, by id, Message-ID or ref."""
    from connector.service import admin

    store = admin_store(load(args, secrets=False))
    try:
        admin.messages_show(store, out, args.key, as_json=args.json)
    finally:
        store.close()
    return EX_OK
