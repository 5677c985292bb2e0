"""The new text of a reply: quoted history and signatures trimmed from follow-up comments.

Every reply repeats the thread below it; on a ticket that is the same text again in every
comment. The reply's own words are what an agent needs, so follow-ups are trimmed to them, with
the whole original kept beside the comment (the attached .eml, or a folded section; the pipeline
decides which by the account's ``follow_up.quoted_text``).

Two libraries, measured on real replies whose new text their source's tests state
(bench/reply_trimming.py; figures in bench/RESULTS.md), each better at one thing:
mail-parser-reply knows quote headers ("On ... wrote:", "Il giorno ... ha scritto:", Outlook's
"Von:/Gesendet:" block, "-----Original Message-----") and signature separators in 13 languages;
quotequail finds ">" quote blocks and English intros that the first leaves alone. So the first
answers, and the second only where the first kept the text whole.

Trimming never does harm: a first message is never trimmed (the caller's rule), a reply is never
trimmed to nothing, and a cut that would keep only a sliver of a long text is not made (the
"quote" was more likely the message itself, e.g. a forwarded mail with a note).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import quotequail
from mailparser_reply import EmailReplyParser
from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage

#: Languages whose quote headers and signatures are recognised (``david`` is a test entry).
LANGUAGES = tuple(code for code in MAIL_LANGUAGES if len(code) == 2)
#: Below this share of a long text, the "new text" is more likely a note on top of a forward.
_MIN_KEPT_SHARE = 0.02
_LONG_TEXT = 2_000
_WORD = re.compile(r"\w", re.UNICODE)
_QUOTE_LINE = re.compile(r"^[ \t]*>", re.MULTILINE)
#: Without a ">" line, the quote header is looked for in this much of the text.
HEAD_LIMIT = 8_000
#: Above a ">" block, this much of the text's end is read for a header and a signature.
TAIL_CHARS = 800


def _line_start(text: str, position: int) -> int:
    """The start of the line holding ``position`` (0 when it is before the text)."""
    if position <= 0:
        return 0
    return text.rfind("\n", 0, position) + 1


@dataclass(frozen=True)
class TrimmedReply:
    """``text`` is what the sender wrote; ``trimmed`` says whether anything was cut."""

    text: str
    trimmed: bool

    @property
    def unchanged(self) -> bool:
        return not self.trimmed


@lru_cache(maxsize=1)
def _parser() -> EmailReplyParser:
    return EmailReplyParser(languages=list(LANGUAGES))


class _HeadersOnly(EmailMessage):
    """mail-parser-reply's reader (``EmailReplyParser.parse_reply``) without its signature and
    disclaimer searches: the latest reply's content, all that is used here, does not depend
    on them, and they were two thirds of its time (about 0.6 ms per reply)."""

    def _process_signatures_disclaimers(self, text: str) -> tuple[list[str], str]:
        return [], ""


#: How each of the library's quote-header alternatives begins: at a line start, or at a
#: newline, or (Danish "-----Oprindelig meddelelse") at a dash.
_ALTERNATIVE_STARTS = ("^", "(^", "((?:(?:^|\\n|\\n(?:> ?)*)[* ]*",
                       "((?:(?:^|\\n|\\n(?:> ?)*)?-----")


@lru_cache(maxsize=1)
def _header_regex() -> re.Pattern[str]:
    """The library's quote-header pattern of every language, built and compiled once (it
    builds it again for every message), behind a guard that lets the engine try its 27
    alternatives only where one of them can begin: findall otherwise tries them all at every
    character (about 1 ms per reply). The guard is added only when every alternative begins
    as ``_ALTERNATIVE_STARTS`` says; a library version with other patterns runs unguarded."""
    pattern = _HeadersOnly(text="", languages=list(_parser().languages)).HEADER_REGEX
    if not all(alternative.startswith(_ALTERNATIVE_STARTS)
               for alternative in _top_level_alternatives(pattern.pattern)):
        return pattern
    return re.compile(f"(?:^|(?=[\\n-]))(?:{pattern.pattern})", pattern.flags)


def _top_level_alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups and character classes)."""
    parts, current, depth, index = [], [], 0, 0
    in_class = False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            current.append(pattern[index:index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _latest_reply(body: str) -> str | None:
    """What ``_parser().parse_reply(text=body)`` answers."""
    message = _HeadersOnly(text=body, languages=list(_parser().languages),
                           _header_regex=_header_regex())
    return message.read().latest_reply


def new_text(body: str) -> TrimmedReply:
    """The reply's own text, without the quoted thread and the signature below it."""
    stripped = body.strip()
    if not stripped:
        return TrimmedReply(body, False)
    if _interleaved(body):
        return TrimmedReply(body, False)  # answers between the quotes: all of it is the reply
    # The reply and its quote header come before the first ">" line (or, without one, early in
    # the text): the libraries read only that head. They cost about 2 ms per kB (13
    # languages' patterns), and the thread below is what makes a reply long.
    first = _QUOTE_LINE.search(body)
    if first is not None:
        line_end = body.find("\n", first.end())
        head, with_quote = body[:first.start()], body[:line_end if line_end >= 0 else len(body)]
    else:
        head = with_quote = body[:HEAD_LIMIT]
    if not _WORD.search(head):
        return TrimmedReply(body, False)  # it starts with the quote: nothing of its own above
    # Above a ">" block, the header and the signature are at the end of the head: only its
    # last lines are read, the words above them are the reply's in any case.
    cut = _line_start(head, len(head) - TAIL_CHARS) if first is not None else 0
    above, tail = head[:cut], head[cut:]
    kept = _trimmed_by_headers(tail)
    if _normalized(kept) == _normalized(tail):
        kept = _trimmed_by_quote_marks(with_quote[cut:])
    if first is None and _normalized(kept) == _normalized(tail):
        kept = stripped  # no quote mark, no header in the head: nothing to trim
    elif above:
        kept = (above + kept).strip()
    if not _WORD.search(kept):
        return TrimmedReply(body, False)  # never trim to nothing
    if len(stripped) > _LONG_TEXT and len(kept) < _MIN_KEPT_SHARE * len(stripped):
        return TrimmedReply(body, False)
    if _normalized(kept) == _normalized(stripped):
        return TrimmedReply(body, False)
    return TrimmedReply(kept, True)


def _interleaved(body: str) -> bool:
    """A quote, then the sender's own paragraph, then a quote again: an inline reply. A line
    right below a quoted line (no blank line between) is the quote's own line, wrapped by a
    mail client that lost its ">", not an answer."""
    seen_quote = answered = False
    previous = ""
    for line in body.splitlines():
        if _QUOTE_LINE.match(line):
            if answered:
                return True
            seen_quote = True
        elif (seen_quote and line.strip() and not previous.strip()
              and not line.startswith(("--", "__"))):
            answered = True
        previous = line
    return False


def _trimmed_by_headers(body: str) -> str:
    try:
        return (_latest_reply(body) or "").strip()
    except (RecursionError, re.error, IndexError, ValueError):
        # The libraries are heuristics; on input they cannot read, the whole text is the answer.
        return body.strip()


def _trimmed_by_quote_marks(body: str) -> str:
    try:
        parts = quotequail.quote(body, quote_intro_line=True)
    except (RecursionError, re.error, IndexError, ValueError):
        return body.strip()
    if not parts or not parts[0][0]:
        return body.strip()  # it starts with a quote: an inline reply, keep it whole
    return parts[0][1].strip()


def _normalized(text: str) -> str:
    return " ".join(text.split())
