"""``postmaster-bridge store check|backup|vacuum|migrate|copy``: the ledger, for admins.

- ``store check`` runs SQLite's full ``PRAGMA integrity_check`` on the ledger (read-only, so
  it is safe while the bridge runs) and exits 74 when the file is damaged.
- ``store backup FILE`` copies the ledger with SQLite's online backup API, which takes a
  consistent snapshot while the bridge keeps writing (copying the file itself could catch a
  half-written page or miss the ``-wal`` log); the copy is checked before it replaces FILE.
- ``store vacuum`` applies the retention periods now (``store.retention_days`` for finished
  mails, ``store.log_retention_days`` for the communication log; ``run`` does the same every
  minute) and gives the freed space back to the file system with ``VACUUM``. It rewrites the
  file and waits for the bridge's writers, so it is for a quiet moment.
- ``store migrate`` applies the pending schema migrations (connector/store/migrations.py;
  ``run`` and every command that writes apply them too when they open the store), and is a
  no-op when none is pending; ``--check`` lists them without touching anything and exits 1
  when there are some.
- ``store copy --to DSN`` copies the SQLite ledger and queue into PostgreSQL
  (connector/store/copy.py).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from connector.config import StoreConfig, load_config
from connector.exitcodes import EX_FAILURE, EX_IOERR, EX_NOINPUT, EX_OK, EX_USAGE

#: Pages copied per backup step; between steps the bridge's writers get the file.
BACKUP_STEP_PAGES = 1024


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``store`` and its subcommands to the CLI's subparsers."""
    p = sub.add_parser("store", parents=[common], help="the ledger: check it, back it up")
    ssub = p.add_subparsers(dest="store_command", required=True)
    q = ssub.add_parser("check", parents=[common],
                        help="full integrity check of the ledger (exit 1 when damaged)")
    q.set_defaults(func=cmd_store)
    q = ssub.add_parser("backup", parents=[common],
                        help="consistent copy of the ledger while the bridge runs")
    q.add_argument("file", help="where to write the copy (replaced if it exists)")
    q.set_defaults(func=cmd_store)
    q = ssub.add_parser("vacuum", parents=[common],
                        help="apply the retention periods and return the freed space")
    q.set_defaults(func=cmd_store)
    q = ssub.add_parser("migrate", parents=[common],
                        help="apply the pending schema migrations (--check: list them)")
    q.add_argument("--check", action="store_true",
                   help="only list the pending migrations; exit 1 when there are some")
    q.set_defaults(func=cmd_store)
    from connector.store.copy import register as register_copy

    register_copy(ssub, common)
    ssub.choices["copy"].set_defaults(func=cmd_store)


def cmd_store(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> int:
    from connector.store.factory import describe, store_exists

    config = load_config(args.config, secrets=False)  # the store only: no login anywhere
    if args.store_command == "migrate":
        return migrate(config.store, out, check_only=args.check)
    if args.store_command == "copy":
        from connector.store.copy import copy_command

        return copy_command(config.store, args, out)
    if not store_exists(config.store):
        print(f"FAIL  {describe(config.store)}: no such file", file=out)
        return EX_NOINPUT
    if args.store_command == "vacuum":
        return vacuum(config.store, out)
    if config.store.shared:
        print(f"FAIL  store {args.store_command} is for the SQLite ledger; PostgreSQL has its "
              "own tools (pg_dump for a backup, pg_amcheck for a check)", file=out)
        return EX_USAGE
    ledger = config.store.path
    if args.store_command == "check":
        return check(ledger, out)
    return backup(ledger, Path(args.file), out)


def migrate(config: StoreConfig, out: TextIO, *, check_only: bool) -> int:
    from connector.store.factory import apply_migrations, describe, pending_migrations

    name = describe(config)
    if check_only:
        todo = pending_migrations(config)
        for migration in todo:
            print(f"pending  {migration.version}  {migration.name}", file=out)
        print(f"{'FAIL' if todo else 'ok'}    {name}: {len(todo)} migration(s) pending",
              file=out)
        return EX_FAILURE if todo else EX_OK
    applied = apply_migrations(config)
    for migration in applied:
        print(f"applied  {migration.version}  {migration.name}", file=out)
    print(f"ok    {name}: {len(applied)} migration(s) applied, schema up to date", file=out)
    return EX_OK


def vacuum(config: StoreConfig, out: TextIO) -> int:
    from connector.store.factory import describe, open_store

    now = datetime.now(UTC)
    store = open_store(config)
    try:
        thinned = store.apply_retention(now - timedelta(days=config.retention_days))
        purged = store.purge_log(now - timedelta(days=config.log_retention_days))
        before, after = store.vacuum()
    finally:
        store.close()
    print(f"ok    {describe(config)}: {thinned} finished mail(s) past "
          f"{config.retention_days:g} days thinned, {purged} log "
          f"entr{'y' if purged == 1 else 'ies'} purged; {_mb(before)} -> {_mb(after)}",
          file=out)
    return EX_OK


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)


def _messages(db: sqlite3.Connection) -> str:
    try:
        count = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    except sqlite3.DatabaseError:
        return "?"
    return str(count)


def check(ledger: Path, out: TextIO) -> int:
    from connector.store.sqlite import integrity_problems

    db = _read_only(ledger)
    try:
        problems = integrity_problems(db, full=True, limit=100)
        if not problems:
            print(f"ok    ledger {ledger}: integrity ok, {_messages(db)} message record(s)",
                  file=out)
            return EX_OK
    finally:
        db.close()
    print(f"FAIL  ledger {ledger}: damaged; stop the bridge and restore a backup", file=out)
    for problem in problems:
        print(f"      {problem}", file=out)
    return EX_IOERR


def backup(ledger: Path, target: Path, out: TextIO) -> int:
    if target.resolve() == ledger.resolve():
        print(f"FAIL  backup: {target} is the ledger itself", file=out)
        return EX_USAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    from connector.store.sqlite import integrity_problems

    source = _read_only(ledger)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy, pages=BACKUP_STEP_PAGES)
        problems = integrity_problems(copy, full=True, limit=100)
        messages = _messages(copy)
    except sqlite3.DatabaseError as exc:
        problems, messages = [str(exc)], "?"
    finally:
        copy.close()
        source.close()
    if problems:
        partial.unlink(missing_ok=True)
        print(f"FAIL  backup of {ledger}: the ledger is damaged, no copy written", file=out)
        for problem in problems:
            print(f"      {problem}", file=out)
        return EX_IOERR
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    print(f"ok    backup of {ledger} written to {target}: {messages} message record(s), "
          "integrity ok", file=out)
    return EX_OK
