"""Several mails at the helpdesk at once, never two of one conversation.

Against a real helpdesk a mail costs a round trip or two (Zendesk answers in 100-300 ms), so
one request in flight per account leaves the plan's budget mostly unused and a backlog takes an
hour. ``InFlight`` runs the pipeline for up to ``max_in_flight`` mails of an account at once, on
a small pool of threads, while keeping what one-at-a-time gave for free:

- **Conversations stay in order.** Each mail names its conversation keys (its Message-ID, the
  ids it answers or cites, ticket numbers in its subject, its content's dedupe key, its sender);
  a mail starts only after every earlier mail sharing a key has finished. A reply therefore
  always sees the ticket its question made, two replies to one ticket are added in the order
  they arrived, the same mail twice is one ticket, and a sender's mails are counted against the
  per-sender cap one after the other.
- **Nothing leaves the server early.** Results come back to the caller, who moves a mail only
  after its outcome is in the ledger, as before; crash safety is each mail's own (its PUSHING
  record before its host call), so a kill with several calls in flight leaves each of them to be
  looked up on restart exactly as a kill with one.

The caller submits in fetch order from one thread and collects results as they finish.
With a ``PoolChoice`` (connector.service.pool_choice), a mail may run on the caller's thread
instead, when measured rates show the pool buys nothing (a helpdesk that answers at once): it
starts after every mail still in the pool has finished, so order holds across a switch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from connector.decide.subject import ticket_refs
from connector.mail.model import ParsedMessage
from connector.service.pool_choice import PoolChoice

_I = TypeVar("_I")
_R = TypeVar("_R")


def conversation_keys(message: ParsedMessage | None, *, ref: str,
                      ticket_pattern: str = r"\[#(\d+)\]", sender: bool = True) -> frozenset[str]:
    """What ties a mail to others that must not overtake it or run beside it.

    ``ticket_pattern`` is the account's ``subject_ticket_pattern``; ``sender=False`` leaves the
    From out (a PEC envelope's From is the provider, shared by every certified mail)."""
    if message is None:
        return frozenset({f"ref:{ref}"})
    keys = {f"id:{mid}" for mid in (message.message_id, *message.thread_ids) if mid}
    keys.update(f"id:{mid}" for mid in _cited_ids(message))
    keys.add(f"dedupe:{message.dedupe_key}")
    if sender and message.from_ is not None and message.from_.email:
        keys.add(f"sender:{message.from_.email.strip().lower()}")
    keys.update(f"ticket:{number}"
                for number in ticket_refs(message.subject or "", ticket_pattern))
    return frozenset(keys)


def _cited_ids(message: ParsedMessage) -> Iterable[str]:
    # PEC receipts name the message they certify in X-Riferimento-Message-ID; bounces carry
    # the bounced mail's id in their report, which the pipeline reads: both thread to it.
    for name in ("X-Riferimento-Message-ID", "X-Riferimento-Message-Id"):
        value = message.header(name)
        if value:
            yield value.strip().strip("<>")


@dataclass
class _Entry(Generic[_I]):
    item: _I
    keys: frozenset[str]
    pooled: bool = True


class InFlight(Generic[_I, _R]):
    """Runs ``work(item)`` for up to ``limit`` items at once (see the module docstring).

    ``submit`` blocks while ``limit`` items are outstanding (running or waiting for an earlier
    one of their conversation), which also bounds the mail held in memory. ``finished()``
    yields what has completed so far; ``drain()`` waits for everything. An exception raised by
    ``work`` comes out of ``finished``/``drain`` when its item is collected.
    """

    def __init__(self, work: Callable[[_I], _R], limit: int, *, name: str = "host",
                 choice: PoolChoice | None = None) -> None:
        self.work = work
        self.limit = max(1, limit)
        self.choice = choice if self.limit > 1 else None
        self._pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix=name) \
            if self.limit > 1 else None
        self._latest: dict[str, Future[_R]] = {}  # the last submitted future per key
        self._outstanding: dict[Future[_R], _Entry[_I]] = {}
        self._lock = threading.Lock()

    def submit(self, item: _I, keys: frozenset[str]) -> None:
        if self.limit == 1:
            # One at a time is the caller's own thread: the work is done before the caller
            # fetches the next mail, exactly as without this class.
            self._run_here(item, keys)
            return
        if self.choice is not None and self.choice.inline:
            # Everything still in the pool goes first (it came first): a conversation keeps
            # its order across a switch, and the choice's measure is this mail's alone.
            still = [f for f in self._outstanding if not f.done()]
            if still:
                wait(still)
            started = time.perf_counter()
            self._run_here(item, keys)
            self.choice.inline_finished(time.perf_counter() - started)
            return
        if self.choice is not None:
            self.choice.pool_submitted()
        while True:
            running = [f for f in self._outstanding if not f.done()]
            if len(running) < self.limit:
                break
            wait(running, return_when=FIRST_COMPLETED)
        with self._lock:
            before = {f for k in keys if (f := self._latest.get(k)) is not None and not f.done()}
            assert self._pool is not None
            future = self._pool.submit(self._run, item, before)
            for key in keys:
                self._latest[key] = future
            self._outstanding[future] = _Entry(item, keys)

    def _run_here(self, item: _I, keys: frozenset[str]) -> None:
        future: Future[_R] = Future()
        try:
            future.set_result(self.work(item))
        except BaseException as exc:  # handed to the caller with the item, as from a thread
            future.set_exception(exc)
        self._outstanding[future] = _Entry(item, keys, pooled=False)

    def _run(self, item: _I, before: set[Future[_R]]) -> _R:
        # Earlier mails of the conversation were submitted first, so they have started (the
        # pool takes work in order): waiting here cannot deadlock. Their failure is theirs;
        # this mail goes on and the pipeline decides with what the ledger holds.
        if before:
            wait(before)
        return self.work(item)

    def _settle(self, future: Future[_R]) -> None:
        with self._lock:
            entry = self._outstanding.get(future)
            if entry is None:
                return
            for key in entry.keys:
                if self._latest.get(key) is future:
                    del self._latest[key]

    def finished(self) -> Iterator[tuple[_I, _R]]:
        """What has completed, without waiting."""
        ready = [f for f in self._outstanding if f.done()]
        yield from self._collect(ready)

    def drain(self) -> Iterator[tuple[_I, _R]]:
        """Everything outstanding, as it completes."""
        while self._outstanding:
            done, _ = wait(list(self._outstanding), return_when=FIRST_COMPLETED)
            yield from self._collect(list(done))

    def _collect(self, futures: list[Future[_R]]) -> Iterator[tuple[_I, _R]]:
        for future in futures:
            self._settle(future)
            entry = self._outstanding.pop(future, None)
            if entry is None:
                continue
            if entry.pooled and self.choice is not None:
                self.choice.pool_finished()
            yield entry.item, future.result()

    def wait_all(self) -> None:
        """Let everything outstanding finish, results unread (after an error elsewhere)."""
        wait(list(self._outstanding))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> InFlight[_I, _R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
