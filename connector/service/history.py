"""History import: old mail as tickets that keep their dates, through the host's import API.

``import --history`` and an account's ``initial_sync: import_existing`` run mail through the
same understanding as live mail (parse, PEC unwrap, filters, decide; see Pipeline), in the
order the mail was written, with one difference: a reply whose conversation started earlier
in the same import is decided against that conversation's ticket-to-be. Each conversation then
becomes one imported ticket: the first mail as the ticket, every reply as a comment with its
own date and author (Zendesk: the Ticket Import API, in batches of up to 100; no triggers and
no notifications for old mail). Mail that answers a ticket already on the helpdesk is added to
it as live mail is; ignored mail and duplicates are recorded as live mail would be.

Crash safety follows the pipeline's rule: before a batch is sent, every mail in it is recorded
as PUSHING (durably) with its conversation's external_id, and the import job's id once the
host names it. A later run resolves such mail before anything else: the job's results, or a
ticket found by external_id, mean the batch arrived (the mail is done, nothing is sent
again); neither means it did not, and the mail is imported again.

The mails wait in an unnamed temporary file: memory holds one batch of parsed mail at a time.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime

from connector.config import AccountConfig, HistoryPolicy
from connector.decide import Action, Decision
from connector.errors import HostError, PermanentHostError, TransientHostError, UnreadableMail
from connector.fetch.base import RemoteMessage
from connector.hosts.base import (
    DatedComment,
    ImportResult,
    ImportTicket,
    TicketImporter,
    TicketInfo,
    first_ticket,
)
from connector.service.filtering import StoreLookups
from connector.service.pipeline import (
    Job,
    MessageContext,
    Outcome,
    Pipeline,
    Result,
    outcome_of,
    ticket_thread_ids,
)
from connector.service.progress import NoProgress, Progress
from connector.service.runner import AccountSummary
from connector.store.base import MessageRecord, MessageState
from connector.understand import Rules

log = logging.getLogger("connector.history")

#: What a conversation's records carry while their import call is under way.
PENDING_KEY = "history_import"


class HistoryError(HostError):
    """The host cannot import history."""


# -- ordering: every mail after the mail it answers, otherwise by date ---------------------------

_ID = re.compile(r"<([^<>\s]+)>")


class _Spool:
    """The mails of one import on disk (an unnamed temporary file), not in memory: an import
    holds one batch of parsed mail at a time, however large the archive."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pmb-history-")
        self._end = 0

    def put(self, raw: bytes) -> tuple[int, int]:
        self._file.seek(self._end)
        self._file.write(raw)
        where = (self._end, len(raw))
        self._end += len(raw)
        return where

    def get(self, where: tuple[int, int]) -> bytes:
        self._file.seek(where[0])
        return self._file.read(where[1])

    def close(self) -> None:
        self._file.close()


@dataclass
class _Input:
    ref: str
    spooled: tuple[int, int] | None  # None: too large, not downloaded
    size: int
    date: datetime
    message_id: str | None
    parents: tuple[str, ...]


def _header_facts(raw: bytes | None) -> tuple[datetime | None, str | None, tuple[str, ...]]:
    """Date, Message-ID and the ids it answers, from the headers alone (cheap)."""
    if raw is None:
        return None, None, ()
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    date = None
    try:
        value = headers.get("Date")
        date = parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError, IndexError):
        date = None
    if date is not None and date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    own = _ID.findall(str(headers.get("Message-ID") or ""))
    parents = _ID.findall(f"{headers.get('In-Reply-To') or ''} {headers.get('References') or ''}")
    return date, (own[0].lower() if own else None), tuple(p.lower() for p in parents)


def conversation_order(items: Sequence[_Input]) -> list[_Input]:
    """By date (undated mail last, input order breaking ties), but never before a mail of the
    same import that it answers: a reply sent from a clock that was wrong still finds its
    conversation's ticket."""
    latest = datetime.max.replace(tzinfo=UTC)
    by_date = sorted(range(len(items)), key=lambda i: (items[i].date or latest, i))
    index = {it.message_id: i for i, it in enumerate(items) if it.message_id}
    placed: set[int] = set()
    order: list[_Input] = []
    for start in by_date:
        stack = [(start, False)]
        visiting: set[int] = set()
        while stack:
            i, expanded = stack.pop()
            if i in placed:
                continue
            if expanded:
                placed.add(i)
                order.append(items[i])
                continue
            if i in visiting:  # a cycle of References: break it here
                continue
            visiting.add(i)
            stack.append((i, True))
            for parent in items[i].parents:
                j = index.get(parent)
                if j is not None and j not in placed and j not in visiting:
                    stack.append((j, False))
    return order


# -- the conversations being built ----------------------------------------------------------------


@dataclass
class _Mail:
    """One understood mail of a conversation: what was decided for it. Its request is built
    from the spooled bytes when its batch is sent."""

    ctx: MessageContext
    record_id: int
    spooled: tuple[int, int]
    date: datetime
    decision: Decision
    thread_ids: tuple[str, ...]

    @property
    def action(self) -> str:  # new_ticket | follow_up | internal_note
        return self.decision.action.value


@dataclass
class _Conversation:
    placeholder: str  # "import:N", the ticket id this import's lookups know it by
    order: int  # N: conversations of one date go to the host in the order they began
    external_id: str
    created_at: datetime
    mails: list[_Mail] = field(default_factory=list)


class HistoryLookup:
    """Understanding's view during an import: the ledger and the helpdesk (``base``), plus the
    conversations of this import, each under a placeholder ticket id (``import:N``, never a
    host's)."""

    def __init__(self, base: StoreLookups) -> None:
        self.base = base
        self.placeholders: dict[str, TicketInfo] = {}
        self.by_message_id: dict[str, str] = {}

    def open(self, placeholder: str, decision: Decision) -> None:
        self.placeholders[placeholder] = TicketInfo(
            id=placeholder, status="open", subject=decision.subject,
            requester_email=decision.requester.email if decision.requester else None,
            cc_emails=tuple(decision.email_ccs), tags=tuple(decision.tags))

    def join(self, placeholder: str, message_ids: Iterable[str]) -> None:
        for mid in message_ids:
            if mid:
                self.by_message_id.setdefault(mid, placeholder)

    def for_record(self, record_id: int | None) -> HistoryLookup:
        self.base.for_record(record_id)
        return self

    # -- the filter stage's questions ------------------------------------------------------
    def is_own_message_id(self, message_id: str) -> bool:
        return self.base.is_own_message_id(message_id)

    def sender_count_on(self, address: str, day: date) -> int:
        return self.base.sender_count_on(address, day)

    def known_ticket_for(self, message_ids: Sequence[str]) -> str | None:
        return self.ticket_for_message_ids(message_ids)

    # -- the decide stage's questions ------------------------------------------------------
    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        if ticket_id in self.placeholders:
            return self.placeholders[ticket_id]
        return self.base.get_ticket(ticket_id)

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        for mid in message_ids:
            if mid in self.by_message_id:
                return self.by_message_id[mid]
            found = self.base.ticket_for_message_ids([mid])
            if found is not None:
                return found
        return None

    def ticket_for_sent_message_ids(self, message_ids: Sequence[str],
                                    account: str) -> str | None:
        return self.base.ticket_for_sent_message_ids(message_ids, account)

    def user_exists(self, email: str) -> bool:
        return self.base.user_exists(email)

    def cached(self, ticket_id: str) -> TicketInfo | None:
        if ticket_id in self.placeholders:
            return self.placeholders[ticket_id]
        return self.base.cached(ticket_id)


# -- the import -------------------------------------------------------------------------------


class HistoryImport:
    """Imports one account's old mail. ``run`` may be called again after a crash or Ctrl-C:
    what is recorded is not sent again."""

    def __init__(self, pipeline: Pipeline, settings: HistoryPolicy | None = None, *,
                 progress: Callable[[int], Progress] | None = None,
                 batch_size: int | None = None,
                 stop: Callable[[], bool] = lambda: False) -> None:
        host = pipeline.host
        if not isinstance(host, TicketImporter):
            raise HistoryError(f"the {getattr(host, 'name', 'configured')} host cannot import "
                               "history")
        self.pipeline = pipeline
        self.host: TicketImporter = host
        self.settings = settings or pipeline.account.history
        self.make_progress = progress or (lambda total: NoProgress())
        self.progress: Progress = NoProgress()
        self.batch_size = min(batch_size or host.import_batch_size, host.import_batch_size)
        self.store = pipeline.store
        self.account = pipeline.account
        self.summary = AccountSummary(pipeline.account.name)
        self.stop = stop
        self._conversations_begun = 0
        self._refs: set[str] = set()

    # -- entry point ------------------------------------------------------------------------
    def run(self, messages: Iterable[RemoteMessage]) -> AccountSummary:
        """Import ``messages``; ``progress`` (called with their number once they are read)
        counts each mail as it reaches its end for this run."""
        self.spool = _Spool()
        try:
            return self._run(messages)
        finally:
            self.spool.close()

    def _run(self, messages: Iterable[RemoteMessage]) -> AccountSummary:
        inputs, known = self._collect(messages)
        self._refs = {i.ref for i in inputs}
        self.progress = self.make_progress(len(inputs) + known)
        self.progress.advance(known)
        self._resolve_interrupted(inputs)
        lookup, restore = self._overlay()
        try:
            self.progress.describe("understanding")
            conversations = self._understand(conversation_order(inputs), lookup)
            self.progress.describe("importing")
            self._import(conversations)
        finally:
            restore()
            self.store.make_durable()
            self.progress.close()
        return self.summary

    # -- the pipeline's understanding, seen through this import ---------------------------
    def _overlay(self) -> tuple[HistoryLookup, Callable[[], None]]:
        """Point the pipeline's decisions at this import's conversations (and lift the
        per-sender cap) until the returned function puts it back."""
        pipeline = self.pipeline
        rules = pipeline.rules
        lookup = HistoryLookup(pipeline.lookups)
        previous = pipeline.swap_lookups(lookup)  # type: ignore[arg-type]
        pipeline.rules = without_sender_cap(rules, self.account)

        def restore() -> None:
            pipeline.swap_lookups(previous)
            pipeline.rules = rules

        return lookup, restore

    def _understood(self, ctx: MessageContext, record: MessageRecord,
                    raw: bytes) -> tuple[Job, Decision]:
        """The mail understood as live mail is (parse, PEC, filters, decision), recorded."""
        self.pipeline.lookups.for_record(record.id)
        job = self.pipeline._job(ctx, record, raw)
        return job, job.decision

    # -- reading ----------------------------------------------------------------------------
    def _collect(self, messages: Iterable[RemoteMessage]) -> tuple[list[_Input], int]:
        """The mail still to import, spooled, and how many were recorded earlier (counted)."""
        inputs: list[_Input] = []
        known = 0
        for message in messages:
            existing = self.store.get_message(self.account.name, message.ref)
            if existing is not None and existing.state.terminal:
                self.summary.add(outcome_of(existing), already_recorded=True)
                known += 1
                continue
            date, mid, parents = _header_facts(message.raw)
            spooled = self.spool.put(message.raw) if message.raw is not None else None
            inputs.append(_Input(message.ref, spooled, message.size, date or _now(), mid,
                                 parents))
        return inputs, known

    def _resolve_interrupted(self, inputs: list[_Input]) -> None:
        """Mail left PUSHING by an import call whose answer never got recorded (a crash, a
        Ctrl-C): its conversation's ticket, looked up by external_id, decides whether it is
        done. Nothing is sent before this look."""
        pending: dict[str, list[tuple[int, dict[str, object]]]] = {}
        for item in inputs:
            record = self.store.get_message(self.account.name, item.ref)
            if record is None or record.state != MessageState.PUSHING or not record.pending:
                continue
            data = record.pending
            if not data.get(PENDING_KEY):
                continue
            pending.setdefault(str(data.get("external_id") or ""), []).append((record.id, data))
        if not pending:
            return
        log.warning("account=%s: %d conversation(s) of an interrupted import: looking them up "
                    "before anything is sent again", self.account.name, len(pending))
        done_refs: set[str] = set()
        jobs: dict[str, list[ImportResult] | None] = {}
        for external_id, records in pending.items():
            ticket_id = self._ticket_of_job(records[0][1], jobs)
            if ticket_id is None and external_id:
                found = self.pipeline.host.find_tickets_by_external_id(external_id)
                ticket_id = first_ticket(found).id if found else None
            if ticket_id is None:
                continue
            for record_id, data in records:
                action = str(data.get("action") or "new_ticket")
                ids = [str(i) for i in data.get("thread_ids") or []]  # type: ignore[union-attr]
                self.store.finish_message(record_id, MessageState.DONE, action=action,
                                          ticket_id=ticket_id, thread_ids=ids, durable=False,
                                          fence=self.pipeline.fence)
                record = self.store.get_message_by_id(record_id)
                if record is not None:
                    done_refs.add(record.ref)
                    self.summary.add(outcome_of(record))
                    self.progress.advance()
            log.info("account=%s: conversation %s had reached the helpdesk as ticket #%s",
                     self.account.name, external_id, ticket_id)
        self.store.make_durable()
        inputs[:] = [i for i in inputs if i.ref not in done_refs]

    def _ticket_of_job(self, pending: dict[str, object],
                       jobs: dict[str, list[ImportResult] | None]) -> str | None:
        """The ticket an interrupted import job made for this conversation, when the job's id
        was recorded and the host still knows it (Zendesk: one day). Archived tickets are
        found only this way."""
        job, index, count = pending.get("job"), pending.get("index"), pending.get("count")
        if not (isinstance(job, str) and isinstance(index, int) and isinstance(count, int)):
            return None
        if job not in jobs:
            jobs[job] = self.host.import_results(job, count)
        results = jobs[job]
        if results is None or not 0 <= index < len(results):
            return None
        return results[index].ticket_id

    # -- understanding ----------------------------------------------------------------------
    def _understand(self, inputs: list[_Input], lookup: HistoryLookup) -> list[_Conversation]:
        conversations: dict[str, _Conversation] = {}
        for position, item in enumerate(inputs):
            if self.stop():
                self._stopped(len(inputs) - position + sum(len(c.mails) for c in
                                                             conversations.values()))
                return []
            result = self._understand_one(item, lookup, conversations)
            if result is not None:
                self._count(item, result)
        return sorted(conversations.values(), key=lambda c: (c.created_at, c.order))

    def _count(self, item: _Input, result: Outcome) -> None:
        self.summary.add(result)
        self.progress.advance()

    def _understand_one(self, item: _Input, lookup: HistoryLookup,
                        conversations: dict[str, _Conversation]) -> Outcome | None:
        """Decide one mail; None when it joined a conversation to import (counted then)."""
        pipeline = self.pipeline
        if item.spooled is None:
            return pipeline.process(item.ref, None, item.size).outcome
        raw = self.spool.get(item.spooled)
        earlier = self.store.get_message(self.account.name, item.ref)
        if earlier is not None and earlier.state == MessageState.PUSHING and \
                not (earlier.pending or {}).get(PENDING_KEY):
            # A live host call interrupted earlier: resumed the live way (look, then repeat).
            return pipeline.process(item.ref, raw, item.size).outcome
        ctx = MessageContext(self.account.name, item.ref)
        record = self.store.begin_message(self.account.name, item.ref,
                                          sha256=hashlib.sha256(raw).hexdigest(),
                                          durable=False)
        try:
            pipeline._archive(ctx, raw)
            job, decision = self._understood(ctx, record, raw)
            if job.holder is not None and job.holder != record.id:
                other = self.store.get_message_by_id(job.holder)
                if other is not None and other.ref not in self._refs and other.state not in (
                        MessageState.DONE, MessageState.IGNORED):
                    # A copy outside this import still on its way: the live rules wait for
                    # it or take its work over.
                    return pipeline.process(item.ref, raw, item.size).outcome
                self.store.finish_message(record.id, MessageState.IGNORED, action="duplicate",
                                          ticket_id=other.ticket_id if other else None,
                                          error=f"duplicate of record {job.holder}",
                                          durable=False, fence=self.pipeline.fence)
                return Outcome.DUPLICATE
        except TransientHostError as exc:
            self.store.record_failure(record.id, f"transient: {exc}", durable=False)
            log.warning("%s: helpdesk unavailable while deciding, left for the next run: %s",
                        ctx, exc)
            return Outcome.RETRY
        except (UnreadableMail, PermanentHostError) as exc:
            failed = pipeline._fail(ctx, record, f"{type(exc).__name__}: {exc}", raw)
            pipeline._log_outcome(ctx, failed)
            return failed.outcome
        date = _mail_date(job, item.date)
        if decision.action == Action.NEW_TICKET:
            self._conversations_begun += 1
            order = self._conversations_begun
            placeholder = f"import:{order}"
            # The external_id a live create would use (the adapter's lookups rely on it).
            external_id = pipeline._new_ticket_request(job, decision).external_id or ""
            conversation = _Conversation(placeholder, order, external_id, date)
            conversations[placeholder] = conversation
            lookup.open(placeholder, decision)
            self._join(conversation, lookup, ctx, record.id, item.spooled, date, decision, job)
            return None
        if decision.ticket_id in conversations \
                and decision.action in (Action.FOLLOW_UP, Action.INTERNAL_NOTE):
            self._join(conversations[decision.ticket_id], lookup, ctx, record.id,
                       item.spooled, date, decision, job)
            return None
        # Ignored mail, or mail for a ticket already on the helpdesk: as live mail.
        result = pipeline._guarded(job, lambda: pipeline._execute(job, decision))
        pipeline._log_outcome(ctx, result)
        return result.outcome

    def _join(self, conversation: _Conversation, lookup: HistoryLookup, ctx: MessageContext,
              record_id: int, spooled: tuple[int, int], date: datetime, decision: Decision,
              job: Job) -> None:
        thread_ids = tuple(ticket_thread_ids(job))
        lookup.join(conversation.placeholder, thread_ids)
        conversation.mails.append(_Mail(ctx, record_id, spooled, date, decision, thread_ids))

    def _to_import(self, conversation: _Conversation) -> ImportTicket:
        """The conversation's import request, built from its spooled mails as the live
        pipeline builds a create and its comments (bodies, uploads, trimmed replies)."""
        first, *replies = conversation.mails
        ticket = self.pipeline._new_ticket_request(self._job_of(first), first.decision)
        comments = []
        for mail in replies:
            comment = self.pipeline._comment_request(self._job_of(mail), mail.decision)
            comments.append(DatedComment(comment, mail.date))
        # history.status, when set, is every imported ticket's status (over what replies set).
        return ImportTicket(ticket, conversation.created_at, tuple(comments),
                            status=self.settings.status)

    def _job_of(self, mail: _Mail) -> Job:
        """The mail understood again from its spooled bytes (parse, PEC, filters: the same
        answers; only the decision made in conversation order is kept)."""
        record = self.store.get_message_by_id(mail.record_id)
        assert record is not None
        return self.pipeline._job(mail.ctx, record, self.spool.get(mail.spooled))

    # -- importing --------------------------------------------------------------------------
    def _import(self, conversations: list[_Conversation]) -> None:
        for start in range(0, len(conversations), self.batch_size):
            if self.stop():
                self._stopped(sum(len(c.mails) for c in conversations[start:]))
                return
            self._import_batch(conversations[start:start + self.batch_size])

    def _stopped(self, left: int) -> None:
        """A shutdown: what is not imported yet stays unfinished for the next run."""
        log.info("account=%s: stopping the history import; %d mail(s) wait for the next run",
                 self.account.name, left)
        for _ in range(left):
            self.summary.add(Outcome.RETRY)

    def _import_batch(self, batch: list[_Conversation]) -> None:
        for conversation in batch:
            for mail in conversation.mails:
                self.store.set_pending(mail.record_id, mail.action,
                                       _pending(conversation, mail),
                                       fence=self.pipeline.fence)

        def record_job(job_id: str) -> None:
            for index, conversation in enumerate(batch):
                for mail in conversation.mails:
                    self.store.set_pending(mail.record_id, mail.action, {
                        **_pending(conversation, mail), "job": job_id, "index": index,
                        "count": len(batch)}, fence=self.pipeline.fence)

        try:
            requests = [self._to_import(c) for c in batch]
            results = self.host.import_tickets(requests, archive_closed=self.settings.archive,
                                               on_job=record_job)
        except TransientHostError as exc:
            log.warning("account=%s: import of %d conversation(s) unanswered: %s",
                        self.account.name, len(batch), exc)
            results = [ImportResult(None, f"transient: {exc}")] * len(batch)
        except PermanentHostError as exc:
            if len(batch) > 1:
                log.warning("account=%s: the helpdesk refused a batch (%s); importing its %d "
                            "conversations one by one", self.account.name, exc, len(batch))
                for conversation in batch:
                    self._import_batch([conversation])
                return
            results = [ImportResult(None, f"{type(exc).__name__}: {exc}")]
        for conversation, result in zip(batch, results, strict=True):
            self._finish(conversation, result)
        self.store.make_durable()

    def _finish(self, conversation: _Conversation, result: ImportResult) -> None:
        ticket_id = result.ticket_id
        transient = result.error is not None and result.error.startswith("transient:")
        if ticket_id is None:
            try:  # the call may have created it all the same
                found = self.pipeline.host.find_tickets_by_external_id(conversation.external_id)
            except HostError as exc:
                log.warning("account=%s: cannot look up %s: %s", self.account.name,
                            conversation.external_id, exc)
                found, transient = [], True
            if found:
                ticket_id = first_ticket(found).id
        for mail in conversation.mails:
            if ticket_id is not None:
                self.store.finish_message(mail.record_id, MessageState.DONE, action=mail.action,
                                          ticket_id=ticket_id, thread_ids=mail.thread_ids,
                                          durable=False, fence=self.pipeline.fence)
                outcome = {"new_ticket": Outcome.TICKETED, "follow_up": Outcome.FOLLOWED_UP
                           }.get(mail.action, Outcome.NOTED)
                self.pipeline._log_outcome(mail.ctx, _imported(outcome, mail, ticket_id))
            elif transient:
                # Still PUSHING: the next run looks the conversation up before sending it.
                self.store.record_failure(mail.record_id, result.error or "", durable=False)
                outcome = Outcome.RETRY
            else:
                record = self.store.get_message_by_id(mail.record_id)
                assert record is not None
                outcome = self.pipeline._fail(mail.ctx, record, f"history import refused: "
                                              f"{result.error}",
                                              self.spool.get(mail.spooled)).outcome
            self.summary.add(outcome)
            self.progress.advance()


def _pending(conversation: _Conversation, mail: _Mail) -> dict[str, object]:
    """What a mail's record holds while its conversation's import is under way."""
    return {PENDING_KEY: True, "action": mail.action, "external_id": conversation.external_id,
            "thread_ids": list(mail.thread_ids)}


def _imported(outcome: Outcome, mail: _Mail, ticket_id: str) -> Result:
    return Result(outcome, mail.record_id, ticket_id, "imported with its date "
                  f"{mail.date.isoformat()}")


def without_sender_cap(rules: Rules, account: AccountConfig) -> Rules:
    """The rules with the per-sender daily cap lifted for ``account``: the cap holds back a
    live mail storm; an archive holds years of a customer's mail, days of many mails
    included, and an import is no storm."""
    settings = replace(rules.for_account(account), sender_cap_per_day=0)
    return replace(rules, settings={**rules.settings, account.name: settings})


def _now() -> datetime:
    return datetime.now(UTC)


def _mail_date(job: Job, fallback: datetime) -> datetime:
    """When the mail was written: the shown message's Date, else the envelope's, else the
    header read at collection (else now)."""
    for message in (job.content, job.message):
        if message.date is not None:
            date = message.date
            return date if date.tzinfo is not None else date.replace(tzinfo=UTC)
    return fallback


def import_history(pipeline: Pipeline, messages: Iterable[RemoteMessage],
                   settings: HistoryPolicy | None = None, *,
                   progress: Callable[[int], Progress] | None = None,
                   batch_size: int | None = None,
                   stop: Callable[[], bool] = lambda: False) -> AccountSummary:
    """Import ``messages`` (old mail of ``pipeline``'s account) as dated tickets; ``stop``
    ends it early between mails and between batches (what is left waits for the next run)."""
    return HistoryImport(pipeline, settings, progress=progress, batch_size=batch_size,
                         stop=stop).run(messages)


