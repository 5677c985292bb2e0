"""The normalized message model every later stage reads.

Frozen dataclasses: a parsed message never changes after parsing. Filters keep their own
control headers beside it instead of editing it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from connector.cached import cached_property
from connector.mail.html import sanitize_html


@dataclass(frozen=True)
class Address:
    """One mailbox: display name and address.

    ``valid`` is email-validator's verdict (syntax a mail server would deliver to);
    ``identity`` is looser: an RFC 5322 addr-spec that names someone even where it cannot be
    delivered to from the internet (``root@localhost``, ``"#FAX#123"@host``, ``a@[10.0.0.1]``,
    ``x@printer.local``). A requester needs an identity, not deliverability.
    """

    name: str
    email: str
    valid: bool = True
    identity: bool = None  # type: ignore[assignment]  # None: as valid (set in __post_init__)

    def __post_init__(self) -> None:
        if self.identity is None:
            object.__setattr__(self, "identity", self.valid)

    @property
    def normalized(self) -> str:
        """Lower-cased address, for comparisons (the local part is case-insensitive in practice)."""
        return self.email.strip().lower()

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Attachment:
    """A file part of the message. Inline images carry their Content-ID (without brackets)."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ParsedMessage:
    """One message, decoded. ``headers`` keeps every header in order, values decoded to str."""

    raw: bytes = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False, default=())
    subject: str = ""
    from_: Address | None = None
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    delivered_to: tuple[str, ...] = ()
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    date: datetime | None = None
    text_body: str = ""
    html_body: str | None = field(default=None, repr=False)
    attachments: tuple[Attachment, ...] = field(default=(), repr=False)
    inline_images: tuple[Attachment, ...] = field(default=(), repr=False)
    nested_messages: tuple[ParsedMessage, ...] = field(default=(), repr=False)
    defects: tuple[str, ...] = ()

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the raw bytes exactly as fetched."""
        return hashlib.sha256(self.raw).hexdigest()

    @cached_property
    def safe_html(self) -> str | None:
        """``html_body`` made safe to show in a helpdesk (scripts, handlers, remote content
        removed); None when the mail has no HTML. Cached: parse-ahead workers compute it once
        and the value travels with the message."""
        return sanitize_html(self.html_body) if self.html_body else None

    @cached_property
    def content_hash(self) -> str:
        """Hash of what the message says, not of how it travelled.

        Two deliveries of one mail to two mailboxes differ in Received/Delivered-To headers but
        share subject, sender, bodies and attachments; this hash is equal for both.
        """
        h = hashlib.sha256()
        for part in (
            self.subject,
            self.from_.normalized if self.from_ else "",
            self.text_body,
            self.html_body or "",
        ):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        for att in self.attachments + self.inline_images:
            h.update(att.sha256.encode())
        return h.hexdigest()

    @cached_property
    def dedupe_key(self) -> str:
        """Identity of the mail across mailboxes and re-deliveries: Message-ID plus content."""
        basis = f"{self.message_id or ''}\x00{self.content_hash}"
        return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()

    @cached_property
    def _headers_by_name(self) -> dict[str, list[str]]:
        # Filters and classifiers ask for a dozen headers per message: one pass, not one each.
        index: dict[str, list[str]] = {}
        for key, value in self.headers:
            index.setdefault(key.lower(), []).append(value)
        return index

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        values = self._headers_by_name.get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return list(self._headers_by_name.get(name.lower(), ()))

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message answers, nearest first (In-Reply-To, then References)."""
        seen: dict[str, None] = {}
        for mid in self.in_reply_to + tuple(reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)

    @property
    def all_recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc
