"""Whether several mails at once pay for their threads: measured, not assumed.

``host.max_in_flight`` exists for a helpdesk that makes each mail wait (Zendesk answers in
100-300 ms): while one mail waits for its answer, others are sent. A helpdesk that answers
at once (on the same machine, or a double) leaves nothing to overlap: the mails then take
turns on one interpreter lock, and every hand-over between threads costs CPU (measured on
the zero-latency bench: about 0.75 ms of bridge CPU per mail, 15 % of the rate). So the
poller runs mail on its own thread when that is at least as fast, and on the pool when the
pool is faster, and checks again from time to time, since a helpdesk's answers slow down
and speed up (a choice confirmed is checked half as often, down to every ``MAX_HOLD_SECONDS``).

``PoolChoice`` holds that choice for one account across passes. It compares rates, mails per
second of work: the pool's over its last window (from its first mail to its window's last
result), one at a time over the mails it ran (the sum of their own durations, so a wait for
the mailbox is not counted against it). One at a time wins when it reaches ``TIE`` of the
pool's rate: it costs less CPU for the same mail, and the CPU freed goes to the parse
workers and the mail server on the same cores. A trial of one at a time stops after
``EARLY`` mails once it is below that share, so checking costs little where the pool is what
is needed (against a 150 ms helpdesk paced to 700 requests a minute, trials of 48 mails every
minute took 4 % of the plan).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class Mode(Enum):
    POOL = "pool"  # up to max_in_flight mails at once, on threads
    INLINE = "inline"  # one mail at a time, on the poller's own thread


WINDOW = 48  # mails per measurement of either mode
EARLY = 8  # one-at-a-time mails after which a trial below TIE stops
TIE = 0.9  # one at a time is kept at this share of the pool's rate or more
CLEARLY_SLOWER = 0.5  # one at a time below this share of the pool: the helpdesk slowed down
HOLD_SECONDS = 60.0  # how long a new choice stands before the other mode is measured again
MAX_HOLD_SECONDS = 960.0  # ... doubled each time a trial confirms it, up to this


class PoolChoice:
    """Chooses, mail by mail, whether the next one runs on the pool or on the caller's
    thread (see the module docstring). Not thread-safe: the poller's thread calls it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.mode = Mode.POOL
        self.pool_rate: float | None = None
        self.inline_rate: float | None = None
        self._trial = True  # the current mode is being measured against the other
        self._held_since = 0.0
        self._hold = HOLD_SECONDS
        self._decided: Mode | None = None  # what the last finished trial chose
        self._count = 0
        self._busy = 0.0  # inline: the mails' own durations; pool: unused
        self._started: float | None = None  # pool: when the window's first mail went in

    # -- the pool -----------------------------------------------------------------------------
    def pool_submitted(self) -> None:
        if self._started is None:
            self._started = self.clock()

    def pool_finished(self) -> None:
        """One pool mail's result was collected."""
        if self.mode is not Mode.POOL or self._started is None:
            return
        self._count += 1
        if self._count < WINDOW:
            return
        self.pool_rate = self._count / max(self.clock() - self._started, 1e-6)
        self._reset()
        if self._trial or self._hold_over():
            # The pool has been measured: one at a time is measured next (or again).
            self._switch(Mode.INLINE, trial=True)

    # -- one at a time ------------------------------------------------------------------------
    def inline_finished(self, seconds: float) -> None:
        """One mail ran on the caller's thread and took ``seconds``."""
        if self.mode is not Mode.INLINE:
            return
        self._count += 1
        self._busy += seconds
        rate = self._count / max(self._busy, 1e-6)
        pool = self.pool_rate
        if self._trial and pool is not None and self._count >= EARLY and rate < TIE * pool:
            self.inline_rate = rate
            self._decide(Mode.POOL)
            return
        if self._count < WINDOW:
            return
        self.inline_rate = rate
        self._reset()
        if self._trial:
            self._decide(Mode.POOL if pool is not None and rate < TIE * pool else Mode.INLINE)
        elif self._hold_over() or (pool is not None and rate < CLEARLY_SLOWER * pool):
            # Due, or the helpdesk has slowed down since the pool was measured.
            self._switch(Mode.POOL, trial=True)

    @property
    def inline(self) -> bool:
        return self.mode is Mode.INLINE

    def describe(self) -> str:
        def rate(value: float | None) -> str:
            return "not measured" if value is None else f"{value:.0f} mails/s"

        return (f"{self.mode.value} (pool {rate(self.pool_rate)}, one at a time "
                f"{rate(self.inline_rate)})")

    # -- internals ----------------------------------------------------------------------------
    def _decide(self, mode: Mode) -> None:
        """A trial is over: ``mode`` stands for the hold, longer each time it is confirmed."""
        self._hold = min(self._hold * 2, MAX_HOLD_SECONDS) if mode is self._decided \
            else HOLD_SECONDS
        self._decided = mode
        self._switch(mode, trial=False)

    def _switch(self, mode: Mode, *, trial: bool) -> None:
        if not trial or self.mode is not mode:
            self._held_since = self.clock()
        self.mode = mode
        self._trial = trial
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._busy = 0.0
        self._started = None

    def _hold_over(self) -> bool:
        return self.clock() - self._held_since >= self._hold
