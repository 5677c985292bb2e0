"""Polls accounts: fetch, run each message through the pipeline, then move it on the server.

The order is the whole point: the pipeline records a message's effect in the store (committed)
before the mailbox is told to move or delete it. A crash in between leaves a recorded message
in the inbox; the next pass sees its terminal state and only moves it. The pipeline commits
most of those records without an fsync, so every batch of moves (and POP3 deletes) is preceded
by ``store.make_durable()``: a power cut cannot take back a record whose mail has left.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from connector.config import AccountConfig
from connector.errors import (
    CertificateError,
    FetchError,
    GrantRevokedError,
    LeaseLostError,
    StoreCorruptError,
)
from connector.fetch import open_mailbox
from connector.fetch.base import ListedMessage, Mailbox, MessageHandle, RemoteMessage
from connector.fetch.pacing import ConnectionSlot, LoginPacing
from connector.fetch.status import ConnectionState, StatusBoard
from connector.fetch.wakeup import StopEvent
from connector.service.connections import RECONNECTED
from connector.service.inflight import InFlight, conversation_keys
from connector.service.leases import LeaseKeeper
from connector.service.parsing import MIN_MESSAGES, Parser, parse_ahead, prepare
from connector.service.pipeline import Outcome, Pipeline, Result, outcome_of
from connector.service.pool_choice import PoolChoice
from connector.store.base import MessageState, Store
from connector.store.sqlite import damaged_message
from connector.tls import certificate_failure, describe_certificate_failure
from connector.understand import Prepared

log = logging.getLogger("connector.runner")


@dataclass
class AccountSummary:
    account: str
    counts: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    ignored_as: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome, *, already_recorded: bool = False,
            ignored_as: str | None = None) -> None:
        self.counts["fetched"] += 1
        self.counts["known" if already_recorded else outcome.value] += 1
        if ignored_as is not None and not already_recorded:
            self.ignored_as[ignored_as] += 1
        elif outcome is Outcome.DUPLICATE and not already_recorded:
            self.ignored_as["duplicate"] += 1

    def add_result(self, result: Result) -> None:
        self.add(result.outcome, already_recorded=result.already_recorded,
                 ignored_as=result.ignored_as)

    def line(self) -> str:
        c = self.counts
        ignored = f"ignored={c['ignored'] + c['duplicate']}"
        if self.ignored_as:
            ignored += "(" + ",".join(f"{why}:{n}" for why, n in
                                      sorted(self.ignored_as.items())) + ")"
        parts = [f"fetched={c['fetched']}", f"ticketed={c['ticketed']}",
                 f"followed-up={c['followed_up']}", f"noted={c['noted']}",
                 ignored, f"held={c['held']}", f"failed={c['failed']}",
                 f"retry={c['retry']}"]
        if c["skipped"]:
            parts.append(f"skipped={c['skipped']}")
        if c["known"]:
            parts.append(f"already-recorded={c['known']}")
        text = f"{self.account}: " + " ".join(parts)
        return text + (f" error={self.error}" if self.error else "")


MailboxFactory = Callable[[AccountConfig], Mailbox]


#: How often a running service checks the ledger with ``PRAGMA quick_check``.
INTEGRITY_CHECK_SECONDS = 15 * 60.0

#: On a stop, how long the workers get to finish the mail in hand. A worker still busy then
#: (a call that hangs on a server that stopped answering) is left behind: the process exits
#: as a crash would, and that mail is resumed from the ledger by the next run or instance.
STOP_GRACE_SECONDS = 30.0

#: Connection failures back off exponentially with jitter: 5 s, 10 s, 20 s ... capped. At the
#: default max_failures (10) an account that never gets through is disabled after about
#: 40 minutes; a server back after a restart is found within seconds.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 30 * 60.0
#: A lost connection is retried after a random 0..this many seconds, so that the accounts of
#: a restarted server do not all come back in the same instant (the login pacer spreads the
#: rest).
RECONNECT_JITTER_SECONDS = 2.0
#: An IDLE connection lost after at least this long was healthy: its loss is a first one.
#: Lost sooner, again and again, the reconnections back off like failures.
HEALTHY_IDLE_SECONDS = 60.0


def backoff_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` consecutive connection failures (full jitter band
    of +-20 % so many bridges do not hammer a recovering server in step)."""
    if failures <= 0:
        return 0.0
    base = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
    return base * (rng or random).uniform(0.8, 1.2)


def conversation_keys_of(ref: str, prepared: Prepared | None,
                         ticket_pattern: str) -> frozenset[str]:
    """The keys of the mail as fetched and, for PEC, of the certified original it carries
    (whose sender is the customer; the envelope's is the provider)."""
    if prepared is None:
        return conversation_keys(None, ref=ref)
    original = prepared.original
    keys = conversation_keys(prepared.message, ref=ref, ticket_pattern=ticket_pattern,
                             sender=original is None)
    if original is not None:
        keys |= conversation_keys(original, ref=ref, ticket_pattern=ticket_pattern)
    return keys


class AccountPoller:
    """Works one account: a connection kept open across polls, IDLE when offered, health
    bookkeeping (consecutive failures, auto-disable) and the connection log.

    With a ``parser`` (connector.service.parsing.ParsePool), passes of at least
    ``MIN_MESSAGES`` messages have them parsed ahead in worker processes; the pipeline still
    processes them one by one in fetch order."""

    def __init__(self, account: AccountConfig, store: Store, pipeline: Pipeline, *,
                 dry_run: bool = False, mailbox_factory: MailboxFactory = open_mailbox,
                 stop: threading.Event | None = None, parser: Parser | None = None,
                 pacing: LoginPacing | None = None, board: StatusBoard | None = None) -> None:
        self.account = account
        self.store = store
        self.pipeline = pipeline
        self.dry_run = dry_run
        self.mailbox_factory = mailbox_factory
        self.stop: threading.Event = stop or StopEvent()
        self.mailbox: Mailbox | None = None
        self.parser = parser
        self.pacing = pacing or LoginPacing()
        self.board = board or StatusBoard()
        self._slot: ConnectionSlot | None = None
        #: Why the last connection was lost, until the next login succeeds (a reconnection).
        self._lost: str | None = None
        #: IDLE connections lost in a row, each soon after the one before.
        self._idle_losses = 0
        #: Whether this account's mails go to the helpdesk several at once (measured).
        self.pool_choice = PoolChoice()
        self._told_mode = self.pool_choice.mode

    # -- connection ------------------------------------------------------------------------
    def _log(self, level: str, event: str, detail: str | None = None,
             duration: float | None = None) -> None:
        if self.dry_run:
            return
        self.store.log_event(level=level, kind="connection", account=self.account.name,
                             event=event, detail=detail,
                             duration_ms=round(duration * 1000, 1) if duration is not None
                             else None)

    def _state(self, state: ConnectionState, detail: str | None = None) -> None:
        self.board.set_state(self.account.name, state, detail)

    def _connected(self) -> Mailbox | None:
        """The open connection (checked with NOOP where the mailbox has it), or a new one
        through the server's login pacer. None when the service stopped while waiting."""
        mailbox = self.mailbox
        if mailbox is not None and getattr(mailbox, "connected", True):
            noop = getattr(mailbox, "noop", None)
            try:
                if noop is not None:
                    noop()  # the server may have closed a connection kept since last pass
                return mailbox
            except FetchError as exc:
                self._connection_lost(f"kept connection is gone: {exc}")
        self.close()
        pacer = self.pacing.for_server(self.account.host, self.account.port)
        if pacer.would_wait():
            self._state(ConnectionState.WAITING_FOR_LOGIN, pacer.server)
        slot = pacer.acquire(self.stop)
        if slot is None:
            return None
        self._state(ConnectionState.CONNECTING)
        started = time.monotonic()
        mailbox = self.mailbox_factory(self.account)
        try:
            mailbox.connect()
        except BaseException:
            slot.release()
            raise
        self.mailbox, self._slot = mailbox, slot
        self._state(ConnectionState.CONNECTED)
        self.board.server_event(self.account.name, "logged in")
        self._log("info", "login", f"{self.account.protocol} {self.account.host}:"
                  f"{self.account.port}", time.monotonic() - started)
        if self._lost is not None:
            self.board.reconnected(self.account.name)
            self._log("info", RECONNECTED, f"after: {self._lost}")
            log.info("account=%s: reconnected (lost: %s)", self.account.name, self._lost)
            self._lost = None
        return mailbox

    def _connection_lost(self, reason: str) -> None:
        """The server closed, reset or stopped answering a kept connection: say so at once
        (log, communication log, last server event) and drop it; the next pass reconnects."""
        self._lost = reason
        log.warning("account=%s: connection lost: %s", self.account.name, reason)
        self._log("warning", "connection lost", reason)
        self.board.server_event(self.account.name, f"connection lost: {reason}"[:300])
        self.close()

    def close(self) -> None:
        mailbox, self.mailbox = self.mailbox, None
        slot, self._slot = self._slot, None
        try:
            if mailbox is not None:
                mailbox.close()
        finally:
            if slot is not None:
                slot.release()

    @property
    def enabled(self) -> bool:
        return self.dry_run or self.store.get_health(self.account.name).enabled

    def poll(self) -> AccountSummary:
        """One pass. POP3 connections are closed after it, since QUIT commits deletions."""
        summary = AccountSummary(self.account.name)
        if not self.enabled:
            summary.error = "account is disabled"
            return summary
        started = time.monotonic()
        try:
            mailbox = self._connected()
            if mailbox is None:  # stopped while waiting for a login slot
                return summary
            self._poll(mailbox, summary)
            if self.account.protocol == "pop3":
                self.close()
        except GrantRevokedError as exc:
            self.close()
            summary.error = str(exc)
            self._grant_revoked(exc, time.monotonic() - started)
            return summary
        except (FetchError, CertificateError) as exc:
            self.close()
            summary.error = str(exc)
            failure = certificate_failure(exc)
            if failure is not None:
                self._certificate_failed(exc, failure, time.monotonic() - started)
            elif isinstance(exc, CertificateError):
                raise
            else:
                self._failed(str(exc), time.monotonic() - started)
            return summary
        if not self.dry_run:
            self.store.record_success(self.account.name, backlog=summary.counts["retry"])
        self._log("info", "fetch", f"{summary.counts['fetched']} message(s)",
                  time.monotonic() - started)
        return summary

    def _failed(self, error: str, duration: float) -> None:
        log.error("account=%s: mailbox unavailable: %s", self.account.name, error)
        if self.dry_run:
            return
        failures = self.store.record_connection_failure(self.account.name, error)
        self._log("error", "connection failed", error, duration)
        if self.account.auto_disable and failures >= self.account.max_failures:
            reason = (f"disabled after {failures} consecutive connection failures; last: "
                      f"{error}")
            # Logged first: whoever sees the account disabled finds the entry saying why.
            self._log("error", "account disabled", reason)
            self.store.set_account_enabled(self.account.name, False, reason)
            log.error("account=%s: %s. Fix the cause, then re-enable it with "
                      "'postmaster-bridge accounts enable %s'", self.account.name, reason,
                      self.account.name)

    def _grant_revoked(self, exc: GrantRevokedError, duration: float) -> None:
        """An OAuth2 grant that is gone does not come back by retrying: the account is
        disabled at once, with the issuer's words and what the admin must do."""
        log.error("account=%s: mailbox unavailable: %s", self.account.name, exc)
        if self.dry_run:
            return
        self.store.record_connection_failure(self.account.name, str(exc))
        self._log("error", "connection failed", str(exc), duration)
        self.store.set_account_enabled(self.account.name, False, str(exc))
        self._log("error", "account disabled", str(exc))

    def _certificate_failed(self, exc: BaseException, failure: ssl.SSLCertVerificationError,
                            duration: float) -> None:
        """A certificate that does not verify is no passing outage: the account is disabled
        at once with the reason (``accounts`` shows it) instead of being retried."""
        reason = (f"helpdesk: {exc}" if isinstance(exc, CertificateError) else
                  describe_certificate_failure(failure, f"{self.account.host}:"
                                                        f"{self.account.port}"))
        log.error("account=%s: %s ('postmaster-bridge accounts enable %s' once fixed)",
                  self.account.name, reason, self.account.name)
        if self.dry_run:
            return
        self.store.record_connection_failure(self.account.name, reason)
        self.store.set_account_enabled(self.account.name, False, reason)
        self._log("error", "account disabled", reason, duration)

    def wait(self, seconds: float) -> bool:
        """Wait for the next pass: IMAP IDLE when offered (returns early on new mail),
        otherwise sleep; always returns early on stop. True when the next pass should come
        now: new mail was announced, or the connection was lost (the pass reconnects,
        re-selects and fetches what arrived meanwhile).

        Neither kind of wait wakes to look around: IDLE blocks in ``poll()`` on the socket
        and the stop event, a sleep in ``Event.wait``."""
        mailbox = self.mailbox
        pacer = self.pacing.for_server(self.account.host, self.account.port)
        if mailbox is not None and pacer.crowded():
            # Others wait for a connection to this server: give this one up until the next
            # pass, so the cap rotates between accounts instead of starving some.
            self.close()
            mailbox = None
            log.info("account=%s: %s has no free connection; polling instead of keeping one "
                     "open", self.account.name, pacer.server)
        if (self.account.idle and mailbox is not None and self.account.protocol == "imap"
                and getattr(mailbox, "connected", False)):
            started = time.monotonic()
            try:
                if mailbox.has_capability("IDLE"):
                    pushed = self._idle(mailbox, seconds)
                    self._idle_losses = 0
                    return pushed
            except FetchError as exc:
                self._connection_lost(str(exc))
                # A connection that dies again right after each reconnection (a server that
                # accepts logins but breaks IDLE) must not become a reconnection loop.
                lasted = time.monotonic() - started
                self._idle_losses = 1 if lasted >= HEALTHY_IDLE_SECONDS else \
                    self._idle_losses + 1
                delay = (random.uniform(0, RECONNECT_JITTER_SECONDS) if self._idle_losses == 1
                         else backoff_delay(self._idle_losses - 1))
                self._state(ConnectionState.BACKING_OFF, f"reconnecting in {delay:.0f} s")
                self.stop.wait(delay)
                return True
        self._state(ConnectionState.WAITING)
        self.stop.wait(seconds)
        return False

    def _idle(self, mailbox: Mailbox, seconds: float) -> bool:
        self._state(ConnectionState.IDLING)
        started = time.monotonic()
        name = self.account.name
        pushed = mailbox.wait_for_mail(  # type: ignore[attr-defined]
            seconds, self.stop, on_event=lambda event: self.board.server_event(name, event))
        if pushed:
            self._log("debug", "idle", "new mail announced", time.monotonic() - started)
        return bool(pushed)

    # -- one pass --------------------------------------------------------------------------
    def _settled(self, state: MessageState | None) -> bool:
        """True when a message needs nothing more, not even a move on the server."""
        if state is None or not state.terminal:
            return False
        if state == MessageState.SKIPPED or self.dry_run:
            return True
        if self.account.protocol == "pop3":
            # POP3 failed and held mail stays on the server; processed mail only goes if we
            # delete it.
            return (state in (MessageState.FAILED, MessageState.HELD)
                    or not self.account.delete_after_processing)
        return False

    def _poll(self, mailbox: Mailbox, summary: AccountSummary) -> None:
        name = self.account.name
        if not self.dry_run:
            for folder in mailbox.ensure_folders():
                log.info("account=%s: created folder %s", name, folder)
        state = mailbox.state()
        folder = state.folder or "INBOX"
        mark = self.store.get_mailbox_mark(name, folder)
        if mark is not None and state.uidvalidity != mark.uidvalidity:
            log.warning("account=%s folder=%s: UIDVALIDITY changed from %s to %s; every "
                        "message is scanned again, and mail already ticketed is recognised "
                        "by Message-ID and content, not ticketed twice", name, folder,
                        mark.uidvalidity, state.uidvalidity)
            self._log("warning", "uidvalidity changed",
                      f"{folder}: {mark.uidvalidity} -> {state.uidvalidity}")
            if not self.dry_run and mark.uidvalidity is not None:
                self.store.orphan_unfinished(name, f"{folder}:{mark.uidvalidity}:")
        skip_existing = self.account.initial_sync == "skip_existing"
        if (skip_existing and mark is not None and mark.baseline_taken
                and state.uidvalidity != mark.uidvalidity and not self.dry_run):
            self._reskip_after_uidvalidity_change(mailbox, state.refs)
        if skip_existing and (mark is None or not mark.baseline_taken):
            if not self.dry_run:
                self.store.mark_skipped(name, state.refs, self._message_ids(mailbox, state.refs))
                self.store.set_mailbox_mark(name, folder, uidvalidity=state.uidvalidity,
                                            baseline_taken=True)
            summary.counts["skipped"] += len(state.refs)
            log.info("account=%s: initial_sync skip_existing: %d existing messages left "
                     "alone; only mail arriving from now on is ingested", name, len(state.refs))
            return
        if (self.account.initial_sync == "import_existing"
                and (mark is None or not mark.baseline_taken)):
            # A dry run shows the import calls too (its ledger is in memory).
            if not self._import_existing(mailbox, summary):
                return  # some mail could not be imported yet: the next pass imports again
            if not self.dry_run:
                self.store.set_mailbox_mark(name, folder, uidvalidity=state.uidvalidity,
                                            baseline_taken=True)
                mark = self.store.get_mailbox_mark(name, folder)
        if not self.dry_run and (mark is None or mark.uidvalidity != state.uidvalidity):
            self.store.set_mailbox_mark(name, folder, uidvalidity=state.uidvalidity,
                                        baseline_taken=mark.baseline_taken if mark else False)

        states = self.store.ref_states(name, state.refs)
        listed = mailbox.list_new(lambda ref: self._settled(states.get(ref)))
        moves = _Moves(mailbox, self.dry_run, self.account.batch_size,
                       barrier=self.store.make_durable)
        to_fetch: list[ListedMessage] = []
        for item in listed:
            recorded = states.get(item.ref)
            if recorded is not None and recorded.terminal:
                # Recorded before a crash, never moved: finish the move only.
                record = self.store.get_message(name, item.ref)
                if record is not None:
                    moves.add(item, outcome_of(record))
                continue
            to_fetch.append(item)
        held: dict[str, MessageHandle] = {}
        parser = self.parser if len(to_fetch) >= MIN_MESSAGES else None
        fetched = parse_ahead(mailbox.fetch(to_fetch), parser, account=name,
                              account_is_pec=self.account.pec)
        limit = 1 if self.dry_run else self.pipeline.host_config.max_in_flight
        flight: InFlight[tuple[RemoteMessage, Prepared | None], Result] = InFlight(
            self._process, limit, name=f"host-{name}", choice=self.pool_choice)

        def settle(done: Iterable[tuple[tuple[RemoteMessage, Prepared | None], Result]]) -> None:
            for (message, _), result in done:
                if result.outcome == Outcome.DEFERRED:
                    held[message.ref] = message
                    continue
                summary.add_result(result)
                moves.add(message, result.outcome)

        try:
            for message, prepared in fetched:
                if self.stop.is_set():
                    log.info("account=%s: stopping; the rest waits for the next run", name)
                    break
                if limit > 1 and prepared is None and message.raw is not None:
                    # The conversation keys need the parse; done here, it is not done again.
                    prepared = self._prepare(message)
                # One at a time (by the limit or by the measured choice) needs no keys: the
                # mail runs after everything before it has finished.
                keys = conversation_keys_of(message.ref, prepared,
                                            self.account.subject_ticket_pattern) \
                    if limit > 1 and not self.pool_choice.inline else frozenset()
                flight.submit((message, prepared), keys)
                settle(flight.finished())
            settle(flight.drain())
            for ref, result in self.pipeline.flush_deferred():
                summary.add_result(result)
                moves.add(held[ref], result.outcome)
        except StoreCorruptError:
            # The ledger cannot be trusted to say what was done: nothing leaves the inbox.
            flight.wait_all()
            self.pipeline.drop_deferred()
            raise
        except BaseException:
            # Every outcome so far is committed to the ledger: move what can be moved; what
            # cannot, the next pass moves (it sees the terminal records). Held receipts are
            # still unfinished and come back with the next pass. Mails still at the helpdesk
            # finish first: their outcomes are recorded, and the next pass moves them.
            flight.wait_all()
            self.pipeline.drop_deferred()
            with contextlib.suppress(FetchError):
                moves.flush()
            raise
        finally:
            flight.close()
            fetched.close()  # cancels what was submitted ahead and not processed
        moves.flush()
        if limit > 1 and self.pool_choice.mode is not self._told_mode:
            self._told_mode = self.pool_choice.mode
            log.info("account=%s: helpdesk calls now %s: %s", name,
                     "one mail at a time" if self.pool_choice.inline
                     else f"up to {limit} mails at once", self.pool_choice.describe())

    def _import_existing(self, mailbox: Mailbox, summary: AccountSummary) -> bool:
        """``initial_sync: import_existing``: the mail already in the folder goes through the
        history import (original dates, no triggers, no notifications); the pass that follows
        moves it like processed mail. False while some of it must be tried again."""
        from connector.service.history import import_history
        from connector.service.progress import PlainProgress

        name = self.account.name
        listed = mailbox.list_new(lambda ref: False)
        log.info("account=%s: initial_sync import_existing: importing %d existing messages "
                 "with their dates", name, len(listed))

        def progress(total: int) -> PlainProgress:
            return PlainProgress(total, lambda line: log.info("account=%s: %s", name, line),
                                 label="history import")

        result = import_history(self.pipeline, mailbox.fetch(listed), progress=progress,
                                stop=self.stop.is_set)
        for key, count in result.counts.items():
            summary.counts[key] += count
        self.store.make_durable()
        return not result.counts["retry"]

    def _process(self, item: tuple[RemoteMessage, Prepared | None]) -> Result:
        message, prepared = item
        return self.pipeline.process(message.ref, message.raw, message.size,
                                     defer_receipts=True, prepared=prepared)

    def _prepare(self, message: RemoteMessage) -> Prepared | None:
        assert message.raw is not None
        try:
            return prepare(message.raw, account_is_pec=self.account.pec,
                           account=self.account.name, ref=message.ref)
        except Exception:  # the pipeline parses it again and says what is wrong with it
            return None

    @staticmethod
    def _message_ids(mailbox: Mailbox, refs: Collection[str]) -> dict[str, str | None]:
        reader = getattr(mailbox, "message_ids", None)
        return reader(refs) if reader is not None and refs else {}

    def _reskip_after_uidvalidity_change(self, mailbox: Mailbox, refs: Collection[str]) -> None:
        """Mail left alone by skip_existing keeps being left alone when the server renumbers
        the folder: recognised by the Message-IDs recorded at the baseline."""
        skipped = self.store.skipped_message_ids(self.account.name)
        unknown = set(refs) - set(self.store.ref_states(self.account.name, refs))
        if not skipped or not unknown:
            return
        ids = self._message_ids(mailbox, unknown)
        again = [ref for ref, mid in ids.items() if mid and mid in skipped]
        if again:
            self.store.mark_skipped(self.account.name, again, ids)
            log.info("account=%s: %d message(s) skipped at the first sync are still left "
                     "alone after the UIDVALIDITY change", self.account.name, len(again))



class _Moves:
    """Mail whose outcome is recorded, waiting to leave the inbox: moved a batch at a time
    (one ``UID MOVE`` per batch) where the mailbox can, one by one elsewhere. ``barrier``
    (the store's ``make_durable``) runs before the server is told anything: the outcomes
    were committed without an fsync, and a power cut must not take back the record of mail
    that has already left the inbox."""

    def __init__(self, mailbox: Mailbox, dry_run: bool, batch_size: int, *,
                 barrier: Callable[[], None]) -> None:
        self.mailbox = mailbox
        self.dry_run = dry_run
        self.batch_size = max(1, batch_size)
        self.barrier = barrier
        self.pending: dict[str, list[MessageHandle]] = {action: [] for action in _MOVES}

    def add(self, handle: MessageHandle, outcome: Outcome) -> None:
        action = outcome.mailbox_action
        if self.dry_run or action is None:
            return
        self.pending[action].append(handle)
        if sum(len(v) for v in self.pending.values()) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, {action: [] for action in _MOVES}
        if not any(pending.values()):
            return
        self.barrier()  # if it fails, nothing is moved: the next pass moves them
        for action, (method, fallback) in _MOVES.items():
            handles = pending[action]
            if not handles:
                continue
            many = getattr(self.mailbox, f"{method}_many", None)
            if many is not None:
                many(handles)
                continue
            one = getattr(self.mailbox, method, None) or getattr(self.mailbox, fallback)
            for handle in handles:
                one(handle)


#: Outcome.mailbox_action -> the Mailbox method (and the one a mailbox without it offers).
_MOVES: dict[str, tuple[str, str]] = {
    "processed": ("mark_processed", "mark_processed"),
    "error": ("mark_failed", "mark_failed"),
    "held": ("mark_held", "mark_failed"),  # never where processed mail is deleted
    "ignored": ("mark_ignored", "mark_processed"),
}


class Service:
    """Runs every enabled account in its own thread, so a slow or broken mailbox never
    delays the others. With ``leases`` (several instances on one ledger), only the accounts
    this instance holds a lease on, as the lease keeper hands them out."""

    def __init__(self, pollers: list[AccountPoller], *,
                 log_retention_days: float | None = None,
                 retention_days: float | None = None,
                 stop: threading.Event | None = None, pacing: LoginPacing | None = None,
                 board: StatusBoard | None = None, leases: LeaseKeeper | None = None) -> None:
        self.pollers = pollers
        self.stop: threading.Event = stop or StopEvent()
        self.log_retention_days = log_retention_days
        self.pacing = pacing or LoginPacing()
        self.board = board or StatusBoard()
        self.leases = leases
        #: Set when the ledger was found damaged: every worker stopped, ``run`` fails.
        self.fatal: StoreCorruptError | None = None
        self.retention_days = retention_days
        for poller in pollers:
            poller.stop = self.stop
            poller.pacing = self.pacing
            poller.board = self.board

    def run_once(self) -> list[AccountSummary]:
        """One pass of every account in turn, each connection closed after its pass (so a
        server's ``max_connections`` never holds up the next account)."""
        self._purge_log()
        busy = self.leases.take_all() if self.leases is not None else {}
        summaries = []
        try:
            for poller in self.pollers:
                name = poller.account.name
                if name in busy:
                    summaries.append(AccountSummary(name, error="worked by another instance "
                                                    f"({busy[name]})"))
                    continue
                if self.leases is not None:
                    poller.pipeline.fence = self.leases.fence(name)
                try:
                    summaries.append(poller.poll())
                except LeaseLostError as exc:
                    summaries.append(AccountSummary(name, error=str(exc)))
                finally:
                    poller.close()
        finally:
            if self.leases is not None:
                self.leases.release_all()
        return summaries

    def run_forever(self) -> bool:
        """Until stopped. False when the workers ended without being asked to (a bug):
        ``run`` then exits non-zero so a supervisor restarts it."""
        if self.leases is not None:
            return self._run_leased(self.leases)
        threads = [threading.Thread(target=self._loop, args=(p,), name=f"account-{p.account.name}",
                                    daemon=True) for p in self.pollers]
        for thread in threads:
            thread.start()
        next_check = time.monotonic() + INTEGRITY_CHECK_SECONDS
        try:
            while not self.stop.is_set() and any(t.is_alive() for t in threads):
                with contextlib.suppress(Exception):
                    self._purge_log()
                if time.monotonic() >= next_check:
                    self.check_ledger()
                    next_check = time.monotonic() + INTEGRITY_CHECK_SECONDS
                self.stop.wait(60.0)
            clean = self.stop.is_set() and self.fatal is None
        finally:
            self.stop.set()
            self.pacing.interrupt()
            join_workers(threads)
        return clean

    def _run_leased(self, keeper: LeaseKeeper) -> bool:
        """Until stopped: every ``tick_every`` seconds a lease tick, then a worker started
        for each account gained, stopped for each lost or handed back (after the mail in
        hand), and a handed-back account released once its worker ended."""
        pollers = {p.account.name: p for p in self.pollers}
        threads: dict[str, threading.Thread] = {}
        next_check = time.monotonic() + INTEGRITY_CHECK_SECONDS
        next_purge = time.monotonic()
        try:
            while not self.stop.is_set() and self.fatal is None:
                changes = keeper.tick()
                for name in changes.lost + changes.hand_back:
                    poller = pollers.get(name)
                    if poller is not None and name in threads:
                        poller.stop.set()
                for name, thread in list(threads.items()):
                    if not thread.is_alive():
                        thread.join()
                        del threads[name]
                        # Nothing when it was lost, nor a lease taken again since.
                        fence = pollers[name].pipeline.fence
                        keeper.release(name, fence.epoch if fence is not None else None)
                for name in keeper.workable():
                    poller = pollers.get(name)
                    if name in threads or poller is None:
                        continue
                    poller.stop = StopEvent()
                    poller.pipeline.fence = keeper.fence(name)
                    thread = threading.Thread(target=self._loop, args=(poller,),
                                              name=f"account-{name}", daemon=True)
                    threads[name] = thread
                    thread.start()
                now = time.monotonic()
                if now >= next_purge:
                    with contextlib.suppress(Exception):
                        self._purge_log()
                    next_purge = now + 60.0
                if now >= next_check:
                    self.check_ledger()
                    next_check = now + INTEGRITY_CHECK_SECONDS
                self.stop.wait(keeper.tick_every)
            clean = self.stop.is_set() and self.fatal is None
        finally:
            self.stop.set()
            for poller in self.pollers:
                poller.stop.set()
            self.pacing.interrupt()
            busy = join_workers(list(threads.values()))
            # A busy worker's lease is not handed back: its call may still land, so the
            # account waits for the lease to run out, as after a crash.
            keeper.release_all(keep=[name for name, t in threads.items() if t in busy])
        return clean

    def check_ledger(self) -> bool:
        """``PRAGMA quick_check`` of the ledger (through a connection of its own): a damage
        that happened under the running bridge, in pages its cache still holds, is noticed
        here rather than never. False (and every worker stopped) when it is damaged."""
        if not self.pollers:
            return True
        store = self.pollers[0].store
        problems = store.quick_check()
        if problems:
            self._stop_for(StoreCorruptError(damaged_message(store.path, problems)))
        return not problems

    def _stop_for(self, error: StoreCorruptError) -> None:
        if self.fatal is None:
            self.fatal = error
            log.critical("%s", error)
        self.stop.set()
        for poller in self.pollers:
            poller.stop.set()

    def _purge_log(self) -> None:
        """Housekeeping: the communication log and the ledger's finished records, each after
        its retention period."""
        if not self.pollers:
            return
        store = self.pollers[0].store
        now = datetime.now(UTC)
        if self.log_retention_days is not None:
            store.purge_log(now - timedelta(days=self.log_retention_days))
        if self.retention_days is not None:
            store.apply_retention(now - timedelta(days=self.retention_days))

    def _loop(self, poller: AccountPoller) -> None:
        """An account's worker. Nothing that goes wrong in a pass ends it: the store, the
        mailbox or the helpdesk may fail for a while; the worker backs off and tries again."""
        interval = poller.account.poll_interval * 60
        errors_in_a_row = 0
        name = poller.account.name
        try:
            while not poller.stop.is_set():
                started = time.monotonic()
                try:
                    summary = poller.poll()
                    if summary.counts["fetched"] or summary.error:
                        log.info("%s", summary.line())
                    errors_in_a_row = 0
                    if not poller.enabled:
                        self.board.set_state(name, ConnectionState.DISABLED)
                        poller.stop.wait(interval)  # re-enabled from the CLI: picked up here
                    elif summary.error:
                        failures = poller.store.get_health(name).consecutive_failures
                        self._back_off(poller, backoff_delay(failures))
                    else:
                        poller.wait(max(0.0, interval - (time.monotonic() - started)))
                except StoreCorruptError as exc:
                    self._stop_for(exc)
                    return
                except LeaseLostError as exc:
                    # Another instance works the account now (or will): it resumes what
                    # this one left unfinished.
                    log.warning("account=%s: stopping: %s", name, exc)
                    return
                except Exception as exc:
                    errors_in_a_row += 1
                    log.exception("account=%s: pass failed", name)
                    with contextlib.suppress(Exception):
                        poller.close()
                    with contextlib.suppress(Exception):  # the store itself may be failing
                        poller.store.record_connection_failure(name, str(exc))
                    self._back_off(poller, backoff_delay(errors_in_a_row))
        finally:
            with contextlib.suppress(Exception):
                poller.close()
            self.board.set_state(name, ConnectionState.STOPPED)

    def _back_off(self, poller: AccountPoller, seconds: float) -> None:
        self.board.set_state(poller.account.name, ConnectionState.BACKING_OFF,
                             f"next attempt in {seconds:.0f} s")
        poller.stop.wait(seconds)


def join_workers(threads: Collection[threading.Thread],
                 grace: float | None = None) -> list[threading.Thread]:
    """Wait for stopped workers to end, all together at most ``grace`` seconds (default
    STOP_GRACE_SECONDS); returns those still running, named in an error. They are daemon
    threads: a stop never hangs on a call that does not return."""
    deadline = time.monotonic() + (STOP_GRACE_SECONDS if grace is None else grace)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t for t in threads if t.is_alive()]
    if busy:
        log.error("stopping without waiting longer for %s (still busy after %.0f s); what "
                  "they had in hand is resumed from the ledger by the next run",
                  ", ".join(t.name for t in busy),
                  STOP_GRACE_SECONDS if grace is None else grace)
    return busy
