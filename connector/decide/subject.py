"""Subject helpers: reply/forward prefix cleanup and ticket references."""

from __future__ import annotations

import re

# Reply and forward prefixes in the languages of the seeds and of our users' correspondents:
# English (Re, Fwd, Fw), German (AW, WG), Nordic (SV, VS), French (TR), Italian (R, I, Rif,
# Inoltro), Polish (Odp, PD), Turkish (YNT, İLT), Spanish (RV). Only at the start, any number of
# times, with the `Re[2]:` counter form and a space before the colon (`Re :`).
_PREFIX_WORDS = ("re", "aw", "wg", "sv", "vs", "fwd", "fw", "tr", "r", "i", "rif", "inoltro",
                 "odp", "pd", "ynt", "ilt", "İlt", "rv")
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(re.escape(w) for w in _PREFIX_WORDS) + r")"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*:\s*",
    re.IGNORECASE,
)


def clean_subject(subject: str) -> str:
    """Remove leading reply/forward prefixes ("Re: AW: Fwd:"), nothing inside the subject."""
    previous = None
    text = subject.strip()
    while previous != text:
        previous = text
        text = _PREFIX.sub("", text, count=1).strip()
    return text


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
