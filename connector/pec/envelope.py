"""Unwrap PEC messages: classify, read daticert, check the signature, extract the original.

Works from raw bytes only, the same way whatever account the message came from (a PEC mailbox
or an ordinary one that received a PEC). Nothing here raises on malformed input: problems become
``notes`` (and a log line) so the pipeline can still turn the message into a ticket.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from connector.mail.addresses import getaddresses_safe as getaddresses
from connector.mail.decode import decode_header_value
from connector.pec.classify import (
    PecKind,
    ReceiptKind,
    classify_headers,
    kind_from_tipo,
    strip_pec_prefix,
    strip_service_prefix,
)
from connector.pec.daticert import Daticert, DaticertError, parse_daticert
from connector.pec.ids import normalize_msgid, unique
from connector.pec.keys import answered_ids, thread_ids
from connector.pec.model import PecInfo, ServicePart, ServiceRole
from connector.pec.parts import PecPart, header_text, parse_headers, parse_part
from connector.pec.receipts import build_receipt
from connector.pec.signature import (
    OPAQUE_TYPES,
    SIGNATURE_TYPES,
    SignatureVerdict,
    judge_trust,
    opaque_content,
    verify_entity,
)
from connector.pec.trust import TrustStore, shipped_trust_store

log = logging.getLogger(__name__)

DEFAULT_MAX_DEPTH = 3
PROVIDER_LOCAL_PART = "posta-certificata"
_ANOMALY_REASON = re.compile(r"seguente errore:\s*(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class _Parts:
    daticert: PecPart | None
    signature: PecPart | None
    postacert: PecPart | None


def analyze_pec(raw: bytes, *, context: str = "", trust: TrustStore | None = None) -> PecInfo:
    """Analyse ``raw`` as one message (no search inside attached messages; see find_pec).
    ``context`` (e.g. "account=x uid=7") is added to log lines. The signature is judged
    against ``trust`` (the shipped AgID PEC CAs when None)."""
    return _analyze(parse_part(raw), depth=0, context=context,
                    trust=trust or shipped_trust_store())


def find_pec(raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, context: str = "",
             trust: TrustStore | None = None) -> PecInfo:
    """Like analyze_pec, but when the message itself is ordinary, look for a PEC inside it: an
    envelope or receipt forwarded as an attachment (message/rfc822 or a .eml file), up to
    ``max_depth`` levels down. What sits inside a PEC envelope's postacert is never searched:
    it is content (a forwarded or forged PEC), not something the provider delivered."""
    store = trust or shipped_trust_store()
    root = parse_part(raw)
    top = _analyze(root, depth=0, context=context, trust=store)
    if top.is_pec or max_depth <= 0:
        return top
    nested = _search_nested(root, depth=1, max_depth=max_depth, context=context, trust=store)
    return nested or top


def with_trust(info: PecInfo, trust: TrustStore) -> PecInfo:
    """``info`` with its signature judged against ``trust`` (a parse worker judged it with
    the shipped anchors; an account may configure others)."""
    fallback = info.daticert.certified_at if info.daticert else None
    signature = judge_trust(info.signature, trust, fallback_time=fallback)
    return info if signature is info.signature else replace(info, signature=signature)


def _search_nested(part: PecPart, *, depth: int, max_depth: int, context: str,
                   trust: TrustStore) -> PecInfo | None:
    for node in part.walk():
        if not _is_embedded_message(node):
            continue
        inner = node.embedded()
        if inner is None:
            continue
        info = _analyze(inner, depth=depth, context=context, trust=trust)
        if info.is_pec:
            note = (f"PEC found inside an attached message (part {node.path}, depth {depth}): "
                    "forwarded or list-wrapped, not delivered here by the provider")
            return replace(info, path=node.path, notes=info.notes + (note,))
        if depth < max_depth:
            found = _search_nested(inner, depth=depth + 1, max_depth=max_depth, context=context,
                                   trust=trust)
            if found is not None:
                return found
    return None


def _is_embedded_message(part: PecPart) -> bool:
    if part.content_type == "message/rfc822":
        return True
    return bool(part.filename and part.filename.lower().endswith(".eml")
                and not part.is_multipart)


def _analyze(root: PecPart, *, depth: int, context: str, trust: TrustStore) -> PecInfo:
    notes: list[str] = []
    headers = root.headers
    header_class = classify_headers((k, str(v)) for k, v in headers.items())
    notes.extend(header_class.notes)
    kind, receipt_kind = header_class.kind, header_class.receipt_kind

    signed = _find_signed(root)
    search_roots = [root]
    if signed is not None and signed.content_type in OPAQUE_TYPES:
        content = opaque_content(signed)
        if content is not None:
            search_roots.append(parse_part(content, path=f"{signed.path}~", depth=signed.depth))
    parts = _find_parts(search_roots)

    message_id = normalize_msgid(header_text(headers, "Message-ID"))
    ident = f"message {message_id or '(no Message-ID)'}" + (f", {context}" if context else "")
    daticert, daticert_note = _read_daticert(parts.daticert)

    from_name, from_addr = _first_address(headers, "From")
    if kind is PecKind.ORDINARY and daticert is not None:
        by_provider = bool(from_addr) and _is_provider_address(from_addr)
        tipo_kind, tipo_receipt = kind_from_tipo(daticert.tipo)
        if tipo_kind is not PecKind.ORDINARY and (signed is not None or by_provider):
            kind, receipt_kind = tipo_kind, tipo_receipt
            notes.append(f"no X-Trasporto/X-Ricevuta header: classified from daticert.xml "
                         f"tipo {daticert.tipo!r}")
        else:
            notes.append("a daticert.xml is attached but nothing else marks a PEC: ordinary mail")

    signature = judge_trust(verify_entity(signed, context=ident), trust,
                            fallback_time=daticert.certified_at if daticert else None)
    subject = header_text(headers, "Subject") or ""
    if kind is PecKind.ORDINARY:
        return _ordinary(headers, message_id, subject, signature, depth, notes)

    if daticert_note and kind is PecKind.ANOMALY and parts.daticert is None:
        notes.append("no daticert.xml, as usual for an anomaly envelope: data not certified")
    elif daticert_note:
        notes.append(f"{daticert_note}: fields taken from the envelope headers")
        log.warning("pec: %s; using the envelope headers instead (%s)", daticert_note, ident)
    if daticert is not None:
        notes.extend(daticert.notes)
        notes.extend(_tipo_mismatch(kind, receipt_kind, daticert))

    notes.extend(_structure_notes(search_roots))
    original_raw = None
    if parts.postacert is not None:
        try:
            original_raw = parts.postacert.decoded_body()
        except ValueError as exc:
            notes.append(f"postacert.eml cannot be decoded ({exc})")
    inner = parse_headers(original_raw) if original_raw is not None else None
    if inner is None and kind in (PecKind.TRANSPORT, PecKind.ANOMALY):
        notes.append("postacert.eml is missing: the original message is not available")

    riferimento = normalize_msgid(header_text(headers, "X-Riferimento-Message-ID"))
    ids = thread_ids(kind, message_id=message_id, riferimento=riferimento, daticert=daticert,
                     inner=inner)
    notes.extend(ids.notes)
    for note in ids.notes:
        log.info("pec: %s (%s)", note, ident)

    certified_at = daticert.certified_at if daticert else None
    if certified_at is None:
        certified_at = _date(headers)
        if certified_at is not None:
            notes.append("certified time taken from the envelope Date header (not certified)")

    sender_name, sender = _original_sender(kind, inner, daticert, headers, from_name, notes)
    original_subject = _original_subject(kind, inner, daticert, subject, notes)
    original_recipients = _recipients(inner) if inner is not None else (
        daticert.recipient_addresses if daticert else ()
    )

    receipt = None
    if kind is PecKind.RECEIPT:
        receipt_kind = receipt_kind or ReceiptKind.OTHER
        notes.extend(_receipt_notes(receipt_kind, daticert))
        receipt = build_receipt(receipt_kind, daticert, referenced_ids=ids.thread_keys,
                                certified_at=certified_at, fallback_subject=original_subject)

    security_failed = (header_text(headers, "X-VerificaSicurezza") or "").lower() == "errore"
    if security_failed:
        notes.append("X-VerificaSicurezza: errore: the receiving provider could not verify the "
                     "sender provider's signature")
    return PecInfo(
        kind=kind,
        signature=signature,
        receipt_kind=receipt_kind,
        depth=depth,
        message_id=message_id,
        subject=subject,
        envelope_from=from_addr,
        daticert=daticert,
        original_raw=original_raw,
        original_sender=sender,
        original_sender_name=sender_name,
        original_subject=original_subject,
        original_recipients=original_recipients,
        original_date=_date(inner) if inner is not None else None,
        certified_at=certified_at,
        identificativo=ids.identificativo,
        msgid=ids.msgid,
        riferimento_message_id=riferimento,
        reply_address=_reply_address(daticert, inner),
        requested_receipt=_requested_receipt(headers, daticert),
        provider=daticert.gestore_emittente if daticert else None,
        thread_keys=ids.thread_keys,
        referenced_ids=ids.referenced_ids,
        service_parts=_service_parts(parts, signed),
        receipt=receipt,
        anomaly_reason=_anomaly_reason(search_roots) if kind is PecKind.ANOMALY else None,
        security_check_failed=security_failed,
        notes=tuple(notes),
    )


def _ordinary(headers: Message, message_id: str | None, subject: str,
              signature: SignatureVerdict, depth: int, notes: list[str]) -> PecInfo:
    """Ordinary mail. A postacert.eml saved on its own also lands here: it carries
    X-Riferimento-Message-ID (the sender's own id, M) beside its PEC Message-ID (I)."""
    riferimento = normalize_msgid(header_text(headers, "X-Riferimento-Message-ID"))
    if riferimento:
        notes.append("carries X-Riferimento-Message-ID: an original that went through a PEC "
                     "provider (a postacert.eml)")
    name, address = _first_address(headers, "From")
    return PecInfo(
        kind=PecKind.ORDINARY,
        signature=signature,
        depth=depth,
        message_id=message_id,
        subject=subject,
        envelope_from=address,
        original_sender=address,
        original_sender_name=name,
        original_subject=subject,
        original_recipients=_recipients(headers),
        original_date=_date(headers),
        msgid=riferimento,
        riferimento_message_id=riferimento,
        requested_receipt=_requested_receipt(headers, None),
        thread_keys=unique((message_id, riferimento)),
        referenced_ids=answered_ids(headers),
        notes=tuple(notes),
    )


def _structure_notes(roots: list[PecPart]) -> list[str]:
    return [
        f"MIME structure: {defect} (part {part.path or 'top'})"
        for root in roots
        for part in root.walk()
        for defect in part.defects
    ]


def _find_signed(root: PecPart) -> PecPart | None:
    """The first S/MIME signed entity outside embedded messages: the message itself, or the
    signed part a mailing list wrapped in its own multipart/mixed."""
    for part in root.walk():
        if part.content_type == "multipart/signed":
            return part
        if part.content_type in OPAQUE_TYPES:
            smime_type = (part.param("smime-type") or "signed-data").lower()
            if smime_type == "signed-data":
                return part
    return None


def _find_parts(roots: list[PecPart]) -> _Parts:
    daticert = signature = postacert = None
    xml_candidates: list[PecPart] = []
    rfc822_candidates: list[PecPart] = []
    for root in roots:
        for part in root.walk():
            name = (part.filename or "").lower()
            if name == "daticert.xml" and daticert is None:
                daticert = part
            elif name == "postacert.eml" and postacert is None:
                postacert = part
            elif signature is None and (name == "smime.p7s"
                                        or part.content_type in SIGNATURE_TYPES):
                signature = part
            elif part.content_type in ("application/xml", "text/xml"):
                xml_candidates.append(part)
            elif part.content_type == "message/rfc822":
                rfc822_candidates.append(part)
    if daticert is None:
        daticert = next((p for p in xml_candidates if b"<postacert" in _safe_body(p)), None)
    if postacert is None and rfc822_candidates:
        postacert = rfc822_candidates[0]
    return _Parts(daticert, signature, postacert)


def _safe_body(part: PecPart) -> bytes:
    try:
        return part.decoded_body()
    except ValueError:
        return b""


def _read_daticert(part: PecPart | None) -> tuple[Daticert | None, str | None]:
    if part is None:
        return None, "daticert.xml is missing"
    try:
        return parse_daticert(part.decoded_body()), None
    except DaticertError as exc:
        return None, f"daticert.xml is broken ({exc})"
    except ValueError as exc:  # transfer encoding
        return None, f"daticert.xml cannot be decoded ({exc})"


def _tipo_mismatch(kind: PecKind, receipt_kind: ReceiptKind | None,
                   daticert: Daticert) -> list[str]:
    tipo = daticert.tipo.lower()
    if kind is PecKind.TRANSPORT and tipo != "posta-certificata":
        return [f"X-Trasporto says posta-certificata but daticert tipo is {daticert.tipo!r}"]
    if kind is PecKind.RECEIPT and receipt_kind is not ReceiptKind.OTHER and receipt_kind != tipo:
        return [f"X-Ricevuta says {receipt_kind} but daticert tipo is {daticert.tipo!r}: "
                "the header decides"]
    return []


def _receipt_notes(kind: ReceiptKind, daticert: Daticert | None) -> list[str]:
    notes: list[str] = []
    if daticert is None:
        return notes
    recipients = {a.lower() for a in daticert.recipient_addresses}
    for label, address in (("consegna", daticert.consegna), ("ricezione", daticert.ricezione)):
        if address and recipients and address.lower() not in recipients:
            notes.append(f"daticert {label} {address} is not among its destinatari "
                         f"{sorted(recipients)}")
    if (kind is ReceiptKind.PREAVVISO_ERRORE_CONSEGNA and daticert.errore_esteso
            and daticert.errore_esteso.lstrip().startswith("5.")):
        notes.append("preavviso with a permanent 5.x.x error: treat as a definitive failure")
    return notes


def _first_address(headers: Message | None, name: str) -> tuple[str | None, str | None]:
    if headers is None:
        return None, None
    values = headers.get_all(name) or []
    for display, address in getaddresses([str(v) for v in values]):
        if address and "@" in address:
            return (decode_header_value(display) or None), address
    return None, None


def _is_provider_address(address: str) -> bool:
    return address.split("@", 1)[0].strip().lower() == PROVIDER_LOCAL_PART


_PER_CONTO_DI = re.compile(r"per conto di:\s*<?([^\s<>\"]+@[^\s<>\"]+)", re.IGNORECASE)


def _original_sender(kind: PecKind, inner: Message | None, daticert: Daticert | None,
                     headers: Message, envelope_from_name: str | None,
                     notes: list[str]) -> tuple[str | None, str | None]:
    """(display name, address) of who sent the certified message; never the provider."""
    name, address = _first_address(inner, "From")
    candidates: list[tuple[str | None, str | None, str]] = [(name, address, "postacert From")]
    if kind is PecKind.RECEIPT:
        candidates.insert(0, (None, daticert.mittente if daticert else None, "daticert"))
    else:
        candidates.append((None, daticert.mittente if daticert else None, "daticert mittente"))
    per_conto = _PER_CONTO_DI.search(envelope_from_name or "")
    candidates.append((None, per_conto.group(1) if per_conto else None, "'Per conto di:'"))
    reply_name, reply_address = _first_address(headers, "Reply-To")
    candidates.append((reply_name, reply_address, "envelope Reply-To"))
    for index, (cand_name, cand_address, source) in enumerate(candidates):
        if not cand_address:
            continue
        if "@" not in cand_address:
            # Some providers write a name or a code where daticert wants an address: the
            # next candidate (the certified message's own From first) answers instead.
            notes.append(f"{source} {cand_address!r} is not an address: skipped")
            continue
        if _is_provider_address(cand_address):
            notes.append(f"{source} is the provider address {cand_address}: skipped")
            continue
        if index > 0 and source != "daticert":
            notes.append(f"original sender taken from {source}")
        if cand_name and _PER_CONTO_DI.search(cand_name):
            cand_name = None  # never copy the envelope's "Per conto di:" display name
        return cand_name, cand_address
    return None, None


def _original_subject(kind: PecKind, inner: Message | None, daticert: Daticert | None,
                      envelope_subject: str, notes: list[str]) -> str | None:
    if kind is PecKind.RECEIPT:
        if daticert and daticert.oggetto:
            return daticert.oggetto
        return strip_service_prefix(envelope_subject) or None
    if inner is not None:
        value = header_text(inner, "Subject")
        if value is not None:
            return value
    if daticert and daticert.oggetto:
        notes.append("original subject taken from daticert oggetto")
        return daticert.oggetto
    if not envelope_subject:
        return None
    notes.append("original subject taken from the envelope subject")
    if kind is PecKind.TRANSPORT:
        return strip_pec_prefix(envelope_subject)
    return strip_service_prefix(envelope_subject)


def _recipients(headers: Message) -> tuple[str, ...]:
    values = [str(v) for name in ("To", "Cc") for v in (headers.get_all(name) or [])]
    return unique(address for _name, address in getaddresses(values) if "@" in address)


def _date(headers: Message) -> datetime | None:
    value = header_text(headers, "Date")
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else None


def _reply_address(daticert: Daticert | None, inner: Message | None) -> str | None:
    candidates = [daticert.risposte, daticert.mittente] if daticert else []
    candidates += [_first_address(inner, "Reply-To")[1], _first_address(inner, "From")[1]]
    for address in candidates:
        if address and "@" in address and not _is_provider_address(address):
            return address
    return None


def _requested_receipt(headers: Message, daticert: Daticert | None) -> str | None:
    value = header_text(headers, "X-TipoRicevuta")
    if value:
        return value.strip().lower()
    return daticert.ricevuta if daticert else None


def _service_parts(parts: _Parts, signed: PecPart | None) -> tuple[ServicePart, ...]:
    found: list[ServicePart] = []
    if parts.daticert is not None:
        found.append(_service(ServiceRole.DATICERT, parts.daticert, "daticert.xml"))
    if parts.signature is not None:
        found.append(_service(ServiceRole.SIGNATURE, parts.signature, "smime.p7s"))
    elif signed is not None and signed.content_type in OPAQUE_TYPES:
        found.append(_service(ServiceRole.SIGNATURE, signed, "smime.p7m"))
    return tuple(found)


def _service(role: ServiceRole, part: PecPart, default_name: str) -> ServicePart:
    return ServicePart(role=role, filename=part.filename or default_name,
                       content_type=part.content_type, path=part.path, data=_safe_body(part))


def _anomaly_reason(roots: list[PecPart]) -> str | None:
    for root in roots:
        for part in root.walk():
            if part.content_type != "text/plain":
                continue
            charset = part.param("charset") or "latin-1"
            try:
                text = _safe_body(part).decode(charset, "replace")
            except LookupError:
                text = _safe_body(part).decode("latin-1")
            match = _ANOMALY_REASON.search(text)
            if match:
                return match.group(1).strip()
    return None
