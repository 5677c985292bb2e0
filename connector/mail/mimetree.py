"""A MIME tree whose bodies stay where they are: offsets into the message bytes.

The stdlib feed parser reads every body line into a ``str`` and joins them again: for a 25 MB
mail that is a 25 MB string, ~330,000 line objects and another joined copy before a single
byte is decoded (measured: 193 MB allocated for one 25 MB mail, and most of the parse time on
mail with large attachments). Here only header blocks go through the stdlib parser (compat32,
headers only, so header handling and its defects are exactly the stdlib's); bodies are found
by searching for boundary lines with ``bytes.find`` and kept as ``(start, end)`` offsets into
the one ``raw`` buffer. A part's body is sliced out only when it is decoded.

The shape follows the stdlib's feed parser, so the parse stage reads the tree as it read
``email.message.Message`` trees before: the same header semantics, the same defect classes
(``StartBoundaryNotFoundDefect``, ``CloseBoundaryNotFoundDefect``,
``NoBoundaryInMultipartDefect``, ``MissingHeaderBodySeparatorDefect``,
``InvalidMultipartContentTransferEncodingDefect``), the line break before a delimiter belonging
to the delimiter (RFC 2046), and an inner part never reading past its parent's part. Two things
differ on purpose: ``message/*`` bodies are not parsed here (the parse stage parses the bodies
of ``message/rfc822`` itself, from their exact bytes, after undoing any transfer encoding), and
only LF and CRLF end a line (a lone CR is data, as in every MIME producer since the 1990s).

Each part also knows where it begins and ends as a whole (``start``/``end``: its header block
and body, exactly as they travelled), which S/MIME needs: the signed content of a
multipart/signed is its first part byte for byte, headers included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import errors
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

__all__ = ["HeadersTruncatedDefect", "MimePart", "ParseLimits", "TooManyPartsDefect",
           "build_headers", "build_tree", "current_limits", "set_limits"]

# Deeper than anything the parse stage walks (it stops at 40 and keeps the rest opaque); the
# limit only keeps a hostile message from exhausting the stack or building millions of parts.
MAX_DEPTH = 64
MAX_PARTS = 10_000
# Bounded work per mail: a header block is read up to MAX_HEADER_BYTES and MAX_HEADERS
# fields; past either, the rest of the block is skipped (the body is still found) and the part
# carries a HeadersTruncatedDefect. Real mail stays far below (a long Received chain is a few
# tens of kB); a hostile one cannot make the parser build millions of header tuples.
MAX_HEADER_BYTES = 1024 * 1024
MAX_HEADERS = 2_000


@dataclass(frozen=True)
class ParseLimits:
    """The parser's bounds (the config's ``limits:`` section); the defaults above."""

    mime_parts: int = MAX_PARTS
    headers: int = MAX_HEADERS
    header_bytes: int = MAX_HEADER_BYTES


# Process-wide, like the parser's other constants: set once from the configuration at start
# (and in each parse-ahead worker by its initializer), read by every parse.
_limits = ParseLimits()


def set_limits(limits: ParseLimits) -> None:
    """Use ``limits`` for every parse in this process from now on."""
    global _limits
    _limits = limits


def current_limits() -> ParseLimits:
    return _limits


class TooManyPartsDefect(errors.MessageDefect):
    """More than MAX_PARTS MIME parts: the parts past the limit are not in the tree (the
    pipeline then attaches the original message, so nothing is lost)."""


class HeadersTruncatedDefect(errors.MessageDefect):
    """A header block over MAX_HEADER_BYTES or MAX_HEADERS: the fields past it are skipped."""


# A line that continues the header block, as the stdlib's feedparser.headerRE decides.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_PLAIN_ENCODINGS = ("", "7bit", "8bit", "binary")
_BLANK_LINE = re.compile(rb"\n\r?\n")


class MimePart(Message):
    """A compat32 ``Message`` whose body is ``raw[body_start:body_end]``.

    Multipart parts have their children as the payload (a list, so ``is_multipart()`` and
    ``walk()`` work as usual); every other part has no payload of its own: read ``body()``.
    The whole part, header block included, is ``raw[start:end]``: read ``whole()``.
    """

    raw: bytes = b""
    start: int = 0
    end: int = 0
    body_start: int = 0
    body_end: int = 0

    def whole(self) -> bytes:
        """The part exactly as it travelled, header block and body (an S/MIME signed part)."""
        return self.raw[self.start : self.end]

    def whole_view(self) -> memoryview:
        """``whole()`` without copying it: for digests and verifiers that read any buffer."""
        return memoryview(self.raw)[self.start : self.end]

    def body(self) -> bytes:
        """The body exactly as it was on the wire (before transfer decoding)."""
        return self.raw[self.body_start : self.body_end]

    def body_view(self) -> memoryview:
        """The body without copying it: for decoders that read any buffer."""
        return memoryview(self.raw)[self.body_start : self.body_end]

    @property
    def body_size(self) -> int:
        return self.body_end - self.body_start


class _HeaderParser(BytesParser):
    def __init__(self, policy: object) -> None:
        super().__init__(_class=MimePart, policy=policy)


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def build_tree(raw: bytes, start: int = 0, end: int | None = None, *, policy: object = compat32,
               default_type: str = "text/plain") -> MimePart:
    """Parse ``raw[start:end]`` as one message. Never raises on malformed input: oddities are
    recorded as stdlib defect objects in each part's ``defects``."""
    return _entity(raw, start, len(raw) if end is None else end, _HeaderParser(policy),
                   default_type, 0, _Budget())


def build_headers(raw: bytes, start: int = 0, end: int | None = None, *,
                  policy: object = compat32) -> MimePart:
    """Only the header block of ``raw[start:end]``, for when the body is not needed: a part
    with no children (even if it is a multipart) whose body is the rest of the range."""
    return _leaf(raw, start, len(raw) if end is None else end, _HeaderParser(policy),
                 "text/plain")


def _leaf(raw: bytes, start: int, end: int, parser: _HeaderParser,
          default_type: str) -> MimePart:
    header_end, body_start, separator_missing = _header_block(raw, start, end)
    limit = _limits.header_bytes
    truncated = header_end - start > limit
    if truncated:
        header_end = raw.rfind(b"\n", start, start + limit) + 1 or start + limit
    part = parser.parsebytes(raw[start:header_end], headersonly=True)
    assert isinstance(part, MimePart)
    if len(part._headers) > _limits.headers:
        del part._headers[_limits.headers:]
        truncated = True
    if truncated:
        part.defects.append(HeadersTruncatedDefect())
    if default_type != "text/plain":
        part.set_default_type(default_type)
    part._payload = None
    part.raw = raw
    part.start = start
    part.end = end
    part.body_start = body_start
    part.body_end = end
    if separator_missing:
        part.defects.append(errors.MissingHeaderBodySeparatorDefect())
    return part


def _entity(raw: bytes, start: int, end: int, parser: _HeaderParser, default_type: str,
            depth: int, budget: _Budget) -> MimePart:
    budget.parts += 1
    part = _leaf(raw, start, end, parser, default_type)
    body_start = part.body_start
    if part.get_content_maintype() != "multipart":
        return part
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding not in _PLAIN_ENCODINGS:
        part.defects.append(errors.InvalidMultipartContentTransferEncodingDefect())
    boundary = part.get_boundary()
    if boundary is None:
        part.defects.append(errors.NoBoundaryInMultipartDefect())
        return part
    if depth >= MAX_DEPTH or budget.parts >= _limits.mime_parts:
        return part  # kept as one opaque body: the parse stage files it as an attachment
    ranges, closed, preamble_end = _split(raw, body_start, end,
                                          boundary.encode("utf-8", "surrogateescape"))
    if ranges is None:
        part.defects.append(errors.StartBoundaryNotFoundDefect())
        part.body_end = preamble_end  # as the stdlib: the body is what came before a delimiter
        return part
    if not closed:
        part.defects.append(errors.CloseBoundaryNotFoundDefect())
    child_type = "message/rfc822" if part.get_content_subtype() == "digest" else "text/plain"
    children: list[Message] = []
    for child_start, child_end in ranges:
        if budget.parts >= _limits.mime_parts:
            part.defects.append(TooManyPartsDefect())
            break
        children.append(_entity(raw, child_start, child_end, parser, child_type, depth + 1,
                                budget))
    part._payload = children
    return part


def _header_block(raw: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """(end of the header lines, start of the body, whether the blank line was missing).

    The header block ends at the first empty line, or (a defect, as in the stdlib) at the first
    line that is neither a header, a continuation nor a "From " envelope line."""
    pos = start
    while pos < end:
        if pos - start > _limits.header_bytes:
            # Past the cap, only the end of the block matters: found by one search, not
            # line by line (_leaf keeps the first header_bytes).
            blank = _BLANK_LINE.search(raw, pos - 1, end)
            if blank is None:
                return end, end, False
            return blank.start() + 1, blank.end(), False
        newline = raw.find(b"\n", pos, end)
        line_end = end if newline < 0 else newline + 1
        if raw[pos:pos + 1] == b"\n" or raw[pos:pos + 2] == b"\r\n":
            return pos, line_end, False
        if not _HEADER_LINE.match(raw, pos, line_end):
            return pos, pos, True
        pos = line_end
    return end, end, False


def _split(raw: bytes, start: int, end: int, boundary: bytes
           ) -> tuple[list[tuple[int, int]] | None, bool, int]:
    """Ranges of the parts between delimiter lines, whether the close delimiter was seen, and
    where the preamble ends. Ranges are None when no opening delimiter is there."""
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    previous_end = -1
    preamble_end = end
    for line_start, after, is_close in _delimiters(raw, start, end, b"--" + boundary):
        if part_start is None:
            preamble_end = _before_line_break(raw, line_start, start)
            if is_close:  # a close delimiter before any opening one: no parts, a preamble
                return None, True, preamble_end
        if line_start == previous_end and not is_close:
            # Delimiter lines in a row make no empty parts (the stdlib reads RFC 2046 so too).
            part_start = previous_end = after
            continue
        if part_start is not None:
            ranges.append((part_start, _before_line_break(raw, line_start, part_start)))
        if is_close:
            return ranges, True, preamble_end
        part_start = previous_end = after
    if part_start is None:
        return None, False, preamble_end
    # Unterminated: the last part runs to the end of its parent. At the very end of the data
    # the last line break goes, as the stdlib drops it too; a parent that ended at its own
    # delimiter has already given its line break to that delimiter.
    last_end = _before_line_break(raw, end, part_start) if end == len(raw) else end
    ranges.append((part_start, last_end))
    return ranges, False, preamble_end


def _delimiters(raw: bytes, start: int, end: int, delimiter: bytes
                ) -> Iterator[tuple[int, int, bool]]:
    """(line start, start of the next line, is it the close delimiter) of each delimiter line."""
    size = len(delimiter)
    pos = start
    while pos < end:
        if raw.startswith(delimiter, pos, end) and (pos == start or raw[pos - 1] == 0x0A):
            found = pos
        else:
            found = raw.find(b"\n" + delimiter, pos, end)
            if found < 0:
                return
            found += 1
        cursor = found + size
        is_close = raw.startswith(b"--", cursor, end)
        if is_close:
            cursor += 2
        while cursor < end and raw[cursor] in (0x20, 0x09):
            cursor += 1
        if cursor >= end:
            yield found, end, is_close
            return
        if raw[cursor] == 0x0A:
            yield found, cursor + 1, is_close
        elif raw.startswith(b"\r\n", cursor, end):
            yield found, cursor + 2, is_close
        elif raw[cursor] == 0x0D and cursor + 1 == end:
            yield found, end, is_close
        # else: the boundary is only the start of a longer line: not a delimiter
        pos = found + size


def _before_line_break(raw: bytes, pos: int, floor: int) -> int:
    """The line break before a delimiter belongs to the delimiter (RFC 2046, 5.1.1)."""
    if pos > floor and raw[pos - 1] == 0x0A:
        pos -= 1
        if pos > floor and raw[pos - 1] == 0x0D:
            pos -= 1
    return pos
