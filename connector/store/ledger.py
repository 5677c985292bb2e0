"""The ledger's logic in SQL both engines run (connector/store/sqlite.py, postgres.py).

Written once for both: ``?`` placeholders (the PostgreSQL engine turns them into its own),
upserts as ``INSERT ... ON CONFLICT`` (SQLite 3.24+ and PostgreSQL), and the few places where
the engines differ asked of ``self.dialect``. A concrete store supplies the transactions
(``_tx``), the reads (``_query``), the unsynced writes of the communication log
(``_write_unsynced``), the durability barrier and ``vacuum``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from typing import Any

from connector.store.base import (
    AccountHealth,
    Dismissal,
    Fence,
    LogEntry,
    MailboxMark,
    MessageRecord,
    MessageState,
)
from connector.store.leasing import check_fence
from connector.store.sql import Connection, Dialect, Row, ticket_in


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class Ledger:
    """Everything the store remembers, over an engine's connection (a mixin: the engine class
    comes first in the bases)."""

    dialect: Dialect
    errors: tuple[type[BaseException], ...]
    #: False only for an SQLite ledger from before these columns, opened read-only.
    _mail_day = True
    _sender_proven = True

    def _tx(self, *, durable: bool = True,
            bounded: bool = True) -> AbstractContextManager[Any]:
        """A write transaction handing out a :class:`Connection`."""
        raise NotImplementedError

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows (:class:`Row`) of one read."""
        raise NotImplementedError

    def _write_unsynced(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One transaction of ``rows`` that needs no fsync (a diary, not an effect)."""
        raise NotImplementedError

    def ticket_param(self, ticket_id: Any) -> Any:
        """A ticket id as the engine's column takes it."""
        return self.dialect.ticket_param(ticket_id)

    def writable(self) -> bool:
        """True when a write transaction can be committed (for health checks)."""
        try:
            with self._tx() as db:
                db.execute("INSERT INTO meta (key, value) VALUES ('health', ?) ON CONFLICT (key) "
                           "DO UPDATE SET value = excluded.value", (_now(),))
            return True
        except self.errors:
            return False

    # -- ledger -------------------------------------------------------------------------
    @staticmethod
    def _record(row: Row) -> MessageRecord:
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
            ticket_id=ticket_in(row["ticket_id"]),
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
                "SET attempts = messages.attempts + 1, updated_at = excluded.updated_at, "
                "sha256 = COALESCE(excluded.sha256, messages.sha256)",
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
            db.execute("INSERT INTO dedupe_claims (dedupe_key, record_id) VALUES (?, ?) "
                       "ON CONFLICT DO NOTHING", (dedupe_key, record_id))
            row = db.execute("SELECT record_id FROM dedupe_claims WHERE dedupe_key = ?",
                             (dedupe_key,)).fetchone()
        return int(row["record_id"])

    def claim_dedupe_key(self, dedupe_key: str, record_id: int, *,
                         durable: bool = True) -> int:
        with self._tx(durable=durable) as db:
            db.execute("INSERT INTO dedupe_claims (dedupe_key, record_id) VALUES (?, ?) "
                       "ON CONFLICT DO NOTHING", (dedupe_key, record_id))
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
                    ticket_id: str | None = None, *, fence: Fence | None = None) -> None:
        # Always durable (no ``durable`` parameter): a host call follows, and this commit's
        # fsync also puts every earlier commit on disk. It always changes the row (state or
        # action, updated_at), so it always writes a frame and syncs. With ``fence``, only
        # while that lease holds with its margin left (connector/store/leasing.py).
        with self._tx() as db:
            check_fence(db, fence, self.dialect)
            db.execute(
                "UPDATE messages SET state = ?, action = ?, pending = ?, "
                "ticket_id = COALESCE(?, ticket_id), updated_at = ? WHERE id = ?",
                (MessageState.PUSHING.value, action, json.dumps(pending),
                 self.ticket_param(ticket_id), _now(), record_id))

    def finish_message(self, record_id: int, state: MessageState, *, action: str | None = None,
                       ticket_id: str | None = None, error: str | None = None,
                       thread_ids: Iterable[str] = (), durable: bool = True,
                       fence: Fence | None = None) -> None:
        now = _now()
        with self._tx(durable=durable) as db:
            check_fence(db, fence, self.dialect, margin=0.0)
            db.execute(
                "UPDATE messages SET state = ?, action = COALESCE(?, action), "
                "ticket_id = COALESCE(?, ticket_id), error = ?, updated_at = ? WHERE id = ?",
                (state.value, action, self.ticket_param(ticket_id), error, now, record_id))
            if ticket_id is not None:
                row = db.execute("SELECT account FROM messages WHERE id = ?",
                                 (record_id,)).fetchone()
                db.executemany(
                    "INSERT INTO message_ids (message_id, ticket_id, direction, account, "
                    "created_at) VALUES (?, ?, 'in', ?, ?) ON CONFLICT DO NOTHING",
                    [(mid, self.ticket_param(ticket_id), row["account"], now)
                     for mid in thread_ids if mid])

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
                "INSERT INTO messages (account, ref, state, message_id, attempts, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING",
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
            db.execute("INSERT INTO dismissals (record_id, reason, dismissed_at) VALUES "
                       "(?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET reason = excluded.reason, "
                       "dismissed_at = excluded.dismissed_at", (record_id, reason, now))
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
    def ticket_for_message_ids(self, message_ids: Iterable[str]) -> str | None:
        return self._first_mapped(message_ids)

    def ticket_for_sent_message_ids(self, message_ids: Iterable[str],
                                    account: str) -> str | None:
        return self._first_mapped(message_ids, "AND direction = 'out' AND account = ?",
                                  (account,))

    def _first_mapped(self, message_ids: Iterable[str], condition: str = "",
                      params: tuple[str, ...] = ()) -> str | None:
        """The ticket of the first of ``message_ids`` (in their order) mapped to one."""
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        rows = self._query(
            f"SELECT message_id, ticket_id FROM message_ids WHERE message_id IN ({marks}) "
            f"{condition}", [*ids, *params])
        by_id = {r["message_id"]: r["ticket_id"] for r in rows}
        return next((ticket_in(by_id[mid]) for mid in ids if mid in by_id), None)

    def map_message_ids(self, ticket_id: str, message_ids: Iterable[str], *,
                        direction: str = "in", account: str | None = None,
                        replace: bool = False, durable: bool = True) -> None:
        """Map ids onto the ticket; an id already mapped keeps its ticket unless ``replace``."""
        now = _now()
        conflict = ("DO UPDATE SET ticket_id = excluded.ticket_id, direction = "
                    "excluded.direction, account = excluded.account, created_at = "
                    "excluded.created_at") if replace else "DO NOTHING"
        with self._tx(durable=durable) as db:
            db.executemany(
                "INSERT INTO message_ids (message_id, ticket_id, direction, account, "
                f"created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (message_id) {conflict}",
                [(mid, self.ticket_param(ticket_id), direction, account, now)
                 for mid in message_ids if mid])

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
            db.execute("INSERT INTO quarantine (record_id, raw, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (record_id) DO UPDATE SET raw = excluded.raw, "
                       "created_at = excluded.created_at", (record_id, raw, _now()))

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
    def _health(row: Row) -> AccountHealth:
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

    def _ensure_health(self, db: Connection, account: str) -> None:
        db.execute("INSERT INTO account_health (account, updated_at) VALUES (?, ?) "
                   "ON CONFLICT DO NOTHING", (account, _now()))

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
                       "consecutive_failures = CASE WHEN ? = 1 THEN 0 "
                       "ELSE consecutive_failures END, updated_at = ? WHERE account = ?",
                       (int(enabled), None if enabled else reason, int(enabled), _now(),
                        account))

    # -- communication log ----------------------------------------------------------------
    def log_event(self, *, level: str, kind: str, account: str | None, event: str,
                  detail: str | None = None, ref: str | None = None,
                  message_id: str | None = None, duration_ms: float | None = None) -> None:
        self._write_unsynced(
            "INSERT INTO comm_log (ts, level, kind, account, ref, message_id, event, detail, "
            "duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(_now(), level, kind, account, ref, message_id, event, detail, duration_ms)])

    def log_events(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Several entries (``log_event``'s keywords, ``ts`` optional) in one transaction:
        a message's helpdesk calls and its outcome cost one commit, not one each."""
        rows = [((e["ts"].astimezone(UTC).isoformat(timespec="microseconds") if e.get("ts")
                  else _now()), e["level"], e["kind"], e.get("account"), e.get("ref"),
                 e.get("message_id"), e["event"], e.get("detail"), e.get("duration_ms"))
                for e in entries]
        self._write_unsynced(
            "INSERT INTO comm_log (ts, level, kind, account, ref, message_id, event, detail, "
            "duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

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
        self._write_unsynced(
            "INSERT INTO connection_status (account, state, detail, since, server_event, "
            "server_event_at, pid, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account) DO UPDATE SET state = excluded.state, detail = "
            "excluded.detail, since = excluded.since, server_event = excluded.server_event, "
            "server_event_at = excluded.server_event_at, pid = excluded.pid, "
            "updated_at = excluded.updated_at",
            [(account, state, detail, since.isoformat(timespec="microseconds"), server_event,
              server_event_at.isoformat(timespec="microseconds") if server_event_at else None,
              pid, _now())])

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
        """account -> how many connection events named ``event`` the communication log holds
        since ``since`` (index ``comm_log_connection_event``)."""
        rows = self._query(
            "SELECT account, COUNT(*) AS n FROM comm_log WHERE kind = 'connection' "
            "AND event = ? AND ts >= ? GROUP BY account",
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
        # Not bounded by PostgreSQL's call deadline: on a big ledger this may take long.
        with self._tx(durable=False, bounded=False) as db:
            cur = db.execute(
                f"UPDATE messages SET pending = NULL, trace = NULL WHERE updated_at < ? "
                f"AND state IN ({marks}) AND (pending IS NOT NULL OR trace IS NOT NULL)",
                (cutoff, *finished))
        return cur.rowcount

    def purge_log(self, older_than: datetime) -> int:
        with self._tx(bounded=False) as db:  # may take long on a big ledger
            cur = db.execute("DELETE FROM comm_log WHERE ts < ?",
                             (older_than.astimezone(UTC).isoformat(timespec="microseconds"),))
        return cur.rowcount

    def account_figures(self, since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Per account: processed, failed, ignored, retrying, average processing seconds."""
        sql = (f"SELECT account, state, COUNT(*) AS n, "
               f"AVG({self.dialect.seconds_between('created_at', 'updated_at')}) AS secs "
               "FROM messages")
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
