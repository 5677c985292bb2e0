"""PEC's view of a MIME tree: part paths, names and decoded bodies over connector.mail.mimetree.

The tree is the project's one MIME parser (:mod:`connector.mail.mimetree`): bodies stay where
they are in the message bytes, as offsets: ``MimePart.whole_view()`` is a part exactly as it
travelled, headers included (what an S/MIME signature covers), ``body_view()`` its body (what
``postacert.eml`` is extracted from, byte for byte). What PEC adds is bookkeeping: the path of
each part ("1.2"; ">" enters an embedded message, "~" the content of an opaque signature) for
notes and service parts, the nesting depth, and bodies decoded the strict way (damaged base64
is an error, not a repair: a certified original is what was sent or nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import errors
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value

from connector.cached import cached_property
from connector.mail.decode import decode_header_value, decode_transfer_or_raise, unescape_8bit
from connector.mail.mimetree import MimePart, build_headers, build_tree

__all__ = ["MAX_DEPTH", "PecPart", "header_text", "parse_headers", "parse_part"]

# Embedded messages are not entered past this depth (MIME levels and messages counted
# together); find_pec stops searching far earlier (3 messages down by default).
MAX_DEPTH = 32

_ENCODINGS = ("base64", "quoted-printable")  # the ones that change the bytes
_NOT_BLANK = re.compile(rb"\S")

# The stdlib defect classes the tree records, as the notes have always worded them; None: not
# a note (a multipart with an odd transfer encoding is still split, nothing is lost).
_DEFECT_TEXT: dict[type, str | None] = {
    errors.CloseBoundaryNotFoundDefect: "close boundary not found",
    errors.StartBoundaryNotFoundDefect: "no boundary found",
    errors.NoBoundaryInMultipartDefect: "multipart without boundary",
    errors.MissingHeaderBodySeparatorDefect: "missing header/body separator",
    errors.InvalidMultipartContentTransferEncodingDefect: None,
}
_BLANK_LINE_ENDS = (b"\n\n", b"\n\r\n")


class _TextHeaderPolicy(type(compat32)):  # type: ignore[misc]
    """compat32, but a header value holding raw 8-bit bytes comes back as text (UTF-8, else
    Windows-1252, as ``connector.mail.decode`` reads them) instead of a ``Header`` object
    with replacement characters or a str with lone surrogates. Every value the analysis
    reads (classification, addresses, ids, types, names) is then safe to log and to send."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return unescape_8bit(value)


_POLICY = _TextHeaderPolicy()


def parse_part(raw: bytes, start: int = 0, end: int | None = None, *, path: str = "",
               depth: int = 0) -> PecPart:
    """``raw[start:end]`` as one message. Never raises on malformed input."""
    return PecPart(build_tree(raw, start, end, policy=_POLICY), path=path, depth=depth)


def parse_headers(raw: bytes) -> Message:
    """Only the header block of a message, for when the body is not needed."""
    return build_headers(raw, policy=_POLICY)


def header_text(headers: Message, name: str) -> str | None:
    """First value of header ``name`` (case-insensitive), unfolded and decoded for display."""
    value = headers.get(name)
    if value is None:
        return None
    return decode_header_value(value)


@dataclass(frozen=True)
class PecPart:
    """One MIME entity of a message under analysis: the tree's part, where it is, how deep."""

    mime: MimePart
    path: str = ""
    depth: int = 0

    @property
    def headers(self) -> Message:
        return self.mime

    @cached_property
    def content_type(self) -> str:
        return self.mime.get_content_type().lower()

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @cached_property
    def children(self) -> tuple[PecPart, ...]:
        if not self.mime.is_multipart():
            return ()
        prefix = f"{self.path}." if self.path else ""
        return tuple(PecPart(child, path=f"{prefix}{index}", depth=self.depth + 1)
                     for index, child in enumerate(self.mime.get_payload(), 1))

    def param(self, name: str) -> str | None:
        value = self.mime.get_param(name)
        if value is None:
            return None
        return collapse_rfc2231_value(value)

    @cached_property
    def filename(self) -> str | None:
        """Content-Disposition filename, else Content-Type name, RFC 2047/2231 decoded."""
        value = self.mime.get_filename() or self.param("name")
        return decode_header_value(value).strip() if value else None

    @property
    def transfer_encoding(self) -> str:
        value = header_text(self.mime, "Content-Transfer-Encoding") or "7bit"
        return value.strip().lower()

    @property
    def body_is_blank(self) -> bool:
        mime = self.mime
        return _NOT_BLANK.search(mime.raw, mime.body_start, mime.body_end) is None

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone; ``ValueError`` when base64 is
        damaged beyond reading. Decoded straight from the message bytes: the only copy made
        is the result."""
        return decode_transfer_or_raise(self.mime.body_view(), self.transfer_encoding)

    @property
    def defects(self) -> tuple[str, ...]:
        mime = self.mime
        found: list[str] = []
        if self._header_block_unterminated():
            found.append("no body")
        for defect in mime.defects:
            text = _DEFECT_TEXT.get(type(defect), type(defect).__name__)
            if text is not None:
                found.append(text)
        if (self.is_multipart and not mime.is_multipart() and not mime.defects
                and mime.get_boundary() is not None):
            found.append("nesting or part limit reached")  # the tree kept it as one body
        # The tree and the stdlib's header parser may both see one missing separator.
        return tuple(dict.fromkeys(found))

    def _header_block_unterminated(self) -> bool:
        """Headers running to the end of the part, no blank line after them: nothing of the
        body arrived (a truncated message)."""
        mime = self.mime
        if mime.body_start != mime.end or mime.end == mime.start:
            return False
        head = mime.raw[max(mime.start, mime.end - 3) : mime.end]
        if mime.end - mime.start <= 2 and head in (b"\n", b"\r\n"):
            return False  # only the blank line: an empty part, not a cut one
        return not head.endswith(_BLANK_LINE_ENDS)

    def walk(self) -> Iterator[PecPart]:
        """This part and its descendants, depth first. Embedded messages (message/rfc822) are
        not entered: what is inside them belongs to another message (see ``embedded``)."""
        yield self
        for child in self.children:
            yield from child.walk()

    def embedded(self) -> PecPart | None:
        """The message inside a message/rfc822 part (or an attached .eml), parsed; None past
        the depth limit or when its transfer encoding cannot be undone."""
        if self.depth + 1 > MAX_DEPTH:
            return None
        path = f"{self.path}>" if self.path else ">"
        mime = self.mime
        if self.transfer_encoding in _ENCODINGS:
            try:
                return parse_part(self.decoded_body(), path=path, depth=self.depth + 1)
            except ValueError:
                return None
        # Parsed where it lies: no copy of a forwarded envelope and its attachments.
        return parse_part(mime.raw, mime.body_start, mime.body_end, path=path,
                          depth=self.depth + 1)
