"""Subject helpers: reply/forward prefix cleanup and ticket references."""

from __future__ import annotations

import re

from connector.mail.subject import clean_subject

__all__ = ["clean_subject", "ticket_refs"]


def ticket_refs(subject: str, pattern: str) -> list[str]:
    """Every ticket id the subject names (the pattern's first group, as written; ids are
    opaque text), in order, without repeats. An empty or all-zero group names no ticket."""
    found: list[str] = []
    for match in re.finditer(pattern, subject):
        ticket_id = (match.group(1) or "").strip()
        if ticket_id.strip("0") and ticket_id not in found:
            found.append(ticket_id)
    return found
