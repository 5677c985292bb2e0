"""Parse stage: raw message bytes to one :class:`ParsedMessage`.

Header blocks go through the stdlib parser with the ``compat32`` policy, which leaves header
values as raw strings; bodies are never read line by line: :mod:`connector.mail.mimetree` finds
the parts by their boundary lines and keeps them as offsets into ``raw``, so a part is copied
only when it is decoded (a 25 MB mail costs about its size again, not eight times it). All
decoding is done here, once per header and once per part: faster than ``policy.default``
(whose header objects parse every header eagerly) and, since we decode ourselves, just as
correct on the odd mail out there.

Nothing in a malformed message raises: the oddities go to ``ParsedMessage.defects``. Only
input that is not a mail at all (empty, or no header in it) raises :class:`ParseError`.
"""

from __future__ import annotations

import binascii
import logging
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import errors
from email.errors import MultipartInvariantViolationDefect
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from dateutil import parser as dateutil_parser
from dateutil.tz import tzoffset

from connector.errors import ParseError
from connector.mail.addresses import parse_address, parse_address_list, plain_addresses
from connector.mail.decode import (
    decode_bytes,
    decode_header_value,
    decode_transfer,
    has_8bit,
    header_charset,
    looks_qp,
    printable,
    unescape_8bit,
    unflow,
)
from connector.mail.filenames import safe_filename
from connector.mail.html import html_to_text, text_to_html
from connector.mail.mimetree import MimePart, build_tree
from connector.mail.model import Attachment, ParsedMessage
from connector.mail.subject import one_line

__all__ = ["parse_message"]

log = logging.getLogger(__name__)


class _RawHeaderPolicy(type(compat32)):  # type: ignore[misc]
    """compat32, but header values come back as the raw str the parser stored.

    Plain compat32 turns a header holding raw 8-bit bytes into a ``Header`` object whose text
    has replacement characters; we want the bytes (as surrogates) to decode them properly.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_POLICY = _RawHeaderPolicy()
_COPY_LIMIT = 64 * 1024
# Blank lines, and the UTF-8 byte order mark some exporters write before the headers.
_LEADING_NEWLINES = re.compile(rb"(?:\xef\xbb\xbf)?[\r\n]*")
_NOT_BLANK = re.compile(rb"\S")
_OBSOLETE_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]+:")
_OBSOLETE_COLON = re.compile(rb"(?m)^([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")

MAX_MULTIPART_DEPTH = 40
MAX_NESTED_MESSAGES_DEPTH = 8

_MSGID = re.compile(r"<([^<>]*)>")
_WORD_CHARSET = re.compile(r"=\?([^?*\s]+)(?:\*[^?]*)?\?[QqBb]\?")
_WHITESPACE = re.compile(r"\s+")
_CID_REF = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_BOUNDARY_LINE = re.compile(rb"^--([^\r\n\"]{1,70}?)[ \t]*\r?$", re.MULTILINE)
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]*/[a-z0-9][a-z0-9!#$&^_.+\-]*")
_MIMETYPES = mimetypes.MimeTypes(filenames=())  # built-in table only: same on every machine
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "application/octet-stream": ".bin",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pgp-signature": ".asc",
    "application/ms-tnef": ".dat",
}
_NAMED_ZONES = {
    name: tzoffset(name, int(hours * 3600))
    for name, hours in {
        "UT": 0,
        "UTC": 0,
        "GMT": 0,
        "Z": 0,
        "EST": -5,
        "EDT": -4,
        "CST": -6,
        "CDT": -5,
        "MST": -7,
        "MDT": -6,
        "PST": -8,
        "PDT": -7,
        "CET": 1,
        "CEST": 2,
        "MET": 1,
        "MEST": 2,
        "BST": 1,
        "EET": 2,
        "EEST": 3,
        "WET": 0,
        "WEST": 1,
        "JST": 9,
        "IST": 5.5,
    }.items()
}


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one message exactly as fetched. ``raw`` is kept byte for byte in the result.

    Raises :class:`ParseError` only when ``raw`` is not a mail at all (empty, or without a
    single header); everything odd in a mail is listed in ``defects`` instead.
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise TypeError(f"parse_message needs bytes, not {type(raw).__name__}")
    # Leading blank lines (left by some fetchers and mbox splitters) would end the header
    # block before it starts; skip them for parsing, keep them in ``raw``.
    # (Offsets, not stripped copies: the mail may be tens of megabytes.)
    start = _leading_newlines(raw, 0)
    if not _NOT_BLANK.search(raw, start):
        raise ParseError("empty message")
    msg = build_tree(raw, start, policy=_POLICY)
    skipped = 0
    if not msg.keys():
        # A stray first line (a broken mbox separator, a fetcher's status line) hides the
        # header block from the parser; look for headers a couple of lines further down.
        offset = start
        for lines_skipped in range(1, 3):
            newline = raw.find(b"\n", offset)
            if newline < 0:
                break
            offset = newline + 1
            if _HEADER_LINE.match(raw, offset):
                msg = build_tree(raw, offset, policy=_POLICY)
                skipped = lines_skipped
                break
    obsolete = False
    if not msg.keys() and _OBSOLETE_HEADER.match(raw, start):
        # RFC 5322 section 4.5.1 obsolete syntax, "Subject :": blanks before the colon, which
        # the stdlib's header reader stops at. Parse a copy of the header block without them.
        end = _header_block_end(raw, start)
        fixed = _OBSOLETE_COLON.sub(rb"\1:", raw[start:end]) + raw[end:]
        msg = build_tree(fixed, 0, policy=_POLICY)
        obsolete = bool(msg.keys())
    if not msg.keys():
        raise ParseError("no header found: not a mail message")
    if obsolete:
        msg.defects.append(errors.ObsoleteHeaderDefect("blank before a header's colon"))
    if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        msg.defects.append(MultipartInvariantViolationDefect())  # as the stdlib reports it
    return _build(msg, raw, nesting=0, skipped_lines=skipped)


def _header_block_end(raw: bytes, start: int) -> int:
    """Where the header block starting at ``start`` ends (its blank line, or the end)."""
    found = _BLANK_LINE.search(raw, start)
    return found.start() if found else len(raw)


def _leading_newlines(data: bytes, pos: int) -> int:
    found = _LEADING_NEWLINES.match(data, pos)
    return found.end() if found else pos


@dataclass
class _Content:
    """What a MIME subtree shows: its plain text and HTML (None when it has none)."""

    plain: str | None = None
    html: str | None = None


@dataclass
class _FilePart:
    filename: str | None
    content_type: str
    data: bytes
    content_id: str | None
    disposition: str | None


@dataclass
class _Walker:
    """Walks one message's MIME tree (not into nested messages: those get their own)."""

    nesting: int
    defects: list[str]
    hint: str | None  # charset for raw 8-bit header bytes, after UTF-8
    files: list[_FilePart] = field(default_factory=list)
    nested: list[ParsedMessage] = field(default_factory=list)

    def walk(self, part: MimePart, depth: int) -> _Content:
        for defect in part.defects:
            self.defects.append(type(defect).__name__)
        ctype = part.get_content_type()
        try:
            if ctype.startswith("message/"):
                self._message(part, ctype)
                return _Content()
            if part.is_multipart():
                return self._multipart(part, ctype, depth)
            if ctype.startswith("multipart/"):
                return self._broken_multipart(part, ctype, depth)
            return self._leaf(part, ctype)
        except Exception as exc:  # noqa: BLE001 - one bad part must not lose the message
            self.defects.append(f"undecodable {printable(ctype)} part: {type(exc).__name__}")
            log.debug("part %s failed to decode", ctype, exc_info=True)
            self._keep_opaque(part, ctype)
            return _Content()

    def _multipart(self, part: MimePart, ctype: str, depth: int) -> _Content:
        children: list[MimePart] = part.get_payload()
        if depth >= MAX_MULTIPART_DEPTH:
            self.defects.append("multipart nesting too deep: inner parts kept as attachments")
            for child in part.walk():
                if isinstance(child, MimePart) and not child.is_multipart():
                    self._keep_opaque(child, child.get_content_type())
            return _Content()
        contents = [self.walk(child, depth + 1) for child in children]
        if ctype == "multipart/alternative":
            return _choose_alternative(contents)
        return _merge(contents)

    def _broken_multipart(self, part: MimePart, ctype: str, depth: int) -> _Content:
        """A multipart whose boundary never appears: try the delimiter the body really uses."""
        body = part.body()
        found = _BOUNDARY_LINE.search(body)
        if found and depth < MAX_MULTIPART_DEPTH:
            boundary = found.group(1)
            if boundary.endswith(b"--") and body.count(b"--" + boundary[:-2]) > 1:
                boundary = boundary[:-2]
            header = b'Content-Type: %s; boundary="%s"\n\n' % (ctype.encode(), boundary)
            repaired = build_tree(header + body, policy=_POLICY)
            if repaired.is_multipart() and repaired.get_payload():
                self.defects.append("multipart boundary repaired")
                return self._multipart(repaired, ctype, depth + 1)
        self.defects.append(f"{printable(ctype)} without usable boundary: body kept as text")
        return _Content(plain=_normalize_newlines(decode_bytes(body, None)))

    def _leaf(self, part: MimePart, ctype: str) -> _Content:
        disposition = part.get_content_disposition()
        filename = _filename(part, self.defects, self.hint)
        # Text parts are body unless they are files: named, or marked as attachment.
        is_body = filename is None and disposition != "attachment"
        if is_body and ctype in ("text/plain", "text/html"):
            text = self._text(part, ctype)
            return _Content(plain=text) if ctype == "text/plain" else _Content(html=text)
        self.files.append(
            _FilePart(filename, ctype, self._payload(part), _content_id(part), disposition)
        )
        return _Content()

    def _text(self, part: MimePart, ctype: str) -> str:
        data = self._payload(part)
        if _transfer_encoding(part) not in ("base64", "quoted-printable") and looks_qp(data):
            # The encoding header is missing or says 7bit/8bit, yet every "=" of the text is a
            # quoted-printable escape or soft line break: the label lies, undo the encoding.
            data = binascii.a2b_qp(data)
            self.defects.append(f"quoted-printable body labelled otherwise in {ctype}")
        charset = part.get_content_charset()
        if charset is None and ctype == "text/html":
            sniffed = _META_CHARSET.search(data, 0, 4096)
            if sniffed:
                charset = sniffed.group(1).decode("ascii")
        text = _normalize_newlines(decode_bytes(data, charset, self.defects, where=ctype))
        if ctype == "text/plain" and str(part.get_param("format", "")).lower() == "flowed":
            delsp = str(part.get_param("delsp", "")).lower() == "yes"
            text = unflow(text, delsp=delsp)
        return text

    def _payload(self, part: MimePart) -> bytes:
        encoding = _transfer_encoding(part)
        # Large encoded parts are decoded straight out of the message's bytes: no copy of the
        # encoded text (25 MB for a 25 MB mail) exists beside the decoded one.
        encoded = part.body_view() if part.body_size > _COPY_LIMIT else part.body()
        data, problem = decode_transfer(encoded, encoding)
        if problem:
            self.defects.append(problem)
        return data

    def _message(self, part: MimePart, ctype: str) -> None:
        """message/*: rfc822 and global are parsed recursively and kept as .eml files.

        The .eml is the body exactly as it travelled (transfer encoding undone), so a
        forwarded message stays byte for byte what its sender wrote, signatures included."""
        disposition = part.get_content_disposition()
        filename = _filename(part, self.defects, self.hint)
        cid = _content_id(part)
        data = part.body()
        if ctype not in ("message/rfc822", "message/global"):
            self.files.append(_FilePart(filename, ctype, data, cid, disposition))
            return
        encoding = _transfer_encoding(part)
        if encoding in ("base64", "quoted-printable"):
            data, problem = decode_transfer(data, encoding)
            if problem:
                self.defects.append(problem)
            inner = build_tree(data, _leading_newlines(data, 0), policy=_POLICY)
        else:
            # Parsed in place, so its end is known to be a delimiter, not the end of the data.
            start = _leading_newlines(part.raw, part.body_start)
            inner = build_tree(part.raw, min(start, part.body_end), part.body_end,
                               policy=_POLICY)
        nested: ParsedMessage | None = None
        if not inner.keys():
            self.defects.append("nested message without headers")
        elif self.nesting + 1 >= MAX_NESTED_MESSAGES_DEPTH:
            self.defects.append("nested messages too deep: kept as attachment only")
        else:
            nested = _build(inner, data, nesting=self.nesting + 1)
            self.nested.append(nested)
        if filename is None and nested is not None and nested.subject:
            filename = _clean_filename(nested.subject[:80] + ".eml")
        self.files.append(_FilePart(filename, "message/rfc822", data, cid, disposition))

    def _keep_opaque(self, part: MimePart, ctype: str) -> None:
        """Last resort for a part that failed to decode: keep its raw body so nothing is lost."""
        try:
            data = part.body() if not part.is_multipart() else b""
        except Exception:  # noqa: BLE001
            data = b""
        if data:
            self.files.append(_FilePart(None, ctype, data, None, "attachment"))


def _build(msg: MimePart, raw: bytes, *, nesting: int, skipped_lines: int = 0) -> ParsedMessage:
    defects: list[str] = []
    if skipped_lines:
        defects.append(f"{skipped_lines} line(s) of garbage before the headers skipped")
    raw_values: dict[str, list[str]] = {}
    decoded_first: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    items = msg.items()
    eight_bit = [value for _, value in items if has_8bit(value)]
    hint = _raw_header_charset(msg, items, eight_bit) if eight_bit else None
    for name, value in items:
        lname = name.lower()
        raw_values.setdefault(lname, []).append(value)
        if eight_bit and has_8bit(value):
            defects.append(f"unencoded 8-bit header {name}")
        decoded = decode_header_value(value, defects, where=name, hint=hint)
        decoded_first.setdefault(lname, decoded)
        headers.append((name, decoded))

    walker = _Walker(nesting=nesting, defects=defects, hint=hint)
    content = walker.walk(msg, 0)
    html_body = content.html
    if content.plain is not None:
        text_body = content.plain
    elif html_body is not None:
        text_body = html_to_text(html_body)
    else:
        text_body = ""
    attachments, inline_images = _classify_files(walker.files, html_body)

    def first_raw(name: str) -> str | None:
        values = raw_values.get(name)
        return values[0] if values else None

    def all_raw(name: str) -> str:
        return ", ".join(raw_values.get(name, ()))

    from_ = parse_address(first_raw("from"), defects, hint=hint)
    if from_ is None:
        defects.append("missing From")
    elif not from_.identity:
        defects.append("invalid From address")
    elif not from_.valid:
        defects.append("From address is not deliverable from the internet")
    message_id = _message_id(first_raw("message-id"))
    if message_id is None:
        defects.append("missing Message-ID")
    date = _parse_date(first_raw("date"), defects)

    return ParsedMessage(
        raw=raw,
        headers=tuple(headers),
        subject=one_line(decoded_first.get("subject", "")),
        from_=from_,
        sender=parse_address(first_raw("sender"), defects, hint=hint),
        to=parse_address_list(all_raw("to"), defects, hint=hint),
        cc=parse_address_list(all_raw("cc"), defects, hint=hint),
        reply_to=parse_address_list(all_raw("reply-to"), defects, hint=hint),
        delivered_to=_delivered_to(raw_values),
        message_id=message_id,
        in_reply_to=_message_ids(all_raw("in-reply-to")),
        references=_message_ids(" ".join(raw_values.get("references", ()))),
        date=date,
        text_body=text_body,
        html_body=html_body,
        attachments=attachments,
        inline_images=inline_images,
        nested_messages=tuple(walker.nested),
        defects=tuple(dict.fromkeys(defects)),
    )


def _choose_alternative(contents: list[_Content]) -> _Content:
    """The plain text and HTML of a multipart/alternative (the last HTML is the richest)."""
    html = next((c.html for c in reversed(contents) if c.html is not None), None)
    plain = next((c.plain for c in contents if c.plain is not None and c.html is None), None)
    if plain is None:
        plain = next((c.plain for c in reversed(contents) if c.plain is not None), None)
    if plain is not None and not plain.strip() and html is not None:
        plain = None  # an empty text alternative says less than the HTML one
    return _Content(plain=plain, html=html)


def _merge(contents: list[_Content]) -> _Content:
    """Several parts shown one after the other (multipart/mixed, related, report, ...)."""
    shown = [c for c in contents if c.plain is not None or c.html is not None]
    if not shown:
        return _Content()
    if len(shown) == 1:
        return shown[0]
    plain: str | None = None
    if any(c.plain is not None for c in shown):
        texts = [c.plain if c.plain is not None else html_to_text(c.html or "") for c in shown]
        plain = "\n\n".join(t.strip("\n") for t in texts if t.strip())
    html: str | None = None
    if any(c.html is not None for c in shown):
        html = "\n".join(
            c.html if c.html is not None else text_to_html(c.plain or "") for c in shown
        )
    return _Content(plain=plain, html=html)


def _classify_files(
    files: list[_FilePart], html_body: str | None
) -> tuple[tuple[Attachment, ...], tuple[Attachment, ...]]:
    """Split files into attachments and inline images; give unnamed files a name."""
    referenced = {unquote(m).strip().lower() for m in _CID_REF.findall(html_body or "")}
    attachments: list[Attachment] = []
    inline_images: list[Attachment] = []
    unnamed = 0
    for f in files:
        filename = f.filename
        if not filename:
            unnamed += 1
            filename = f"attachment-{unnamed}{_extension(f.content_type)}"
        inline = (
            f.content_type.startswith("image/")
            and f.content_id is not None
            and (f.content_id.lower() in referenced or f.disposition == "inline")
        )
        attachment = Attachment(
            filename=filename,
            content_type=_clean_content_type(f.content_type),
            data=f.data,
            content_id=f.content_id,
            inline=inline,
        )
        (inline_images if inline else attachments).append(attachment)
    return tuple(attachments), tuple(inline_images)


def _clean_content_type(content_type: str) -> str:
    # get_content_type() passes through whatever type/subtype the header had, bytes and all.
    if _MIME_TYPE.fullmatch(content_type):
        return content_type
    return "application/octet-stream"


def _extension(content_type: str) -> str:
    known = _EXTENSIONS.get(content_type)
    if known:
        return known
    guessed = _MIMETYPES.guess_extension(content_type, strict=False)
    return guessed or ".bin"


def _filename(part: Message, defects: list[str], hint: str | None) -> str | None:
    """Decoded file name (RFC 2231 parameters, RFC 2047 words inside quotes, raw 8-bit)."""
    name = part.get_filename()
    if name is None:
        return None
    if not isinstance(name, str):
        name = str(name)
    decoded = decode_header_value(
        name, defects, where="filename", hint=part.get_content_charset() or hint
    )
    return _clean_filename(decoded) or None


def _raw_header_charset(msg: MimePart, items: list[tuple[str, str]],
                        eight_bit: list[str]) -> str | None:
    """The charset for raw 8-bit header bytes: what the message declares (its text parts,
    its encoded words) first, then a detector; None leaves UTF-8, Windows-1252, Latin-1."""
    declared = [part.get_content_charset() or "" for part in msg.walk()
                if part.get_content_maintype() == "text"]
    declared += [m.group(1) for _, value in items for m in _WORD_CHARSET.finditer(value)]
    values = [value.encode("utf-8", "surrogateescape") for value in eight_bit]
    return header_charset(values, declared) or _declared_charset(msg)


def _declared_charset(msg: Message) -> str | None:
    """First charset a text part declares: the best guess for raw 8-bit header bytes."""
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            charset = part.get_content_charset()
            if charset:
                return charset
    return None


def _clean_filename(name: str) -> str:
    # Paths, control and bidi characters, HTML-unsafe characters, over 255 bytes: filenames.py
    return safe_filename(name)


def _content_id(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    cleaned = _WHITESPACE.sub("", unescape_8bit(str(value))).strip("<>")
    return cleaned or None


def _transfer_encoding(part: Message) -> str:
    # "base64 ", "8BIT (raw)", "Base64; x": only the first word counts.
    words = str(part.get("content-transfer-encoding", "")).replace(";", " ").split()
    return words[0].lower() if words else ""


def _normalize_newlines(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _message_id(value: str | None) -> str | None:
    if value is None:
        return None
    found = _MSGID.search(value)
    candidate = found.group(1) if found else value.strip().strip("<>")
    cleaned = _WHITESPACE.sub("", decode_header_value(candidate))
    return cleaned or None


def _message_ids(value: str) -> tuple[str, ...]:
    """Ids in In-Reply-To/References, without brackets; text between ids is ignored."""
    if not value:
        return ()
    value = unescape_8bit(value)
    found = [_WHITESPACE.sub("", m) for m in _MSGID.findall(value)]
    if not found:
        # No brackets at all: bare ids separated by blanks, keep what looks like one.
        found = [token.strip(",;") for token in value.split() if "@" in token]
    return tuple(dict.fromkeys(mid for mid in found if mid))


def _delivered_to(raw_values: dict[str, list[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in ("delivered-to", "x-original-to"):
        for value in raw_values.get(name, ()):
            for address in plain_addresses(value):
                seen.setdefault(address, None)
    return tuple(seen)


def _zone(name: str | None, offset: int | None) -> tzoffset | None:
    if name and name.upper() in _NAMED_ZONES:
        return _NAMED_ZONES[name.upper()]
    if offset is not None:
        return tzoffset(name, offset)
    return None


def _parse_date(value: str | None, defects: list[str]) -> datetime | None:
    """Timezone-aware date of the Date header; odd formats go through dateutil."""
    if value is None:
        return None
    text = decode_header_value(value)
    if not text:
        defects.append("empty Date")
        return None
    try:
        date = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        date = None
    if date is not None and date.tzinfo is None and not text.rstrip().endswith("-0000"):
        # The stdlib drops zone names it does not know ("CET"); dateutil knows them via
        # _zone, and anything else still ends up as UTC below.
        try:
            zoned = dateutil_parser.parse(text, fuzzy=True, tzinfos=_zone)
        except Exception:  # noqa: BLE001 - see below
            zoned = None
        if zoned is not None and zoned.tzinfo is not None:
            date = zoned
    if date is None:
        try:
            date = dateutil_parser.parse(text, fuzzy=True, tzinfos=_zone)
        except Exception:  # noqa: BLE001 - dateutil fails in many ways (even decimal errors)
            defects.append("unparseable Date")
            return None
        defects.append("non-standard Date format")
    try:
        offset = date.utcoffset() if date.tzinfo is not None else None
    except ValueError:  # dateutil builds zones of 24 h and more ("+9999"); datetime refuses them
        offset = timedelta(days=1)
    if offset is None:
        date = date.replace(tzinfo=UTC)  # "-0000" or no zone: RFC 5322 says read it as UTC
    elif abs(offset) > timedelta(hours=18):
        defects.append("Date with impossible zone offset")
        date = date.replace(tzinfo=UTC)
    return date
