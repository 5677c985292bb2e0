"""Forwarded mail from staff: open the ticket for the original sender (Jitbit's "extract the
original sender", guarded the same way: only listed staff addresses may do it, otherwise
anyone could open tickets in someone else's name). A staff From line alone proves nothing: the
sender must be authenticated (connector.filters.authentication), else the forward stays the
ordinary mail of that address, tagged ``staff_unverified``.

A forward is recognised by a forward prefix in the subject (Fwd:, Fw:, I:, Inoltro:, WG:,
TR:, RV:, PD:, İLT:), an attached ``message/rfc822``, or, without either, a forwarded-message
separator in the text (clients do not always add the prefix). The original comes from the
attached message when there is one, else from the header block clients write above the
forwarded text: Gmail's "---------- Forwarded message ---------", Outlook's From:/Sent: block,
Thunderbird's "-------- Original Message --------" table, Apple Mail's "Begin forwarded
message:", Lotus Notes' "----- Forwarded by ... -----", each in English, Italian, German,
French, Spanish, Polish, Turkish, Dutch and Portuguese.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from connector.filters.authentication import TAG_STAFF_UNVERIFIED
from connector.filters.classifiers.base import ClassifierContext, Verdict
from connector.filters.classifiers.folding import fold_ascii
from connector.filters.verdicts import Classification, ForwardDetails, Kind
from connector.mail.model import Address, ParsedMessage
from connector.mail.subject import clean_subject

REQUESTER = "X-Bridge-Requester"

FORWARD_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:fwd?|fw|i|inoltro|inoltra|wg|tr|rv|pd|[iİ]lt|enc|vs|vb)"
    r"\s*(?:\[\d+\])?\s*:",
    re.IGNORECASE,
)
# Separators that only a forward writes.
_FORWARD_WORDS = (
    r"forwarded message|messaggio inoltrato|weitergeleitete nachricht|"
    r"message transf[ée]r[ée]|mensaje reenviado|mensagem encaminhada|doorgestuurd bericht|"
    r"wiadomo[śs][ćc] przekazana(?: dalej)?|przekazana wiadomo[śs][ćc]|"
    r"iletilen (?:ileti|mesaj)|y[öo]nlendirilen ileti|y[öo]nlendirilmi[şs] ileti|"
    r"begin forwarded message|inizio messaggio inoltrato|anfang der weitergeleiteten nachricht|"
    r"d[ée]but du message r[ée]exp[ée]di[ée]|(?:comienzo|inicio) del mensaje reenviado|"
    r"in[íi]cio da mensagem encaminhada|begin doorgestuurd bericht|"
    r"pocz[ąa]tek przekazywanej wiadomo[śs]ci|iletilen iletinin ba[şs]lang[ıi]c[ıi]"
)
# Separators replies write too (Outlook quotes the answered mail under "Original Message").
_ORIGINAL_WORDS = (
    r"original message|messaggio originale|urspr(?:ü|ue)ngliche nachricht|"
    r"message d'origine|message original|mensaje original|mensagem original|"
    r"oorspronkelijk bericht|oryginalna wiadomo[śs][ćc]|wiadomo[śs][ćc] oryginalna|"
    r"[öo]zg[üu]n ileti|orijinal mesaj"
)
_SEPARATOR_FORM = r"^\s*[>]*\s*(?:-{2,}|_{5,})?\s*(?:%s)\s*:?\s*(?:-{2,})?\s*$"
_SEPARATOR = re.compile(_SEPARATOR_FORM % (_FORWARD_WORDS + "|" + _ORIGINAL_WORDS),
                        re.IGNORECASE)
_FORWARD_SEPARATOR = re.compile(_SEPARATOR_FORM % _FORWARD_WORDS, re.IGNORECASE)
# Lotus Notes: "----- Forwarded by Anna Rossi/IT/ACME on 03/06/2024 10:15 -----", the
# sender on its own line below ("Luigi Bianchi <l@x>" or "... on 03/06/2024 10:12").
_NOTES_SEPARATOR = re.compile(
    r"^\s*-{3,}\s*(?:forwarded by|inoltrato da|weitergeleitet von|transf[ée]r[ée] par|"
    r"reenviado por)\b.*-{3,}\s*$",
    re.IGNORECASE,
)
_LABELS = {
    "from": r"from|da|von|de|od|kimden|g[öo]nderen|mittente|absender|remitente|exp[ée]diteur|"
    r"van",
    "subject": r"subject|oggetto|betreff|objet|sujet|asunto|assunto|temat|konu|onderwerp",
    "date": r"date|sent|data|inviato|gesendet|datum|envoy[ée]|enviad[oa](?: el| em)?|fecha|"
    r"wys[łl]ano|wys[łl]ane|g[öo]nderildi|g[öo]nderilme tarihi|tarih|verzonden",
    "to": r"to|a|an|[àa]|pour|para|do|kime|destinatario|empf(?:ä|ae)nger|aan",
    "cc": r"cc|kopia|bilgi",
}
_LABEL_LINE = re.compile(
    r"^\s*[*>]*\s*(" + "|".join(f"(?P<{k}>{v})" for k, v in _LABELS.items()) + r")\s*:\s*[*]*"
    r"\s*(?P<value>.*)$",
    re.IGNORECASE,
)
# Outlook's line above its From:/Sent: block.
_RULE = re.compile(r"^\s*_{5,}\s*$")
# A word every separator and rule line above holds, as the text holds it once lowercased
# (``re.IGNORECASE`` lets an ASCII letter match only characters whose lowercase is that letter,
# after the three fixes in fold): a text without any of them has no such line, and these
# searches cost a fraction of matching every line of every mail against the patterns.
_SEPARATOR_HINTS = (b"messag", b"nachricht", b"mensa", b"bericht", b"wiadomo", b"ileti",
                    b"mesaj", b"forwarded by", b"inoltrato da", b"weitergeleitet von",
                    b"transf", b"reenviado por", b"_____")


def _may_hold_separator(text: str) -> bool:
    folded = fold_ascii(text)
    return any(hint in folded for hint in _SEPARATOR_HINTS)


# Lotus Notes writes some labels alone on a line, their value on the next.
_BARE_LABEL = re.compile(r"^\s*(to|cc|bcc|subject|an|kopie|betreff|a|oggetto|objet)\s*$",
                         re.IGNORECASE)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class ForwardedClassifier:
    name: ClassVar[str] = "forwarded"
    sets: ClassVar[tuple[str, ...]] = (REQUESTER,)

    def run(self, ctx: ClassifierContext) -> Verdict:
        message = ctx.message
        if ctx.classification is not None:
            return Verdict.quiet(f"already classified as {ctx.classification.kind}")
        forwarder = message.from_
        prefixed = bool(FORWARD_SUBJECT.match(message.subject))
        looks_forwarded = (
            prefixed
            or (bool(message.nested_messages) and _may_be_attached_forward(message))
            or _unprefixed_forward(message)
        )
        if not looks_forwarded:
            return Verdict.quiet("no forward prefix, attached message or forward separator")
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
        # The original names someone other than the forwarder (forwarding one's own mail
        # opens no ticket for anyone else).
        if (nested.from_ is not None and nested.from_.identity
                and nested.from_.normalized != forwarder.normalized):
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


def _unprefixed_forward(message: ParsedMessage) -> bool:
    """A forward without the prefix: a separator only forwards write, or an "Original
    Message" block (replies write those too; old Thunderbird forwards so) whose Subject is the
    mail's own: a forward keeps the subject, a new mail quoting another has its own."""
    if clean_subject(message.subject) != message.subject.strip():
        return False  # "Re:" and kin: a reply quoting its thread
    if not _may_hold_separator(message.text_body):
        return False
    lines = message.text_body.splitlines()
    for line in lines:
        if _FORWARD_SEPARATOR.match(line) or _NOTES_SEPARATOR.match(line):
            return True
    own = _comparable(message.subject)
    for index, line in enumerate(lines):
        if not (_SEPARATOR.match(line) or _RULE.match(line)):
            continue
        start = _block_start(lines[index:])
        if start is None:
            continue
        fields, _ = _read_block(lines, index + start)
        if own and _comparable(fields.get("subject", "")) == own:
            return True
    return False


def _comparable(subject: str) -> str:
    return " ".join(clean_subject(subject).split()).casefold()


def _may_be_attached_forward(message: ParsedMessage) -> bool:
    """An attached message without a forward prefix: not when the mail is a reply ("Re:"), a
    digest or a report, nor when the message is one file among several (a MIME sampler)."""
    if clean_subject(message.subject) != message.subject.strip():
        return False
    content_type = (message.header("Content-Type") or "").lower()
    if "multipart/digest" in content_type or "multipart/report" in content_type:
        return False
    others = [a for a in message.attachments if a.content_type not in _MESSAGE_TYPES]
    return len(message.nested_messages) == 1 and len(others) <= 1


_MESSAGE_TYPES = ("message/rfc822", "message/global")


def _from_inline(message: ParsedMessage, forwarder: Address) -> ForwardDetails | None:
    lines = message.text_body.splitlines()
    notes = _from_notes(lines)
    if notes is not None:
        fields, body_start, start = notes
    else:
        found = _block_start(lines)
        if found is None:
            return None
        start = found
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
    while before and not before[-1].strip():
        before = before[:-1]
    if before and (_SEPARATOR.match(before[-1]) or _RULE.match(before[-1])):
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


def _from_notes(lines: list[str]) -> tuple[dict[str, str], int, int] | None:
    """A Lotus Notes forward: the separator, the sender on a line of its own (with an address),
    then To/cc/Subject labels, inline ("Subject: x") or alone with the value below."""
    for index, line in enumerate(lines):
        if not _NOTES_SEPARATOR.match(line):
            continue
        fields: dict[str, str] = {}
        pending: str | None = None
        position = index + 1
        while position < len(lines) and position <= index + 16:
            text = lines[position].strip()
            position += 1
            if not text:
                if "subject" in fields:
                    break
                continue
            bare = _BARE_LABEL.match(text)
            if bare:
                pending = bare.group(1).lower()
                continue
            match = _LABEL_LINE.match(text)
            if match and not match.group("from"):
                key = next(k for k in _LABELS if match.group(k))
                fields.setdefault(key, match.group("value").strip())
                continue
            if pending is not None:
                key = "subject" if pending in ("subject", "betreff", "oggetto", "objet") else "to"
                fields.setdefault(key, text)
                pending = None
                continue
            if "from" not in fields and _ADDRESS.search(text):
                fields["from"] = text
        if "from" in fields:
            while position < len(lines) and not lines[position].strip():
                position += 1
            return fields, position, index
    return None


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
