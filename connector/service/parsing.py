"""Parsing ahead in worker processes: the CPU-heavy, state-free part of each message.

The runner hands each fetched message (up to a window ahead of the one being processed) to a
process pool that runs the first half of :func:`connector.understand.understand`
(:func:`connector.understand.prepare`: ``parse_message`` and, for mail that may be PEC,
``find_pec`` and the parse of the certified original). The main thread still processes every
message in fetch order with everything stateful (ledger, filters, decide, host, moves); it
only finds the parse already done. Whatever goes wrong ahead (a ParseError, any exception in
a worker, a worker that died, a pool that cannot start) yields no :class:`Prepared`, and the
pipeline parses that message itself exactly as it would without a pool, so errors are handled and
recorded the same way.

Workers are started lazily (the first pass with at least ``MIN_MESSAGES`` to fetch) from a
``forkserver`` (fresh interpreter, no inherited threads or sockets), shared by every account.
``service.parse_workers`` sets the number of workers (default: the cores less one, at most
``MAX_DEFAULT_WORKERS``; 0 turns the pool off). Since the parser reads bodies as offsets
(about 1 ms per mail) the gain is modest: about 8 % on the 2-core benchmark when the machine
is quiet, none when other processes want the second core (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from connector.mail.mimetree import ParseLimits, current_limits, set_limits
from connector.mail.model import ParsedMessage
from connector.understand import Prepared
from connector.understand import prepare as prepare_mail

if TYPE_CHECKING:
    from connector.fetch.base import RemoteMessage

log = logging.getLogger("connector.parsing")

#: At most this many worker processes by default (and never more than the cores less one).
MAX_DEFAULT_WORKERS = 4
#: Messages larger than this are parsed in the main thread: bounded memory ahead, and
#: shipping big decoded attachments between processes costs about what parsing them does.
MAX_AHEAD_BYTES = 2 * 1024 * 1024
#: Passes with fewer messages to fetch parse in the main thread: no pool start for a trickle.
MIN_MESSAGES = 4
#: Messages submitted ahead of the one being processed, per worker.
WINDOW_PER_WORKER = 8
#: A pool that breaks this many times (workers killed, out of memory) is not started again.
MAX_RESTARTS = 3


def message_context(account: str, ref: str, message_id: str | None) -> str:
    """The identity find_pec adds to its log lines (the pipeline's MessageContext format)."""
    mid = f" message-id=<{message_id}>" if message_id else ""
    return f"account={account} ref={ref}{mid}"


def prepare(raw: bytes, *, account_is_pec: bool, account: str, ref: str) -> Prepared:
    """The pure first half of understanding one message (runs in a worker)."""
    return prepare_mail(raw, account_is_pec=account_is_pec,
                        context=lambda mid: message_context(account, ref, mid))


#: ``prepare``'s shape; a pool may run another one (tests inject faults through it).
PrepareTask = Callable[..., Prepared]


# -- the worker side ---------------------------------------------------------------------------
class _Collect(logging.Handler):
    """Keeps a worker's log records for the main process to emit, in processing order."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg = record.getMessage()  # args may not pickle; the text does
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


_COLLECT = _Collect()


def _init_worker(level: int, bridge_pid: int, limits: ParseLimits | None = None) -> None:
    # The main process decides when to stop (it shuts the pool down); a Ctrl-C or a SIGTERM
    # sent to the whole process group must not kill workers under a message being parsed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if limits is not None:
        set_limits(limits)  # the bridge's configured parser limits, not the defaults
    root = logging.getLogger()
    root.handlers[:] = [_COLLECT]
    root.setLevel(level)
    threading.Thread(target=_exit_after, args=(bridge_pid,), name="watch-bridge",
                     daemon=True).start()


def _exit_after(bridge_pid: int) -> None:
    """A worker waits on its task queue forever if the bridge is killed (SIGKILL, OOM): it
    holds both ends of that pipe, so no EOF comes. It leaves when the bridge is gone (then its
    forkserver, which lives as long as any worker, leaves too)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(bridge_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except OSError:
            pass


@dataclass(frozen=True)
class _Answer:
    """A worker's answer: the parse without ``raw`` (the main process has it) and the log
    records written meanwhile."""

    prepared: Prepared
    records: tuple[logging.LogRecord, ...]


def _without_raw(message: ParsedMessage) -> ParsedMessage:
    """A shallow copy with ``raw`` left out, keeping the cached hashes computed from it."""
    copy = object.__new__(ParsedMessage)
    copy.__dict__.update(message.__dict__)
    copy.__dict__["raw"] = b""
    return copy


def _run(task: PrepareTask, raw: bytes, account_is_pec: bool, account: str,
         ref: str) -> _Answer:
    _COLLECT.records = []
    try:
        prepared = task(raw, account_is_pec=account_is_pec, account=account, ref=ref)
        message = prepared.message
        # Hash and sanitize here, once: the cached values travel with the message (the
        # pipeline reads sha256, dedupe_key, which hashes every attachment, and the safe
        # HTML of what the ticket shows).
        _ = message.sha256, message.dedupe_key, message.safe_html
        if prepared.original is not None:
            _ = prepared.original.safe_html
        return _Answer(Prepared(_without_raw(message), prepared.pec, prepared.original),
                       tuple(_COLLECT.records))
    finally:
        _COLLECT.records = []


# -- the main side -----------------------------------------------------------------------------
class PendingParse(Protocol):
    def result(self) -> Prepared | None:
        """The prepared message, or None when the main thread must parse it itself."""

    def cancel(self) -> None: ...


class Parser(Protocol):
    """What the runner needs: hand a message over, get a pending result (or None: parse it
    in the main thread)."""

    def submit(self, raw: bytes, *, account_is_pec: bool, account: str,
               ref: str) -> PendingParse | None: ...

    @property
    def workers(self) -> int: ...


def default_workers() -> int:
    """Cores available to the bridge less one (the main thread's), at most
    ``MAX_DEFAULT_WORKERS``; 0 (off) on one core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


class _Pending:
    def __init__(self, pool: ParsePool, executor: ProcessPoolExecutor,
                 future: Future[_Answer], raw: bytes, ref: str) -> None:
        self.pool = pool
        self.executor = executor
        self.future = future
        self.raw = raw
        self.ref = ref

    def result(self) -> Prepared | None:
        try:
            answer = self.future.result()
        except BrokenProcessPool:
            self.pool.broken(self.executor)
            return None
        except (Exception, CancelledError) as exc:  # the main thread parses it again
            log.debug("ref=%s: parse ahead failed (%s: %s); parsing in the main thread",
                      self.ref, type(exc).__name__, exc)
            return None
        for record in answer.records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        message = answer.prepared.message
        # The frozen message gets back the very bytes object the pipeline was given.
        object.__setattr__(message, "raw", self.raw)
        return answer.prepared

    def cancel(self) -> None:
        self.future.cancel()


class ParsePool:
    """A process pool for :func:`prepare`, shared by every account of a ``run``. Thread-safe.
    Started at the first submit; restarted after it breaks (at most ``MAX_RESTARTS`` times)."""

    def __init__(self, workers: int, *, task: PrepareTask = prepare,
                 start_method: str = "forkserver", max_restarts: int = MAX_RESTARTS) -> None:
        self._workers = workers
        self.task = task
        self.start_method = start_method
        self.max_restarts = max_restarts
        self.restarts = 0
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def enabled(self) -> bool:
        return not self._closed and self._workers > 0 and self.restarts <= self.max_restarts

    def _current(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if not self.enabled:
                return None
            if self._executor is None:
                context = multiprocessing.get_context(self.start_method)
                if self.start_method == "forkserver":
                    context.set_forkserver_preload(["connector.service.parsing"])
                level = logging.getLogger("connector").getEffectiveLevel()
                self._executor = ProcessPoolExecutor(self._workers, mp_context=context,
                                                     initializer=_init_worker,
                                                     initargs=(level, os.getpid(),
                                                               current_limits()))
                log.info("parsing ahead in %d worker process(es)", self._workers)
            return self._executor

    def submit(self, raw: bytes, *, account_is_pec: bool, account: str,
               ref: str) -> PendingParse | None:
        executor = self._current()
        if executor is None:
            return None
        try:
            future = executor.submit(_run, self.task, raw, account_is_pec, account, ref)
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down by another thread
            self.broken(executor)
            return None
        return _Pending(self, executor, future, raw, ref)

    def broken(self, executor: ProcessPoolExecutor) -> None:
        """A worker died: drop the pool (the next submit starts a new one)."""
        with self._lock:
            if executor is not self._executor:
                return  # already replaced
            self._executor = None
            self.restarts += 1
            if self.restarts > self.max_restarts:
                log.error("parse workers failed %d times; parsing in the main thread from "
                          "now on", self.restarts)
            else:
                log.warning("a parse worker died; its messages are parsed in the main "
                            "thread and the pool is started again")
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_ahead(messages: Iterable[RemoteMessage], parser: Parser | None, *, account: str,
                account_is_pec: bool, window: int | None = None,
                max_bytes: int | None = None,
                ) -> Generator[tuple[RemoteMessage, Prepared | None], None, None]:
    """``messages`` in the same order, each with its :class:`Prepared` (None: not prepared).

    Keeps up to ``window`` messages submitted ahead of the one yielded; messages over
    ``max_bytes`` (default ``MAX_AHEAD_BYTES``) are not submitted. An error raised by
    ``messages`` (a dropped connection) is raised after the messages fetched before it, as
    without parsing ahead. Closing the iterator cancels what is still pending.
    """
    if parser is None:
        for message in messages:
            yield message, None
        return
    limit = window if window is not None else WINDOW_PER_WORKER * max(1, parser.workers)
    largest = MAX_AHEAD_BYTES if max_bytes is None else max_bytes
    source = iter(messages)
    ahead: deque[tuple[RemoteMessage, PendingParse | None]] = deque()
    failure: Exception | None = None
    exhausted = False
    try:
        while True:
            while not exhausted and failure is None and len(ahead) < max(1, limit):
                try:
                    message = next(source)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as exc:  # raised once the messages before it are done
                    failure = exc
                    break
                pending = None
                if message.raw is not None and len(message.raw) <= largest:
                    pending = parser.submit(message.raw, account_is_pec=account_is_pec,
                                            account=account, ref=message.ref)
                ahead.append((message, pending))
            if not ahead:
                if failure is not None:
                    raise failure
                return
            message, pending = ahead.popleft()
            yield message, pending.result() if pending is not None else None
    finally:
        for _, pending in ahead:
            if pending is not None:
                pending.cancel()
