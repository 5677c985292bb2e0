"""``postmaster-bridge store copy --to DSN``: an SQLite ledger (with its outbound queue) into
PostgreSQL, for the move to the shared engine.

Atomic: the target's schema is migrated first, then every row is copied (PostgreSQL ``COPY``)
and verified (row count per table) in ONE transaction; any failure rolls all of it back and
the target is as before. Ids are kept (tickets, jobs and admins' references stay valid) and the
identity sequences are moved past them. A target that holds any bridge data is refused unless
``--replace``, which empties its bridge tables in the same transaction.

Copied: every bridge table both sides have, but ``schema_migrations`` (the target keeps its
own), ``meta`` (engine bookkeeping: barrier marks, integrity-check time) and
``connection_status`` (what a running process is doing: it is rewritten at start). Stop the
bridge first: mail it handles during the copy is not in the copy.
"""

from __future__ import annotations

import argparse
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from connector.config import StoreConfig
from connector.exitcodes import EX_FAILURE, EX_NOINPUT, EX_OK, EX_USAGE

#: Not copied (see the module docstring).
SKIPPED_TABLES = frozenset({"schema_migrations", "meta", "connection_status"})

#: Rows kept in the order they were inserted: their PostgreSQL ``seq`` follows SQLite's rowid.
ORDER_BY = {"message_ids": "created_at, rowid"}


@dataclass(frozen=True)
class CopiedTable:
    name: str
    source_rows: int
    target_rows: int

    @property
    def verified(self) -> bool:
        return self.source_rows == self.target_rows


class TargetNotEmpty(Exception):
    def __init__(self, tables: dict[str, int]) -> None:
        self.tables = tables
        super().__init__(", ".join(f"{t}: {n}" for t, n in sorted(tables.items())))


class CountMismatch(Exception):
    pass


def register(ssub: Any, common: argparse.ArgumentParser) -> None:
    q = ssub.add_parser("copy", parents=[common],
                        help="copy the SQLite ledger and queue into a PostgreSQL database")
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="DSN",
                        help="the PostgreSQL database (libpq DSN or URI; a password in it is "
                             "visible to other users in the process list: prefer --to-file, "
                             "~/.pgpass or PGPASSWORD)")
    target.add_argument("--to-file", metavar="PATH", help="a file holding the DSN")
    q.add_argument("--from", dest="source", metavar="PATH",
                   help="the SQLite ledger (default: store.path of the config)")
    q.add_argument("--replace", action="store_true",
                   help="empty the target's bridge tables first (else a non-empty target is "
                        "refused)")


def copy_command(config: StoreConfig, args: argparse.Namespace, out: TextIO) -> int:
    import psycopg

    from connector.store.postgres import redact_dsn, scrub

    source = Path(args.source) if args.source else config.path
    if not source.is_file():
        print(f"FAIL  ledger {source}: no such file", file=out)
        return EX_NOINPUT
    if args.to_file:
        try:
            dsn = Path(args.to_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"FAIL  cannot read {args.to_file}: {exc.strerror}", file=out)
            return EX_NOINPUT
    else:
        dsn = args.to
    shown = redact_dsn(dsn)
    try:
        tables = copy_ledger(source, dsn, replace=args.replace)
    except TargetNotEmpty as exc:
        print(f"FAIL  {shown} already holds bridge data ({exc}); nothing copied. "
              "--replace empties it first", file=out)
        return EX_USAGE
    except CountMismatch as exc:
        print(f"FAIL  copy of {source} to {shown} not verified ({exc}); rolled back, the "
              "target is unchanged", file=out)
        return EX_FAILURE
    except psycopg.Error as exc:  # the server refused a row or went away: all rolled back
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else
                        type(exc).__name__, dsn)
        print(f"FAIL  copy of {source} to {shown} failed ({reason}); rolled back, the "
              "target is unchanged", file=out)
        return EX_FAILURE
    for table in tables:
        print(f"      {table.name}: {table.source_rows} row(s) copied, "
              f"{table.target_rows} in the target", file=out)
    total = sum(t.source_rows for t in tables)
    print(f"ok    {source} copied to {shown}: {total} row(s) in {len(tables)} table(s), "
          "row counts verified. Now set store: {type: postgresql, dsn: ...} and start the "
          "bridge", file=out)
    return EX_OK


def copy_ledger(source: Path, dsn: str, *, replace: bool = False) -> list[CopiedTable]:
    """Copy ``source`` into the database at ``dsn`` in one transaction; the per-table counts,
    verified. Raises TargetNotEmpty (nothing done) or CountMismatch (rolled back)."""
    from connector.store.postgres import PostgresDatabase
    from connector.store.sqlite import SQLiteFile

    SQLiteFile(source).close()  # the source's own pending migrations first, in place
    PostgresDatabase(dsn, pool_size=2).close()  # the target's schema, up to date
    import psycopg

    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
    try:
        reader.execute("BEGIN")  # one snapshot of the whole ledger
        with psycopg.connect(dsn) as target, target.transaction():
            tables = _common_tables(reader, target)
            filled = {t: n for t in tables if (n := _count(target, t))}
            if filled and not replace:
                raise TargetNotEmpty(filled)
            if filled:
                target.execute("TRUNCATE " + ", ".join(tables))
            copied = [_copy_table(reader, target, table) for table in tables]
            wrong = [t for t in copied if not t.verified]
            if wrong:
                raise CountMismatch("; ".join(f"{t.name}: {t.source_rows} read, "
                                              f"{t.target_rows} written" for t in wrong))
            _move_identities_past_copied_ids(target, tables)
        return copied
    finally:
        reader.close()


def _common_tables(reader: sqlite3.Connection, target: Any) -> list[str]:
    source_tables = {r[0] for r in reader.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    target_tables = [r[0] for r in target.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")]
    return [t for t in target_tables if t in source_tables and t not in SKIPPED_TABLES]


def _count(target: Any, table: str) -> int:
    return int(target.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _columns(reader: sqlite3.Connection, target: Any, table: str) -> list[str]:
    source = {r[1] for r in reader.execute(f"PRAGMA table_info({table})")}
    wanted = [r[0] for r in target.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s ORDER BY ordinal_position", (table,))]
    return [c for c in wanted if c in source]


def _copy_table(reader: sqlite3.Connection, target: Any, table: str) -> CopiedTable:
    columns = _columns(reader, target, table)
    names = ", ".join(columns)
    order = ORDER_BY.get(table, "rowid")
    rows = 0
    with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in reader.execute(f"SELECT {names} FROM {table} ORDER BY {order}"):
            copy.write_row(row)
            rows += 1
    return CopiedTable(table, rows, _count(target, table))


def _move_identities_past_copied_ids(target: Any, tables: list[str]) -> None:
    """New rows must not collide with the copied ids: each identity starts after them."""
    identities = target.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND is_identity = 'YES'").fetchall()
    for table, column in identities:
        if table in tables:
            target.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                f"COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)",
                (table, column))
