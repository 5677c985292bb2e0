"""Client-side pacing of helpdesk requests, so a plan's request budget is used without 429s.

Zendesk limits requests per account and minute (200 to 2,500 by plan, shared notes section 1.8)
and, separately, ticket updates (``PUT /api/v2/tickets/{id}``: 100 per minute per account, 300
with High Volume). Collecting 429s costs a round trip each and a ``Retry-After`` pause for every
worker at once; spacing requests evenly costs nothing when the budget is not reached. So each
adapter keeps a :class:`RequestPacer` per budget and every request takes a slot first.

The pacer is a GCRA (generic cell rate algorithm, a token bucket kept as one "theoretical
arrival time"): slots are ``window / (limit * headroom)`` apart, with a small burst allowance so
that a quiet pacer lets a few requests through at once. Over any window, at most
``limit * headroom + burst`` requests start, which stays under the host's limit.

The host's own answers adjust it live (:meth:`RequestPacer.observe`):

- ``ratelimit-limit`` / ``X-Rate-Limit`` lower than the configured rate: the host knows the plan
  better than the configuration; the lower one applies. With no configured rate the header sets it.
- ``ratelimit-remaining`` with ``ratelimit-reset``: other integrations share the account's budget,
  so when what is left would not last until the window resets at our pace, the next slot moves
  out to ``reset / remaining``; nothing left means waiting for the reset.
- A 429 with ``Retry-After`` (:meth:`RequestPacer.pause`): no slot before it has passed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connector.errors import TransientHostError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], object]

#: Share of the limit the pacer aims at: the host's windows and ours are not aligned, and its
#: counters include requests that failed on the way. 97 % keeps the use of a plan above 95 %.
DEFAULT_HEADROOM = 0.97
#: Requests a quiet pacer lets through back to back, as a share of the per-window rate.
BURST_SHARE = 0.01

_RATE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*/\s*(?:(\d+(?:\.\d+)?)\s*)?(s|sec|second|m|min|minute)s?\s*$"
)


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``window`` seconds."""

    limit: float
    window: float = 60.0

    @classmethod
    def parse(cls, value: object) -> Rate:
        """``700`` (per minute), ``"700/min"``, ``"10/s"``, ``"30/10s"``. ValueError otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"not a rate: {value!r}")
        if isinstance(value, int | float):
            rate = cls(float(value), 60.0)
        else:
            match = _RATE.match(str(value))
            if not match:
                raise ValueError(f"not a rate: {value!r} (write e.g. 700/min or 10/s)")
            count, multiple, unit = match.groups()
            seconds = 1.0 if unit.startswith("s") else 60.0
            rate = cls(float(count), seconds * float(multiple or 1))
        if rate.limit <= 0 or rate.window <= 0:
            raise ValueError(f"a rate must be positive: {value!r}")
        return rate

    def __str__(self) -> str:
        per = "min" if self.window == 60 else f"{self.window:g}s"
        return f"{self.limit:g}/{per}"


class RequestPacer:
    """Spaces requests to a rate (see the module docstring). Thread-safe.

    ``configured`` is the admin's rate (``None``: whatever the host announces; no pacing until it
    does). ``acquire()`` blocks until the caller's slot and returns the seconds waited.
    """

    def __init__(
        self,
        configured: Rate | None,
        *,
        name: str = "requests",
        headroom: float = DEFAULT_HEADROOM,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.name = name
        self.configured = configured
        self.announced: Rate | None = None
        self._headroom = headroom
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next request at the full rate
        self._not_before = 0.0  # a host-imposed pause (Retry-After, budget used up)
        # The thread that met a 429 waits its Retry-After in its own retry loop; the pause is
        # for the others (its next slot must not wait the same seconds a second time).
        self._retry_after: tuple[int, float] | None = None
        self.waited = 0.0  # seconds callers spent waiting, for metrics and the bench
        self.requests = 0

    @property
    def rate(self) -> Rate | None:
        """The rate in force: the lower of the configured and the announced one."""
        if self.configured is None:
            return self.announced
        if self.announced is None:
            return self.configured
        configured = self.configured.limit / self.configured.window
        announced = self.announced.limit / self.announced.window
        return self.configured if configured <= announced else self.announced

    def _interval(self) -> float:
        rate = self.rate
        if rate is None:
            return 0.0
        return rate.window / (rate.limit * self._headroom)

    def acquire(self) -> float:
        """Take the next slot, sleeping until it comes. Returns the seconds slept."""
        with self._lock:
            now = self._clock()
            interval = self._interval()
            rate = self.rate
            burst = interval * max(1.0, rate.limit * BURST_SHARE) if rate else 0.0
            start = max(now, self._tat - burst, self._not_before)
            if self._retry_after is not None and self._retry_after[0] == threading.get_ident():
                start = max(now, self._tat - burst, self._retry_after[1])
                self._retry_after = None
            self._tat = max(self._tat, start) + interval
            self.requests += 1
        wait = start - now
        if wait <= 0:
            return 0.0
        if wait > 1.0:
            log.info("%s: pacing to %s; waiting %.1fs", self.name, self.rate, wait)
        # An interruptible sleep (threading.Event.wait) answers True on shutdown.
        if self._sleep(wait) is True:
            raise TransientHostError(f"{self.name}: stopped while waiting for a request slot")
        with self._lock:
            self.waited += wait
        return wait

    def pause(self, seconds: float) -> None:
        """No request of another thread starts for ``seconds`` (a 429's Retry-After); the
        calling thread waits it out in its retry loop."""
        with self._lock:
            held = self._not_before
            self._not_before = max(self._not_before, self._clock() + max(0.0, seconds))
            self._retry_after = (threading.get_ident(), held)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adjust to the host's rate-limit headers (names are case-insensitive in requests)."""
        limit = _number(headers.get("ratelimit-limit")) or _number(headers.get("X-Rate-Limit"))
        remaining = _number(headers.get("ratelimit-remaining"))
        if remaining is None:
            remaining = _number(headers.get("X-Rate-Limit-Remaining"))
        reset = _number(headers.get("ratelimit-reset"))
        with self._lock:
            if limit and (self.announced is None or self.announced.limit != limit):
                self.announced = Rate(limit, 60.0)
                log.debug("%s: host announces %s", self.name, self.announced)
            if remaining is None or reset is None or reset <= 0:
                return
            now = self._clock()
            if remaining < 1:
                self._not_before = max(self._not_before, now + reset)
                return
            # What is left must last until the reset: other clients share the budget.
            spread = reset / remaining
            if spread > self._interval():
                self._not_before = max(self._not_before, now + spread)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if number >= 0 else None
