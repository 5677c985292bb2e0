"""Polls accounts: fetch, run each message through the pipeline, then move it on the server.

The order is the whole point: the pipeline records a message's effect in the store (committed)
before the mailbox is told to move or delete it. A crash in between leaves a recorded message
in the inbox; the next pass sees its terminal state and only moves it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.config import AccountConfig
from connector.errors import FetchError
from connector.fetch import open_mailbox
from connector.fetch.base import ListedMessage, Mailbox, MessageHandle
from connector.service.pipeline import Outcome, Pipeline, outcome_of
from connector.store.base import MessageState
from connector.store.sqlite import SQLiteStore

log = logging.getLogger("connector.runner")


@dataclass
class AccountSummary:
    account: str
    counts: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def add(self, outcome: Outcome) -> None:
        self.counts["fetched"] += 1
        self.counts[outcome.value] += 1

    def line(self) -> str:
        c = self.counts
        parts = [f"fetched={c['fetched']}", f"ticketed={c['ticketed']}",
                 f"followed-up={c['followed_up']}", f"noted={c['noted']}",
                 f"ignored={c['ignored'] + c['duplicate']}", f"failed={c['failed']}",
                 f"retry={c['retry']}"]
        if c["skipped"]:
            parts.append(f"skipped={c['skipped']}")
        text = f"{self.account}: " + " ".join(parts)
        return text + (f" error={self.error}" if self.error else "")


MailboxFactory = Callable[[AccountConfig], Mailbox]


class AccountPoller:
    """One pass over one account's mailbox."""

    def __init__(self, account: AccountConfig, store: SQLiteStore, pipeline: Pipeline, *,
                 dry_run: bool = False, mailbox_factory: MailboxFactory = open_mailbox,
                 stop: threading.Event | None = None) -> None:
        self.account = account
        self.store = store
        self.pipeline = pipeline
        self.dry_run = dry_run
        self.mailbox_factory = mailbox_factory
        self.stop = stop or threading.Event()

    def _settled(self, state: MessageState | None) -> bool:
        """True when a message needs nothing more, not even a move on the server."""
        if state is None or not state.terminal:
            return False
        if state == MessageState.SKIPPED or self.dry_run:
            return True
        if self.account.protocol == "pop3":
            # POP3 failed mail stays on the server; processed mail only goes if we delete it.
            return state == MessageState.FAILED or not self.account.delete_after_processing
        return False

    def poll(self) -> AccountSummary:
        summary = AccountSummary(self.account.name)
        try:
            with self.mailbox_factory(self.account) as mailbox:
                self._poll(mailbox, summary)
        except FetchError as exc:
            summary.error = str(exc)
            log.error("account=%s: mailbox unavailable: %s", self.account.name, exc)
        return summary

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
        if (self.account.initial_sync == "skip_existing"
                and (mark is None or not mark.baseline_taken)):
            if not self.dry_run:
                self.store.mark_skipped(name, state.refs)
                self.store.set_mailbox_mark(name, folder, uidvalidity=state.uidvalidity,
                                            baseline_taken=True)
            summary.counts["skipped"] += len(state.refs)
            log.info("account=%s: initial_sync skip_existing: %d existing messages left "
                     "alone; only mail arriving from now on is ingested", name, len(state.refs))
            return
        if not self.dry_run and (mark is None or mark.uidvalidity != state.uidvalidity):
            self.store.set_mailbox_mark(name, folder, uidvalidity=state.uidvalidity,
                                        baseline_taken=mark.baseline_taken if mark else False)

        states = self.store.ref_states(name, state.refs)
        listed = mailbox.list_new(lambda ref: self._settled(states.get(ref)))
        to_fetch: list[ListedMessage] = []
        for item in listed:
            recorded = states.get(item.ref)
            if recorded is not None and recorded.terminal:
                # Recorded before a crash, never moved: finish the move only.
                record = self.store.get_message(name, item.ref)
                if record is not None:
                    self._settle(mailbox, item, outcome_of(record))
                continue
            to_fetch.append(item)
        for message in mailbox.fetch(to_fetch):
            if self.stop.is_set():
                log.info("account=%s: stopping; the rest waits for the next run", name)
                break
            result = self.pipeline.process(message.ref, message.raw, message.size)
            summary.add(result.outcome)
            self._settle(mailbox, message, result.outcome)

    def _settle(self, mailbox: Mailbox, handle: MessageHandle, outcome: Outcome) -> None:
        if self.dry_run:
            return
        action = outcome.mailbox_action
        if action == "processed":
            mailbox.mark_processed(handle)
        elif action == "error":
            mailbox.mark_failed(handle)


class Service:
    """Runs every enabled account on its own poll interval, one thread per account."""

    def __init__(self, pollers: list[AccountPoller]) -> None:
        self.pollers = pollers
        self.stop = threading.Event()
        for poller in pollers:
            poller.stop = self.stop

    def run_once(self) -> list[AccountSummary]:
        return [poller.poll() for poller in self.pollers]

    def run_forever(self) -> None:
        threads = [threading.Thread(target=self._loop, args=(p,), name=f"account-{p.account.name}",
                                    daemon=True) for p in self.pollers]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()

    def _loop(self, poller: AccountPoller) -> None:
        interval = poller.account.poll_interval * 60
        while not self.stop.is_set():
            started = time.monotonic()
            summary = poller.poll()
            if summary.counts["fetched"] or summary.error:
                log.info("%s", summary.line())
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))
