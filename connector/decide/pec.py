"""What a PEC message means for the helpdesk (pure logic on the PEC analysis).

PEC's value is evidence, so only what a trusted PEC provider signed counts as certified (the
signature verdict VALID: intact, and the signer chains to a PEC trust anchor).

- A transport envelope becomes a ticket (or follow-up) from the real sender, with the original
  subject, body and attachments; the signed envelope itself is attached byte-exact, because it
  is the legal proof of delivery, and an internal note records identificativo, msgid,
  certified time and the signature verdict.
- An anomaly envelope does the same, flagged (tag and note).
- An envelope that is not certified (signature broken, missing, undecodable, or from a signer
  no trusted CA issued) may still open a ticket for the sender its daticert names, a claim no
  stronger than a From line: tagged ``pec_signature_not_valid``, its note says so, no PEC
  fact but the verdict goes into custom fields, and it opens its own ticket (``standalone``):
  its PEC ids, and the ids its original cites, are claims that could graft it onto a real
  certified conversation.
- A receipt is a receipt only when it reached a PEC account with a certified signature: it
  carries the delivery tags and becomes an internal note on the ticket of the message it
  certifies. Anything else that looks like a receipt is ordinary mail tagged
  ``pec_receipt_unverified`` that opens its own ticket (``standalone``).
Replies thread on both the sender's Message-ID and the provider's identificativo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from connector.mail.model import Address, ParsedMessage
from connector.pec import PecInfo, PecKind, ReceiptKind, strip_pec_prefix

TAG_PEC = "pec_connector"
TAG_ORDINARY_MAILBOX = "pec_received_on_ordinary_mailbox"
TAG_ANOMALY = "pec_anomaly"
TAG_SIGNATURE_PROBLEM = "pec_signature_not_valid"
TAG_RECEIPT_UNVERIFIED = "pec_receipt_unverified"

#: Receipt kind -> the tag that shows the delivery state on the ticket.
RECEIPT_TAGS: dict[ReceiptKind, str] = {
    ReceiptKind.ACCETTAZIONE: "pec_accepted",
    ReceiptKind.AVVENUTA_CONSEGNA: "pec_delivered",
    ReceiptKind.ERRORE_CONSEGNA: "pec_delivery_failed",
    ReceiptKind.NON_ACCETTAZIONE: "pec_delivery_failed",
    ReceiptKind.RILEVAZIONE_VIRUS: "pec_delivery_failed",
    ReceiptKind.PREAVVISO_ERRORE_CONSEGNA: "pec_delivery_warning",
    ReceiptKind.PRESA_IN_CARICO: "pec_taken_in_charge",
}


@dataclass(frozen=True)
class PecPlan:
    kind: PecKind
    content: ParsedMessage  # what the ticket shows (the certified original for envelopes)
    tags: tuple[str, ...]
    thread_ids: tuple[str, ...]  # ids to map onto the ticket: replies may cite any of them
    lookup_ids: tuple[str, ...]  # ids that find the ticket this message belongs to
    note: str  # internal note text (PEC facts, or the receipt summary)
    trace: dict[str, Any]
    facts: dict[str, str] = field(default_factory=dict)  # for mapped custom fields
    certified: bool = False  # signed by a trusted PEC provider (and, for a receipt, on PEC)
    standalone: bool = False  # opens its own ticket: never threads onto an existing one
    # A certified transport envelope the provider flagged nothing on: its note only repeats
    # ``facts`` (``pec_facts_note`` may leave it out). Uncertified and anomaly envelopes,
    # a failed security check or a parse note make the note a warning, never left out.
    routine: bool = False

    @property
    def ids_are_claims(self) -> bool:
        """An uncertified envelope: neither its own Message-ID (the identificativo it claims)
        nor its original's may be mapped to the ticket it opens."""
        return not self.certified and self.kind is not PecKind.RECEIPT

    @property
    def is_receipt(self) -> bool:
        """A certified receipt (an unverified look-alike is ordinary mail)."""
        return self.kind is PecKind.RECEIPT and self.certified


def _verdict_line(pec: PecInfo) -> str:
    sig = pec.signature
    line = f"Provider signature: {sig.status.value}"
    if sig.signer_subject:
        line += f", signed by {sig.signer_subject}"
    if sig.detail:
        line += f" ({sig.detail})"
    return line


UNVERIFIED_WARNING = ("NOT CERTIFIED: no trusted PEC provider signed this message, so its "
                      "sender and content are unverified claims, no stronger than any From "
                      "line. It is not legal proof of anything.")


def _facts(pec: PecInfo) -> list[str]:
    lines = []
    claimed = "" if pec.signature.is_valid else " (claimed, not certified)"
    if pec.identificativo:
        lines.append(f"PEC identificativo{claimed}: {pec.identificativo}")
    if pec.msgid:
        what = "certified message" if not claimed else "message"
        lines.append(f"Message-ID of the {what}{claimed}: {pec.msgid}")
    if pec.certified_at:
        label = "Certified at" if pec.kind is not PecKind.ANOMALY else "Date"
        if claimed:
            label = "Date" + claimed
        lines.append(f"{label}: {pec.certified_at.isoformat()}")
    if pec.provider:
        lines.append(f"Provider{claimed}: {pec.provider}")
    lines.append(_verdict_line(pec))
    if pec.security_check_failed:
        lines.append("The receiving provider flagged X-VerificaSicurezza: errore")
    lines.extend(f"Note: {n}" for n in pec.notes)
    return lines


def pec_facts(pec: PecInfo) -> dict[str, str]:
    """The facts a ticket can carry in custom fields (account key ``pec_custom_fields``).
    Without a certified signature only the verdict: the rest would be a claim shown as proof."""
    if not pec.signature.is_valid:
        return {"signature": pec.signature.status.value}
    facts = {"identificativo": pec.identificativo, "msgid": pec.msgid,
             "certified_at": pec.certified_at.isoformat() if pec.certified_at else None,
             "signature": pec.signature.status.value}
    return {k: v for k, v in facts.items() if v}


def pec_trace(pec: PecInfo) -> dict[str, Any]:
    sig = pec.signature
    return {
        "kind": pec.kind.value,
        "receipt_kind": pec.receipt_kind.value if pec.receipt_kind else None,
        "depth": pec.depth,
        "identificativo": pec.identificativo,
        "msgid": pec.msgid,
        "certified_at": pec.certified_at.isoformat() if pec.certified_at else None,
        "signature": {"status": sig.status.value, "signer": sig.signer_subject,
                      "issuer": sig.signer_issuer, "anchor": sig.trust_anchor,
                      "detail": sig.detail},
        "notes": list(pec.notes),
    }


def nested_original(message: ParsedMessage, original_raw: bytes) -> ParsedMessage | None:
    """The certified original as the envelope's own parse already read it, or None.

    postacert.eml is a message/rfc822 part, so parsing the envelope parsed it too (one of
    its nested messages, deeper for a forwarded envelope). Reusing it saves a second parse
    and a second decoded copy of every attachment (a 25 MB original would otherwise cost
    another 25 MB at the peak)."""
    pending = list(message.nested_messages)
    while pending:
        nested = pending.pop(0)
        if len(nested.raw) == len(original_raw) and nested.raw == original_raw:
            return nested
        pending.extend(nested.nested_messages)
    return None


def plan_pec(message: ParsedMessage, pec: PecInfo, *, account_is_pec: bool,
             parse: Callable[[bytes], ParsedMessage]) -> PecPlan | None:
    """The plan for a PEC message, or None when it is ordinary mail (or a receipt found only
    inside a forwarded message, which the provider did not deliver to us)."""
    if not pec.is_pec:
        return None
    if pec.kind is PecKind.RECEIPT:
        if pec.depth > 0:
            return None
        if account_is_pec and pec.signature.is_valid:
            return _receipt_plan(message, pec)
        return _unverified_receipt_plan(message, pec, account_is_pec=account_is_pec)
    certified = pec.signature.is_valid
    content = message
    if pec.original_raw:
        content = nested_original(message, pec.original_raw) or parse(pec.original_raw)
    sender = pec.original_sender or (content.from_.email if content.from_ else None)
    if sender:
        content = replace(content, from_=Address(pec.original_sender_name or
                                                 (content.from_.name if content.from_ else ""),
                                                 sender, valid=True))
    # The certified original keeps its subject as the sender wrote it; only the envelope's
    # subject carries the provider's one "POSTA CERTIFICATA: " prefix.
    subject = pec.original_subject or content.subject or strip_pec_prefix(message.subject)
    content = replace(content, subject=subject)
    tags = [TAG_PEC]
    if not account_is_pec:
        tags.append(TAG_ORDINARY_MAILBOX)
    if not pec.signature.is_valid:
        tags.append(TAG_SIGNATURE_PROBLEM)
    heading = "PEC message received" if certified else \
        "Message in the form of a PEC envelope received"
    if pec.kind is PecKind.ANOMALY:
        tags.append(TAG_ANOMALY)
        heading = "PEC anomaly envelope (busta di anomalia): the provider could not certify " \
                  "this message"
        if pec.anomaly_reason:
            heading += f": {pec.anomaly_reason}"
    if not account_is_pec:
        heading += " on an ordinary mailbox"
    if not certified:
        # Its ids are claims: mapping them would let a forgery capture the replies and
        # receipts of a real conversation, and looking them up would thread it into one.
        note = "\n".join([heading, UNVERIFIED_WARNING, *_facts(pec),
                          "The envelope is attached as received; it was not added to any "
                          "existing ticket."])
        return PecPlan(pec.kind, content, tuple(tags), (), (), note, pec_trace(pec),
                       pec_facts(pec), standalone=True)
    ids = tuple(dict.fromkeys(i for i in (*pec.thread_keys, content.message_id) if i))
    attached = ("The signed envelope is attached as received (legal proof of delivery)."
                if pec.kind is PecKind.TRANSPORT else
                "The provider's anomaly envelope is attached as received.")
    note = "\n".join([heading, *_facts(pec), attached])
    routine = (pec.kind is PecKind.TRANSPORT and not pec.security_check_failed
               and not pec.notes)
    return PecPlan(pec.kind, content, tuple(tags), ids, tuple(pec.referenced_ids), note,
                   pec_trace(pec), pec_facts(pec), certified=True, routine=routine)


def _receipt_plan(message: ParsedMessage, pec: PecInfo) -> PecPlan:
    receipt = pec.receipt
    kind = pec.receipt_kind or ReceiptKind.OTHER
    tags = [TAG_PEC]
    if kind in RECEIPT_TAGS:
        tags.append(RECEIPT_TAGS[kind])
    if receipt is not None and receipt.is_failure and "pec_delivery_failed" not in tags:
        tags.append("pec_delivery_failed")
    summary = receipt.summary if receipt is not None else f"PEC receipt ({kind.value})"
    lines = [summary]
    if receipt is not None and receipt.error_detail:
        lines.append(f"Error: {receipt.error_detail}")
    lines.extend(_facts(pec))
    lines.append("The receipt is attached as received.")
    lookup = tuple(dict.fromkeys((*pec.referenced_ids, *pec.thread_keys)))
    return PecPlan(PecKind.RECEIPT, message, tuple(tags), (), lookup, "\n".join(lines),
                   pec_trace(pec), certified=True)


def _unverified_receipt_plan(message: ParsedMessage, pec: PecInfo, *,
                             account_is_pec: bool) -> PecPlan:
    """Something that looks like a receipt but is no evidence: ordinary mail with a tag and a
    note saying why, on a ticket of its own, without any delivery tag."""
    if not account_is_pec:
        why = "it arrived on an ordinary (non-PEC) mailbox, where no provider delivers receipts"
    else:
        why = f"its provider signature is {pec.signature.status.value}"
        if pec.signature.detail:
            why += f" ({pec.signature.detail})"
    note = "\n".join([f"Looks like a PEC receipt ({(pec.receipt_kind or ReceiptKind.OTHER).value})"
                      f" but is not one: {why}.",
                      "It is treated as ordinary mail: no delivery state was recorded and no "
                      "existing ticket was touched."])
    return PecPlan(PecKind.RECEIPT, message, (TAG_RECEIPT_UNVERIFIED,), (), (), note,
                   pec_trace(pec), {"signature": pec.signature.status.value},
                   certified=False, standalone=True)
