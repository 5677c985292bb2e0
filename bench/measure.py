"""Counters and the per-message time breakdown used by the benchmark commands.

- ``Counters`` counts SQLite statements (and COMMITs) through the store connection's trace
  callback and IMAP commands through ``imaplib.IMAP4._command``; both cost about a microsecond
  per call, so they stay on in every run.
- ``breakdown`` reads a cProfile run and says how much of each message's time went to each
  stage: the functions are named here, once, so the table in RESULTS.md is reproducible.
"""

from __future__ import annotations

import imaplib
import pstats
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    sql: Counter[str] = field(default_factory=Counter)
    imap: Counter[str] = field(default_factory=Counter)

    def sql_callback(self, statement: str) -> None:
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        self.sql[head] += 1

    @contextmanager
    def imap_commands(self) -> Iterator[None]:
        original = imaplib.IMAP4._command

        def counting(imap: imaplib.IMAP4, name: str, *args: Any) -> Any:
            key = f"UID {args[0]}" if name == "UID" and args else name
            self.imap[str(key).upper()] += 1
            return original(imap, name, *args)

        imaplib.IMAP4._command = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            imaplib.IMAP4._command = original  # type: ignore[method-assign]


#: Stage -> functions whose cumulative time it is (file suffix, function name). Outermost
#: calls only: cProfile does not count a recursive call's time twice.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("poll total", (("connector/service/runner.py", "_poll"),)),
    ("IMAP list (SEARCH, sizes)", (("connector/fetch/imap.py", "list_new"),
                                   ("connector/fetch/imap.py", "state"),
                                   ("connector/fetch/imap.py", "ensure_folders"))),
    ("IMAP fetch (UID FETCH batches)", (("connector/fetch/imap.py", "_fetch_batch"),)),
    ("IMAP move (one UID MOVE per mail)", (("connector/fetch/imap.py", "_move"),)),
    ("pipeline.process (all of it)", (("connector/service/pipeline.py", "process"),)),
    ("  sha256 of raw", (("~", "<built-in method _hashlib.openssl_sha256>"),)),
    ("  parse_message (incl. PEC inner)", (("connector/mail/parse.py", "parse_message"),)),
    ("  find_pec (2nd MIME parse + signature)", (("connector/pec/envelope.py", "find_pec"),)),
    ("  filter stage", (("connector/service/filtering.py", "__call__"),)),
    ("  decide", (("connector/service/pipeline.py", "_decide"),)),
    ("  bodies (sanitize HTML, to text)", (("connector/service/pipeline.py", "_bodies"),)),
    ("  host: HTTP requests", (("connector/hosts/zendesk.py", "_raw_request"),)),
    ("  host: serialize JSON bodies", (("connector/hosts/zendesk.py", "serialize_body"),)),
    ("  SQLite: all statements", (("~", "<method 'execute' of 'sqlite3.Connection' objects>"),
                                  ("~", "<method 'executemany' of 'sqlite3.Connection' "
                                   "objects>"))),
    ("  logging", (("logging/__init__.py", "_log"),)),
)


def _match(key: tuple[str, int, str], wanted: tuple[str, str]) -> bool:
    filename, _line, name = key
    suffix, func = wanted
    return name == func and (filename == suffix or filename.endswith(suffix))


def breakdown(stats: pstats.Stats, messages: int) -> list[tuple[str, float, int, float]]:
    """(stage, seconds, calls, ms per message) for every stage in ``STAGES``."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, functions in STAGES:
        seconds = 0.0
        calls = 0
        for key, (_cc, nc, _tt, ct, _callers) in raw.items():
            if any(_match(key, f) for f in functions):
                seconds += ct
                calls += nc
        rows.append((label, seconds, calls, 1000 * seconds / max(messages, 1)))
    return rows


def format_breakdown(rows: list[tuple[str, float, int, float]]) -> str:
    lines = [f"{'stage':44s} {'seconds':>8s} {'calls':>7s} {'ms/mail':>8s}"]
    lines += [f"{label:44s} {sec:8.2f} {calls:7d} {per:8.3f}" for label, sec, calls, per in rows]
    return "\n".join(lines)


def timed(record: list[float], func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` that adds each call's wall time to ``record[0]``."""
    import time

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            record[0] += time.perf_counter() - start

    return wrapper
