"""Reading delivery failure reports: RFC 3464 DSNs first, heuristics for the rest.

Pure: it parses the raw bytes it is given with the stdlib ``email`` package (the bounce's
structure, ``message/delivery-status`` blocks and the returned original, is not part of the
normalized model).

Standard reports give per-recipient Action, Status and Diagnostic-Code. Non-standard ones
(qmail, old Exim, Exchange 5.5, Yahoo, GroupWise...) are recognised when a delivery-daemon
sender or an ``X-Failed-Recipients`` header comes with failure wording in the subject or text;
the failed recipients are then the addresses of the notice text (the part before the returned
original) that stand on their own line, sit next to failure wording, or follow an "the
following recipients" introduction.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32

from connector.filters.classifiers.folding import fold, folded_pattern
from connector.mail.addresses import getaddresses_safe as getaddresses
from connector.mail.addresses import parseaddr_safe as parseaddr
from connector.mail.model import ParsedMessage
from connector.mail.subject import clean_subject

ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
ENHANCED_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# In free text only failure classes count: "2.0.12" is more likely a version number.
FAILURE_STATUS = re.compile(r"(?<![\d.])([45]\.\d{1,3}\.\d{1,3})(?![\d.])")
_DSN_PART = re.compile(rb"(?i)message/(?:global-)?delivery-status")
MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)

_DAEMON_LOCAL = re.compile(
    r"^(mailer-daemon|mail-daemon|maildaemon|postmaster|mdaemon|mail\.delivery\.system|ndr|"
    # List managers' own addresses (mlmmj, Mailman, Majordomo, ezmlm), which send the
    # notices of posts a list refused.
    r"owner-.+|.+[+-]owner|.+-bounces|.+-request)$",
    re.IGNORECASE,
)
# Gateways that sign their notices with a role in the local part ("E500_SMTP_Mail_Service@",
# "Symantec_AntiVirus_for_SMTP_Gateways@").
_DAEMON_LOCAL_WORDS = re.compile(
    r"(?:^|[._-])(?:smtp|mail[._-]?service|mailer|daemon)(?:$|[._-])", re.IGNORECASE
)
_DAEMON_NAME = re.compile(
    r"mail ?delivery|delivery (sub)?system|delivery service|mailer.?daemon|postmaster|"
    r"mail system|jetmail|lsmtp|system administrator",
    re.IGNORECASE,
)
# Searched in fold(subject): see connector/filters/classifiers/folding.py.
_FAIL_SUBJECT = folded_pattern(
    r"undeliver|undelivered|not delivered|could not be delivered|delivery (status )?fail|"
    r"failure (notice|delivery)|delivery failure|delivery problem|delivery report|"
    r"delivery status notification|delivery notification|returned mail|mail delivery failed|"
    r"failed mail|mail error|processing error|non.?delivery|permanent delivery failure|"
    # Exim's notices about mail it refused outright: "Mail failure - no recipient addresses".
    r"mail failed|mail failure|returning to sender|returned to sender|"
    r"mail system error|user unknown|nameserver error|rejected mail|delivery has failed|"
    r"message delayed|delayed mail|mail delivery warning|warning: message|not yet been delivered|"
    r"non remis|mancata consegna|impossibile recapitare|non recapitat|recapito non riuscito|"
    r"unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|"
    r"no se pudo entregar|no se puede entregar|error en la entrega|no entregado|"
    r"niedostarczon|nie można dostarczyć|teslim edilemedi|iletilemedi|"
    r"non distribuable|échec de (la )?(remise|distribution)|utilisateur non recens|"
    # Chinese, Japanese (carriers and ISPs), Korean notices.
    r"退信|投递失败|发送失败|传输失败|無法投遞|傳送失敗|未達|配信不能|配信エラー|送信エラー|"
    r"宛先不明|届きませんでした|반송|전송 실패|배달 실패"
)


def _fail_subject(subject: str) -> bool:
    return _FAIL_SUBJECT.search(fold(subject)) is not None


_FAIL_TEXT = re.compile(
    r"could not be delivered|couldn't be delivered|not be delivered|was not delivered|"
    r"undeliverable|undelivered|delivery (has )?failed|delivery to the following|"
    r"permanent (fatal )?error|user unknown|unknown user|no such (user|recipient|mailbox)|"
    r"mailbox (is )?(unavailable|full|not found)|does not exist|doesn't exist|"
    r"unable to deliver|wasn't able to deliver|was unable to deliver|failed to deliver|"
    r"returned to sender|returning (message )?to sender|did not reach|delivery failure|"
    r"failed addresses|no valid recipients|unable to be delivered|"
    r"recipient (address )?rejected|address rejected|invalid (recipient|address|mailbox)|"
    r"the following (address|recipient)|not (a )?valid (user|recipient)|quota exceeded|"
    r"has not yet been delivered|delayed|will (keep|continue) trying|still trying|"
    r"n'a pas pu (être|etre) (délivré|delivre|remis)|n'existe pas|"
    r"impossibile (recapitare|consegnare)|non (è|e') stato (recapitato|consegnato)|"
    r"konnte nicht zugestellt|unzustellbar|nicht zugestellt werden|"
    r"no (se )?pudo (ser )?entregar|no se ha podido entregar|"
    r"nie (można|mogła|została) (dostarczyć|dostarczona)|teslim edilemedi|"
    r"无法投递|无法送达|無法投遞|無法送達|配信できませんでした|送信できませんでした|"
    r"宛先(?:が)?(?:見つかりません|不明)|전달되지 않았습니다|전송하지 못했습니다",
    re.IGNORECASE,
)
_MTA_TEMPLATE = re.compile(
    r"this is the qmail-send program|this is the mail system at host|"
    r"this message was created automatically by mail delivery software|"
    r"delivery to the following recipients? failed|"
    r"your message did not reach some or all of the intended recipients|"
    r"the original message was received at .{0,80}\bfrom\b|"
    r"----- the following addresses had permanent fatal errors -----|"
    r"i'm afraid i wasn't able to deliver your message",
    re.IGNORECASE,
)
_DELAY = re.compile(
    r"delayed|has not yet been delivered|not been delivered yet|will (keep|continue) trying|"
    r"still (being )?(retried|trying)|delivery delay|temporar(y|ily) (failure|unavailable)|"
    r"attempts will continue|will be retried|retry (timeout|again)|"
    r"warning: message|mail delivery warning|\(delay\)",
    re.IGNORECASE,
)
_FAIL_LINE = re.compile(
    r"unknown|fail|not deliver|reject|does not exist|doesn't exist|no such|invalid|unavailable|"
    r"not found|quota|full|permanent|error|undeliverable|unrouteable|refused|disabled|"
    r"inactive|not (a )?valid|did not reach|did not (exactly )?match|could not|unable|denied|"
    r"blocked|expired|\b[45]\d\d\b|" + FAILURE_STATUS.pattern,
    re.IGNORECASE,
)
_INTRO = re.compile(
    r"following (e-?mail )?(address|recipient|destination)|could not be delivered to|"
    r"not be delivered to|unable to deliver (your message )?to|did not reach the following|"
    r"addresses? failed|permanent fatal errors|failed recipient|delivery to the following|"
    r"wasn't able to deliver|recipients?:\s*$|n'a pas pu (être|etre) (délivré|delivre)",
    re.IGNORECASE,
)
# Mail-system vocabulary: a non-daemon failure notice must use some of it.
_MAIL_WORDS = re.compile(
    r"\b(smtp|mta|mailbox|mail ?server|mailer|user unknown|unknown user|e-?mail (address|message)|"
    r"your (e-?mail|message|mail)|the following (e-?mail )?(address|recipient)s?|"
    r"message headers?|original message)\b|"
    r"(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?![\d.])|\b[45]\d\d[ -]",
    re.IGNORECASE,
)
# Where the returned copy of the original starts inside a plain-text notice.
_RETURNED = re.compile(
    r"^\s*(-{2,}|={2,}|\*{2,})?\s*(original message|returned message|undelivered message|"
    r"below this line|this is a copy|the original message|a copy of the original|"
    r"message headers follow|headers of your message|original message follows|"
    r"unsent message|your message reads|rejected message|the header of the original|"
    r"message text follows|forwarded message)",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(
    r"^\s*(to|cc|bcc|from|sent|date|subject|reply-to|return-path|received|sender|"
    r"message-id|x-[\w-]+|delivered-to)\s*:",
    re.IGNORECASE,
)
_RECIPIENT_FIELD = re.compile(
    r"^\s*(final-recipient|original-recipient|x-actual-recipient|failed recipient)\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BounceReport:
    """A bounce as read from the mail, before we know whether it bounced our own mail."""

    action: str  # failed | delayed | delivered (a success report, not a failure)
    status: str | None
    failed_recipients: tuple[str, ...]
    original_message_id: str | None  # without angle brackets, like ParsedMessage.message_id
    diagnostic: str | None
    standard: bool
    evidence: tuple[str, ...]
    # A report (RFC 3464) or a delivery daemon's notice with failure wording: may drop a mail.
    # False for a daemon sender alone or failure wording alone: those only tag.
    strong: bool = True

    @property
    def permanent(self) -> bool:
        """The MTA gave up (Action: failed), whatever the status class: a 4.4.7 "delivery
        time expired" is as final as a 5.1.1."""
        return self.action == "failed"


def analyse(raw: bytes, *, subject: str = "", text_body: str = "") -> BounceReport | None:
    """The bounce report in ``raw``, or None when the mail is not a delivery report."""
    if raw and not _may_be_bounce(raw, subject):
        return None  # most mail: skip parsing the whole message a second time
    msg = email.message_from_bytes(raw, policy=compat32) if raw else Message()
    from_name, from_addr = parseaddr(_header(msg, "From"))
    daemon = _is_daemon(from_name, from_addr) or bool(msg.get("X-Failed-Recipients"))
    if _is_reply_or_forward(subject or _header(msg, "Subject")) and not daemon:
        return None  # a person answering or forwarding a bounce ("Fwd: Returned mail")
    # A report inside an attached message counts only when a delivery daemon relays it (a
    # postmaster passing a DSN on); a person attaching one has sent no report.
    report = _standard(msg, nested=daemon)
    if report is not None:
        return report
    return _heuristic(msg, subject or _header(msg, "Subject"), text_body)


def may_be_bounce(message: ParsedMessage) -> bool:
    """The same cheap look as ``_may_be_bounce`` on an already parsed message: no second
    parse, no scan of the body bytes (the parsed parts already say what they are)."""
    content_type = (message.header("Content-Type") or "").lower()
    if "report" in content_type or "delivery-status" in content_type:
        return True
    if any("delivery-status" in a.content_type.lower() for a in message.attachments):
        return True
    if message.header("X-Failed-Recipients"):
        return True
    sender = message.from_
    if message.header("From") is not None and (sender is None or not sender.email.strip()):
        return True  # "From: <>" and other empty senders: how many MTAs sign their reports
    if sender is not None and _is_daemon(sender.name, sender.email):
        return True
    return _fail_subject(message.subject)


def _may_be_bounce(raw: bytes, subject: str) -> bool:
    """A cheap look at the headers: every path to "bounce" below needs one of these."""
    if _DSN_PART.search(raw):
        return True
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    if headers.get("X-Failed-Recipients"):
        return True
    name, address = parseaddr(_header(headers, "From"))
    if _is_daemon(name, address) or (headers.get("From") is not None and not address.strip()):
        return True
    return _fail_subject(subject or _header(headers, "Subject"))


def _standard(msg: Message, *, nested: bool = False) -> BounceReport | None:
    status_part = next(
        (
            p
            for p in (msg.walk() if nested else _own_parts(msg))
            if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
        ),
        None,
    )
    if status_part is None:
        return None
    blocks = _status_blocks(status_part)
    recipients = [b for b in blocks if _field(b, "final-recipient", "original-recipient", "action")]
    if not recipients:
        return None  # an empty or mangled report: let the heuristics read the notice text
    failed: list[str] = []
    delayed: list[str] = []
    statuses: list[str] = []
    diagnostics: list[str] = []
    for block in recipients:
        status = _status_code(_field(block, "status") or "")
        action = _action(_field(block, "action") or "", status)
        address = _recipient(block)
        if action == "failed":
            failed.append(address)
        elif action == "delayed":
            delayed.append(address)
        else:
            continue
        if status:
            statuses.append(status)
        diagnostic = _field(block, "diagnostic-code")
        if diagnostic:
            diagnostics.append(_clean_diagnostic(diagnostic))
    original = _original_message_id(msg)
    if failed:
        action, chosen = "failed", failed
    elif delayed:
        action, chosen = "delayed", delayed
    else:
        return BounceReport("delivered", None, (), original, None, True, ("report: delivered",))
    status = statuses[0] if statuses else None
    if action == "failed" and status is None:
        status = _text_status(_notice_text(msg))
    return BounceReport(
        action=action,
        status=status,
        failed_recipients=_unique(a for a in chosen if a),
        original_message_id=original,
        diagnostic=diagnostics[0] if diagnostics else None,
        standard=True,
        evidence=(f"message/delivery-status with Action: {action}",),
    )


def _heuristic(msg: Message, subject: str, text_body: str) -> BounceReport | None:
    from_name, from_addr = parseaddr(_header(msg, "From"))
    daemon = _is_daemon(from_name, from_addr) or (
        bool(_header(msg, "From")) and not from_addr.strip()
    )
    failed_header = [a for _, a in getaddresses(msg.get_all("X-Failed-Recipients") or []) if a]
    notice = _notice_text(msg) or text_body
    subject_fail = _fail_subject(subject)
    text_fail = bool(_FAIL_TEXT.search(notice))
    evidence = []
    if failed_header:
        evidence.append("X-Failed-Recipients header")
    if daemon:
        evidence.append(f"delivery-daemon sender {from_addr or from_name or '<>'}")
    if subject_fail:
        evidence.append("failure wording in the subject")
    if text_fail:
        evidence.append("failure wording in the text")
    # MAILER-DAEMON sends nothing but delivery reports; other daemon-ish senders need wording.
    mailer_daemon = from_addr.lower().startswith("mailer-daemon@")
    is_bounce = bool(failed_header) or mailer_daemon or (daemon and (subject_fail or text_fail))
    # The sentences MTAs open their notices with, in the notice's first two lines: a customer
    # who pastes a bounce into a mail of their own writes something above it (a ticket).
    opening = " ".join([line.strip() for line in notice.splitlines() if line.strip()][:2])
    template = bool(_MTA_TEMPLATE.search(opening))
    is_bounce = is_bounce or (template and not _is_reply(subject))
    # Without a daemon sender, wording alone is not enough ("Delivery failure: my parcel could
    # not be delivered" is a customer): the text must speak of mail, or the original be attached.
    via_wording = subject_fail and text_fail and not _is_reply(subject)
    via_wording = via_wording and (bool(_MAIL_WORDS.search(notice)) or _returns_original(msg))
    is_bounce = is_bounce or via_wording
    if not is_bounce:
        return None
    # Strong: a daemon (or no sender at all) with failure wording, an MTA's own notice
    # template, or the vendor NDR form of failure wording in subject and text with the
    # undelivered original returned in it.
    senderless = _header(msg, "From") == ""
    strong = bool(failed_header) or ((daemon or senderless) and (subject_fail or text_fail)) or (
        via_wording and _returns_original(msg)
    ) or template
    delayed = bool(_DELAY.search(subject)) or (
        bool(_DELAY.search(notice)) and not _has_permanent_words(notice)
    )
    recipients = failed_header or _notice_recipients(notice, _excluded(msg))
    status = _text_status(notice)
    if status and status.startswith("5"):
        delayed = False
    return BounceReport(
        action="delayed" if delayed else "failed",
        status=status,
        failed_recipients=_unique(recipients),
        original_message_id=_original_message_id(msg) or _message_id_in_text(notice, msg),
        diagnostic=_diagnostic_line(notice),
        standard=False,
        evidence=tuple(evidence),
        strong=strong,
    )


def _own_parts(msg: Message) -> Iterable[Message]:
    """The message's parts without those of attached messages: a customer who forwards a
    bounce as an attachment has not sent a delivery report."""
    yield msg
    if msg.get_content_type() in ("message/rfc822", "message/global"):
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _own_parts(part)


def _returns_original(msg: Message) -> bool:
    returned = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
    return any(part.get_content_type() in returned for part in msg.walk())


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(chunk.strip() + "\n") for chunk in re.split(r"\n\s*\n", text) if chunk]


def _field(block: Message, *names: str) -> str | None:
    for name in names:
        value = block.get(name)
        if value:
            return re.sub(r"\s+", " ", str(value)).strip()
    return None


def _recipient(block: Message) -> str:
    """The recipient as our mail named it: Original-Recipient when it is an Internet address
    (Final-Recipient may be a rewritten mailbox or an X.400 name), else Final-Recipient."""
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = (_field(block, name) or "").split(";", 1)[-1].strip()
        match = ADDRESS.search(value)
        if match:
            return _clean_address(match.group(0))
    return ""


def _clean_address(address: str) -> str:
    """Trim quoting and Exchange's ``SMTP=`` / ``smtp:`` prefixes from a matched address."""
    address = address.strip("'`.")
    prefix = re.match(r"(?i)(smtp|rfc822)[=:]", address)
    return address[prefix.end() :] if prefix else address


def _action(value: str, status: str) -> str:
    """RFC 3464 Action, tolerating "failure", "error" and trailing comments."""
    word = value.strip().split(" ")[0].lower() if value.strip() else ""
    if word in ("failed", "failure", "error", "fail"):
        return "failed"
    if word in ("delayed", "delivered", "relayed", "expanded"):
        return word
    if status.startswith("5"):
        return "failed"
    return "delayed" if status.startswith("4") else word


def _status_code(value: str) -> str:
    match = ENHANCED_STATUS.search(value)
    return match.group(1) if match else ""


def _clean_diagnostic(value: str) -> str:
    text = value.split(";", 1)[-1].strip() if ";" in value[:12] else value.strip()
    return text[:300]


def _text_status(text: str) -> str | None:
    for line in text.splitlines():
        if _FAIL_LINE.search(line) or re.search(r"\b[45]\d\d\b", line):
            match = FAILURE_STATUS.search(line)
            if match and not re.search(r"\d+\.\d+\.\d+\.\d+", line[max(0, match.start() - 1) :]):
                return match.group(1)
    return None


def _diagnostic_line(text: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip(" *-\t")
        if stripped and _FAIL_LINE.search(stripped) and not _HEADER_LINE.match(stripped):
            return stripped[:300]
    return None


def _has_permanent_words(text: str) -> bool:
    return bool(
        re.search(
            r"permanent|user unknown|no such user|does not exist|given up|giving up|"
            r"failed permanently|retry time(out)? (not reached|exceeded)|will not be retried",
            text,
            re.IGNORECASE,
        )
    )


def _is_daemon(name: str, address: str) -> bool:
    local = address.rpartition("@")[0] if "@" in address else address
    local = local.split("=")[-1]  # prvs=...=ndr@ (BATV tagged senders)
    quoted = local.strip('"') if local.startswith('"') else ""  # "System Administrator"@
    return (
        bool(_DAEMON_LOCAL.match(local))
        or bool(_DAEMON_LOCAL_WORDS.search(local))
        or bool(name and _DAEMON_NAME.search(name))
        or bool(quoted and _DAEMON_NAME.search(quoted))
    )


def _is_reply(subject: str) -> bool:
    return bool(re.match(r"\s*(re|aw|sv|r|rif)\s*(\[\d+\])?\s*:", subject, re.IGNORECASE))


def _is_reply_or_forward(subject: str) -> bool:
    """Starts with a reply or forward prefix ("Re:", "Fwd:", "WG:"...) or "[Fwd: ...]"."""
    return clean_subject(subject) != subject.strip() or bool(
        re.match(r"\s*\[\s*fwd?\s*:", subject, re.IGNORECASE)
    )


def _excluded(msg: Message) -> set[str]:
    """Addresses of the bounce itself (its sender and our mailbox), never failed recipients."""
    fields: list[str] = []
    for name in ("From", "To", "Cc", "Reply-To", "Return-Path", "Sender", "Delivered-To"):
        fields.extend(str(v) for v in msg.get_all(name) or [])
    return {a.lower() for _, a in getaddresses(fields) if a}


def _notice_recipients(notice: str, excluded: set[str]) -> list[str]:
    lines = notice.splitlines()
    candidates: list[str] = []
    strong: list[str] = []
    intro_until = -1
    for index, line in enumerate(lines):
        if _INTRO.search(line):
            intro_until = index + 6
        if _HEADER_LINE.match(line) and not _RECIPIENT_FIELD.match(line):
            continue
        for match in ADDRESS.finditer(line):
            address = _clean_address(match.group(0))
            lower = address.lower()
            local = lower.rpartition("@")[0]
            if lower in excluded or _DAEMON_LOCAL.match(local) or _in_url(line, match.start()):
                continue
            if re.search(r"\bmail from\s*<?$", line[: match.start()], re.IGNORECASE):
                continue  # "not accepting mail from x@y": that is the sender, not a recipient
            candidates.append(address)
            alone = re.fullmatch(
                r"[\s\"'<(]*" + re.escape(match.group(0)) + r"[\s\"'>),.:;]*", line
            )
            if (
                alone
                or _RECIPIENT_FIELD.match(line)
                or _FAIL_LINE.search(line.replace(match.group(0), " "))
                or index <= intro_until
            ):
                strong.append(address)
    if strong:
        return strong
    distinct = _unique(candidates)
    if len(distinct) == 1:
        return list(distinct)
    if distinct:
        return []
    # qmail-style notices quote only the original's To: line; with nothing better, that is
    # whom the mail failed to reach.
    quoted_to = [
        _clean_address(m.group(0))
        for line in lines
        if re.match(r"^\s*To\s*:", line, re.IGNORECASE)
        for m in ADDRESS.finditer(line)
    ]
    return [a for a in quoted_to if a.lower() not in excluded]


def _in_url(line: str, start: int) -> bool:
    head = line[:start]
    return bool(re.search(r"(https?://|mailto:)\S*$", head, re.IGNORECASE))


def _notice_text(msg: Message) -> str:
    """The human-readable notice, without the returned copy of the original."""
    text = ""
    for part in _top_level_parts(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain":
            text = _decode(part)
            break
        if ctype == "text/html" and not text:
            text = _html_to_text(_decode(part))
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if index > 0 and (_RETURNED.match(line) or re.match(r"^(Received|Return-Path):", line)):
            return "\n".join(lines[:index])
    return text


def _top_level_parts(msg: Message) -> list[Message]:
    """Leaf parts of ``msg`` outside any attached message/rfc822."""
    if not msg.is_multipart():
        return [msg]
    out: list[Message] = []
    for part in msg.get_payload():
        if not isinstance(part, Message):
            continue
        if part.get_content_type().startswith("message/"):
            continue
        out.extend(_top_level_parts(part) if part.is_multipart() else [part])
    return out


def _original_message_id(msg: Message) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                mid = _header(inner, "Message-ID")
                if mid:
                    return _bare(mid)
                text = inner.get_payload() if not inner.is_multipart() else ""
                found = MESSAGE_ID_LINE.search(text if isinstance(text, str) else "")
                if found:
                    return found.group(1)
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            headers = HeaderParser(policy=compat32).parsestr(_decode(part))
            mid = _header(headers, "Message-ID")
            if mid:
                return _bare(mid)
    return None


def _message_id_in_text(notice: str, msg: Message) -> str | None:
    """A Message-ID header line quoted in the text (returned headers after the notice)."""
    texts = [_decode(p) for p in _top_level_parts(msg) if p.get_content_maintype() == "text"]
    for text in texts or [notice]:
        found = MESSAGE_ID_LINE.search(text)
        if found:
            return found.group(1)
    return None


def _bare(value: str) -> str | None:
    """A Message-ID as the parser keeps it: without angle brackets."""
    match = re.search(r"<([^<>]+)>", value)
    bare = (match.group(1) if match else value).strip().strip("<>")
    return bare or None


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def _html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).replace("\xa0", " ")


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except (UnicodeError, LookupError, email.errors.HeaderParseError):
        return str(value)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return tuple(seen.values())
