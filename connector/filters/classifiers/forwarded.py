"""Forwarded mail from staff: open the ticket for the original sender (Jitbit's "extract the
original sender", guarded the same way: only listed staff addresses may do it, otherwise
anyone could open tickets in someone else's name). A staff From line alone proves nothing: the
sender must be authenticated (connector.filters.authentication), else the forward stays the
ordinary mail of that address, tagged ``staff_unverified``.

A forward is recognised by a forward prefix in the subject (Fwd:, Fw:, I:, Inoltro:, WG:,
TR:, RV:, PD:, İLT:) or an attached ``message/rfc822``. The original comes from the attached
message when there is one, else from the quoted header block clients write above the
forwarded text (Gmail, Outlook, Thunderbird, Apple Mail, in the project's languages).
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from connector.filters.authentication import TAG_STAFF_UNVERIFIED
from connector.filters.classifiers.base import ClassifierContext, Verdict
from connector.filters.verdicts import Classification, ForwardDetails, Kind
from connector.mail.model import Address, ParsedMessage
from connector.mail.subject import clean_subject

REQUESTER = "X-Bridge-Requester"

FORWARD_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:fwd?|fw|i|inoltro|inoltra|wg|tr|rv|pd|[iİ]lt|enc|vs|vb)"
    r"\s*(?:\[\d+\])?\s*:",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}|_{5,})?\s*(?:"
    r"forwarded message|original message|messaggio inoltrato|messaggio originale|"
    r"weitergeleitete nachricht|urspr(?:ü|ue)ngliche nachricht|"
    r"message transf[ée]r[ée]|message d'origine|message original|"
    r"mensaje reenviado|mensaje original|"
    r"wiadomo[śs][ćc] przekazana|przekazana wiadomo[śs][ćc]|oryginalna wiadomo[śs][ćc]|"
    r"iletilen ileti|[öo]zg[üu]n ileti|orijinal mesaj|"
    r"begin forwarded message|inizio messaggio inoltrato|anfang der weitergeleiteten nachricht|"
    r"d[ée]but du message r[ée]exp[ée]di[ée]|comienzo del mensaje reenviado|"
    r"pocz[ąa]tek przekazywanej wiadomo[śs]ci"
    r")\s*:?\s*(?:-{2,})?\s*$",
    re.IGNORECASE,
)
_LABELS = {
    "from": r"from|da|von|de|od|kimden|mittente|absender|remitente|exp[ée]diteur",
    "subject": r"subject|oggetto|betreff|objet|sujet|asunto|temat|konu",
    "date": r"date|sent|data|inviato|gesendet|datum|envoy[ée]|enviado|fecha|wys[łl]ano|"
    r"g[öo]nderildi|tarih",
    "to": r"to|a|an|[àa]|pour|para|do|kime|destinatario|empf(?:ä|ae)nger",
    "cc": r"cc|kopia|bilgi",
}
_LABEL_LINE = re.compile(
    r"^\s*[*>]*\s*(" + "|".join(f"(?P<{k}>{v})" for k, v in _LABELS.items()) + r")\s*:\s*[*]*"
    r"\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class ForwardedClassifier:
    name: ClassVar[str] = "forwarded"
    sets: ClassVar[tuple[str, ...]] = (REQUESTER,)

    def run(self, ctx: ClassifierContext) -> Verdict:
        message = ctx.message
        if ctx.classification is not None:
            return Verdict.quiet(f"already classified as {ctx.classification.kind}")
        forwarder = message.from_
        looks_forwarded = bool(FORWARD_SUBJECT.match(message.subject)) or bool(
            message.nested_messages
        )
        if not looks_forwarded:
            return Verdict.quiet("no forward prefix in the subject, no attached message")
        if forwarder is None or not ctx.settings.is_staff(forwarder.email):
            who = forwarder.email if forwarder else "unknown sender"
            return Verdict.quiet(f"looks forwarded, but {who} is not listed as staff")
        if ctx.authenticated_sender is None:
            reason = (f"looks forwarded by staff, but {forwarder.email} is not authenticated "
                      f"({ctx.authentication.detail}): ordinary mail")
            return Verdict(True, reason, add_tags=(TAG_STAFF_UNVERIFIED,))
        details = _from_attachment(message, forwarder) or _from_inline(message, forwarder)
        if details is None:
            return Verdict.quiet("forwarded by staff, but the original sender was not found")
        reason = (
            f"{forwarder.email} forwarded a mail from {details.original_sender.email} "
            f"({details.source})"
        )
        classification = Classification(Kind.FORWARDED, reason, self.name, details)
        return Verdict(
            True, reason, {REQUESTER: details.original_sender.email}, (), classification
        )


def _from_attachment(message: ParsedMessage, forwarder: Address) -> ForwardDetails | None:
    for nested in message.nested_messages:
        if nested.from_ is not None and nested.from_.email:
            return ForwardDetails(
                original_sender=nested.from_,
                subject=nested.subject or clean_subject(message.subject),
                text_body=nested.text_body,
                html_body=nested.html_body,
                message=nested,
                forwarded_by=forwarder,
                forwarder_text=message.text_body.strip(),
                source="attachment",
            )
    return None


def _from_inline(message: ParsedMessage, forwarder: Address) -> ForwardDetails | None:
    lines = message.text_body.splitlines()
    start = _block_start(lines)
    if start is None:
        return None
    fields, body_start = _read_block(lines, start)
    sender = _address(fields.get("from", ""))
    if sender is None:
        return None
    body = _unquote(lines[body_start:])
    subject = fields.get("subject") or clean_subject(message.subject)
    original = dataclasses.replace(
        message,
        from_=sender,
        sender=None,
        reply_to=(),
        subject=subject,
        text_body=body,
        html_body=None,
    )
    before = lines[:start]
    if before and _SEPARATOR.match(before[-1]):
        before = before[:-1]
    return ForwardDetails(
        original_sender=sender,
        subject=subject,
        text_body=body,
        html_body=None,
        message=original,
        forwarded_by=forwarder,
        forwarder_text="\n".join(before).strip(),
        source="inline",
    )


def _block_start(lines: list[str]) -> int | None:
    """Index of the first line of the forwarded header block (its From line or first label)."""
    for index, line in enumerate(lines):
        if _SEPARATOR.match(line):
            for follow in range(index + 1, min(index + 4, len(lines))):
                if _LABEL_LINE.match(lines[follow]):
                    return follow
            continue
        match = _LABEL_LINE.match(line)
        if match and match.group("from") and _address(match.group("value")):
            # An Outlook block without a separator: From: followed by more labels.
            labels = [_LABEL_LINE.match(lines[j]) for j in range(index + 1, index + 5)
                      if j < len(lines)]
            if sum(1 for m in labels if m) >= 2:
                return index
    return None


def _read_block(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    fields: dict[str, str] = {}
    last: str | None = None
    index = start
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.strip() == ">":
            break
        match = _LABEL_LINE.match(line)
        if match:
            key = next(k for k in _LABELS if match.group(k))
            last = key
            fields.setdefault(key, match.group("value").strip().strip("*").strip())
        elif last is not None:
            fields[last] = (fields.get(last, "") + " " + line.strip()).strip()
        index += 1
    while index < len(lines) and not lines[index].strip(" >"):
        index += 1
    return fields, index


def _address(value: str) -> Address | None:
    match = _ADDRESS.search(value)
    if not match:
        return None
    email = match.group(0)
    name = value.replace(f"[mailto:{email}]", "").replace(f"<mailto:{email}>", "")
    name = name.replace(f"<{email}>", "").replace(email, "")
    name = name.strip().strip('"').strip("'").strip()
    return Address(name=name, email=email)


def _unquote(lines: list[str]) -> str:
    """The forwarded text; one level of '>' quoting removed when every line has it."""
    text_lines = [line for line in lines if line.strip()]
    if text_lines and all(line.lstrip().startswith(">") for line in text_lines):
        lines = [re.sub(r"^\s*> ?", "", line) for line in lines]
    return "\n".join(lines).strip()
