"""The store interface: everything the bridge must remember across restarts.

One interface that SQLite (default, connector/store/sqlite.py) and PostgreSQL
(connector/store/postgres.py) both serve; callers open one with
``connector.store.factory.open_store`` and type against :class:`Store`. Records are plain
dataclasses; the store never returns driver rows.

Durability: every write is durable when it returns, unless the caller passes
``durable=False``. Such a write is atomic and survives a process crash, but a power cut may
take it back, and then everything committed after it too (what survives is always a prefix of
the commits, as after a process crash at that point). ``make_durable()`` is the barrier that
puts everything committed so far on disk; a durable write is one too for what preceded it.
Callers mark a write non-durable only when a durable write or the barrier comes before anything
outside the store acts on it. (SQLite: ``synchronous=NORMAL`` in WAL mode; PostgreSQL:
``SET LOCAL synchronous_commit = off``, which has the same prefix property.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol


class MessageState(StrEnum):
    """Where a fetched message stands. Only terminal states let the mail leave the server."""

    RECEIVED = "received"  # seen, nothing sent to the host yet
    PUSHING = "pushing"  # a host call may be under way: on restart, look before repeating
    DONE = "done"  # its effect is on the host (ticket, comment or note)
    IGNORED = "ignored"  # deliberately not ticketed (filter, auto-reply, loop, duplicate)
    HELD = "held"  # over the per-sender daily cap: in the held folder until `held release`
    FAILED = "failed"  # permanent failure: the mail belongs in the error folder
    SKIPPED = "skipped"  # present before the first sync with initial_sync: skip_existing
    ORPHANED = "orphaned"  # unfinished when a UIDVALIDITY change renumbered its mail away

    @property
    def terminal(self) -> bool:
        return self in (MessageState.DONE, MessageState.IGNORED, MessageState.FAILED,
                        MessageState.SKIPPED, MessageState.ORPHANED, MessageState.HELD)


@dataclass(frozen=True)
class MessageRecord:
    id: int
    account: str
    ref: str
    state: MessageState
    dedupe_key: str | None
    message_id: str | None
    sha256: str | None
    sender: str | None
    subject: str | None
    action: str | None
    ticket_id: str | None
    attempts: int
    error: str | None
    pending: dict[str, Any] | None  # what a PUSHING message was sending (for crash recovery)
    trace: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Dismissal:
    """An admin's note that a failed message was handled by hand (``errors dismiss``): it
    leaves ``errors list`` but stays in the ledger, with who-knows-why in ``reason``."""

    record_id: int
    reason: str
    dismissed_at: datetime


@dataclass(frozen=True)
class MailboxMark:
    """What we know about a remote folder (UIDVALIDITY, and whether its baseline was taken)."""

    account: str
    folder: str
    uidvalidity: int | None
    baseline_taken: bool


@dataclass(frozen=True)
class AccountHealth:
    account: str
    enabled: bool = True
    consecutive_failures: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    disabled_reason: str | None = None
    backlog: int | None = None


LEVELS = ("debug", "info", "notice", "warning", "error")


@dataclass(frozen=True)
class LogEntry:
    """One communication log entry. ``kind`` is ``connection``, ``message`` or ``host`` (a
    helpdesk call made for the message, at level debug)."""

    id: int
    ts: datetime
    level: str
    kind: str
    account: str | None
    ref: str | None
    message_id: str | None
    event: str
    detail: str | None
    duration_ms: float | None

    @staticmethod
    def levels_at_least(level: str) -> tuple[str, ...]:
        index = LEVELS.index(level) if level in LEVELS else 0
        return LEVELS[index:]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts.isoformat(), "level": self.level,
                "kind": self.kind, "account": self.account, "ref": self.ref,
                "message_id": self.message_id, "event": self.event, "detail": self.detail,
                "duration_ms": self.duration_ms}


@dataclass(frozen=True)
class Lease:
    """Who works a resource (``account:<name>``, or ``sweep`` for the outbound sweep), judged
    by the database's clock: ``expires_in`` is seconds left by it when read (<= 0: expired,
    anyone may take it). ``epoch`` grows with every new holder: the fencing token an effect is
    committed under (connector.service.leases)."""

    resource: str
    holder: str
    epoch: int
    acquired_at: datetime
    renewed_at: datetime
    expires_in: float

    @property
    def live(self) -> bool:
        return self.expires_in > 0


@dataclass(frozen=True)
class Fence:
    """The lease an instance works under, checked in the transaction that commits an effect
    (``set_pending``, ``finish_message``): the write is refused unless ``holder`` still holds
    ``resource`` at ``epoch`` with more than ``margin`` seconds left by the database's clock."""

    resource: str
    holder: str
    epoch: int
    margin: float = 0.0


@dataclass(frozen=True)
class InstanceRecord:
    """A running ``run`` process, as its heartbeat registered it."""

    instance: str
    host: str
    pid: int
    url: str | None
    started_at: datetime
    heartbeat_at: datetime
    expires_in: float

    @property
    def live(self) -> bool:
        return self.expires_in > 0


class Store(Protocol):
    #: "sqlite" or "postgresql".
    engine: str
    #: What messages name the store by: the SQLite file, or the DSN without its password.
    path: Any
    #: The engine's exception classes (a store that fails raises one of these).
    errors: tuple[type[BaseException], ...]

    def close(self) -> None: ...

    def writable(self) -> bool:
        """True when a write transaction can be committed (for health checks)."""
        ...

    def quick_check(self) -> list[str]:
        """Damage the engine can see (SQLite's quick_check); [] when sound."""
        ...

    # -- schema ----------------------------------------------------------------------------
    def applied_migrations(self) -> list[int]: ...

    def pending_migrations(self) -> list[Any]: ...

    def migrate(self) -> list[Any]:
        """Apply the pending schema migrations (connector/store/migrations.py)."""
        ...

    def make_durable(self) -> None:
        """Barrier: everything committed so far is on disk when this returns. Nearly free
        when nothing but durable writes was committed since the last barrier."""
        ...

    # -- ledger ---------------------------------------------------------------------------
    def get_message(self, account: str, ref: str) -> MessageRecord | None: ...

    def apply_retention(self, older_than: datetime) -> int:
        """Finished records older than ``older_than`` drop their stored request and trace;
        what later mails need (dedupe, Message-ID map, sender counts) stays."""
        ...

    def vacuum(self) -> tuple[int, int]:
        """Return freed space to the file system; (size before, size after) in bytes."""
        ...

    def get_message_by_id(self, record_id: int) -> MessageRecord | None: ...

    def ref_states(self, account: str, refs: Iterable[str]) -> dict[str, MessageState]:
        """The recorded state of each of ``refs`` that has a record."""
        ...

    def begin_message(self, account: str, ref: str, *, sha256: str | None,
                      durable: bool = True) -> MessageRecord:
        """Create the record in RECEIVED state, or return the existing one; counts an attempt."""
        ...

    def describe_message(self, record_id: int, *, dedupe_key: str | None,
                         message_id: str | None, sender: str | None, subject: str | None,
                         trace: Mapping[str, Any] | None, mail_day: date | None = None,
                         sender_proven: bool = False, durable: bool = True) -> int | None:
        """Record what the message is (``mail_day``: the UTC day of its Date) and claim its
        dedupe key in one transaction; returns the record id holding the key."""
        ...

    def release_dedupe_key(self, dedupe_key: str, record_id: int, *,
                           durable: bool = True) -> None:
        """Give a claim back (its holder failed permanently), so a later copy can try."""
        ...

    def claim_dedupe_key(self, dedupe_key: str, record_id: int, *,
                         durable: bool = True) -> int:
        """Atomically claim ``dedupe_key`` for this record; returns the record id that holds it."""
        ...

    def set_pending(self, record_id: int, action: str, pending: dict[str, Any],
                    ticket_id: str | None = None, *, fence: Fence | None = None) -> None:
        """Mark PUSHING and store what is being sent, durably (always: no ``durable``
        parameter), before the host call. With ``fence``, only while that lease holds
        (else :class:`connector.errors.LeaseLostError` and nothing is written)."""
        ...

    def finish_message(self, record_id: int, state: MessageState, *, action: str | None = None,
                       ticket_id: str | None = None, error: str | None = None,
                       thread_ids: Iterable[str] = (), durable: bool = True,
                       fence: Fence | None = None) -> None:
        """Terminal state, plus the Message-IDs to map onto the ticket, in one transaction
        (with ``fence``, only while that lease holds, as for ``set_pending``)."""
        ...

    def record_failure(self, record_id: int, error: str, *, durable: bool = True) -> None:
        """A transient failure: keep the state, remember the error (the mail stays in place)."""
        ...

    def unfinished_with_message_ids(self, message_ids: Iterable[str], *,
                                    exclude_id: int) -> MessageRecord | None:
        """A record not yet finished (received or pushing) whose Message-ID is one of
        ``message_ids``: the parent a reply must wait for."""
        ...

    def mark_skipped(self, account: str, refs: Iterable[str],
                     message_ids: dict[str, str | None] | None = None) -> None: ...

    def orphan_unfinished(self, account: str, ref_prefix: str) -> int: ...

    def skipped_message_ids(self, account: str) -> set[str]: ...

    def messages(self, account: str | None = None) -> list[MessageRecord]: ...

    def sender_count_since(self, sender: str, since: datetime,
                           exclude_id: int | None = None) -> int: ...

    def sender_count_on(self, sender: str, day: date, exclude_id: int | None = None, *,
                        proven: bool | None = None) -> int:
        """Mails from ``sender`` whose Date falls on ``day`` (UTC), but ``exclude_id``; with
        ``proven``, only those whose sender was (True) or was not (False) authenticated."""
        ...

    def failed_messages(self, account: str | None = None, *,
                        include_dismissed: bool = False) -> list[MessageRecord]:
        """Messages in FAILED state, oldest first; those an admin dismissed only on request."""
        ...

    def find_messages(self, key: str) -> list[MessageRecord]:
        """The records of a Message-ID (with or without <>) or a ref, oldest first: one mail
        fetched by two accounts, or kept twice, has several."""
        ...

    def dismiss_message(self, record_id: int, reason: str) -> Dismissal:
        """Record that an admin handled a failed message by hand (a replay later lifts it)."""
        ...

    def dismissals(self, record_ids: Iterable[int]) -> dict[int, Dismissal]: ...

    def messages_in(self, state: MessageState,
                    account: str | None = None) -> list[MessageRecord]: ...

    # -- quarantine: the raw bytes of failed and held mail, for replay and release --------
    def quarantine(self, record_id: int, raw: bytes, *, durable: bool = True) -> None: ...

    def quarantined_raw(self, record_id: int) -> bytes | None: ...

    def reopen_message(self, record_id: int) -> None:
        """Put a failed or held message back to RECEIVED (PUSHING when it was sending)."""
        ...

    def release_quarantine(self, record_id: int) -> None: ...

    # -- threading ------------------------------------------------------------------------
    def ticket_for_message_ids(self, message_ids: Iterable[str]) -> str | None:
        """The ticket of the first of ``message_ids`` (in order) that we have seen or sent."""
        ...

    def ticket_for_sent_message_ids(self, message_ids: Iterable[str],
                                    account: str) -> str | None:
        """Like ticket_for_message_ids, but only ids of mail sent from ``account`` (what a PEC
        receipt arriving on that account can certify)."""
        ...

    def map_message_ids(self, ticket_id: str, message_ids: Iterable[str], *,
                        direction: str = "in", account: str | None = None,
                        replace: bool = False, durable: bool = True) -> None: ...

    def is_own_message_id(self, message_id: str) -> bool:
        """True for Message-IDs of mail the bridge itself sent."""
        ...

    # -- communication log ------------------------------------------------------------------
    def log_event(self, *, level: str, kind: str, account: str | None, event: str,
                  detail: str | None = None, ref: str | None = None,
                  message_id: str | None = None, duration_ms: float | None = None) -> None:
        """One entry; a diary, not a record of effects: written without an fsync."""
        ...

    def log_events(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Several entries (``log_event``'s keywords, ``ts`` optional) in one write."""
        ...

    def log_entries(self, *, account: str | None = None, min_level: str | None = None,
                    since: datetime | None = None, message: str | None = None,
                    limit: int = 1000) -> list[LogEntry]: ...

    def purge_log(self, older_than: datetime) -> int: ...

    def count_events_since(self, event: str, since: datetime) -> dict[str, int]: ...

    # -- accounts: health, connection status, figures --------------------------------------
    def get_health(self, account: str) -> AccountHealth: ...

    def all_health(self) -> list[AccountHealth]: ...

    def record_success(self, account: str, backlog: int | None = None) -> None: ...

    def record_connection_failure(self, account: str, error: str) -> int: ...

    def set_account_enabled(self, account: str, enabled: bool,
                            reason: str | None = None) -> None: ...

    def save_connection_status(self, account: str, *, state: str, detail: str | None,
                               since: datetime, server_event: str | None,
                               server_event_at: datetime | None, pid: int) -> None: ...

    def connection_statuses(self) -> dict[str, dict[str, Any]]: ...

    def account_figures(self, since: datetime | None = None) -> dict[str, dict[str, Any]]: ...

    # -- mailbox state --------------------------------------------------------------------
    def get_mailbox_mark(self, account: str, folder: str) -> MailboxMark | None: ...

    def set_mailbox_mark(self, account: str, folder: str, *, uidvalidity: int | None,
                         baseline_taken: bool) -> None: ...

    # -- instances and leases (connector.service.leases) -----------------------------------
    def heartbeat_instance(self, instance: str, *, ttl: float, host: str, pid: int,
                           url: str | None = None) -> None:
        """Register ``instance`` as live for ``ttl`` seconds from the database's now."""
        ...

    def forget_instance(self, instance: str) -> None: ...

    def instances(self) -> list[InstanceRecord]:
        """Every registered instance, live or not (``expires_in`` says which)."""
        ...

    def acquire_lease(self, resource: str, holder: str, ttl: float, *,
                      dead: Iterable[str] = ()) -> Lease | None:
        """Take ``resource`` for ``ttl`` seconds when it is free, expired (by the database's
        clock), already ours (renewed, same epoch) or held by one of ``dead`` (holders known
        to be gone); a new holder gets the next epoch. None when another holds it."""
        ...

    def renew_leases(self, holder: str, epochs: Mapping[str, int],
                     ttl: float) -> dict[str, Lease]:
        """Extend each resource ``holder`` still holds at the given epoch (expired or not, as
        long as nobody took it since); those missing from the answer are lost."""
        ...

    def release_lease(self, resource: str, holder: str, epoch: int) -> None:
        """Hand a lease back: it has no holder and expires now; the next holder gets the
        next epoch."""
        ...

    def leases(self) -> list[Lease]: ...
