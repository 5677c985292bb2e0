"""A deterministic mail corpus for the crash test: new requests, replies, attachments, duplicates.

``make_corpus(seed)`` always builds the same bytes for the same arguments (no clock, no global
random state, fixed MIME boundaries), so a failing seed reproduces exactly. What it holds:

- mostly new requests, each from one of a pool of customers (a handful of mails per sender, far
  below the filter stage's per-sender daily cap);
- replies that thread onto an earlier message of their conversation through In-Reply-To (and,
  for some, References), always delivered after the message they answer; most come from the
  ticket's requester (a public follow-up), a few from a colleague who is not on the ticket (an
  internal note);
- some messages with small attachments (text, PDF-like and PNG-like bytes);
- a few exact duplicates: the very same bytes delivered a second time, later in the mailbox.

Every message carries a unique token (``CorpusMessage.key``) in its body, so the test can find
it on the helpdesk without relying on the bridge's own keys.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime

SUPPORT_ADDRESS = "support@example.com"
DOMAIN = "crash.example.com"
#: Replies per conversation at most: far below Zendesk's 30 updates per ticket in 10 minutes.
MAX_REPLIES_PER_THREAD = 4

_TOPICS = (
    "Invoice {n} shows the wrong VAT rate",
    "Cannot log in to the portal since yesterday",
    "Delivery of order {n} is late",
    "Richiesta di assistenza per l'ordine {n}",
    "Password reset link expired",
    "Anfrage zur Rechnung {n}",
    "Printer in office {n} is offline",
    "Contract renewal for account {n}",
    "Données manquantes dans le rapport {n}",
    "Refund for order {n}",
)
_LINES = (
    "Hello, we have a problem that started this morning.",
    "Buongiorno, vi scrivo perché la fattura non è corretta.",
    "Could you please have a look as soon as possible?",
    "The error message says: connection refused (code 111).",
    "Grazie in anticipo per l'aiuto, così possiamo chiudere il mese.",
    "We tried restarting twice, with no change.",
    "Attached you find what we have so far.",
    "Vielen Dank und freundliche Grüße.",
    "This blocks three people in our team.",
    "Merci de votre retour rapide.",
)
_REPLY_LINES = (
    "Thank you, here is the additional information you asked for.",
    "It happened again ten minutes ago.",
    "Any news on this? We are still waiting.",
    "Grazie, ora funziona ma solo in parte.",
    "Adding my colleague's notes below.",
)
_ATTACHMENT_KINDS = (
    ("notes.txt", "text/plain"),
    ("invoice.pdf", "application/pdf"),
    ("screenshot.png", "image/png"),
)


@dataclass(frozen=True)
class CorpusAttachment:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class CorpusMessage:
    """One distinct mail. ``root`` is the key of its conversation's first mail (its ticket)."""

    key: str
    index: int
    message_id: str
    sender: str
    subject: str
    raw: bytes
    root: str
    parent: str | None = None
    public: bool = True  # False: a reply from someone not on the ticket (an internal note)
    attachments: tuple[CorpusAttachment, ...] = ()

    @property
    def is_reply(self) -> bool:
        return self.parent is not None


@dataclass(frozen=True)
class Corpus:
    seed: int
    messages: tuple[CorpusMessage, ...]  # distinct mails, in generation order
    deliveries: tuple[CorpusMessage, ...]  # mailbox order; a duplicate appears twice

    @property
    def new_requests(self) -> tuple[CorpusMessage, ...]:
        return tuple(m for m in self.messages if not m.is_reply)

    @property
    def replies(self) -> tuple[CorpusMessage, ...]:
        return tuple(m for m in self.messages if m.is_reply)

    @property
    def duplicated(self) -> tuple[CorpusMessage, ...]:
        """Mails delivered twice."""
        seen: set[str] = set()
        twice: list[CorpusMessage] = []
        for message in self.deliveries:
            if message.key in seen:
                twice.append(message)
            seen.add(message.key)
        return tuple(twice)

    def by_key(self) -> dict[str, CorpusMessage]:
        return {m.key: m for m in self.messages}

    def raws(self) -> list[bytes]:
        return [m.raw for m in self.deliveries]

    def describe(self) -> str:
        with_files = sum(1 for m in self.messages if m.attachments)
        notes = sum(1 for m in self.replies if not m.public)
        return (f"seed={self.seed}: {len(self.deliveries)} deliveries, "
                f"{len(self.new_requests)} new requests, {len(self.replies)} replies "
                f"({notes} internal notes), {with_files} with attachments, "
                f"{len(self.duplicated)} delivered twice")


def _encoded_subject(subject: str) -> str:
    """ASCII subjects as they are, others as an RFC 2047 encoded word (as mail clients do)."""
    if subject.isascii():
        return subject
    return Header(subject, "utf-8").encode()


def _attachment(rng: random.Random, key: str) -> CorpusAttachment:
    name, content_type = rng.choice(_ATTACHMENT_KINDS)
    size = rng.randint(120, 2400)
    if content_type == "text/plain":
        data = (f"notes for {key}\n" * (size // 20 + 1)).encode()[:size]
    elif content_type == "image/png":
        data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(size)
    else:
        data = b"%PDF-1.4\n" + rng.randbytes(size)
    return CorpusAttachment(f"{key}-{name}", content_type, data)


def _body(rng: random.Random, key: str, lines: tuple[str, ...]) -> str:
    picked = rng.sample(lines, k=rng.randint(1, 3))
    return "\r\n".join([*picked, "", f"Reference token: {key}", "", "-- ", "Sent by crash corpus"])


def _render(*, key: str, sender_name: str, sender: str, subject: str, date: datetime,
            message_id: str, in_reply_to: str | None, references: tuple[str, ...],
            cc: str | None, body: str, attachments: tuple[CorpusAttachment, ...]) -> bytes:
    headers = [
        f"From: {sender_name} <{sender}>",
        f"To: Support <{SUPPORT_ADDRESS}>",
    ]
    if cc:
        headers.append(f"Cc: {cc}")
    headers += [
        f"Subject: {_encoded_subject(subject)}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: {message_id}",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {' '.join(references)}")
    headers.append("MIME-Version: 1.0")
    text_headers = ["Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
    if not attachments:
        return "\r\n".join([*headers, *text_headers, "", body, ""]).encode("utf-8")
    boundary = f"=_crash_{key}"
    parts = [*headers, f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
             "This is a multi-part message in MIME format.", f"--{boundary}", *text_headers, "",
             body, ""]
    for att in attachments:
        encoded = base64.encodebytes(att.data).decode("ascii").replace("\n", "\r\n").rstrip()
        parts += [f"--{boundary}", f'Content-Type: {att.content_type}; name="{att.filename}"',
                  "Content-Transfer-Encoding: base64",
                  f'Content-Disposition: attachment; filename="{att.filename}"', "", encoded, ""]
    parts += [f"--{boundary}--", ""]
    return "\r\n".join(parts).encode("utf-8")


def make_corpus(seed: int, count: int = 240, *, reply_share: float = 0.3,
                attachment_share: float = 0.15, note_share: float = 0.15,
                duplicates: int = 8) -> Corpus:
    """``count`` distinct mails (plus ``duplicates`` second deliveries), the same for one seed."""
    rng = random.Random(seed)
    customers = [(f"Customer {n}", f"customer{n}.{seed}@example.org")
                 for n in range(max(8, count // 5))]
    colleague = ("Colleague Outside", f"colleague.{seed}@example.net")
    start = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
    messages: list[CorpusMessage] = []
    threads: list[list[CorpusMessage]] = []
    thread_requester: dict[str, tuple[str, str]] = {}
    for index in range(count):
        key = f"s{seed}-m{index:04d}"
        message_id = f"<{key}@{DOMAIN}>"
        date = start + timedelta(minutes=7 * index)
        attachments = (tuple(_attachment(rng, f"{key}-a{n}") for n in range(rng.randint(1, 2)))
                       if rng.random() < attachment_share else ())
        open_threads = [t for t in threads if len(t) <= MAX_REPLIES_PER_THREAD]
        if open_threads and rng.random() < reply_share:
            thread = rng.choice(open_threads[-40:])  # people answer fairly recent mail
            parent = thread[-1] if rng.random() < 0.7 else rng.choice(thread)
            root = thread[0]
            public = rng.random() >= note_share
            name, sender = thread_requester[root.key] if public else colleague
            references = tuple(m.message_id for m in thread[: thread.index(parent) + 1])
            # Some clients send In-Reply-To only: the parent alone must thread the reply.
            references = references if rng.random() < 0.5 else ()
            subject = f"Re: {root.subject}"
            raw = _render(key=key, sender_name=name, sender=sender, subject=subject, date=date,
                          message_id=message_id, in_reply_to=parent.message_id,
                          references=references, cc=None,
                          body=_body(rng, key, _REPLY_LINES), attachments=attachments)
            message = CorpusMessage(key, index, message_id, sender, subject, raw, root.key,
                                    parent.key, public, attachments)
            thread.append(message)
        else:
            name, sender = customers[len(threads) % len(customers)]
            subject = rng.choice(_TOPICS).format(n=rng.randint(1000, 99999))
            cc = f"Team <team.{seed}@example.org>" if rng.random() < 0.1 else None
            raw = _render(key=key, sender_name=name, sender=sender, subject=subject, date=date,
                          message_id=message_id, in_reply_to=None, references=(), cc=cc,
                          body=_body(rng, key, _LINES), attachments=attachments)
            message = CorpusMessage(key, index, message_id, sender, subject, raw, key,
                                    attachments=attachments)
            threads.append([message])
            thread_requester[key] = (name, sender)
        messages.append(message)

    deliveries: list[CorpusMessage] = list(messages)
    for original in rng.sample(messages, k=min(duplicates, len(messages))):
        first = deliveries.index(original)
        deliveries.insert(rng.randint(first + 1, len(deliveries)), original)
    return Corpus(seed, tuple(messages), tuple(deliveries))
