"""One message through the stages: understand (connector.understand) -> host, with the ledger.

What a mail is and what it should do is decided by :func:`connector.understand.understand`,
the path ``filters test`` shows too; this module carries the decision out: the ledger record,
the helpdesk calls, and the outcome the runner turns into a mailbox move.

Crash safety rests on one rule: before any host call that has an effect, the store holds
(durably) what is being sent (``MessageState.PUSHING`` with its pending request). After a
restart a PUSHING message is never simply sent again: a ticket create is replayed
byte-identically under its Idempotency-Key, or looked up by external_id once the key may have
expired; a comment is looked up by its dedupe key on the ticket first.

Only that PUSHING record needs its own fsync: every other ledger write here is made with
``durable=False`` (no fsync). The store's commits survive a power cut as a prefix of their
order, which is what a SIGKILL at that point would leave and recovery already handles, and the
durable ``set_pending`` before each host call syncs everything committed before it. What rests
on the later writes (the mail moved or deleted on the server, an exit status to the MTA) is
preceded by ``store.make_durable()`` in the runner and the CLI.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from html import escape
from pathlib import Path
from typing import Any, cast

from connector.config import AccountConfig, HostConfig
from connector.decide import Action, Decider, Decision, FilterVerdict
from connector.decide.pec import PecPlan
from connector.errors import (
    CertificateError,
    LeaseLostError,
    PermanentHostError,
    StoreCorruptError,
    TicketClosedError,
    TransientHostError,
    UnreadableMail,
)
from connector.fetch.base import is_too_large
from connector.filters import FilterChain
from connector.filters.classifiers.loop import mail_day
from connector.hosts.base import Comment, HostAdapter, NewTicket, ReplayableCreates, Upload
from connector.mail.html import html_to_text, sanitize_html
from connector.mail.mimetree import TooManyPartsDefect
from connector.mail.model import ParsedMessage
from connector.mail.quoting import new_text
from connector.service.filtering import StoreLookups
from connector.service.hostcalls import HostCallRecorder
from connector.service.metrics import Metrics
from connector.store.base import Fence, MessageRecord, MessageState, Store
from connector.understand import Prepared, Rules, Understanding, understand

log = logging.getLogger("connector.pipeline")

#: Helpdesks cut long comment bodies (Zendesk at 64 kB, without an error); we cut earlier,
#: say so, and attach the original message so nothing is lost.
MAX_BODY_CHARS = 60_000
#: How long a reply waits for the message it answers to reach the helpdesk.
PARENT_WAIT_SECONDS = 6 * 3600
#: After this many unexpected (non-typed) errors on one message, it goes to the error folder.
MAX_UNEXPECTED_ATTEMPTS = 5


class Outcome(StrEnum):
    TICKETED = "ticketed"
    FOLLOWED_UP = "followed_up"
    NOTED = "noted"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    HELD = "held"  # over the per-sender cap: in the held folder until `held release`
    RETRY = "retry"  # transient failure: the mail stays where it is for the next pass
    SKIPPED = "skipped"
    DEFERRED = "deferred"  # a PEC receipt held to share one ticket update: flush_deferred()

    @property
    def mailbox_action(self) -> str | None:
        """What the fetcher does with the mail: 'processed', 'error', 'held', 'ignored' or
        nothing."""
        if self in (Outcome.FAILED,):
            return "error"
        if self in (Outcome.RETRY, Outcome.SKIPPED, Outcome.DEFERRED):
            return None
        if self is Outcome.HELD:
            return "held"
        if self is Outcome.IGNORED:
            return "ignored"
        return "processed"


#: The level of a message's one log line (INFO for the rest).
_LOG_LEVELS = {Outcome.FAILED: logging.ERROR, Outcome.RETRY: logging.WARNING}

_STATE_OUTCOME = {MessageState.FAILED: Outcome.FAILED, MessageState.SKIPPED: Outcome.SKIPPED,
                  MessageState.IGNORED: Outcome.IGNORED, MessageState.ORPHANED: Outcome.SKIPPED,
                  MessageState.HELD: Outcome.HELD}
_ACTION_OUTCOME = {"new_ticket": Outcome.TICKETED, "follow_up": Outcome.FOLLOWED_UP,
                   "internal_note": Outcome.NOTED, "duplicate": Outcome.DUPLICATE}


def outcome_of(record: MessageRecord) -> Outcome:
    """The outcome a terminal record stands for (used when the mail is seen again)."""
    if record.state in _STATE_OUTCOME:
        return _STATE_OUTCOME[record.state]
    if record.action == "duplicate":
        return Outcome.DUPLICATE
    return _ACTION_OUTCOME.get(record.action or "", Outcome.TICKETED)


@dataclass
class Result:
    outcome: Outcome
    record_id: int | None = None
    ticket_id: str | None = None
    reason: str = ""
    decision: Decision | None = None
    already_recorded: bool = False  # seen before: nothing was done this time

    @property
    def ignored_as(self) -> str | None:
        """Why an IGNORED mail was ignored (summaries count by it)."""
        if self.outcome is not Outcome.IGNORED:
            return None
        if self.decision is not None and self.decision.ignored_as is not None:
            return self.decision.ignored_as.value
        return "closed_ticket" if self.decision is not None else "other"


def default_rules(host: HostConfig) -> Rules:
    """No YAML filters, default filter settings: the classifiers alone."""
    return Rules(FilterChain(()), {}, host)


@dataclass
class MessageContext:
    """Identity of the message being processed, for every log line."""

    account: str
    ref: str
    message_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        mid = f" message-id=<{self.message_id}>" if self.message_id else ""
        return f"account={self.account} ref={self.ref}{mid}"


@dataclass
class Job:
    """One message on its way: what it was understood to be, and its ledger record."""

    ctx: MessageContext
    record: MessageRecord
    understanding: Understanding
    holder: int | None = None  # the record that holds this mail's dedupe key

    @property
    def message(self) -> ParsedMessage:
        """As fetched (the PEC envelope, the staff member's forward)."""
        return self.understanding.message

    @property
    def content(self) -> ParsedMessage:
        """What the ticket shows (the certified original, the forwarded mail)."""
        return self.understanding.content

    @property
    def verdict(self) -> FilterVerdict:
        return self.understanding.verdict

    @property
    def plan(self) -> PecPlan | None:
        return self.understanding.plan

    @property
    def decision(self) -> Decision:
        return self.understanding.decision

    @property
    def is_receipt(self) -> bool:
        return self.understanding.is_receipt


#: A record unfinished and untouched this long has no worker any more: its copy of the mail
#: was renumbered away (UIDVALIDITY) or its account is gone. Another copy may take over.
ORPHAN_SECONDS = 30 * 60


def _orphaned(record: MessageRecord) -> bool:
    return (datetime.now(UTC) - record.updated_at).total_seconds() > ORPHAN_SECONDS


def ticket_thread_ids(job: Job) -> list[str]:
    """The Message-IDs that lead later mail to this mail's ticket: its own (the envelope's
    and the shown message's, unless PEC certified none of them) and the PEC plan's."""
    ids = [job.content.message_id, job.message.message_id]
    if job.plan is not None and job.plan.ids_are_claims:
        ids = []
    if job.plan is not None:
        ids += job.plan.thread_ids
    return list(dict.fromkeys(i for i in ids if i))


def _incomplete(message: ParsedMessage) -> bool:
    """True when the parse left parts of the mail out (over the MIME part limit): the
    original is then attached so nothing is lost."""
    return TooManyPartsDefect.__name__ in message.defects


def _paragraphs_html(text: str) -> str:
    """Plain text as HTML paragraphs, escaped (for a trimmed reply shown above its quote)."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return "".join(f"<p>{escape(b).replace(chr(10), '<br>')}</p>" for b in blocks)


def _eml_upload(prefix: str, message: ParsedMessage) -> Upload:
    name = f"{prefix}-{message.message_id or message.sha256[:16]}"
    safe = "".join(c if c.isalnum() or c in "._-@" else "_" for c in name)[:110]
    return Upload(f"{safe}.eml", "message/rfc822", message.raw, known_sha256=message.sha256,
                  pinned=True)


class Pipeline:
    """Processes messages of one account. Safe to call again on the same mail after a crash."""

    def __init__(self, account: AccountConfig, host_config: HostConfig, store: Store,
                 host: HostAdapter, rules: Rules | None = None,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.host_config = host_config
        self.store = store
        # Every helpdesk call is noted, and logged with the message it was made for.
        self.host_calls = HostCallRecorder(host)
        self.host = cast(HostAdapter, self.host_calls)
        # Checked once: a host that prepares creates gets them replayed after a crash.
        self.replayable = (cast(ReplayableCreates, self.host_calls)
                           if isinstance(host, ReplayableCreates) else None)
        self.rules = rules if rules is not None else default_rules(host_config)
        self.metrics = metrics
        #: The account's lease when several instances share the ledger
        #: (connector.service.leases): every effect is committed under it, so an instance
        #: that lost the account (paused, cut off) cannot record one.
        self.fence: Fence | None = None
        # Several mails of an account may be processed at once (connector.service.inflight):
        # what belongs to one mail lives per thread, the held receipts behind a lock.
        self._local = threading.local()
        self._deferred: dict[str, list[tuple[Job, Decision]]] = {}
        self._deferred_lock = threading.Lock()

    @property
    def lookups(self) -> StoreLookups:
        """This thread's lookups (their ticket cache is the current mail's)."""
        local = self._local
        if not hasattr(local, "lookups"):
            local.lookups = StoreLookups(self.store, self.host)
            local.decider = Decider(self.account, self.rules.vocabulary, local.lookups)
        return local.lookups

    def swap_lookups(self, lookups: StoreLookups) -> StoreLookups:
        """Make this thread's understanding ask ``lookups`` (with a decider on them); returns
        the ones it asked before, to be put back the same way (the history import's view)."""
        previous = self.lookups
        self._local.lookups = lookups
        self._local.decider = Decider(self.account, self.rules.vocabulary, lookups)
        return previous

    @property
    def decider(self) -> Decider:
        self.lookups  # noqa: B018 - makes this thread's decider
        return self._local.decider

    @property
    def _defer_receipts(self) -> bool:
        return getattr(self._local, "defer_receipts", False)

    # -- entry point ------------------------------------------------------------------------
    def process(self, ref: str, raw: bytes | None, size: int | None = None, *,
                defer_receipts: bool = False, prepared: Prepared | None = None,
                release_held: bool = False) -> Result:
        """Process one fetched message. ``raw`` is None when it was too large to download.

        ``prepared`` is the parse of ``raw`` done ahead (connector.service.parsing); without
        it, or when it is not the parse of this very ``raw``, the message is parsed here.
        ``release_held``: a held mail released by the admin (the per-sender cap is lifted).

        With ``defer_receipts``, PEC receipts for an existing ticket come back DEFERRED and
        are added by ``flush_deferred()``, one ticket update for all receipts of a ticket:
        a burst of delivery receipts would otherwise spend the helpdesk's limit of updates per
        ticket (Zendesk: 30 per 10 minutes).
        """
        self._local.defer_receipts = defer_receipts
        self.host_calls.take()  # calls not logged with an earlier message stay unattributed
        ctx = MessageContext(self.account.name, ref)
        started = time.monotonic()
        existing = self.store.get_message(self.account.name, ref)
        if existing is not None and existing.state.terminal:
            return Result(outcome_of(existing), existing.id, existing.ticket_id,
                          "already recorded", already_recorded=True)
        if prepared is not None and (raw is None or prepared.message.raw is not raw):
            prepared = None
        if prepared is not None:
            sha: str | None = prepared.message.sha256  # hashed in the worker
        else:
            sha = hashlib.sha256(raw).hexdigest() if raw is not None else None
        record = self.store.begin_message(self.account.name, ref, sha256=sha, durable=False)
        self.lookups.for_record(record.id)
        try:
            result = self._process(ctx, record, raw, size, prepared, release_held)
        except TransientHostError as exc:
            self.store.record_failure(record.id, f"transient: {exc}", durable=False)
            log.debug("%s: host temporarily unavailable, will retry: %s", ctx, exc)
            result = Result(Outcome.RETRY, record.id, reason=str(exc))
        except (UnreadableMail, PermanentHostError) as exc:
            # Not a mail, a classifier that cannot read it, or a helpdesk that refuses it: the
            # error folder, at once (trying again would meet the same answer).
            result = self._fail(ctx, record, f"{type(exc).__name__}: {exc}", raw)
        except (CertificateError, StoreCorruptError, LeaseLostError):
            # Not this mail's fault and the same for every mail: the account stops (the
            # runner says why); the record stays unfinished and the mail in the inbox.
            raise
        except Exception as exc:  # a bug must not lose the mail nor stop the loop
            log.exception("%s: unexpected error", ctx)
            if record.attempts >= MAX_UNEXPECTED_ATTEMPTS:
                result = self._fail(ctx, record, f"unexpected error after {record.attempts} "
                                    f"attempts: {type(exc).__name__}: {exc}", raw)
            else:
                self.store.record_failure(record.id,
                                          f"unexpected: {type(exc).__name__}: {exc}",
                                          durable=False)
                result = Result(Outcome.RETRY, record.id, reason=str(exc))
        if result.outcome != Outcome.DEFERRED:
            self._observe(ctx, result, started)
        return result

    def _observe(self, ctx: MessageContext, result: Result, started: float) -> None:
        self._log_outcome(ctx, result)
        if self.metrics is not None:
            self.metrics.observe_message(ctx.account, result.outcome.value,
                                         time.monotonic() - started,
                                         ignored_as=result.ignored_as)

    def drop_deferred(self) -> None:
        """Forget held receipts (their pass failed): their records are still unfinished, so
        the next pass fetches and holds them again."""
        with self._deferred_lock:
            self._deferred = {}

    def flush_deferred(self) -> list[tuple[str, Result]]:
        """Add the held receipts: one internal note per ticket carrying every receipt (their
        .eml files attached, their tags merged). Returns (ref, result) for each of them."""
        with self._deferred_lock:
            held, self._deferred = self._deferred, {}
        results: list[tuple[str, Result]] = []
        for ticket_id, items in held.items():
            started = time.monotonic()
            for job, result in self._flush_ticket(ticket_id, items):
                self._observe(job.ctx, result, started)
                results.append((job.ctx.ref, result))
        return results

    def _flush_ticket(self, ticket_id: str,
                      items: list[tuple[Job, Decision]]) -> list[tuple[Job, Result]]:
        if len(items) == 1:
            job, decision = items[0]
            return [(job, self._guarded(job, lambda: self._comment(job, decision)))]
        jobs = [job for job, _ in items]
        key = "pmb-receipts-" + hashlib.sha256(
            "".join(j.message.dedupe_key for j in jobs).encode()).hexdigest()
        comment = Comment(
            ticket_id=ticket_id,
            body_text="\n\n".join(j.plan.note for j in jobs if j.plan is not None),
            public=False,
            uploads=tuple(u for j in jobs for u in self._uploads(j, original=False)),
            add_tags=tuple(dict.fromkeys(t for _, d in items for t in d.tags)),
            dedupe_key=key)
        for job in jobs:
            self.store.set_pending(job.record.id, "internal_note",
                                   {"ticket_id": ticket_id, "comment_key": key},
                                   ticket_id=ticket_id, fence=self.fence)
        try:
            self.host.add_comment(comment)
        except TicketClosedError:
            # One by one instead: each receipt then opens its follow-up of the closed ticket.
            return [(job, self._guarded(job, lambda job=job, d=d: self._comment(job, d)))
                    for job, d in items]
        except TransientHostError as exc:
            for job in jobs:  # PUSHING with the shared key: the next pass looks it up first
                self.store.record_failure(job.record.id, f"transient: {exc}", durable=False)
            return [(job, Result(Outcome.RETRY, job.record.id, reason=str(exc)))
                    for job in jobs]
        except PermanentHostError as exc:
            return [(job, self._fail(job.ctx, job.record, f"{type(exc).__name__}: {exc}",
                                     job.message.raw)) for job in jobs]
        log.debug("account=%s: %d PEC receipts in one note on ticket #%s", self.account.name,
                  len(jobs), ticket_id)
        return [(job, self._finish(job, ticket_id, "internal_note", d)) for job, d in items]

    def _guarded(self, job: Job, step: Callable[[], Result]) -> Result:
        """A host step for a held message, with process()'s error handling."""
        try:
            return step()
        except TransientHostError as exc:
            self.store.record_failure(job.record.id, f"transient: {exc}", durable=False)
            return Result(Outcome.RETRY, job.record.id, reason=str(exc))
        except PermanentHostError as exc:
            return self._fail(job.ctx, job.record, f"{type(exc).__name__}: {exc}",
                              job.message.raw)

    def _log_outcome(self, ctx: MessageContext, result: Result) -> None:
        """One communication-log entry and one log line per message: what was decided and
        what happened (INFO; WARNING for a retry, ERROR for a failure). The steps on the way
        log at DEBUG only: at full speed, more lines per mail cost the main loop real time."""
        level = {Outcome.FAILED: "error", Outcome.RETRY: "warning"}.get(result.outcome, "info")
        decided = (f"decision {result.decision.action.value}: {result.decision.reason}"
                   if result.decision is not None else None)
        ticket = f"ticket #{result.ticket_id}" if result.ticket_id is not None else None
        parts = [p for p in (decided, ticket, result.reason or None) if p]
        identity = {"account": ctx.account, "ref": ctx.ref, "message_id": ctx.message_id}
        self.store.log_events([
            *({"ts": call.started_at, "level": "debug", "kind": "host",
               "event": f"{call.operation} {call.target}".strip(), "detail": call.answer,
               "duration_ms": call.duration_ms, **identity} for call in self.host_calls.take()),
            {"level": level, "kind": "message", "event": result.outcome.value,
             "detail": "; ".join(parts) or None, **identity}])
        why = "; ".join(p for p in (decided, result.reason or None) if p)
        log.log(_LOG_LEVELS.get(result.outcome, logging.INFO), "%s: %s%s%s", ctx,
                result.outcome.value, f", {ticket}" if ticket else "", f" ({why})" if why else "")

    def _fail(self, ctx: MessageContext, record: MessageRecord, reason: str,
              raw: bytes | None = None) -> Result:
        self.store.finish_message(record.id, MessageState.FAILED, error=reason, durable=False,
                                  fence=self.fence)
        if raw is not None:
            # for `errors export` and `errors replay`
            self.store.quarantine(record.id, raw, durable=False)
        fresh = self.store.get_message_by_id(record.id)
        if fresh is not None and fresh.dedupe_key:
            self.store.release_dedupe_key(fresh.dedupe_key, record.id, durable=False)
        log.debug("%s: goes to the error folder: %s", ctx, reason)
        return Result(Outcome.FAILED, record.id, reason=reason)

    def _process(self, ctx: MessageContext, record: MessageRecord, raw: bytes | None,
                 size: int | None, prepared: Prepared | None = None,
                 release_held: bool = False) -> Result:
        if raw is None:
            return self._fail(ctx, record, f"message too large: {size} bytes, account max_size "
                              f"is {self.account.max_size} bytes; it was not downloaded or read")
        if is_too_large(len(raw), self.account.max_size):
            # Every entry point (import, deliver, errors replay) obeys max_size, not only the
            # mailbox fetchers, which never download such mail. Not parsed, nor copied into
            # the ledger: it is still where it came from (the file, the quarantine).
            return self._fail(ctx, record, f"message too large: {len(raw)} bytes, account "
                              f"max_size is {self.account.max_size} bytes; not processed", None)
        self._archive(ctx, raw)
        job = self._job(ctx, record, raw, prepared, release_held)
        if record.state == MessageState.PUSHING and record.pending:
            return self._resume(job)

        holder = job.holder
        if holder is not None and holder != record.id:
            other = self.store.get_message_by_id(holder)
            settled = (MessageState.DONE, MessageState.IGNORED, MessageState.HELD)
            if other is not None and other.state in settled:
                self.store.finish_message(record.id, MessageState.IGNORED, action="duplicate",
                                          ticket_id=other.ticket_id, durable=False,
fence=self.fence)
                log.debug("%s: same mail as record %s (ticket %s): not ticketed twice", ctx,
                          other.id, other.ticket_id)
                return Result(Outcome.DUPLICATE, record.id, other.ticket_id,
                              f"duplicate of record {other.id}")
            taken_over = (MessageState.FAILED, MessageState.ORPHANED)
            if other is not None and other.state not in taken_over and not _orphaned(other):
                self.store.record_failure(record.id, f"same mail is being processed as "
                                          f"record {other.id}; waiting for it", durable=False)
                return Result(Outcome.RETRY, record.id, reason="duplicate in progress")
            # The holder failed for good, or was orphaned (its mailbox renumbered by a
            # UIDVALIDITY change, its account gone): this copy takes over.
            self.store.release_dedupe_key(job.message.dedupe_key, holder, durable=False)
            if self.store.claim_dedupe_key(job.message.dedupe_key, record.id,
                                           durable=False) != record.id:
                return Result(Outcome.RETRY, record.id, reason="duplicate in progress")
            if other is not None and other.state != MessageState.FAILED:
                self.store.finish_message(other.id, MessageState.IGNORED, action="duplicate",
                                          error=f"taken over by record {record.id}",
                                          durable=False, fence=self.fence)
                if other.state == MessageState.PUSHING and other.pending:
                    # Its host call may have reached the helpdesk: resume it here, which
                    # looks before it repeats.
                    self.store.set_pending(record.id, other.action or "new_ticket",
                                           other.pending, ticket_id=other.ticket_id,
fence=self.fence)
                    fresh = self.store.get_message_by_id(record.id)
                    assert fresh is not None
                    job.record = fresh
                    log.warning("%s: taking over the interrupted work of record %s", ctx,
                                other.id)
                    return self._resume(job)

        parent = self._unfinished_parent(job)
        if parent is not None:
            reason = (f"waiting for <{parent.message_id}>, which it answers, to reach the "
                      "helpdesk first")
            self.store.record_failure(record.id, reason, durable=False)
            log.debug("%s: %s", ctx, reason)
            return Result(Outcome.RETRY, record.id, reason=reason)

        decision = job.decision
        for problem in decision.problems:
            log.warning("%s: %s", ctx, problem)
        log.debug("%s: decision %s (%s)", ctx, decision.action.value, decision.reason)
        return self._execute(job, decision)

    def _unfinished_parent(self, job: Job) -> MessageRecord | None:
        """The message this one answers, when it is still waiting to reach the helpdesk
        (a transient failure earlier in the same pass). Deciding now would open a second
        ticket for one conversation. A parent stuck for PARENT_WAIT_SECONDS no longer holds
        its replies back."""
        ids = tuple(job.content.thread_ids)
        if job.plan is not None:
            ids += job.plan.lookup_ids
        if not ids or job.is_receipt:
            return None
        parent = self.store.unfinished_with_message_ids(ids, exclude_id=job.record.id)
        if parent is None:
            return None
        age = (datetime.now(UTC) - parent.created_at).total_seconds()
        return parent if age < PARENT_WAIT_SECONDS else None

    def _job(self, ctx: MessageContext, record: MessageRecord, raw: bytes,
             prepared: Prepared | None = None, release_held: bool = False) -> Job:
        """Understand the mail (parse unless done ahead, PEC, filters, requester, decision)
        and record what it is, with the trace ``filters test`` shows for it."""

        def context(message_id: str | None) -> str:
            ctx.message_id = message_id
            return str(ctx)

        understanding = understand(raw, self.account, self.rules, self.lookups,
                                   prepared=prepared, context=context,
                                   release_held=release_held)
        message, filtered = understanding.message, understanding.filtered
        ctx.message_id = message.message_id
        # The sender and day the per-sender cap counts (the loop classifier's view).
        sender = filtered.from_.normalized if filtered.from_ and filtered.from_.email else None
        holder = self.store.describe_message(
            record.id, dedupe_key=message.dedupe_key, message_id=message.message_id,
            sender=sender, subject=filtered.subject, trace=understanding.trace,
            mail_day=mail_day(filtered), sender_proven=understanding.outcome.sender_proven,
            durable=False)
        return Job(ctx, record, understanding, holder)

    # -- executing decisions ------------------------------------------------------------
    def _execute(self, job: Job, decision: Decision) -> Result:
        if job.is_receipt and decision.action == Action.INTERNAL_NOTE and \
                decision.ticket_id is not None and job.plan is not None:
            # The provider's identificativo (and msgid) now belong to that ticket too:
            # replies citing them thread there.
            self.store.map_message_ids(decision.ticket_id, job.plan.lookup_ids,
                                       direction="out", account=self.account.name,
                                       durable=False)
        if (self._defer_receipts and job.is_receipt and decision.ticket_id is not None
                and decision.action == Action.INTERNAL_NOTE):
            with self._deferred_lock:
                self._deferred.setdefault(decision.ticket_id, []).append((job, decision))
            return Result(Outcome.DEFERRED, job.record.id, decision.ticket_id,
                          "held to share one ticket update", decision=decision)
        if decision.action == Action.IGNORE:
            self.store.finish_message(job.record.id, MessageState.IGNORED, action="ignore",
                                      error=decision.reason, durable=False, fence=self.fence)
            return Result(Outcome.IGNORED, job.record.id, reason=decision.reason,
                          decision=decision)
        if decision.action == Action.HOLD:
            # Kept whole in the ledger too: `held release` runs it through this path again.
            self.store.quarantine(job.record.id, job.message.raw, durable=False)
            self.store.finish_message(job.record.id, MessageState.HELD, action="hold",
                                      error=decision.reason, durable=False, fence=self.fence)
            return Result(Outcome.HELD, job.record.id, reason=decision.reason,
                          decision=decision)
        if decision.action == Action.NEW_TICKET:
            return self._create(job, decision)
        return self._comment(job, decision)

    def _create(self, job: Job, decision: Decision) -> Result:
        ticket = self._new_ticket_request(job, decision)
        pending: dict[str, Any] = {"external_id": ticket.external_id}
        if self.replayable is not None:
            prepared = self.replayable.prepare_ticket(ticket)
            pending["prepared"] = prepared.to_json()
            self.store.set_pending(job.record.id, "new_ticket", pending, fence=self.fence)
            created = self.replayable.send_prepared(prepared, ticket)
        else:
            self.store.set_pending(job.record.id, "new_ticket", pending, fence=self.fence)
            created = self.host.create_ticket(ticket)
        log.debug("%s: ticket #%s created", job.ctx, created.id)
        return self._after(job, created.id, "new_ticket", decision)

    def _comment(self, job: Job, decision: Decision) -> Result:
        assert decision.ticket_id is not None
        comment = self._comment_request(job, decision)
        action = decision.action.value
        self.store.set_pending(job.record.id, action, {"ticket_id": decision.ticket_id,
                                                       "comment_key": comment.dedupe_key},
                               ticket_id=decision.ticket_id, fence=self.fence)
        try:
            self.host.add_comment(comment)
        except TicketClosedError:
            if job.is_receipt:
                return self._create(job, replace(decision, action=Action.NEW_TICKET,
                                                 ticket_id=None,
                                                 requester=job.message.from_,
                                                 subject=job.message.subject or "PEC receipt",
                                                 followup_of_closed=decision.ticket_id))
            if not decision.public:
                # A note (auto-reply, bounce, stranger) for a ticket closed meanwhile.
                reason = f"ticket #{decision.ticket_id} is closed; the note was not added"
                self.store.finish_message(job.record.id, MessageState.IGNORED,
                                          action="ignore", error=reason, durable=False,
fence=self.fence)
                return Result(Outcome.IGNORED, job.record.id, reason=reason, decision=decision)
            if not self.account.follow_up.reopen_closed:
                raise
            # Closed between our look and our update: open a follow-up ticket instead.
            follow = self.decider.new_ticket(job.content, job.verdict, closed=decision.ticket_id)
            if follow.action == Action.IGNORE:
                return self._execute(job, follow)
            log.debug("%s: ticket #%s is closed; opening a follow-up ticket", job.ctx,
                      decision.ticket_id)
            if job.plan is not None:
                follow = replace(follow, tags=tuple(dict.fromkeys(follow.tags + job.plan.tags)))
            return self._create(job, follow)
        log.debug("%s: %s on ticket #%s", job.ctx, action.replace("_", " "),
                  decision.ticket_id)
        return self._after(job, decision.ticket_id, action, decision)

    def _after(self, job: Job, ticket_id: str, action: str, decision: Decision | None) -> Result:
        """The ticket has the message. A PEC envelope also leaves an internal note with the
        certification facts (its own crash-safe step), then the record is done."""
        plan = job.plan
        if plan is not None and not plan.is_receipt and plan.note and \
                self._facts_note_wanted(plan, action):
            key = f"pmb-{job.message.dedupe_key}-pec"
            self.store.set_pending(job.record.id, "pec_note",
                                   {"ticket_id": ticket_id, "comment_key": key, "then": action},
                                   ticket_id=ticket_id, fence=self.fence)
            self.host.add_comment(Comment(ticket_id=ticket_id, body_text=plan.note,
                                          public=False, dedupe_key=key))
        return self._finish(job, ticket_id, action, decision)

    def _facts_note_wanted(self, plan: PecPlan, action: str) -> bool:
        """Whether the envelope's facts also go in an internal note (``pec_facts_note``).
        Warnings are always noted; a routine certified envelope's facts are left out with
        ``never``, and with ``auto`` when the new ticket carries every one of them in the
        account's ``pec_custom_fields`` (a follow-up's comment sets no fields). The note costs
        a ticket update of its own: Zendesk's create takes one comment, and the facts must
        not be in the public one."""
        setting = self.account.pec_facts_note
        if setting == "always" or not plan.routine:
            return True
        if setting == "never":
            return False
        return action != "new_ticket" or not set(plan.facts) <= set(
            self.account.pec_custom_fields)

    def _finish(self, job: Job, ticket_id: str, action: str, decision: Decision | None) -> Result:
        thread_ids = ticket_thread_ids(job)
        if job.plan is not None:
            if (job.is_receipt and action == "new_ticket" and decision is not None
                    and decision.followup_of_closed is not None):
                # The sent message's ids now point at the follow-up, so its next receipts
                # land there instead of opening one follow-up each.
                self.store.map_message_ids(ticket_id, job.plan.lookup_ids, direction="out",
                                           account=self.account.name, replace=True,
                                           durable=False)
        self.store.finish_message(job.record.id, MessageState.DONE, action=action,
                                  ticket_id=ticket_id,
                                  thread_ids=thread_ids, durable=False, fence=self.fence)
        outcome = _ACTION_OUTCOME.get(action, Outcome.NOTED)
        return Result(outcome, job.record.id, ticket_id, decision=decision)

    # -- crash recovery -----------------------------------------------------------------
    def _resume(self, job: Job) -> Result:
        record = job.record
        pending = record.pending or {}
        log.warning("%s: resuming a host call interrupted earlier (%s)", job.ctx, record.action)
        if record.action == "new_ticket":
            decision = job.decision
            if decision.action != Action.NEW_TICKET:
                decision = self.decider.new_ticket(job.content, job.verdict)
            if decision.action != Action.NEW_TICKET:
                return self._execute(job, decision)
            ticket = self._new_ticket_request(job, decision)
            prepared = pending.get("prepared")
            if prepared is not None and self.replayable is not None:
                # The adapter replays byte-identically under the same idempotency key while
                # the helpdesk remembers it, and looks the ticket up by external_id after that.
                created = self.replayable.send_prepared(
                    self.replayable.prepared_from_json(prepared), ticket)
                return self._after(job, created.id, "new_ticket", decision)
            found = self.host.find_tickets_by_external_id(ticket.external_id or "")
            if found:
                return self._after(job, found[0].id, "new_ticket", decision)
            return self._create(job, decision)
        ticket_id = str(pending["ticket_id"])  # an int in ledgers written before ids were text
        key = pending.get("comment_key")
        if record.action == "pec_note":
            if not (key and self.host.comment_exists(ticket_id, key)):
                return self._after(job, ticket_id, pending.get("then", "new_ticket"), None)
            return self._finish(job, ticket_id, pending.get("then", "new_ticket"), None)
        if key and self.host.comment_exists(ticket_id, key):
            return self._after(job, ticket_id, record.action or "follow_up", None)
        return self._execute(job, job.decision)

    # -- request building -----------------------------------------------------------------
    def _bodies(self, message: ParsedMessage) -> tuple[str, str | None, bool]:
        """Text and sanitized HTML for the host; True when the body had to be shortened."""
        if self.account.allow_remote_content and message.html_body:
            html: str | None = sanitize_html(message.html_body, remote_content=True)
        else:
            html = message.safe_html  # cached: usually computed by a parse-ahead worker
        text = message.text_body or (html_to_text(html) if html else "")
        if not text.strip() and not html:
            text = "(this message has no text)"
        cut = False
        if len(text) > MAX_BODY_CHARS:
            text = text[:MAX_BODY_CHARS] + "\n\n[... shortened: see the attached original]"
            cut = True
        if html is not None and len(html) > MAX_BODY_CHARS:
            html, cut = None, True  # cannot cut HTML safely; the text (and the .eml) carry it
        return text, html, cut

    def _uploads(self, job: Job, *, original: bool) -> tuple[Upload, ...]:
        if job.is_receipt:
            # The receipt itself is the evidence: attach it whole, nothing else.
            return (_eml_upload("pec-receipt", job.message),)
        message = job.content
        uploads = [Upload(a.filename, a.content_type, a.data, known_sha256=a.sha256)
                   for a in message.attachments]
        uploads += [Upload(a.filename, a.content_type, a.data, content_id=a.content_id,
                           known_sha256=a.sha256)
                    for a in message.inline_images]
        if job.plan is not None:
            # The whole signed envelope, byte-exact: the legal proof of delivery (when the
            # signature is certified; otherwise the evidence of what was received).
            prefix = "pec-envelope" if job.plan.certified else "pec-unverified"
            uploads.append(_eml_upload(prefix, job.message))
        elif original:
            uploads.append(_eml_upload("original", job.message))
        return tuple(uploads)

    def _body_of(self, job: Job) -> tuple[str, str | None, bool]:
        if job.is_receipt:
            assert job.plan is not None
            return job.plan.note, None, False
        return self._bodies(job.content)

    def _new_ticket_request(self, job: Job, decision: Decision) -> NewTicket:
        text, html, cut = self._body_of(job)
        assert decision.requester is not None
        if decision.original_sender is not None:
            # The requester stands in for a sender the mail did not name usably: say who.
            header = (f"Original sender: {decision.original_sender} (no usable address; "
                      f"the requester is {decision.requester.email})")
            text = f"{header}\n\n{text}"
            if html is not None:
                html = f"<p><em>{escape(header)}</em></p>{html}"
        key = f"pmb-{job.content.dedupe_key}"
        return NewTicket(
            subject=decision.subject,
            requester_email=decision.requester.email,
            requester_name=decision.requester.name or decision.requester.email,
            body_text=text,
            body_html=html,
            public=decision.public,
            uploads=self._uploads(job, original=self.account.attach_original_eml or cut
                                 or _incomplete(job.content)),
            tags=decision.tags,
            recipient=decision.recipient,
            email_ccs=decision.email_ccs,
            external_id=key[:64],
            idempotency_key=key,
            follows_up=decision.followup_of_closed,
            defaults=decision.defaults,
            controls=decision.controls,
            to=tuple(a.email for a in job.content.to),
            cc=tuple(a.email for a in job.content.cc),
        )

    def _comment_request(self, job: Job, decision: Decision) -> Comment:
        text, html, cut = self._body_of(job)
        message = job.content
        assert decision.ticket_id is not None
        trimmed = self._quoted_text_trimmed(job, decision, text, html)
        if trimmed is not None:
            text, html = trimmed
        if not decision.public and not job.is_receipt:
            sender = str(message.from_) if message.from_ else "unknown sender"
            header = f"Mail from {sender} ({decision.reason})"
            text = f"{header}\n\n{text}"
            if html is not None:
                html = f"<p><em>{escape(header)}</em></p>{html}"
        add_tags, remove_tags = decision.tags, decision.remove_tags
        known = self.lookups.cached(decision.ticket_id)
        if known is not None:
            # Only real tag changes: with none, the adapter need not read the ticket again.
            add_tags = tuple(t for t in add_tags if t not in known.tags)
            remove_tags = tuple(t for t in remove_tags if t in known.tags)
        return Comment(
            ticket_id=decision.ticket_id,
            body_text=text,
            body_html=html,
            public=decision.public,
            author_email=message.from_.email if message.from_ and decision.public else None,
            author_name=message.from_.name if message.from_ else None,
            uploads=self._uploads(job, original=self.account.attach_original_eml or cut or (
                trimmed is not None and self.account.follow_up.quoted_text == "attach")
                or _incomplete(job.content)),
            add_tags=add_tags,
            remove_tags=remove_tags,
            dedupe_key=f"pmb-{job.message.dedupe_key}",
            subject=message.subject or None,
            defaults=decision.defaults,
            controls=decision.controls,
        )

    def _quoted_text_trimmed(self, job: Job, decision: Decision, text: str,
                             html: str | None) -> tuple[str, str | None] | None:
        """A reply's own words for its comment, or None to keep the body whole: only replies
        (not bounces, auto-replies or receipts), never certified PEC content (what the
        provider certified is shown as it was), and not when the account keeps quotes."""
        mode = self.account.follow_up.quoted_text
        if mode == "keep" or decision.action != Action.FOLLOW_UP or job.plan is not None:
            return None
        reply = new_text(text)
        if reply.unchanged:
            return None
        if mode == "collapse":
            whole = html if html is not None else f"<pre>{escape(text)}</pre>"
            folded = (f"{_paragraphs_html(reply.text)}<details><summary>Quoted text"
                      f"</summary>{whole}</details>")
            return reply.text, folded
        return reply.text, None  # the original .eml goes beside the comment

    # -- archive --------------------------------------------------------------------------
    def _archive(self, ctx: MessageContext, raw: bytes) -> None:
        """Write the raw message byte-exact to the archive directory, once, atomically."""
        if self.account.archive_dir is None:
            return
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        directory = Path(self.account.archive_dir) / self.account.name / day
        target = directory / f"{hashlib.sha256(raw).hexdigest()}.eml"
        if target.exists():
            return
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.debug("%s: archived as %s", ctx, target)
