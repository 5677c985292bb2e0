"""The outbound worker: turn queued jobs into PEC messages, and report on the ticket.

For each job, in order:

1. Read the ticket and its comments through the API (the webhook is only the signal).
2. Pick the comment to send (latest public one, unless ``reply_comment: any``) and claim it:
   one send per comment, whoever asked (webhook, a Zendesk retry, the sweep).
3. Render subject and bodies, download the comment's attachments, build the message (every
   helpdesk value checked; a bad one fails the job with a clear error, nothing is sent).
4. Record the Message-ID in the store (receipts can arrive within seconds) and mark the job
   ``sending``; submit over SMTP within the account's rate limit.
5. Write the outcome on the ticket: an internal note and ``pec_sent`` / ``pec_send_failed`` /
   ``pec_send_uncertain``, removing the reply and pending tags.

Temporary failures (SMTP 4xx, Zendesk unavailable) go back to the queue with a doubling
backoff up to ``max_attempts``; permanent ones (SMTP 5xx, invalid data) fail at once.

The sweep asks Zendesk for tickets still tagged with a reply tag (the trigger never ran) or
the pending tag (the webhook never arrived) and queues them; the per-comment claim makes a
late webhook and the sweep agree.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Protocol

from connector.errors import (
    HostCertificateError,
    HostError,
    PermanentHostError,
    TransientHostError,
)
from connector.outbound.compose import (
    ComposeError,
    OutgoingAttachment,
    OutgoingMessage,
    build_message,
    clean_subject,
    ensure_ticket_reference,
    new_message_id,
    valid_message_ids,
)
from connector.outbound.model import CommentView, OutboundAPI, TicketView
from connector.outbound.queue import Job, JobState, OutboundQueue, process_owner
from connector.outbound.settings import OutboundConfig, OutboundSettings
from connector.outbound.smtp import (
    PermanentSendError,
    SendRateLimiter,
    SmtpSender,
    TemporarySendError,
    UncertainSendError,
)
from connector.outbound.templates import TemplateContext, render_bodies, render_subject

log = logging.getLogger(__name__)

TAG_SENT = "pec_sent"
TAG_FAILED = "pec_send_failed"
TAG_UNCERTAIN = "pec_send_uncertain"
MAX_BACKOFF = 3600.0
#: Tickets updated this recently are left to the webhook: its job is probably on the way.
SWEEP_GRACE = 120.0
IDLE_POLL = 5.0  # seconds: also picks up jobs another process (outbound retry) requeued
_MAX_REFERENCES = 10


class MessageIdRecorder(Protocol):
    """The store's threading map (every ``Store`` satisfies it)."""

    def map_message_ids(self, ticket_id: str, message_ids: Iterable[str], *,
                        direction: str = "in", account: str | None = None) -> None: ...


@dataclass(frozen=True)
class PreparedSend:
    message: EmailMessage
    recipient: str
    subject: str
    message_id: str
    comment_id: int


@dataclass(frozen=True)
class Skip:
    reason: str
    holder: int | None = None  # the job that sends (or sent) the same comment


def asked_to_send(ticket: TicketView, settings: OutboundSettings) -> bool:
    """True when the ticket, as read from the helpdesk now, asks ``settings.account`` to send
    its reply: the account's reply tag (macro applied, trigger not yet run) or pending tag
    (the trigger ran and called the webhook)."""
    return ticket.has_tag(settings.reply_tag) or ticket.has_tag(settings.pending_tag)


def backoff(settings: OutboundSettings, attempts: int) -> float:
    return min(settings.retry_backoff * 2 ** max(0, attempts - 1), MAX_BACKOFF)


def _age_seconds(stamp: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return now - when.timestamp()


def make_sender(settings: OutboundSettings) -> SmtpSender:
    """The account's sender: SMTP submission, or Graph sendMail (``transport: graph``)."""
    if settings.transport == "graph":
        from connector.outbound.graph import GraphSender

        return GraphSender(settings.smtp)  # type: ignore[return-value]
    return SmtpSender(settings.smtp)


class OutboundWorker:
    """Processes outbound jobs; one instance per process (it owns its claims)."""

    def __init__(self, config: OutboundConfig, queue: OutboundQueue, api: OutboundAPI,
                 store: MessageIdRecorder, *, senders: Mapping[str, SmtpSender] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, lease: float = 600.0,
                 may_sweep: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.queue = queue
        self.api = api
        self.store = store
        self.accounts = {a.account: a for a in config.enabled_accounts}
        self.senders = dict(senders or {})
        for name, settings in self.accounts.items():
            self.senders.setdefault(name, make_sender(settings))
        self.rate = SendRateLimiter({n: a.rate_limit_per_minute for n, a in self.accounts.items()},
                                    clock=clock, sleep=sleep)
        self.clock = clock
        self.lease = lease
        #: Several instances: only the holder of the sweep's lease sweeps.
        self.may_sweep = may_sweep or (lambda: True)
        self.owner = process_owner(uuid.uuid4().hex[:8])
        self.wake = threading.Event()
        self.stop_event = threading.Event()

    # -- the loop ------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Recover abandoned claims, then process every job that is due. Returns the count."""
        for job in self.queue.recover(self.owner):
            log.warning("account=%s ticket=%s job=%s: interrupted during the SMTP transaction; "
                        "not sent again automatically", job.account, job.ticket_id, job.id)
        done = 0
        while not self.stop_event.is_set():
            job = self.queue.claim_next(self.owner, self.lease, can_send=self._can_send)
            if job is None:
                break
            self.process(job)
            done += 1
        return done

    def _can_send(self, account: str) -> bool:
        return account not in self.accounts or self.rate.ready(account)

    def run_forever(self) -> None:
        """Until ``stop()``: process due jobs, sweep every ``sweep_interval`` minutes."""
        service = self.config.service
        interval = (service.sweep_interval if service else 5.0) * 60.0
        next_sweep = self.clock()
        while not self.stop_event.is_set():
            # Cleared before the pass, so a webhook arriving during it wakes the next wait.
            self.wake.clear()
            try:
                self.run_once()
                if self.clock() >= next_sweep and not self.may_sweep():
                    # Another instance holds the sweep's lease: look again shortly, in case
                    # this one gets it (its holder stopped or died).
                    next_sweep = self.clock() + min(interval, 2 * IDLE_POLL)
                elif self.clock() >= next_sweep:
                    self.sweep()
                    next_sweep = self.clock() + interval
                    if service:
                        self.queue.forget_deliveries(self.clock() - 2 * service.timestamp_tolerance)
            except Exception:  # the worker must outlive any single surprise
                log.exception("outbound worker: unexpected error; continuing")
            try:
                wait = self._idle_wait(next_sweep)
            except Exception as exc:  # the store unreachable for a while: look again later
                log.warning("outbound worker: cannot read the queue (%s); retrying", exc)
                wait = IDLE_POLL
            self.wake.wait(wait)

    def _idle_wait(self, next_sweep: float) -> float:
        """How long to sleep: until the next due job or sweep, at most IDLE_POLL. A job due
        now but not claimed waits for its account's rate slot (no busy loop)."""
        now = self.clock()
        wait = min(IDLE_POLL, max(0.0, next_sweep - now))
        due = self.queue.next_due_at()
        if due is not None and due > now:
            wait = min(wait, due - now)
        elif due is not None:
            slots = [w for w in (self.rate.wait_needed(a) for a in self.accounts) if w > 0]
            if slots:
                wait = min(max(wait, min(slots)), IDLE_POLL)
        return max(wait, 0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    # -- one job -------------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        settings = self.accounts.get(job.account)
        ctx = f"account={job.account} ticket={job.ticket_id} job={job.id}"
        if settings is None:
            log.error("%s: no enabled outbound account of that name; job dropped", ctx)
            self.queue.mark_skipped(job.id, self.owner, "no enabled outbound account "
                                    f"{job.account!r}")
            return
        try:
            if job.needs_report:
                self._report(job, settings)
            else:
                self._send(job, settings, ctx)
        except Exception as exc:
            log.exception("%s: unexpected error", ctx)
            current = self.queue.job(job.id)
            if current is not None and current.owner == self.owner:
                if current.state == JobState.SENDING:
                    self.queue.mark_uncertain(job.id, self.owner, f"internal error: {exc}")
                elif current.state == JobState.WORKING:
                    self._retry_or_fail(current, settings, f"internal error: {exc}", None)
                else:
                    self.queue.report_later(job.id, self.owner, f"internal error: {exc}",
                                            self.clock() + settings.retry_backoff)

    def _send(self, job: Job, settings: OutboundSettings, ctx: str) -> None:
        try:
            prepared = self._prepare(job, settings)
        except TransientHostError as exc:
            self._retry_or_fail(job, settings, str(exc), exc.retry_after)
            return
        except (PermanentHostError, HostCertificateError, ComposeError) as exc:
            log.error("%s: cannot send: %s", ctx, exc)
            self.queue.mark_failed(job.id, self.owner, str(exc))
            self._report_now(job.id, settings)
            return
        if isinstance(prepared, Skip):
            self._skip(job, settings, prepared, ctx)
            return
        self.queue.begin_send(job.id, self.owner, message_id=prepared.message_id,
                              recipient=prepared.recipient, subject=prepared.subject)
        # Before the send: the provider's acceptance receipt can arrive within seconds, and
        # the inbound side must already know whose message it is about.
        self.store.map_message_ids(job.ticket_id, [prepared.message_id], direction="out",
                                   account=job.account)
        self.rate.take(job.account)
        sender = self.senders[job.account]
        try:
            result = sender.send(prepared.message, sender=settings.from_address,
                                 recipients=[prepared.recipient])
        except TemporarySendError as exc:
            log.warning("%s: temporary SMTP failure: %s", ctx, exc)
            self._retry_or_fail(self.queue.job(job.id) or job, settings, str(exc), None)
            return
        except PermanentSendError as exc:
            log.error("%s: the provider refused the message: %s", ctx, exc)
            self.queue.mark_failed(job.id, self.owner, str(exc))
        except UncertainSendError as exc:
            log.error("%s: outcome unknown: %s", ctx, exc)
            self.queue.mark_uncertain(job.id, self.owner, str(exc))
        else:
            log.info("%s: sent to %s as <%s>: %s", ctx, prepared.recipient,
                     prepared.message_id, result.reply)
            self.queue.mark_sent(job.id, self.owner, result.reply)
        self._report_now(job.id, settings)

    def _retry_or_fail(self, job: Job, settings: OutboundSettings, error: str,
                       retry_after: float | None) -> None:
        ctx = f"account={job.account} ticket={job.ticket_id} job={job.id}"
        if job.attempts >= settings.max_attempts:
            message = f"{error} (gave up after {job.attempts} attempts)"
            log.error("%s: %s", ctx, message)
            self.queue.mark_failed(job.id, self.owner, message)
            self._report_now(job.id, settings)
            return
        delay = max(backoff(settings, job.attempts), retry_after or 0.0)
        log.warning("%s: attempt %d/%d failed: %s; next in %.0fs", ctx, job.attempts,
                    settings.max_attempts, error, delay)
        self.queue.retry_later(job.id, self.owner, error, self.clock() + delay)

    def _skip(self, job: Job, settings: OutboundSettings, skip: Skip, ctx: str) -> None:
        level = logging.WARNING if job.source == "webhook" and skip.holder is None \
            else logging.INFO
        log.log(level, "%s: not sent (%s request): %s", ctx, job.source, skip.reason)
        if job.source == "webhook" and skip.holder is not None:
            # An agent asked again for a comment that already went out: say so on the ticket.
            holder = self.queue.job(skip.holder)
            state = holder.state.value if holder else "unknown"
            sent_as = f", Message-ID <{holder.message_id}>" if holder and holder.message_id \
                else ""
            text = (f"PEC not sent again: this comment is handled by outbound job "
                    f"{skip.holder} (state {state}{sent_as}). To send it once more anyway, run "
                    f"`postmaster-bridge outbound retry {job.id}`.")
            try:
                self.api.add_note(job.ticket_id, text,
                                  remove_tags=(settings.reply_tag, settings.pending_tag),
                                  dedupe_key=job.note_key)
            except HostError as exc:
                log.warning("%s: could not note the duplicate on the ticket: %s", ctx, exc)
        self.queue.mark_skipped(job.id, self.owner, skip.reason)

    # -- reading the helpdesk and building the message -----------------------------------------
    def _prepare(self, job: Job, settings: OutboundSettings) -> PreparedSend | Skip:
        ticket = self.api.ticket(job.ticket_id)
        if not job.forced and not asked_to_send(ticket, settings):
            # A signed webhook is only the signal: the ticket itself must say that an agent
            # asked this account to send (its macro's tag, turned into the pending tag by the
            # trigger). Another account's tag, or none, sends nothing.
            return Skip(f"the ticket carries neither {settings.reply_tag} nor "
                        f"{settings.pending_tag}: no reply by this account was asked for")
        reply, latest_public = self._pick_comments(job.ticket_id, settings)
        holder = self.queue.claim_send(job, reply.id)
        if holder is not None:
            return Skip(f"comment {reply.id} is sent by job {holder}", holder)
        recipient, recipient_name = self._recipient(ticket, settings)
        context = TemplateContext(ticket, reply, latest_public,
                                  from_address=settings.from_address,
                                  display_name=settings.display_name)
        subject = render_subject(settings.subject_template, context)
        subject = ensure_ticket_reference(clean_subject(subject), ticket.id,
                                          settings.ticket_pattern, settings.ticket_hook)
        text, html_body = render_bodies(settings.message_template, context)
        attachments = self._attachments(reply, settings)
        in_reply_to, references = self._thread(ticket.id)
        message_id = job.message_id or new_message_id(settings.from_address, job.id)
        message = build_message(
            OutgoingMessage(
                from_address=settings.from_address,
                from_name=settings.display_name,
                to_address=recipient,
                to_name=recipient_name,
                subject=subject,
                text_body=text,
                html_body=html_body,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=references,
                attachments=attachments,
                receipt_type=settings.receipt_type,
            ),
            max_bytes=settings.max_message_bytes,
            blocked_extensions=settings.blocked_extensions,
        )
        return PreparedSend(message, message["To"].addresses[0].addr_spec, subject,
                            message_id, reply.id)

    def _pick_comments(self, ticket_id: str,
                       settings: OutboundSettings) -> tuple[CommentView, CommentView | None]:
        reply: CommentView | None = None
        latest_public: CommentView | None = None
        for comment in self.api.comments(ticket_id):
            if reply is None and (comment.public or settings.reply_comment == "any"):
                reply = comment
            if latest_public is None and comment.public:
                latest_public = comment
            if reply is not None and latest_public is not None:
                break
        if reply is None:
            raise ComposeError("comment", "the ticket has no public comment to send")
        return reply, latest_public

    @staticmethod
    def _recipient(ticket: TicketView, settings: OutboundSettings) -> tuple[str, str]:
        """The requester, or the address in the configured ticket field (a changed
        recipient); checked by compose like every helpdesk value."""
        if settings.recipient_field_id is not None:
            override = ticket.fields.get(settings.recipient_field_id, "").strip()
            if override:
                return override, ""
        if not ticket.requester_email:
            raise ComposeError("to", "the ticket's requester has no e-mail address")
        return ticket.requester_email, ticket.requester_name

    def _attachments(self, reply: CommentView,
                     settings: OutboundSettings) -> tuple[OutgoingAttachment, ...]:
        if not settings.include_attachments:
            return ()
        budget = settings.max_message_bytes
        files = []
        for ref in reply.attachments:
            data = self.api.download(ref, limit=budget)
            budget -= len(data)
            files.append(OutgoingAttachment(ref.filename, ref.content_type, data))
        return tuple(files)

    def _thread(self, ticket_id: str) -> tuple[str | None, tuple[str, ...]]:
        """In-Reply-To: the ticket's last inbound message; References: its recent mail."""
        known = self.queue.thread_message_ids(ticket_id)
        usable, dropped = valid_message_ids([mid for mid, _direction in known])
        if dropped:
            log.warning("ticket=%s: unusable Message-IDs left out of References: %r",
                        ticket_id, dropped[:3])
        inbound = [mid for mid, direction in known if direction == "in" and mid in usable]
        in_reply_to = inbound[-1] if inbound else None
        references = [mid for mid in dict.fromkeys(usable) if mid != in_reply_to]
        references = references[-(_MAX_REFERENCES - 1):]
        if in_reply_to:
            references.append(in_reply_to)
        return in_reply_to, tuple(references)

    # -- reporting on the ticket ---------------------------------------------------------------
    def _report_now(self, job_id: int, settings: OutboundSettings) -> None:
        job = self.queue.job(job_id)
        if job is not None and job.needs_report:
            self._report(job, settings)

    def _report(self, job: Job, settings: OutboundSettings) -> None:
        ctx = f"account={job.account} ticket={job.ticket_id} job={job.id}"
        text, add = self._note(job, settings)
        remove = (settings.reply_tag, settings.pending_tag)
        if job.state == JobState.SENT:
            remove += (TAG_FAILED, TAG_UNCERTAIN)  # the latest outcome is a success
        try:
            self.api.add_note(job.ticket_id, text, add_tags=add, remove_tags=remove,
                              dedupe_key=job.note_key)
        except TransientHostError as exc:
            log.warning("%s: could not write the result on the ticket yet: %s", ctx, exc)
            self.queue.report_later(job.id, self.owner, str(exc),
                                    self.clock() + max(settings.retry_backoff,
                                                       exc.retry_after or 0.0))
            return
        except HostError as exc:
            log.error("%s: cannot write the result on the ticket: %s", ctx, exc)
            self.queue.mark_reported(job.id, self.owner, str(exc))
            return
        self.queue.mark_reported(job.id, self.owner)

    @staticmethod
    def _note(job: Job, settings: OutboundSettings) -> tuple[str, tuple[str, ...]]:
        sender = f"{settings.account} ({settings.from_address})"
        if job.state == JobState.SENT:
            return (f"Sent by PEC from {sender} to {job.recipient}.\n"
                    f"Subject: {job.subject}\n"
                    f"Message-ID: <{job.message_id}>\n"
                    f"Provider's answer: {job.smtp_reply}\n"
                    "The provider's acceptance and delivery receipts are added to this ticket "
                    "when they arrive.", (TAG_SENT,))
        if job.state == JobState.UNCERTAIN:
            return (f"PEC from {sender} to {job.recipient}: outcome UNKNOWN. {job.error}.\n"
                    f"Message-ID: <{job.message_id}>\n"
                    "If the provider's acceptance receipt for this Message-ID arrives, it was "
                    "sent. The bridge does not send it again by itself; to send it again run "
                    f"`postmaster-bridge outbound retry {job.id}`.", (TAG_UNCERTAIN,))
        return (f"PEC NOT sent from {sender} to {job.recipient or 'the requester'}.\n"
                f"Error: {job.error}\n"
                "Nothing was sent. Correct the cause, then apply the macro again (or run "
                f"`postmaster-bridge outbound retry {job.id}`).", (TAG_FAILED,))

    # -- the sweep -----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Queue tickets still carrying a reply or pending tag. Returns how many were queued."""
        queued = 0
        now = self.clock()
        for settings in self.accounts.values():
            for tag in (settings.reply_tag, settings.pending_tag):
                try:
                    hits = self.api.tagged_tickets(tag)
                except HostError as exc:
                    log.warning("account=%s: sweep for tag %s failed: %s", settings.account,
                                tag, exc)
                    continue
                for hit in hits:
                    if self.queue.has_open_job(settings.account, hit.id):
                        continue
                    age = _age_seconds(hit.updated_at, now)
                    if age is not None and age < SWEEP_GRACE:
                        continue
                    result = self.queue.enqueue(
                        settings.account, hit.id, source="sweep",
                        dedupe_key=f"sweep:{settings.account}:{hit.id}:{hit.updated_at}",
                        payload={"tag": tag})
                    if result.created:
                        queued += 1
                        log.warning("account=%s ticket=%s: found by the sweep (tag %s): its "
                                    "webhook never arrived; queued as job %s",
                                    settings.account, hit.id, tag, result.job_id)
        if queued:
            self.wake.set()
        return queued
