"""Subjects: one line of text, and the reply and forward prefixes at their start.

One list of prefixes for every stage that needs a subject without them: the decide stage (a
new ticket's title) and the forwarded-mail classifier (the forwarded mail's own subject).
"""

from __future__ import annotations

import re

# Reply and forward prefixes in the languages of the seeds and of our users' correspondents:
# English (Re, Fwd, Fw), German (AW, WG), Nordic (SV, VS), French (TR), Italian (R, I, Rif,
# Inoltro, Inoltra), Polish (Odp, PD), Turkish (YNT, İLT), Spanish (RV), Portuguese (Enc). Only
# at the start, any number of times, with the `Re[2]:` counter form and a space before the
# colon (`Re :`).
PREFIX_WORDS = ("re", "aw", "wg", "sv", "vs", "fwd", "fw", "tr", "r", "i", "rif", "inoltro",
                "inoltra", "odp", "pd", "ynt", "ilt", "İlt", "rv", "enc")
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(re.escape(w) for w in PREFIX_WORDS) + r")"
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


_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def one_line(subject: str) -> str:
    """The subject as one line: line breaks (an RFC 2047 word can decode to CR LF) become a
    space, NUL and other control characters go, before any helpdesk or mail header sees it."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", subject)).strip()
