"""Subject helpers: reply/forward prefix cleanup and ticket references."""

from __future__ import annotations

import re

from connector.mail.subject import clean_subject

__all__ = ["clean_subject", "ticket_refs"]


def ticket_refs(subject: str, pattern: str) -> list[int]:
    """Every ticket id the subject names, in order, without repeats."""
    found: list[int] = []
    for match in re.finditer(pattern, subject):
        try:
            ticket_id = int(match.group(1))
        except (TypeError, ValueError):
            continue
        if ticket_id > 0 and ticket_id not in found:
            found.append(ticket_id)
    return found
