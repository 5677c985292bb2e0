"""Every helpdesk call made for a message, kept for ``messages show``.

``HostCallRecorder`` wraps the pipeline's host adapter: each call is noted (what, on which
ticket, the answer or the error, how long it took) and the pipeline writes the notes of a
message into the communication log (kind ``host``, level ``debug``) with the message's identity
when it logs the message's outcome. Calls for the next message start a fresh list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connector.hosts.base import CreatedTicket, HostAdapter, TicketInfo

#: The adapter methods that talk to the helpdesk (optional ones included when present).
RECORDED = frozenset({
    "create_ticket", "send_prepared", "add_comment", "get_ticket",
    "find_tickets_by_external_id", "comment_exists", "user_exists", "add_tags", "remove_tags",
})


@dataclass(frozen=True)
class HostCall:
    started_at: datetime
    operation: str  # the adapter method, e.g. create_ticket
    target: str  # what it was about: "ticket #12", "external_id pmb-…", a subject
    answer: str  # what came back, or the error
    ok: bool
    duration_ms: float


def _target(operation: str, args: tuple[Any, ...]) -> str:
    if not args:
        return ""
    first = args[-1] if len(args) > 1 and hasattr(args[-1], "subject") else args[0]
    ticket_id = getattr(first, "ticket_id", None)
    if ticket_id is not None:
        return f"ticket #{ticket_id}"
    subject = getattr(first, "subject", None)
    if subject is not None:
        return f"new ticket {subject!r}"
    if isinstance(first, int):
        return f"ticket #{first}"
    return str(first)[:120]


def _answer(operation: str, value: Any) -> str:
    if isinstance(value, CreatedTicket):
        return f"ticket #{value.id}" + (" (a replay of an earlier create)" if value.replayed
                                         else "")
    if isinstance(value, TicketInfo):
        return f"ticket #{value.id}, {value.status}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return f"{len(value)} found"
    if value is None:
        return "not found" if operation == "get_ticket" else "done"
    return str(value)[:120]


class HostCallRecorder:
    """A HostAdapter that notes every call it passes on (per thread: one per account)."""

    def __init__(self, inner: HostAdapter) -> None:
        self.inner = inner
        self._local = threading.local()

    def take(self) -> list[HostCall]:
        """The calls noted since the last take (this thread's)."""
        calls = getattr(self._local, "calls", [])
        self._local.calls = []
        return calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name not in RECORDED or not callable(value):
            return value
        # A prepared create (the ticket's uploads sent ahead) is a create all the same.
        return self._recording("create_ticket" if name == "send_prepared" else name, value)

    def _recording(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            at = datetime.now(UTC)
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                self._note(at, operation, args, f"{type(exc).__name__}: {exc}", False, started)
                raise
            self._note(at, operation, args, _answer(operation, result), True, started)
            return result

        return recorded

    def _note(self, at: datetime, operation: str, args: tuple[Any, ...], answer: str, ok: bool,
              started: float) -> None:
        if not hasattr(self._local, "calls"):
            self._local.calls = []
        self._local.calls.append(HostCall(at, operation, _target(operation, args), answer, ok,
                                          (time.monotonic() - started) * 1000))
