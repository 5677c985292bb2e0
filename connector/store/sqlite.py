"""SQLite implementation of the store.

WAL journal with ``synchronous=FULL``: a transaction that returned is on disk, so "durably
recorded" means what it says even across a power cut. One connection per store object, guarded
by a lock, so account workers in threads can share it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.store.base import MailboxMark, MessageRecord, MessageState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    ref         TEXT NOT NULL,
    state       TEXT NOT NULL,
    dedupe_key  TEXT,
    message_id  TEXT,
    sha256      TEXT,
    sender      TEXT,
    subject     TEXT,
    action      TEXT,
    ticket_id   INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    pending     TEXT,
    trace       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (account, ref)
);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender, created_at);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, account);
CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_key);

-- One row per distinct mail: the first record to claim a dedupe key owns it, so the same mail
-- fetched from two mailboxes (or after a UIDVALIDITY change) makes one ticket.
CREATE TABLE IF NOT EXISTS dedupe_claims (
    dedupe_key  TEXT PRIMARY KEY,
    record_id   INTEGER NOT NULL
);

-- Every Message-ID the bridge has seen or sent, to thread replies onto their ticket.
CREATE TABLE IF NOT EXISTS message_ids (
    message_id  TEXT PRIMARY KEY,
    ticket_id   INTEGER NOT NULL,
    direction   TEXT NOT NULL,
    account     TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS mailbox_marks (
    account        TEXT NOT NULL,
    folder         TEXT NOT NULL,
    uidvalidity    INTEGER,
    baseline_taken INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (account, folder)
);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SQLiteStore:
    """The default store: one SQLite file."""

    def __init__(self, path: str | Path, *, uri: bool = False) -> None:
        """``uri=True`` takes an SQLite URI (``file:x?mode=ro`` opens the ledger read-only)."""
        self.path = Path(path)
        if str(path) != ":memory:" and not uri:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=30.0, uri=uri)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if uri and "mode=ro" in str(path):
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        # executescript commits on its own, so it runs outside an explicit transaction.
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so concurrent writers queue instead of failing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def writable(self) -> bool:
        """True when a write transaction can be committed (for health checks)."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('health', ?)",
                           (_now(),))
            return True
        except sqlite3.Error:
            return False

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

    def known_refs(self, account: str, refs: Iterable[str]) -> set[str]:
        return {ref for ref, state in self.ref_states(account, refs).items() if state.terminal}

    def begin_message(self, account: str, ref: str, *, sha256: str | None) -> MessageRecord:
        now = _now()
        with self._tx() as db:
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
                         trace: dict[str, Any] | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET dedupe_key = ?, message_id = ?, sender = ?, subject = ?, "
                "trace = ?, updated_at = ? WHERE id = ?",
                (dedupe_key, message_id, sender, subject,
                 json.dumps(trace) if trace is not None else None, _now(), record_id))

    def claim_dedupe_key(self, dedupe_key: str, record_id: int) -> int:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO dedupe_claims (dedupe_key, record_id) VALUES (?, ?)",
                       (dedupe_key, record_id))
            row = db.execute("SELECT record_id FROM dedupe_claims WHERE dedupe_key = ?",
                             (dedupe_key,)).fetchone()
        return int(row["record_id"])

    def release_dedupe_key(self, dedupe_key: str, record_id: int) -> None:
        """Give a claim back (its holder failed permanently), so a later copy can try."""
        with self._tx() as db:
            db.execute("DELETE FROM dedupe_claims WHERE dedupe_key = ? AND record_id = ?",
                       (dedupe_key, record_id))

    def set_pending(self, record_id: int, action: str, pending: dict[str, Any],
                    ticket_id: int | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET state = ?, action = ?, pending = ?, "
                "ticket_id = COALESCE(?, ticket_id), updated_at = ? WHERE id = ?",
                (MessageState.PUSHING.value, action, json.dumps(pending), ticket_id, _now(),
                 record_id))

    def finish_message(self, record_id: int, state: MessageState, *, action: str | None = None,
                       ticket_id: int | None = None, error: str | None = None,
                       thread_ids: Iterable[str] = ()) -> None:
        now = _now()
        with self._tx() as db:
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

    def record_failure(self, record_id: int, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE messages SET error = ?, updated_at = ? WHERE id = ?",
                       (error, _now(), record_id))

    def mark_skipped(self, account: str, refs: Iterable[str]) -> None:
        now = _now()
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO messages (account, ref, state, attempts, created_at, "
                "updated_at) VALUES (?, ?, ?, 0, ?, ?)",
                [(account, ref, MessageState.SKIPPED.value, now, now) for ref in refs])

    def sender_count_since(self, sender: str, since: datetime,
                           exclude_id: int | None = None) -> int:
        rows = self._query(
            "SELECT COUNT(*) AS n FROM messages WHERE sender = ? AND created_at >= ? "
            "AND id != ?",
            (sender.lower(), since.astimezone(UTC).isoformat(timespec="microseconds"),
             exclude_id or -1))
        return int(rows[0]["n"])

    def failed_messages(self, account: str | None = None) -> list[MessageRecord]:
        sql = "SELECT * FROM messages WHERE state = ?"
        params: list[Any] = [MessageState.FAILED.value]
        if account:
            sql += " AND account = ?"
            params.append(account)
        return [self._record(r) for r in self._query(sql + " ORDER BY id", params)]

    def messages(self, account: str | None = None) -> list[MessageRecord]:
        sql, params = "SELECT * FROM messages", []
        if account:
            sql += " WHERE account = ?"
            params.append(account)
        return [self._record(r) for r in self._query(sql + " ORDER BY id", params)]

    # -- threading ------------------------------------------------------------------------
    def ticket_for_message_ids(self, message_ids: Iterable[str]) -> int | None:
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        rows = self._query(
            f"SELECT message_id, ticket_id FROM message_ids WHERE message_id IN ({marks})", ids)
        by_id = {r["message_id"]: r["ticket_id"] for r in rows}
        for mid in ids:
            if mid in by_id:
                return int(by_id[mid])
        return None

    def map_message_ids(self, ticket_id: int, message_ids: Iterable[str], *,
                        direction: str = "in", account: str | None = None) -> None:
        now = _now()
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO message_ids (message_id, ticket_id, direction, account, "
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
