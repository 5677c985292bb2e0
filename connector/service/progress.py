"""Progress of a long job (a history import): a bar with rate and ETA on a terminal, plain
periodic lines anywhere else (a log file, a pipe, journald).

The bar is tqdm's; the lines are ours, because a redrawn bar written to a file is a mess of
carriage returns. Both count units done against a known total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO


class Progress(Protocol):
    def describe(self, phase: str) -> None:
        """What is being done now (shown beside the count)."""
        ...

    def advance(self, done: int = 1) -> None: ...

    def close(self) -> None: ...


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class PlainProgress:
    """One line per ``interval`` seconds (and one at the end): count, percent, rate, ETA."""

    def __init__(self, total: int, write: Callable[[str], None], *, label: str = "progress",
                 unit: str = "mails", interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.write = write
        self.label = label
        self.unit = unit
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.phase = ""
        self.started = clock()
        self._last_line = self.started
        self._closed = False

    def describe(self, phase: str) -> None:
        self.phase = phase

    def advance(self, done: int = 1) -> None:
        self.done += done
        if self.clock() - self._last_line >= self.interval:
            self._line()

    def line(self) -> str:
        elapsed = self.clock() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        phase = f" [{self.phase}]" if self.phase else ""
        return (f"{self.label}{phase}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), "
                f"{rate:.1f} {self.unit}/s, ETA {eta_text(eta)}")

    def _line(self) -> None:
        self._last_line = self.clock()
        self.write(self.line())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()


class BarProgress:
    """tqdm's bar: count, percent, rate and ETA redrawn in place on a terminal."""

    def __init__(self, total: int, stream: TextIO, *, label: str = "progress",
                 unit: str = "mail") -> None:
        from tqdm import tqdm

        self.label = label
        self.bar = tqdm(total=total, file=stream, unit=unit, desc=label, dynamic_ncols=True,
                        leave=True)

    def describe(self, phase: str) -> None:
        self.bar.set_description(f"{self.label} [{phase}]" if phase else self.label)

    def advance(self, done: int = 1) -> None:
        self.bar.update(done)

    def close(self) -> None:
        self.bar.close()


class NoProgress:
    def describe(self, phase: str) -> None:
        pass

    def advance(self, done: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_for(stream: TextIO, total: int, *, label: str, interval: float = 10.0) -> Progress:
    """A bar when ``stream`` is a terminal, plain lines otherwise."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return BarProgress(total, stream, label=label)

    def write(text: str) -> None:
        print(text, file=stream, flush=True)

    return PlainProgress(total, write, label=label, interval=interval)
