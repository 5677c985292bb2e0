"""SQLite implementation of the store.

WAL journal. A write transaction is durable by default (``synchronous=FULL``: once it returned
it is on disk, even across a power cut). Writes the caller marks ``durable=False`` commit with
``synchronous=NORMAL`` (no fsync); ``make_durable()`` is the barrier that puts them on disk.
Why that is safe: WAL appends commits in order and recovery reads the log up to the first
frame whose chained checksum fails, so what survives a power cut is always a *prefix* of the
commit sequence, exactly what a SIGKILL at that point would leave; and syncing the log for one
commit makes every earlier commit durable too. So the caller only needs a durable commit (or
the barrier) right before an effect outside the store follows (a host call, a mail moved or
deleted on the server, an exit status to an MTA). One connection per store object, guarded by
a lock, so account workers in threads can share it.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector.errors import StoreCorruptError, StoreSchemaError
from connector.store.leasing import LeaseTables
from connector.store.ledger import Ledger, _now
from connector.store.migrations import MIGRATIONS_TABLE, Migration, apply_steps, pending
from connector.store.sql import SQLITE

log = logging.getLogger("connector.store")

#: How long a write waits for another process's write transaction before it fails.
BUSY_WAIT_SECONDS = 30.0

#: Makes every barrier's write differ from the last one (see SQLiteStore.make_durable).
_BARRIERS = itertools.count()

#: SQLite primary result codes that may mean a damaged file: IOERR, CORRUPT, NOTADB.
_DAMAGE_CODES = (10, 11, 26)


def _may_be_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # raised by the sqlite3 module itself, or an older Python
        return "malformed" in str(exc) or "not a database" in str(exc)
    return code & 0xFF in _DAMAGE_CODES


def integrity_problems(db: sqlite3.Connection, *, full: bool = False,
                       limit: int = 20) -> list[str]:
    """What ``PRAGMA quick_check`` (``full``: the slower ``integrity_check``, which also
    compares every index with its table) finds, at most ``limit`` lines; [] when sound."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = db.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def damaged_message(path: Path, problems: list[str]) -> str:
    """What an admin reads when the ledger is damaged, and what to do."""
    shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)"
                                       if len(problems) > 3 else "")
    return (f"the ledger {path} is damaged ({shown}); processing stopped and no mail was "
            "moved. Stop the bridge, restore the ledger from a backup ('postmaster-bridge "
            "store backup FILE' makes one) or try sqlite3's .recover, and check it with "
            "'postmaster-bridge store check'")


class SQLiteFile:
    """One SQLite file opened for writes: WAL, one connection guarded by a lock, explicit
    IMMEDIATE transactions, each durable (``synchronous=FULL``) unless the caller says
    otherwise. The store and the outbound queue each keep their own tables in the same file
    through one of these; opening it for writes applies the pending schema migrations
    (connector/store/migrations.py)."""

    engine = "sqlite"
    dialect = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: str | Path, *, uri: bool = False, checked_within: float = 0.0,
                 migrate: bool = True) -> None:
        """``uri=True`` takes an SQLite URI (``file:x?mode=ro`` opens the file read-only).
        ``migrate=False`` leaves the schema as it is (``store migrate --check``).

        A file is checked with ``PRAGMA quick_check`` first: a damaged ledger raises
        :class:`StoreCorruptError` before anything relies on it. The check reads the whole
        file (about 0.3 s for a 110 MB ledger of 200,000 mails); ``checked_within`` seconds
        (``deliver``, started once per mail) skip it when a check passed that recently."""
        self.path = Path(path)
        self.in_memory = str(path) == ":memory:"
        if not self.in_memory and not uri:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=30.0, uri=uri)
        self._db.row_factory = sqlite3.Row
        self.read_only = uri and "mode=ro" in str(path)
        try:
            self._open(migrate)
            if not self.in_memory and not self._checked_recently(checked_within):
                self._raise_if_damaged(None)
                self._record_check()
        except (StoreCorruptError, StoreSchemaError):
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if not _may_be_damage(exc):
                raise
            raise StoreCorruptError(damaged_message(self.path, [str(exc)])) from exc

    def _open(self, migrate: bool) -> None:
        self._db.execute("PRAGMA synchronous=FULL")
        self._sync_full = True  # the connection's current synchronous setting
        # True while commits made without an fsync may not be on disk yet. It starts True: a
        # process killed before its barrier leaves its last commits in the page cache only,
        # and this process may act on them (move mail they record), so its first barrier
        # syncs whatever the log holds.
        self._unsynced = True
        self._seen_version = -1  # PRAGMA data_version at the last barrier
        self._db.execute("PRAGMA foreign_keys=ON")
        if self.read_only:
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        if migrate:
            self.migrate()

    # -- schema migrations -----------------------------------------------------------------
    def applied_migrations(self) -> list[int]:
        """The versions recorded in ``schema_migrations`` ([] before the first migration)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'schema_migrations'"):
            return []
        return [int(r[0]) for r in self._query("SELECT version FROM schema_migrations")]

    def pending_migrations(self) -> list[Migration]:
        return pending(self.applied_migrations())

    def migrate(self) -> list[Migration]:
        """Apply the pending migrations in order, each in one IMMEDIATE transaction (two
        processes opening one file migrate it once); returns those applied here."""
        applied: list[Migration] = []
        with self._lock:
            self._db.execute(MIGRATIONS_TABLE)
            while True:
                with self._tx() as db:
                    todo = pending(int(r[0]) for r in
                                   db.execute("SELECT version FROM schema_migrations"))
                    if not todo:
                        return applied
                    migration = todo[0]
                    apply_steps(migration, self.engine, db)
                    db.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                               "VALUES (?, ?, ?)", (migration.version, migration.name, _now()))
                log.info("ledger %s: schema migration %d (%s) applied", self.path,
                         migration.version, migration.name)
                applied.append(migration)

    # -- integrity -------------------------------------------------------------------------
    def quick_check(self) -> list[str]:
        """``PRAGMA quick_check`` of the file: the problems found (at most 20), ``[]`` when
        it is sound; an error while checking is itself a problem. A file is read through a
        connection of its own, since this one's page cache may still hold the pages as they
        were before the damage (and a check through it would say "ok")."""
        if self.in_memory:
            with self._lock:
                return integrity_problems(self._db)
        target = str(self.path) if self.read_only or "?" in str(self.path) else \
            f"file:{self.path}?mode=ro"
        try:
            db = sqlite3.connect(target, uri=True, timeout=30.0)
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        try:
            return integrity_problems(db)
        finally:
            db.close()

    def _checked_recently(self, seconds: float) -> bool:
        if seconds <= 0:
            return False
        rows = self._query("SELECT value FROM meta WHERE key = 'integrity_checked_at'") \
            if self._has_meta() else []
        try:
            return bool(rows) and time.time() - float(rows[0][0]) < seconds
        except ValueError:
            return False

    def _has_meta(self) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'meta'"))

    def _record_check(self) -> None:
        if self.read_only or not self._has_meta():
            return
        with self._tx(durable=False) as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES "
                       "('integrity_checked_at', ?)", (str(time.time()),))

    def _raise_if_damaged(self, cause: BaseException | None) -> None:
        problems = self.quick_check()
        if problems:
            log.critical("ledger %s is damaged: %s", self.path, "; ".join(problems[:3]))
            raise StoreCorruptError(damaged_message(self.path, problems)) from cause

    def _after_error(self, exc: sqlite3.DatabaseError) -> None:
        """After an I/O or corruption error: is the file damaged? Raises StoreCorruptError
        when it is; otherwise the caller re-raises the original error."""
        if _may_be_damage(exc) and not self.in_memory:
            self._raise_if_damaged(exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, *, durable: bool = True,
            bounded: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so concurrent writers queue instead of failing.
        (``bounded``: PostgreSQL's call deadline; a local file needs none.)

        ``durable=False`` commits without an fsync: atomic, never lost by a process crash,
        but a power cut may take it back (with everything committed after it). Only for
        writes that a later durable commit or ``make_durable()`` covers before anything
        outside the store depends on them."""
        with self._lock:
            if durable != self._sync_full:
                # Per connection, and allowed between transactions only: here, outside one.
                self._db.execute("PRAGMA synchronous=FULL" if durable
                                 else "PRAGMA synchronous=NORMAL")
                self._sync_full = durable
            try:
                self._begin_immediate()
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._after_error(exc)
                raise
            if not durable:
                # Not cleared by a durable commit: one that changed no page writes no frame
                # and syncs nothing, so only the barrier below may say "all on disk".
                self._unsynced = True

    def _begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another process's write transaction in short
        steps. SQLite's own busy handler sleeps 1, 2, 5 ... up to 100 ms between attempts,
        so with several processes writing one ledger (several ``run`` instances) most of
        their time went to sleeping past a lock released long before: measured, two
        instances did less than one. Waits at most the connection's 30 s, as before."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        pause = 0.0002
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) \
                            or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 1.5, 0.005)
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT_SECONDS * 1000)}")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                self._after_error(exc)
                raise


class SQLiteStore(SQLiteFile, Ledger, LeaseTables):
    """The default store: one SQLite file."""

    def __init__(self, path: str | Path, *, uri: bool = False,
                 checked_within: float = 0.0, migrate: bool = True) -> None:
        super().__init__(path, uri=uri, checked_within=checked_within, migrate=migrate)
        with self._lock:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(messages)")}
        # A ledger written before the cap counted by Date, opened read-only (filters test):
        # its mails are counted by the day they were recorded instead.
        self._mail_day = "mail_day" in columns or not self.read_only
        self._sender_proven = "sender_proven" in columns or not self.read_only

    def _write_unsynced(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # The communication log is a diary, not a record of effects: no fsync per entry (WAL
        # keeps it atomic, a process crash loses none, a power cut may lose the last few).
        # On the ledger's own connection: entries written through a second one made each
        # connection drop its page cache at the other's every commit (SQLite re-reads a
        # changed file from scratch), about 30 page reads per mail, measured with strace.
        with self._tx(durable=False) as db:
            db.executemany(sql, rows)

    def make_durable(self) -> None:
        """Barrier: every transaction committed so far is on disk when this returns.

        Call it before telling the outside world something that rests on commits made with
        ``durable=False`` (mail moved or deleted on the server, success reported to an MTA).
        Costs one ``PRAGMA`` when nothing was committed to the file since the last barrier
        but durable writes of this store object.

        The barrier is one durable commit of a value that changes every time. A FULL commit
        syncs the log, and recovery replays a commit only if every frame before it is intact
        (the checksums are chained), so the earlier commits are durable with it; that rests on
        SQLite's own guarantees only. An ``fsync`` of the ``-wal`` file from outside would be
        a little cheaper but relies on SQLite's file layout and misses what SQLite does on the
        log's first sync (fsync of the directory holding a newly created ``-wal``). A durable
        commit that changes nothing is no barrier at all: it writes no frame and syncs nothing.
        """
        if self.read_only or str(self.path) == ":memory:":
            return
        with self._lock:
            # data_version moves when another connection (another process) committed: its
            # commits may not be synced either, and this process may act on them (another
            # process's takeover of a record, say).
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if not self._unsynced and version == self._seen_version:
                return
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('durable', ?)",
                           (f"{time.time_ns()}:{next(_BARRIERS)}",))
            self._unsynced = False
            self._seen_version = version  # read before the commit: later ones are not covered

    def vacuum(self) -> tuple[int, int]:
        """Give the space freed by retention back to the file system (``VACUUM``; it rewrites
        the file, so it is for a quiet moment). Returns the file size before and after."""
        before = self._file_size()
        with self._lock:
            self.make_durable()
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, self._file_size()

    def _file_size(self) -> int:
        path = Path(str(self.path))
        return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
                   if p.exists())

