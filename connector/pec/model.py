"""What the PEC analysis says about one message."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from connector.pec.classify import PecKind, ReceiptKind
from connector.pec.daticert import Daticert
from connector.pec.receipts import Receipt
from connector.pec.signature import SignatureVerdict


class ServiceRole(StrEnum):
    DATICERT = "daticert"  # daticert.xml
    SIGNATURE = "signature"  # smime.p7s (or the opaque .p7m)


@dataclass(frozen=True)
class ServicePart:
    """A provider part that is evidence, not content: keep it, do not show it to agents as an
    ordinary attachment. ``path`` is the MIME part path ("1.2"; ">" enters an embedded
    message, "~" the content of an opaque signature)."""

    role: ServiceRole
    filename: str
    content_type: str
    path: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class PecInfo:
    """Everything the pipeline needs to know about a message as PEC.

    Ids (``message_id``, ``msgid``, ``thread_keys``, ``referenced_ids``...) are all bare
    (``local@domain``, no angle brackets), the form connector.mail.parse uses, so the
    identificativo of a receipt equals the Message-ID of the envelope it certifies.
    ``original_*`` describe the certified message: from postacert.eml, else daticert, else the
    envelope headers (a note says so). For ORDINARY mail they are the message's own.
    """

    kind: PecKind
    signature: SignatureVerdict
    receipt_kind: ReceiptKind | None = None
    depth: int = 0  # 0: the message itself; n: found inside n levels of embedded messages
    path: str = ""  # MIME path of the embedded message where it was found ("" at the top)
    message_id: str | None = None  # this message's own Message-ID
    subject: str = ""  # this message's own Subject, decoded
    envelope_from: str | None = None  # this message's own From address (the provider's)
    daticert: Daticert | None = None
    original_raw: bytes | None = field(default=None, repr=False)  # postacert.eml, byte-exact
    original_sender: str | None = None  # address, never posta-certificata@...
    original_sender_name: str | None = None
    original_subject: str | None = None
    original_recipients: tuple[str, ...] = ()
    original_date: datetime | None = None  # the original's Date header (may be forged)
    certified_at: datetime | None = None  # daticert time, else the envelope Date (noted)
    identificativo: str | None = None  # I, bare
    msgid: str | None = None  # M: daticert msgid, else X-Riferimento-Message-ID
    riferimento_message_id: str | None = None  # the X-Riferimento-Message-ID header
    reply_address: str | None = None  # risposte, else mittente, else postacert Reply-To/From
    requested_receipt: str | None = None  # completa / breve / sintetica
    provider: str | None = None  # gestore-emittente
    thread_keys: tuple[str, ...] = ()
    referenced_ids: tuple[str, ...] = ()
    service_parts: tuple[ServicePart, ...] = ()
    receipt: Receipt | None = None
    anomaly_reason: str | None = None
    security_check_failed: bool = False  # X-VerificaSicurezza: errore
    notes: tuple[str, ...] = ()

    @property
    def is_pec(self) -> bool:
        return self.kind is not PecKind.ORDINARY

    @property
    def is_envelope(self) -> bool:
        return self.kind in (PecKind.TRANSPORT, PecKind.ANOMALY)

    @property
    def hidden_filenames(self) -> frozenset[str]:
        """Lower-cased file names of the service parts, for attachment filters."""
        return frozenset(part.filename.lower() for part in self.service_parts)
