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
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from connector.errors import StoreCorruptError
from connector.store.base import (
    AccountHealth,
    Dismissal,
    LogEntry,
    MailboxMark,
    MessageRecord,
    MessageState,
)
from connector.store.migrations import MIGRATIONS_TABLE, Migration, pending, sql_statements

log = logging.getLogger("connector.store")

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SQLiteFile:
    """One SQLite file opened for writes: WAL, one connection guarded by a lock, explicit
    IMMEDIATE transactions, each durable (``synchronous=FULL``) unless the caller says
    otherwise. The store and the outbound queue each keep their own tables in the same file
    through one of these; opening it for writes applies the pending schema migrations
    (connector/store/migrations.py)."""

    engine = "sqlite"

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
        except StoreCorruptError:
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
                    for step in migration.sqlite:
                        if isinstance(step, str):
                            for statement in sql_statements(step):
                                db.execute(statement)
                        else:
                            step(db)
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
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so concurrent writers queue instead of failing.

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
                self._db.execute("BEGIN IMMEDIATE")
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

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                self._after_error(exc)
                raise


class SQLiteStore(SQLiteFile):
    """The default store: one SQLite file."""

    def __init__(self, path: str | Path, *, uri: bool = False,
                 checked_within: float = 0.0, migrate: bool = True) -> None:
        super().__init__(path, uri=uri, checked_within=checked_within, migrate=migrate)
        self._log_db = self._db
        with self._lock:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(messages)")}
        # A ledger written before the cap counted by Date, opened read-only (filters test):
        # its mails are counted by the day they were recorded instead.
        self._mail_day = "mail_day" in columns or not self.read_only
        self._sender_proven = "sender_proven" in columns or not self.read_only
        if self.read_only:
            return
        if str(path) != ":memory:":
            # The communication log is a diary, not a record of effects: its writes go through
            # a second connection without an fsync per entry (WAL keeps them atomic, and a
            # process crash loses none; a power cut may lose the last few).
            self._log_db = sqlite3.connect(str(path), isolation_level=None,
                                           check_same_thread=False, timeout=30.0, uri=uri)
            self._log_db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            if self._log_db is not self._db:
                self._log_db.close()
        super().close()

    def writable(self) -> bool:
        """True when a write transaction can be committed (for health checks)."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('health', ?)",
                           (_now(),))
            return True
        except sqlite3.Error:
            return False

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
            # data_version moves when another connection (another process, the log's
            # connection) committed: its commits may not be synced either, and this process
            # may act on them (another process's takeover of a record, say).
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if not self._unsynced and version == self._seen_version:
                return
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('durable', ?)",
                           (f"{time.time_ns()}:{next(_BARRIERS)}",))
            self._unsynced = False
            self._seen_version = version  # read before the commit: later ones are not covered

    # -- ledger -------------------------------------------------------------------------
    @staticmethod
    def _record(row: sqlite3.Row) -> MessageRecord:
        return MessageRecord(
            id=row["id"],
            account=row["account"],
            ref=row["ref"],
            state=MessageState(row["state"]),
            dedupe_key=row["dedupe_key"],
            message_id=row["message_id"],
            sha256=row["sha256"],
            sender=row["sender"],
            subject=row["subject"],
            action=row["action"],
            ticket_id=row["ticket_id"],
            attempts=row["attempts"],
            error=row["error"],
            pending=json.loads(row["pending"]) if row["pending"] else None,
            trace=json.loads(row["trace"]) if row["trace"] else None,
            created_at=_dt(row["created_at"]),
            updated_at=_dt(row["updated_at"]),
        )

    def get_message(self, account: str, ref: str) -> MessageRecord | None:
        rows = self._query("SELECT * FROM messages WHERE account = ? AND ref = ?", (account, ref))
        return self._record(rows[0]) if rows else None

    def get_message_by_id(self, record_id: int) -> MessageRecord | None:
        rows = self._query("SELECT * FROM messages WHERE id = ?", (record_id,))
        return self._record(rows[0]) if rows else None

    def ref_states(self, account: str, refs: Iterable[str]) -> dict[str, MessageState]:
        """The recorded state of each of ``refs`` that has a record."""
        refs = list(refs)
        found: dict[str, MessageState] = {}
        for start in range(0, len(refs), 500):
            chunk = refs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT ref, state FROM messages WHERE account = ? AND ref IN "
                               f"({marks})", [account, *chunk])
            found.update((r["ref"], MessageState(r["state"])) for r in rows)
        return found

    def begin_message(self, account: str, ref: str, *, sha256: str | None,
                      durable: bool = True) -> MessageRecord:
        now = _now()
        with self._tx(durable=durable) as db:
            db.execute(
                "INSERT INTO messages (account, ref, state, sha256, attempts, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (account, ref) DO UPDATE "
                "SET attempts = attempts + 1, updated_at = excluded.updated_at, "
                "sha256 = COALESCE(excluded.sha256, sha256)",
                (account, ref, MessageState.RECEIVED.value, sha256, now, now))
            row = db.execute("SELECT * FROM messages WHERE account = ? AND ref = ?",
                             (account, ref)).fetchone()
        return self._record(row)

    def describe_message(self, record_id: int, *, dedupe_key: str | None,
                         message_id: str | None, sender: str | None, subject: str | None,
                         trace: Mapping[str, Any] | None, mail_day: date | None = None,
                         sender_proven: bool = False, durable: bool = True) -> int | None:
        """Record what the message is and, in the same transaction, claim its dedupe key;
        returns the id of the record holding the key (None without a key)."""
        with self._tx(durable=durable) as db:
            db.execute(
                "UPDATE messages SET dedupe_key = ?, message_id = ?, sender = ?, subject = ?, "
                "trace = ?, mail_day = ?, sender_proven = ?, updated_at = ? WHERE id = ?",
                (dedupe_key, message_id, sender, subject,
                 json.dumps(trace) if trace is not None else None,
                 mail_day.isoformat() if mail_day is not None else None,
                 1 if sender_proven else 0, _now(), record_id))
            if dedupe_key is None:
                return None
            db.execute("INSERT OR IGNORE INTO dedupe_claims (dedupe_key, record_id) VALUES (?, ?)",
                       (dedupe_key, record_id))
            row = db.execute("SELECT record_id FROM dedupe_claims WHERE dedupe_key = ?",
                             (dedupe_key,)).fetchone()
        return int(row["record_id"])

    def claim_dedupe_key(self, dedupe_key: str, record_id: int, *,
                         durable: bool = True) -> int:
        with self._tx(durable=durable) as db:
            db.execute("INSERT OR IGNORE INTO dedupe_claims (dedupe_key, record_id) VALUES (?, ?)",
                       (dedupe_key, record_id))
            row = db.execute("SELECT record_id FROM dedupe_claims WHERE dedupe_key = ?",
                             (dedupe_key,)).fetchone()
        return int(row["record_id"])

    def release_dedupe_key(self, dedupe_key: str, record_id: int, *,
                           durable: bool = True) -> None:
        """Give a claim back (its holder failed permanently), so a later copy can try."""
        with self._tx(durable=durable) as db:
            db.execute("DELETE FROM dedupe_claims WHERE dedupe_key = ? AND record_id = ?",
                       (dedupe_key, record_id))

    def set_pending(self, record_id: int, action: str, pending: dict[str, Any],
                    ticket_id: int | None = None) -> None:
        # Always durable (no ``durable`` parameter): a host call follows, and this commit's
        # fsync also puts every earlier commit on disk. It always changes the row (state or
        # action, updated_at), so it always writes a frame and syncs.
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET state = ?, action = ?, pending = ?, "
                "ticket_id = COALESCE(?, ticket_id), updated_at = ? WHERE id = ?",
                (MessageState.PUSHING.value, action, json.dumps(pending), ticket_id, _now(),
                 record_id))

    def finish_message(self, record_id: int, state: MessageState, *, action: str | None = None,
                       ticket_id: int | None = None, error: str | None = None,
                       thread_ids: Iterable[str] = (), durable: bool = True) -> None:
        now = _now()
        with self._tx(durable=durable) as db:
            db.execute(
                "UPDATE messages SET state = ?, action = COALESCE(?, action), "
                "ticket_id = COALESCE(?, ticket_id), error = ?, updated_at = ? WHERE id = ?",
                (state.value, action, ticket_id, error, now, record_id))
            if ticket_id is not None:
                row = db.execute("SELECT account FROM messages WHERE id = ?",
                                 (record_id,)).fetchone()
                db.executemany(
                    "INSERT OR IGNORE INTO message_ids (message_id, ticket_id, direction, "
                    "account, created_at) VALUES (?, ?, 'in', ?, ?)",
                    [(mid, ticket_id, row["account"], now) for mid in thread_ids if mid])

    def unfinished_with_message_ids(self, message_ids: Iterable[str], *,
                                    exclude_id: int) -> MessageRecord | None:
        """A record not yet finished (received or pushing) whose Message-ID is one of
        ``message_ids``: the parent a reply must wait for."""
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        rows = self._query(
            f"SELECT * FROM messages WHERE message_id IN ({marks}) AND state IN (?, ?) "
            f"AND id != ? ORDER BY id LIMIT 1",
            [*ids, MessageState.RECEIVED.value, MessageState.PUSHING.value, exclude_id])
        return self._record(rows[0]) if rows else None

    def record_failure(self, record_id: int, error: str, *, durable: bool = True) -> None:
        with self._tx(durable=durable) as db:
            db.execute("UPDATE messages SET error = ?, updated_at = ? WHERE id = ?",
                       (error, _now(), record_id))

    def mark_skipped(self, account: str, refs: Iterable[str],
                     message_ids: dict[str, str | None] | None = None) -> None:
        """Record ``refs`` as left alone (initial_sync: skip_existing), with their Message-IDs
        when known, so they are recognised again after a UIDVALIDITY change."""
        now = _now()
        ids = message_ids or {}
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO messages (account, ref, state, message_id, attempts, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                [(account, ref, MessageState.SKIPPED.value, ids.get(ref), now, now)
                 for ref in refs])

    def orphan_unfinished(self, account: str, ref_prefix: str) -> int:
        """Unfinished records whose refs a UIDVALIDITY change made meaningless: the mail comes
        back under new refs, and its new record takes the work over (pending call included)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE messages SET state = ?, updated_at = ? WHERE account = ? AND "
                "substr(ref, 1, ?) = ? AND state IN (?, ?)",
                (MessageState.ORPHANED.value, _now(), account, len(ref_prefix), ref_prefix,
                 MessageState.RECEIVED.value, MessageState.PUSHING.value))
        return cur.rowcount

    def skipped_message_ids(self, account: str) -> set[str]:
        rows = self._query("SELECT message_id FROM messages WHERE account = ? AND state = ? "
                           "AND message_id IS NOT NULL", (account, MessageState.SKIPPED.value))
        return {r["message_id"] for r in rows}

    def sender_count_since(self, sender: str, since: datetime,
                           exclude_id: int | None = None) -> int:
        rows = self._query(
            "SELECT COUNT(*) AS n FROM messages WHERE sender = ? AND created_at >= ? "
            "AND id != ?",
            (sender.lower(), since.astimezone(UTC).isoformat(timespec="microseconds"),
             exclude_id or -1))
        return int(rows[0]["n"])

    def sender_count_on(self, sender: str, day: date, exclude_id: int | None = None, *,
                        proven: bool | None = None) -> int:
        if not self._mail_day:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return self.sender_count_since(sender, start, exclude_id)
        sql = "SELECT COUNT(*) AS n FROM messages WHERE sender = ? AND mail_day = ? AND id != ?"
        if proven is True and self._sender_proven:
            sql += " AND sender_proven = 1"
        elif proven is False and self._sender_proven:
            sql += " AND COALESCE(sender_proven, 0) = 0"
        rows = self._query(sql, (sender.lower(), day.isoformat(), exclude_id or -1))
        return int(rows[0]["n"])

    def failed_messages(self, account: str | None = None, *,
                        include_dismissed: bool = False) -> list[MessageRecord]:
        failed = self.messages_in(MessageState.FAILED, account)
        if include_dismissed:
            return failed
        dismissed = {row["record_id"] for row in self._query("SELECT record_id FROM dismissals")}
        return [r for r in failed if r.id not in dismissed]

    def messages_in(self, state: MessageState,
                    account: str | None = None) -> list[MessageRecord]:
        sql = "SELECT * FROM messages WHERE state = ?"
        params: list[Any] = [state.value]
        if account:
            sql += " AND account = ?"
            params.append(account)
        return [self._record(r) for r in self._query(sql + " ORDER BY id", params)]

    def find_messages(self, key: str) -> list[MessageRecord]:
        key = key.strip()
        rows = self._query("SELECT * FROM messages WHERE message_id = ? OR ref = ? ORDER BY id",
                           (key.strip("<>"), key))
        return [self._record(r) for r in rows]

    def dismiss_message(self, record_id: int, reason: str) -> Dismissal:
        now = _now()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO dismissals (record_id, reason, dismissed_at) "
                       "VALUES (?, ?, ?)", (record_id, reason, now))
        return Dismissal(record_id, reason, _dt(now))

    def dismissals(self, record_ids: Iterable[int]) -> dict[int, Dismissal]:
        wanted = set(record_ids)
        if not wanted:
            return {}
        # The admin's dismissals are few: read them all rather than bind thousands of ids.
        rows = self._query("SELECT * FROM dismissals")
        return {r["record_id"]: Dismissal(r["record_id"], r["reason"], _dt(r["dismissed_at"]))
                for r in rows if r["record_id"] in wanted}

    def messages(self, account: str | None = None) -> list[MessageRecord]:
        sql, params = "SELECT * FROM messages", []
        if account:
            sql += " WHERE account = ?"
            params.append(account)
        return [self._record(r) for r in self._query(sql + " ORDER BY id", params)]

    # -- threading ------------------------------------------------------------------------
    def ticket_for_message_ids(self, message_ids: Iterable[str]) -> int | None:
        return self._first_mapped(message_ids)

    def ticket_for_sent_message_ids(self, message_ids: Iterable[str],
                                    account: str) -> int | None:
        return self._first_mapped(message_ids, "AND direction = 'out' AND account = ?",
                                  (account,))

    def _first_mapped(self, message_ids: Iterable[str], condition: str = "",
                      params: tuple[str, ...] = ()) -> int | None:
        """The ticket of the first of ``message_ids`` (in their order) mapped to one."""
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        rows = self._query(
            f"SELECT message_id, ticket_id FROM message_ids WHERE message_id IN ({marks}) "
            f"{condition}", [*ids, *params])
        by_id = {r["message_id"]: r["ticket_id"] for r in rows}
        return next((int(by_id[mid]) for mid in ids if mid in by_id), None)

    def map_message_ids(self, ticket_id: int, message_ids: Iterable[str], *,
                        direction: str = "in", account: str | None = None,
                        replace: bool = False, durable: bool = True) -> None:
        """Map ids onto the ticket; an id already mapped keeps its ticket unless ``replace``."""
        now = _now()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._tx(durable=durable) as db:
            db.executemany(
                f"{verb} INTO message_ids (message_id, ticket_id, direction, account, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                [(mid, ticket_id, direction, account, now) for mid in message_ids if mid])

    def is_own_message_id(self, message_id: str) -> bool:
        rows = self._query("SELECT 1 FROM message_ids WHERE message_id = ? AND direction = 'out'",
                           (message_id,))
        return bool(rows)

    # -- mailbox state --------------------------------------------------------------------
    def get_mailbox_mark(self, account: str, folder: str) -> MailboxMark | None:
        rows = self._query("SELECT * FROM mailbox_marks WHERE account = ? AND folder = ?",
                           (account, folder))
        if not rows:
            return None
        r = rows[0]
        return MailboxMark(account=account, folder=folder, uidvalidity=r["uidvalidity"],
                           baseline_taken=bool(r["baseline_taken"]))

    def set_mailbox_mark(self, account: str, folder: str, *, uidvalidity: int | None,
                         baseline_taken: bool) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO mailbox_marks (account, folder, uidvalidity, baseline_taken, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, folder) DO UPDATE SET "
                "uidvalidity = excluded.uidvalidity, baseline_taken = excluded.baseline_taken, "
                "updated_at = excluded.updated_at",
                (account, folder, uidvalidity, int(baseline_taken), _now()))

    # -- quarantine -----------------------------------------------------------------------
    def quarantine(self, record_id: int, raw: bytes, *, durable: bool = True) -> None:
        with self._tx(durable=durable) as db:
            db.execute("INSERT OR REPLACE INTO quarantine (record_id, raw, created_at) "
                       "VALUES (?, ?, ?)", (record_id, raw, _now()))

    def quarantined_raw(self, record_id: int) -> bytes | None:
        rows = self._query("SELECT raw FROM quarantine WHERE record_id = ?", (record_id,))
        return bytes(rows[0]["raw"]) if rows else None

    def reopen_message(self, record_id: int) -> None:
        """Put a failed message back to RECEIVED (for replay); its quarantine copy stays
        until the replay succeeds."""
        # A record that failed after a host call began keeps what it was sending, and goes
        # back to PUSHING: the replay then looks on the helpdesk before it repeats anything.
        with self._tx() as db:
            db.execute("UPDATE messages SET state = CASE WHEN pending IS NOT NULL THEN ? "
                       "ELSE ? END, error = NULL, updated_at = ? WHERE id = ?",
                       (MessageState.PUSHING.value, MessageState.RECEIVED.value, _now(),
                        record_id))
            db.execute("DELETE FROM dismissals WHERE record_id = ?", (record_id,))

    def release_quarantine(self, record_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM quarantine WHERE record_id = ?", (record_id,))

    # -- account health -------------------------------------------------------------------
    @staticmethod
    def _health(row: sqlite3.Row) -> AccountHealth:
        return AccountHealth(
            account=row["account"], enabled=bool(row["enabled"]),
            consecutive_failures=row["consecutive_failures"],
            last_success_at=_dt(row["last_success_at"]) if row["last_success_at"] else None,
            last_error=row["last_error"],
            last_error_at=_dt(row["last_error_at"]) if row["last_error_at"] else None,
            disabled_reason=row["disabled_reason"], backlog=row["backlog"])

    def get_health(self, account: str) -> AccountHealth:
        rows = self._query("SELECT * FROM account_health WHERE account = ?", (account,))
        return self._health(rows[0]) if rows else AccountHealth(account=account)

    def all_health(self) -> list[AccountHealth]:
        return [self._health(r) for r in self._query(
            "SELECT * FROM account_health ORDER BY account")]

    def _ensure_health(self, db: sqlite3.Connection, account: str) -> None:
        db.execute("INSERT OR IGNORE INTO account_health (account, updated_at) VALUES (?, ?)",
                   (account, _now()))

    def record_success(self, account: str, backlog: int | None = None) -> None:
        with self._tx() as db:
            self._ensure_health(db, account)
            db.execute("UPDATE account_health SET consecutive_failures = 0, last_success_at = ?,"
                       " backlog = COALESCE(?, backlog), updated_at = ? WHERE account = ?",
                       (_now(), backlog, _now(), account))

    def record_connection_failure(self, account: str, error: str) -> int:
        """Count one more consecutive failure; returns the new count."""
        with self._tx() as db:
            self._ensure_health(db, account)
            db.execute("UPDATE account_health SET consecutive_failures = "
                       "consecutive_failures + 1, last_error = ?, last_error_at = ?, "
                       "updated_at = ? WHERE account = ?", (error, _now(), _now(), account))
            row = db.execute("SELECT consecutive_failures FROM account_health WHERE account = ?",
                             (account,)).fetchone()
        return int(row["consecutive_failures"])

    def set_account_enabled(self, account: str, enabled: bool, reason: str | None = None) -> None:
        with self._tx() as db:
            self._ensure_health(db, account)
            db.execute("UPDATE account_health SET enabled = ?, disabled_reason = ?, "
                       "consecutive_failures = CASE WHEN ? THEN 0 ELSE consecutive_failures END,"
                       " updated_at = ? WHERE account = ?",
                       (int(enabled), None if enabled else reason, int(enabled), _now(),
                        account))

    # -- communication log ----------------------------------------------------------------
    def log_event(self, *, level: str, kind: str, account: str | None, event: str,
                  detail: str | None = None, ref: str | None = None,
                  message_id: str | None = None, duration_ms: float | None = None) -> None:
        with self._lock:
            self._log_db.execute(
                "INSERT INTO comm_log (ts, level, kind, account, ref, message_id, event, "
                "detail, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_now(), level, kind, account, ref, message_id, event, detail, duration_ms))

    def log_events(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Several entries (``log_event``'s keywords, ``ts`` optional) in one transaction:
        a message's helpdesk calls and its outcome cost one commit, not one each."""
        rows = [((e["ts"].astimezone(UTC).isoformat(timespec="microseconds") if e.get("ts")
                  else _now()), e["level"], e["kind"], e.get("account"), e.get("ref"),
                 e.get("message_id"), e["event"], e.get("detail"), e.get("duration_ms"))
                for e in entries]
        with self._lock:
            self._log_db.execute("BEGIN")
            try:
                self._log_db.executemany(
                    "INSERT INTO comm_log (ts, level, kind, account, ref, message_id, event, "
                    "detail, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._log_db.execute("ROLLBACK")
                raise
            self._log_db.execute("COMMIT")

    def log_entries(self, *, account: str | None = None, min_level: str | None = None,
                    since: datetime | None = None, message: str | None = None,
                    limit: int = 1000) -> list[LogEntry]:
        sql = "SELECT * FROM comm_log WHERE 1=1"
        params: list[Any] = []
        if account:
            sql += " AND account = ?"
            params.append(account)
        if min_level:
            levels = LogEntry.levels_at_least(min_level)
            sql += f" AND level IN ({','.join('?' * len(levels))})"
            params.extend(levels)
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
        if message:
            sql += " AND (message_id = ? OR ref = ? OR CAST(id AS TEXT) = ?)"
            params.extend([message.strip("<>"), message, message])
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = self._query(sql, params)
        return [LogEntry(id=r["id"], ts=_dt(r["ts"]), level=r["level"], kind=r["kind"],
                         account=r["account"], ref=r["ref"], message_id=r["message_id"],
                         event=r["event"], detail=r["detail"], duration_ms=r["duration_ms"])
                for r in reversed(rows)]

    # -- connection status ------------------------------------------------------------------
    def save_connection_status(self, account: str, *, state: str, detail: str | None,
                               since: datetime, server_event: str | None,
                               server_event_at: datetime | None, pid: int) -> None:
        """Written like the communication log: no fsync (it describes, it records no
        effect)."""
        with self._lock:
            self._log_db.execute(
                "INSERT OR REPLACE INTO connection_status (account, state, detail, since, "
                "server_event, server_event_at, pid, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (account, state, detail, since.isoformat(timespec="microseconds"),
                 server_event, server_event_at.isoformat(timespec="microseconds")
                 if server_event_at else None, pid, _now()))

    def connection_statuses(self) -> dict[str, dict[str, Any]]:
        """account -> the row saved last by a running service (datetimes parsed)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._query("SELECT * FROM connection_status"):
            out[r["account"]] = {
                "state": r["state"], "detail": r["detail"], "since": _dt(r["since"]),
                "server_event": r["server_event"],
                "server_event_at": _dt(r["server_event_at"]) if r["server_event_at"] else None,
                "pid": r["pid"]}
        return out

    def count_events_since(self, event: str, since: datetime) -> dict[str, int]:
        """account -> how many communication log entries named ``event`` since ``since``."""
        rows = self._query(
            "SELECT account, COUNT(*) AS n FROM comm_log WHERE event = ? AND ts >= ? "
            "GROUP BY account",
            (event, since.astimezone(UTC).isoformat(timespec="microseconds")))
        return {r["account"]: int(r["n"]) for r in rows if r["account"] is not None}

    def apply_retention(self, older_than: datetime) -> int:
        """Drop what finished mails no longer need once they are older than ``older_than``:
        the stored request (``pending``: the create body with upload tokens, ~10 kB a mail) and
        the decision trace. What later mails need stays: the record (sender and date for the
        per-sender cap, state, ticket), its dedupe claim and the Message-ID -> ticket map.
        Failed and held mails keep everything (an admin may still look at them and replay or
        release them). Returns how many records were thinned."""
        cutoff = older_than.astimezone(UTC).isoformat(timespec="microseconds")
        waiting = (MessageState.FAILED, MessageState.HELD)
        finished = [s.value for s in MessageState if s.terminal and s not in waiting]
        marks = ",".join("?" * len(finished))
        with self._tx(durable=False) as db:
            cur = db.execute(
                f"UPDATE messages SET pending = NULL, trace = NULL WHERE updated_at < ? "
                f"AND state IN ({marks}) AND (pending IS NOT NULL OR trace IS NOT NULL)",
                (cutoff, *finished))
        return cur.rowcount

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

    def purge_log(self, older_than: datetime) -> int:
        with self._tx() as db:
            cur = db.execute("DELETE FROM comm_log WHERE ts < ?",
                             (older_than.astimezone(UTC).isoformat(timespec="microseconds"),))
        return cur.rowcount

    def account_figures(self, since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Per account: processed, failed, ignored, retrying, average processing seconds."""
        sql = ("SELECT account, state, COUNT(*) AS n, AVG((julianday(updated_at) - "
               "julianday(created_at)) * 86400.0) AS secs FROM messages")
        params: list[Any] = []
        if since is not None:
            sql += " WHERE created_at >= ?"
            params.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
        sql += " GROUP BY account, state"
        out: dict[str, dict[str, Any]] = {}
        for r in self._query(sql, params):
            fig = out.setdefault(r["account"], {"processed": 0, "failed": 0, "ignored": 0,
                                                "held": 0, "pending": 0, "skipped": 0,
                                                "avg_seconds": None})
            state = MessageState(r["state"])
            key = {MessageState.DONE: "processed", MessageState.FAILED: "failed",
                   MessageState.IGNORED: "ignored", MessageState.SKIPPED: "skipped",
                   MessageState.HELD: "held"}.get(state, "pending")
            fig[key] += r["n"]
            if state == MessageState.DONE and r["secs"] is not None:
                fig["avg_seconds"] = round(float(r["secs"]), 3)
        return out
