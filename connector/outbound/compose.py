"""Build the outgoing PEC message: an ``email.message.EmailMessage``, safely.

Every value that reaches a header is checked first. A CR, LF or other control character in
a subject, a display name or a file name, an address that is not a valid ASCII mailbox, or a
Message-ID that is not ``local@domain`` is refused with :class:`ComposeError` naming the
field: such a value comes from the helpdesk (an agent, a requester, an end user's name), and
a message that is not exactly what the bridge meant to send is not sent at all.

PEC rules applied here (notes/pec-format.md §9): ``From`` is the mailbox itself, one ``To``,
no ``Bcc``; the subject never carries the "POSTA CERTIFICATA:" prefix (the recipient's
provider adds it); the whole message stays within the size every provider must accept.
"""

from __future__ import annotations

import io
import re
import secrets
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from connector.mail.addresses import is_valid_address

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_MSGID = re.compile(r"^[!-;=?-~]+@[!-;=?-~]+$")  # printable ASCII without < > and spaces
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_PEC_PREFIX = re.compile(r"^(\s*(?:(?:re|r|rif|fw|fwd|i)\s*:\s*)*)"
                         r"(?:POSTA CERTIFICATA|ANOMALIA MESSAGGIO)\s*:\s*", re.IGNORECASE)


class ComposeError(ValueError):
    """The message cannot be built as asked. Permanent: sending again will not help."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything the message says. Message-IDs are bare (``local@domain``)."""

    from_address: str
    to_address: str
    subject: str
    text_body: str
    message_id: str
    html_body: str | None = None
    from_name: str = ""
    to_name: str = ""
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[OutgoingAttachment, ...] = ()
    receipt_type: str | None = None  # X-TipoRicevuta
    date: datetime | None = None


def check_line(field_name: str, value: str) -> str:
    """``value`` if it holds no line break or other control character."""
    if _CONTROL.search(value):
        raise ComposeError(field_name, f"contains a line break or control character: {value!r}")
    return value


def check_address(field_name: str, value: str) -> str:
    """A bare, valid, ASCII mailbox address (stripped), or ComposeError."""
    check_line(field_name, value)
    address = value.strip()
    if not address.isascii():
        raise ComposeError(field_name, f"{address!r} is not an ASCII address (PEC mailboxes are)")
    if not is_valid_address(address):
        raise ComposeError(field_name, f"{address!r} is not a valid e-mail address")
    return address


def check_message_id(field_name: str, value: str) -> str:
    if not _MSGID.match(value):
        raise ComposeError(field_name, f"{value!r} is not a Message-ID (local@domain)")
    return value


def valid_message_ids(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """(usable, dropped): ids from our own records that can go into References."""
    good, bad = [], []
    for value in values:
        (good if _MSGID.match(value or "") else bad).append(value)
    return good, bad


def new_message_id(from_address: str, job_id: int) -> str:
    """A fresh, globally unique bare Message-ID in the sender's domain."""
    domain = from_address.rsplit("@", 1)[-1]
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"pmb.{stamp}.{job_id}.{secrets.token_hex(8)}@{domain}"


def clean_subject(subject: str) -> str:
    """Without "POSTA CERTIFICATA:" / "ANOMALIA MESSAGGIO:" prefixes (even repeated, even
    after a "Re:"); the recipient's provider adds its own."""
    previous = None
    while previous != subject:
        previous = subject
        subject = _PEC_PREFIX.sub(r"\1", subject)
    return subject.strip()


def ensure_ticket_reference(subject: str, ticket_id: str, pattern: str,
                            hook: str = "#") -> str:
    """``subject`` with the ticket reference the inbound side recognises (``[#id]``; OTOBO's
    ``[Ticket#2026...]`` with its ``Ticket::Hook``)."""
    for match in re.finditer(pattern, subject):
        if match.group(1) == str(ticket_id):
            return subject
    return f"{subject} [{hook}{ticket_id}]".strip()


def blocked_attachment(attachment: OutgoingAttachment, blocked: Iterable[str]) -> str | None:
    """The offending name when the file (or a member of a zip file) has a blocked extension."""
    extensions = {e.lower() for e in blocked}

    def is_blocked(name: str) -> bool:
        return "." in name and name.rsplit(".", 1)[-1].lower() in extensions

    if is_blocked(attachment.filename):
        return attachment.filename
    if attachment.filename.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(attachment.data)) as archive:
                for member in archive.namelist():
                    if is_blocked(member.rstrip("/")):
                        return f"{attachment.filename}:{member}"
        except (zipfile.BadZipFile, ValueError, OSError):
            return None
    return None


def build_message(out: OutgoingMessage, *, max_bytes: int | None = None,
                  blocked_extensions: Iterable[str] = ()) -> EmailMessage:
    """The message, ready for SMTP (CRLF line ends), or ComposeError saying what is wrong."""
    sender = check_address("from", out.from_address)
    recipient = check_address("to", out.to_address)
    from_name = check_line("from display name", out.from_name).strip()
    to_name = check_line("to display name", out.to_name).strip()
    subject = check_line("subject", clean_subject(out.subject))
    if not subject:
        raise ComposeError("subject", "is empty")
    message_id = check_message_id("message_id", out.message_id)

    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=from_name, addr_spec=sender)
    msg["To"] = Address(display_name=to_name, addr_spec=recipient)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(out.date or datetime.now(UTC).astimezone())
    msg["Message-ID"] = f"<{message_id}>"
    if out.in_reply_to:
        msg["In-Reply-To"] = f"<{check_message_id('in_reply_to', out.in_reply_to)}>"
    references = [check_message_id("references", r) for r in out.references]
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if out.receipt_type:
        msg["X-TipoRicevuta"] = check_line("receipt_type", out.receipt_type)
    msg["Auto-Submitted"] = "no"  # an agent's reply, not an automatic one
    msg.set_content(out.text_body or "", subtype="plain", charset="utf-8")
    if out.html_body:
        html_doc = out.html_body
        if "<html" not in html_doc[:200].lower():
            html_doc = ('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                        f"{html_doc}</body></html>")
        msg.add_alternative(html_doc, subtype="html", charset="utf-8")
    blocked = tuple(blocked_extensions)
    for index, attachment in enumerate(out.attachments):
        where = f"attachment {index + 1}"
        filename = check_line(f"{where} file name", attachment.filename).strip()
        filename = re.split(r"[\\/]", filename)[-1] or f"attachment-{index + 1}"
        offending = blocked_attachment(
            OutgoingAttachment(filename, attachment.content_type, attachment.data), blocked)
        if offending:
            raise ComposeError(where, f"{offending} has an extension PEC providers refuse "
                               "(executables are blocked, even inside archives)")
        content_type = attachment.content_type.split(";")[0].strip().lower()
        if not _MIME_TYPE.match(content_type):
            content_type = "application/octet-stream"
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                           filename=filename)
    if max_bytes is not None:
        size = len(msg.as_bytes())
        if size > max_bytes:
            raise ComposeError("message", f"is {size} bytes, over the limit of {max_bytes} "
                               "(max_message_bytes); send fewer or smaller attachments")
    return msg
