"""The state the filter stage may ask about, injected so filters stay pure.

The lead implements :class:`FilterLookups` on the SQLite store; tests and ``filters test``
without a store use :class:`NullLookups` or a small fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol


class FilterLookups(Protocol):
    """Read-only questions about what the bridge has already seen or sent."""

    def is_own_message_id(self, message_id: str) -> bool:
        """True when the bridge itself sent a mail with this Message-ID (written as
        ``ParsedMessage.message_id`` holds it: without angle brackets)."""
        ...

    def sender_count_on(self, address: str, day: date, *, proven: bool | None = None) -> int:
        """How many mails from ``address`` (lower-cased) dated ``day`` (UTC) were already
        recorded, not counting the one being filtered; with ``proven``, only those whose
        sender was (True) or was not (False) authenticated."""
        ...

    def known_ticket_for(self, message_ids: Sequence[str]) -> str | None:
        """The ticket that any of ``message_ids`` (sent or received by the bridge) belongs to,
        trying them in order, or None."""
        ...


class NullLookups:
    """Lookups with no state: nothing is ours, nobody has written, no ticket is known."""

    def is_own_message_id(self, message_id: str) -> bool:
        return False

    def sender_count_on(self, address: str, day: date, *, proven: bool | None = None) -> int:
        return 0

    def known_ticket_for(self, message_ids: Sequence[str]) -> str | None:
        return None
