"""A MIME tree that keeps every part's exact bytes.

The stdlib parser re-serialises parts, which breaks S/MIME digests and the byte-exact extraction
of ``postacert.eml``. Here each part is a slice of the input: headers are parsed with the stdlib
(compat32, headers only) but bodies are split on boundary lines ourselves, so
``part.raw`` is exactly what travelled. Truncated input (no closing boundary) is accepted and
recorded as a defect; an inner multipart never reads past its parent's part.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from functools import cached_property

MAX_DEPTH = 32
MAX_PARTS = 2000

_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


class _Budget:
    """Counts parts across one parse so a hostile message cannot explode the tree."""

    def __init__(self) -> None:
        self.parts = 0


@dataclass(frozen=True)
class RawPart:
    """One MIME entity. ``raw`` holds its header block and body exactly as received."""

    raw: bytes = field(repr=False)
    body_start: int
    headers: Message = field(repr=False)
    children: tuple[RawPart, ...] = ()
    defects: tuple[str, ...] = ()
    path: str = ""
    depth: int = 0

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start :]

    @cached_property
    def content_type(self) -> str:
        return self.headers.get_content_type().lower()

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    def param(self, name: str) -> str | None:
        value = self.headers.get_param(name)
        if value is None:
            return None
        return collapse_rfc2231_value(value)

    @cached_property
    def filename(self) -> str | None:
        """Content-Disposition filename, else Content-Type name, RFC 2047/2231 decoded."""
        value = self.headers.get_filename() or self.param("name")
        return decode_header_value(value).strip() if value else None

    @property
    def transfer_encoding(self) -> str:
        value = header_text(self.headers, "Content-Transfer-Encoding") or "7bit"
        return value.strip().lower()

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone (lenient, like mail clients)."""
        return decode_transfer(self.body, self.transfer_encoding)

    def walk(self, *, into_messages: bool = False) -> Iterator[RawPart]:
        """This part and its descendants, depth first. Embedded messages (message/rfc822) are
        not entered unless ``into_messages``: what is inside them belongs to another message."""
        yield self
        for child in self.children:
            yield from child.walk(into_messages=into_messages)
        if into_messages and self.content_type == "message/rfc822":
            inner = self.embedded()
            if inner is not None:
                yield from inner.walk(into_messages=True)

    def embedded(self) -> RawPart | None:
        """The message inside a message/rfc822 part, parsed; None past the depth limit."""
        if self.depth + 1 > MAX_DEPTH:
            return None
        return parse_entity(self.decoded_body(), path=f"{self.path}>" if self.path else ">",
                            depth=self.depth + 1)


def parse_entity(data: bytes, *, path: str = "", depth: int = 0,
                 budget: _Budget | None = None, default_type: str = "text/plain") -> RawPart:
    """Parse one entity (a whole message or a body part) into a RawPart tree.
    ``default_type`` applies when there is no Content-Type (message/rfc822 in a digest)."""
    budget = budget or _Budget()
    budget.parts += 1
    body_start, header_defects = _split_headers(data)
    headers = BytesParser(policy=compat32).parsebytes(data[:body_start], headersonly=True)
    headers.set_default_type(default_type)
    part = RawPart(raw=data, body_start=body_start, headers=headers, defects=header_defects,
                   path=path, depth=depth)
    if not part.is_multipart:
        return part
    boundary = headers.get_boundary()
    if not boundary:
        return replace(part, defects=part.defects + ("multipart without boundary",))
    if depth >= MAX_DEPTH or budget.parts >= MAX_PARTS:
        return replace(part, defects=part.defects + ("nesting or part limit reached",))
    ranges, split_defects = split_multipart(part.body, boundary)
    child_type = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
    children = []
    for index, (start, end) in enumerate(ranges, 1):
        if budget.parts >= MAX_PARTS:
            split_defects += ("part limit reached",)
            break
        child_path = f"{path}.{index}" if path else str(index)
        children.append(parse_entity(part.body[start:end], path=child_path, depth=depth + 1,
                                     budget=budget, default_type=child_type))
    return replace(part, children=tuple(children), defects=part.defects + split_defects)


def parse_headers(data: bytes) -> Message:
    """Only the header block of a message, for when the body is not needed."""
    body_start, _defects = _split_headers(data)
    return BytesParser(policy=compat32).parsebytes(data[:body_start], headersonly=True)


def _split_headers(data: bytes) -> tuple[int, tuple[str, ...]]:
    """Offset where the body starts: after the first empty line, or at the first line that is
    neither a header nor a continuation (a defect, as the stdlib also records)."""
    pos = 0
    size = len(data)
    while pos < size:
        newline = data.find(b"\n", pos)
        line_end = size if newline < 0 else newline + 1
        line = data[pos:line_end]
        if line.rstrip(b"\r\n") == b"":
            return line_end, ()
        is_continuation = line[:1] in (b" ", b"\t") and pos > 0
        if not is_continuation and not _HEADER_LINE.match(line) and not line.startswith(b"From "):
            return pos, ("missing header/body separator",)
        pos = line_end
    return size, (("no body",) if size else ())


def split_multipart(body: bytes, boundary: str) -> tuple[list[tuple[int, int]], tuple[str, ...]]:
    """Byte ranges of the parts of a multipart body, per RFC 2046: the line break before a
    delimiter line belongs to the delimiter. Returns (ranges, defects)."""
    token = boundary.encode("latin-1", "replace")
    delimiter = re.compile(rb"^--" + re.escape(token) + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    closed = False
    for match in delimiter.finditer(body):
        if start is not None:
            ranges.append((start, max(start, _before_line_break(body, match.start()))))
        if match.group(1):
            closed = True
            start = None
            break
        start = match.end() + 1 if body[match.end() : match.end() + 1] == b"\n" else match.end()
    defects: tuple[str, ...] = ()
    if start is not None:
        ranges.append((start, len(body)))
    if not closed:
        defects = ("close boundary not found",) if ranges else ("no boundary found",)
    return ranges, defects


def _before_line_break(data: bytes, pos: int) -> int:
    if pos > 0 and data[pos - 1 : pos] == b"\n":
        pos -= 1
        if pos > 0 and data[pos - 1 : pos] == b"\r":
            pos -= 1
    return pos


def decode_transfer(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return decode_base64_lenient(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def decode_base64_lenient(data: bytes) -> bytes:
    """Base64 ignoring characters outside the alphabet and bad padding, as mail clients do.
    Raises binascii.Error only when what is left cannot be base64 at all."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    remainder = len(cleaned) % 4
    if remainder == 1:
        raise binascii.Error("base64 data has an impossible length")
    if remainder:
        cleaned += b"=" * (4 - remainder)
    return base64.b64decode(cleaned)


def header_text(headers: Message, name: str) -> str | None:
    """First value of header ``name`` (case-insensitive), unfolded and RFC 2047 decoded."""
    value = headers.get(name)
    if value is None:
        return None
    return decode_header_value(value)


def decode_header_value(value: object) -> str:
    """Decode RFC 2047 words; undeclared 8-bit bytes are read as UTF-8, else Latin-1."""
    try:
        chunks = decode_header(value)  # type: ignore[arg-type]
    except (ValueError, LookupError, binascii.Error):
        chunks = [(str(value), None)]
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(_decode_bytes(chunk, charset))
    return _FOLD.sub("", "".join(out)).strip()


def _decode_bytes(chunk: bytes, charset: str | None) -> str:
    if charset and charset.lower() not in ("unknown-8bit", "x-unknown"):
        try:
            return chunk.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return chunk.decode("latin-1")
