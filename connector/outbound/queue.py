"""The durable outbound job queue: its own tables in the store's database (the SQLite file,
or PostgreSQL), reached through the small :class:`~connector.store.sql.Database` interface.

A job is written (committed durably: SQLite WAL with ``synchronous=FULL``, PostgreSQL with
``synchronous_commit`` on) before the webhook answers 202, so an accepted request survives a
crash. A job's life::

    queued -> working -> sending -> sent ----> (reported: note on the ticket)
       ^         |          |   \\-> failed --> (reported)
       |_________|          |-> (crash) uncertain --> (reported; `outbound retry` resends)
     (temporary failure,    \\-> queued again after a temporary SMTP error
      after a backoff)      skipped: nothing to send (duplicate, request withdrawn)

``working`` means "reading the helpdesk": a crash there loses nothing and the job is queued
again. ``sending`` means the SMTP transaction may have reached the provider: after a crash the
bridge cannot know, so it does not resend on its own (a PEC sent twice has legal weight); the
ticket gets a note and an operator decides with ``postmaster-bridge outbound retry``.

Workers claim jobs with a lease. A claim whose owner died (same host, process gone, or an
earlier incarnation of this process) or whose lease ran out is recovered. On PostgreSQL the
candidates are read ``FOR UPDATE SKIP LOCKED``: several bridge instances work one queue, each
claim taken by exactly one of them, none waiting for another's.

One send per (account, ticket, comment): ``claim_send`` makes the webhook, a Zendesk retry of
it, and the sweep agree on one job, whatever order they arrive in.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from connector.store.sql import Database, Row


class JobState(StrEnum):
    QUEUED = "queued"
    WORKING = "working"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"

    @property
    def open(self) -> bool:
        """Still to be sent (or being sent)."""
        return self in (JobState.QUEUED, JobState.WORKING, JobState.SENDING)


_JOB_COLUMNS = (
    "id, account, ticket_id, source, dedupe_key, state, attempts, generation, forced, "
    "next_attempt_at, owner, lease_until, payload, comment_id, message_id, recipient, subject, "
    "smtp_reply, error, reported, report_error, created_at, updated_at, sent_at"
)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    id: int
    account: str
    ticket_id: str
    source: str  # webhook | sweep | manual
    dedupe_key: str
    state: JobState
    attempts: int
    generation: int
    forced: bool
    next_attempt_at: float
    owner: str | None
    lease_until: float | None
    payload: dict[str, Any] | None
    comment_id: int | None
    message_id: str | None
    recipient: str | None
    subject: str | None
    smtp_reply: str | None
    error: str | None
    reported: bool
    report_error: str | None
    created_at: str
    updated_at: str
    sent_at: str | None

    @property
    def needs_report(self) -> bool:
        return self.state in (JobState.SENT, JobState.FAILED, JobState.UNCERTAIN) \
            and not self.reported

    @property
    def note_key(self) -> str:
        """Dedupe key of this job's ticket note (a new one after each manual retry)."""
        return f"pmb-outbound-{self.id}-{self.generation}-{self.state.value}"


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool  # False: a duplicate of an earlier delivery or job


@dataclass(frozen=True)
class InstalledRecord:
    kind: str
    key: str
    remote_id: str
    created: bool


def process_owner(nonce: str) -> str:
    """A worker's owner tag: host, process id, and a nonce for this incarnation."""
    return f"{socket.gethostname()}:{os.getpid()}:{nonce}"


def owner_dead(owner: str, me: str) -> bool:
    """True when ``owner`` surely no longer works on its jobs.

    Same host only: a process that is gone, or an earlier worker of this very process (what a
    restart inside one process, or a test simulating a crash, looks like). Another host's
    owners are judged by their lease alone.
    """
    if owner == me:
        return False
    try:
        host, pid_text, _nonce = owner.rsplit(":", 2)
        my_host, my_pid, _ = me.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != my_host:
        return False
    if str(pid) == my_pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class OutboundQueue:
    """Jobs, send claims, accepted deliveries and install records. Thread-safe. Its tables
    live in the store's database, opened through a connection (or pool) of its own: a path
    is the SQLite file; ``connector.store.factory.open_queue`` opens the configured one."""

    def __init__(self, db: Database | str | Path, *,
                 clock: Callable[[], float] | None = None) -> None:
        if isinstance(db, (str, Path)):
            from connector.store.sqlite import SQLiteFile

            self.db: Database = SQLiteFile(db)
        else:
            self.db = db
        self._clock = clock or time.time

    def now(self) -> float:
        return self._clock()

    def close(self) -> None:
        self.db.close()

    @property
    def _tx(self):  # noqa: ANN202 (the database's transaction)
        return self.db._tx

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return self.db._query(sql, params)

    def _ticket(self, ticket_id: Any) -> Any:
        return self.db.dialect.ticket_param(ticket_id)

    @staticmethod
    def _job(row: Row) -> Job:
        return Job(
            id=row["id"], account=row["account"], ticket_id=str(row["ticket_id"]),
            source=row["source"], dedupe_key=row["dedupe_key"], state=JobState(row["state"]),
            attempts=row["attempts"], generation=row["generation"], forced=bool(row["forced"]),
            next_attempt_at=row["next_attempt_at"], owner=row["owner"],
            lease_until=row["lease_until"],
            payload=json.loads(row["payload"]) if row["payload"] else None,
            comment_id=row["comment_id"], message_id=row["message_id"],
            recipient=row["recipient"], subject=row["subject"], smtp_reply=row["smtp_reply"],
            error=row["error"], reported=bool(row["reported"]),
            report_error=row["report_error"], created_at=row["created_at"],
            updated_at=row["updated_at"], sent_at=row["sent_at"],
        )

    # -- health ------------------------------------------------------------------------------
    def writable(self) -> bool:
        try:
            with self._tx() as db:
                db.execute("SELECT COUNT(*) FROM outbound_jobs WHERE id = -1")
            return True
        except self.db.errors:
            return False

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT state, COUNT(*) AS n FROM outbound_jobs GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    # -- enqueueing ----------------------------------------------------------------------------
    def enqueue(self, account: str, ticket_id: str, *, source: str, dedupe_key: str,
                payload: dict[str, Any] | None = None, digest: str | None = None) -> Enqueued:
        """Record a job durably; a repeated ``dedupe_key`` or ``digest`` returns the first job."""
        now = self.now()
        stamp = _iso_now()
        with self._tx() as db:
            if digest is not None:
                row = db.execute("SELECT job_id FROM outbound_deliveries WHERE digest = ?",
                                 (digest,)).fetchone()
                if row is not None:
                    return Enqueued(int(row["job_id"]), False)
            cursor = db.execute(
                "INSERT INTO outbound_jobs (account, ticket_id, source, dedupe_key, state, "
                "next_attempt_at, payload, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (account, self._ticket(str(ticket_id)), source, dedupe_key,
                 JobState.QUEUED.value, now,
                 json.dumps(payload, ensure_ascii=False) if payload is not None else None,
                 stamp, stamp))
            created = cursor.rowcount == 1
            job_id = int(db.execute("SELECT id FROM outbound_jobs WHERE dedupe_key = ?",
                                    (dedupe_key,)).fetchone()["id"])
            if digest is not None:
                db.execute("INSERT INTO outbound_deliveries (digest, job_id, received_at) "
                           "VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (digest, job_id, now))
        return Enqueued(job_id, created)

    def forget_deliveries(self, older_than: float) -> int:
        """Drop replay digests older than the signature window (they cannot verify anyway)."""
        with self._tx() as db:
            return db.execute("DELETE FROM outbound_deliveries WHERE received_at < ?",
                              (older_than,)).rowcount

    def has_open_job(self, account: str, ticket_id: str) -> bool:
        marks = ",".join("?" * 3)
        rows = self._rows(
            f"SELECT 1 FROM outbound_jobs WHERE account = ? AND ticket_id = ? AND state IN "
            f"({marks}) LIMIT 1",
            (account, self._ticket(str(ticket_id)), JobState.QUEUED.value,
             JobState.WORKING.value, JobState.SENDING.value))
        return bool(rows)

    # -- claiming ------------------------------------------------------------------------------
    def recover(self, me: str) -> list[Job]:
        """Take back jobs whose worker died or whose lease ran out. Returns the jobs that were
        interrupted while sending (now UNCERTAIN)."""
        now = self.now()
        stamp = _iso_now()
        uncertain: list[int] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, state, owner, lease_until FROM outbound_jobs WHERE owner IS NOT NULL"
                + self.db.dialect.skip_locked).fetchall()
            for row in rows:
                expired = row["lease_until"] is not None and row["lease_until"] < now
                if not expired and not owner_dead(row["owner"], me):
                    continue
                state = JobState(row["state"])
                if state == JobState.WORKING:
                    db.execute("UPDATE outbound_jobs SET state = ?, owner = NULL, "
                               "lease_until = NULL, updated_at = ? WHERE id = ?",
                               (JobState.QUEUED.value, stamp, row["id"]))
                elif state == JobState.SENDING:
                    db.execute(
                        "UPDATE outbound_jobs SET state = ?, owner = NULL, lease_until = NULL, "
                        "reported = 0, next_attempt_at = ?, error = ?, updated_at = ? "
                        "WHERE id = ?",
                        (JobState.UNCERTAIN.value, now,
                         "the bridge stopped during the SMTP transaction; the provider may or "
                         "may not have accepted the message", stamp, row["id"]))
                    uncertain.append(row["id"])
                else:
                    db.execute("UPDATE outbound_jobs SET owner = NULL, lease_until = NULL "
                               "WHERE id = ?", (row["id"],))
        return [job for job_id in uncertain if (job := self.job(job_id)) is not None]

    def claim_next(self, me: str, lease: float, *,
                   can_send: Callable[[str], bool] = lambda _account: True) -> Job | None:
        """The next due job, claimed by ``me``: a report still owed first, then a send whose
        account has a free rate slot. Claiming a send moves it to WORKING and counts an
        attempt."""
        now = self.now()
        due = (f"SELECT {_JOB_COLUMNS} FROM outbound_jobs WHERE owner IS NULL AND "
               "next_attempt_at <= ? AND (state = ? OR (state IN (?, ?, ?) AND reported = 0)) "
               "ORDER BY CASE WHEN state = ? THEN 1 ELSE 0 END, next_attempt_at, id LIMIT 200")
        params = (now, JobState.QUEUED.value, JobState.SENT.value, JobState.FAILED.value,
                  JobState.UNCERTAIN.value, JobState.QUEUED.value)
        if not self._rows(due, params):
            return None  # the usual answer, without taking a write lock
        # One transaction: the candidates are locked as they are read (PostgreSQL: rows
        # another instance is claiming are skipped, not waited for; SQLite: the IMMEDIATE
        # transaction holds the file), and the first one this worker may send is claimed.
        with self._tx() as db:
            rows = db.execute(due + self.db.dialect.skip_locked, params).fetchall()
            claimed: int | None = None
            for row in rows:
                job = self._job(row)
                if job.state == JobState.QUEUED and not can_send(job.account):
                    continue
                new_state = JobState.WORKING if job.state == JobState.QUEUED else job.state
                attempts = job.attempts + (1 if job.state == JobState.QUEUED else 0)
                if db.execute(
                        "UPDATE outbound_jobs SET owner = ?, lease_until = ?, state = ?, "
                        "attempts = ?, updated_at = ? WHERE id = ? AND owner IS NULL AND "
                        "state = ?", (me, now + lease, new_state.value, attempts, _iso_now(),
                                      job.id, job.state.value)).rowcount:
                    claimed = job.id
                    break
        return self.job(claimed) if claimed is not None else None

    def renew(self, job_id: int, me: str, lease: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbound_jobs SET lease_until = ? WHERE id = ? AND owner = ?",
                       (self.now() + lease, job_id, me))

    def claim_send(self, job: Job, comment_id: int) -> int | None:
        """Make ``job`` the one that sends ``comment_id`` of its ticket.

        Returns None when it is (the comment is free, or its earlier job failed for sure, or
        the job was forced by an operator), else the id of the job that holds it.
        """
        ticket = self._ticket(job.ticket_id)
        with self._tx() as db:
            db.execute("UPDATE outbound_jobs SET comment_id = ? WHERE id = ?",
                       (comment_id, job.id))
            # Claim first, read after: two instances claiming at once meet on the primary key
            # (the second waits for the first's commit, then reads its claim).
            if db.execute("INSERT INTO outbound_sends (account, ticket_id, comment_id, job_id) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                          (job.account, ticket, comment_id, job.id)).rowcount == 1:
                return None
            row = db.execute(
                "SELECT s.job_id, j.state FROM outbound_sends s LEFT JOIN outbound_jobs j "
                "ON j.id = s.job_id WHERE s.account = ? AND s.ticket_id = ? AND s.comment_id = ?"
                + (" FOR UPDATE OF s" if self.db.dialect.for_update else ""),
                (job.account, ticket, comment_id)).fetchone()
            holder = int(row["job_id"])
            if holder == job.id:
                return None
            free = row["state"] is None or row["state"] == JobState.FAILED.value
            if free or job.forced:
                db.execute("UPDATE outbound_sends SET job_id = ? WHERE account = ? AND "
                           "ticket_id = ? AND comment_id = ?",
                           (job.id, job.account, ticket, comment_id))
                return None
            return holder

    # -- transitions ---------------------------------------------------------------------------
    def _update(self, job_id: int, me: str | None, **values: Any) -> None:
        values["updated_at"] = _iso_now()
        assignments = ", ".join(f"{name} = ?" for name in values)
        params: list[Any] = [v.value if isinstance(v, JobState) else v for v in values.values()]
        sql = f"UPDATE outbound_jobs SET {assignments} WHERE id = ?"
        params.append(job_id)
        if me is not None:
            sql += " AND owner = ?"
            params.append(me)
        with self._tx() as db:
            if db.execute(sql, params).rowcount != 1:
                raise LookupError(f"outbound job {job_id} is not held by {me}")

    def begin_send(self, job_id: int, me: str, *, message_id: str, recipient: str,
                   subject: str) -> None:
        """Durably mark the point after which a crash leaves the outcome unknown."""
        self._update(job_id, me, state=JobState.SENDING, message_id=message_id,
                     recipient=recipient, subject=subject, error=None)

    def describe(self, job_id: int, me: str, *, message_id: str, recipient: str,
                 subject: str) -> None:
        self._update(job_id, me, message_id=message_id, recipient=recipient, subject=subject)

    def mark_sent(self, job_id: int, me: str, smtp_reply: str) -> None:
        # The worker keeps its claim to write the ticket note next; after a crash, recover()
        # releases it and the note is written by whoever claims the job then.
        self._update(job_id, me, state=JobState.SENT, smtp_reply=smtp_reply, error=None,
                     sent_at=_iso_now(), reported=0, next_attempt_at=self.now())

    def mark_failed(self, job_id: int, me: str, error: str) -> None:
        self._update(job_id, me, state=JobState.FAILED, error=error, reported=0,
                     next_attempt_at=self.now())

    def mark_uncertain(self, job_id: int, me: str, error: str) -> None:
        self._update(job_id, me, state=JobState.UNCERTAIN, error=error, reported=0,
                     next_attempt_at=self.now())

    def mark_skipped(self, job_id: int, me: str, reason: str) -> None:
        self._update(job_id, me, state=JobState.SKIPPED, error=reason, reported=1, owner=None,
                     lease_until=None)

    def retry_later(self, job_id: int, me: str, error: str, at: float) -> None:
        self._update(job_id, me, state=JobState.QUEUED, error=error, next_attempt_at=at,
                     owner=None, lease_until=None)

    def mark_reported(self, job_id: int, me: str, error: str | None = None) -> None:
        self._update(job_id, me, reported=1, report_error=error, owner=None, lease_until=None)

    def report_later(self, job_id: int, me: str, error: str, at: float) -> None:
        self._update(job_id, me, report_error=error, next_attempt_at=at, owner=None,
                     lease_until=None)

    def requeue(self, job_id: int) -> Job:
        """An operator's retry: send again, even over an earlier send of the same comment."""
        job = self.job(job_id)
        if job is None:
            raise LookupError(f"no outbound job {job_id}")
        if job.state.open:
            raise ValueError(f"job {job_id} is {job.state.value}; it is not finished yet")
        if job.state == JobState.SENT:
            raise ValueError(f"job {job_id} was sent ({job.message_id}); applying the macro "
                             "again sends a new message")
        keep_id = job.message_id if job.state == JobState.UNCERTAIN else None
        self._update(job_id, None, state=JobState.QUEUED, attempts=0,
                     generation=job.generation + 1, forced=1, next_attempt_at=self.now(),
                     owner=None, lease_until=None, reported=0, report_error=None,
                     message_id=keep_id, error=None)
        return self.job(job_id)  # type: ignore[return-value]

    # -- reading -------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job | None:
        rows = self._rows(f"SELECT {_JOB_COLUMNS} FROM outbound_jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def jobs(self, *, state: str | None = None, account: str | None = None,
             ticket_id: str | None = None, limit: int = 50) -> list[Job]:
        clauses, params = [], []
        for column, value in (("state", state), ("account", account),
                              ("ticket_id", self._ticket(ticket_id))):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT {_JOB_COLUMNS} FROM outbound_jobs{where} ORDER BY id DESC "
                          "LIMIT ?", (*params, limit))
        return [self._job(r) for r in rows]

    def next_due_at(self) -> float | None:
        rows = self._rows(
            "SELECT MIN(next_attempt_at) AS t FROM outbound_jobs WHERE owner IS NULL AND "
            "(state = ? OR (state IN (?, ?, ?) AND reported = 0))",
            (JobState.QUEUED.value, JobState.SENT.value, JobState.FAILED.value,
             JobState.UNCERTAIN.value))
        value = rows[0]["t"] if rows else None
        return float(value) if value is not None else None

    def thread_message_ids(self, ticket_id: str, limit: int = 20) -> list[tuple[str, str]]:
        """(message_id, direction) of the ticket's known mail, oldest first.

        Reads the store's ``message_ids`` table (same file): the store records every
        Message-ID it ticketed ('in') and the bridge sent ('out').
        """
        rows = self._rows(
            "SELECT message_id, direction FROM message_ids WHERE ticket_id = ? ORDER BY "
            f"created_at DESC, {self.db.dialect.insertion_order} DESC LIMIT ?",
            (self._ticket(str(ticket_id)), limit))
        return [(r["message_id"], r["direction"]) for r in reversed(rows)]

    # -- install records -----------------------------------------------------------------------
    def record_installed(self, kind: str, key: str, remote_id: str, *, created: bool) -> None:
        with self._tx() as db:
            row = db.execute("SELECT created FROM outbound_installed WHERE kind = ? AND key = ?",
                             (kind, key)).fetchone()
            was_created = bool(row["created"]) if row is not None else False
            db.execute(
                "INSERT INTO outbound_installed (kind, key, remote_id, created, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET remote_id = "
                "excluded.remote_id, created = excluded.created, updated_at = excluded.updated_at",
                (kind, key, str(remote_id), int(created or was_created), _iso_now()))

    def installed(self, kind: str | None = None) -> list[InstalledRecord]:
        sql, params = "SELECT * FROM outbound_installed", ()
        if kind is not None:
            sql, params = sql + " WHERE kind = ?", (kind,)
        return [InstalledRecord(r["kind"], r["key"], r["remote_id"], bool(r["created"]))
                for r in self._rows(sql + " ORDER BY kind, key", params)]

    def forget_installed(self, kind: str, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbound_installed WHERE kind = ? AND key = ?", (kind, key))

    def set_webhook_secret(self, account: str, webhook_id: str, secret: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO outbound_secrets (account, webhook_id, secret, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET webhook_id = "
                       "excluded.webhook_id, secret = excluded.secret, updated_at = "
                       "excluded.updated_at", (account, webhook_id, secret, _iso_now()))

    def webhook_secret(self, account: str) -> str | None:
        rows = self._rows("SELECT secret FROM outbound_secrets WHERE account = ?", (account,))
        return rows[0]["secret"] if rows else None

    def forget_webhook_secret(self, account: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbound_secrets WHERE account = ?", (account,))
