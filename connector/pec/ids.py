"""Message identifiers in one comparable form: bare ``local@domain``, no angle brackets.

That is the form connector.mail.parse gives ParsedMessage.message_id / in_reply_to /
references, so PEC keys compare directly with them. PEC mixes forms: Message-ID headers have
brackets, ``daticert/identificativo`` has none, ``daticert/msgid`` has them XML-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_BRACKETED = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def normalize_msgid(value: str | None) -> str | None:
    """Bare id from a header value, a daticert msgid or an identificativo; None if empty."""
    if not value:
        return None
    match = _BRACKETED.search(value)
    if match:
        return _WHITESPACE.sub("", match.group(1)) or None
    tokens = value.strip().split()
    if not tokens:
        return None
    return tokens[0].strip("<>") or None


def msgid_list(value: str | None) -> tuple[str, ...]:
    """Every id in a References / In-Reply-To value, in order, bare."""
    if not value:
        return ()
    return tuple(i for i in (_WHITESPACE.sub("", m) for m in _BRACKETED.findall(value)) if i)


def unique(ids: Iterable[str | None]) -> tuple[str, ...]:
    """Drop None and repeats, keep the first position of each id."""
    seen: dict[str, None] = {}
    for item in ids:
        if item:
            seen.setdefault(item, None)
    return tuple(seen)
