"""Threading keys of a PEC message (pec-format.md section 7).

M is the sender's own Message-ID (X-Riferimento-Message-ID, daticert msgid); I is the provider's
identificativo (daticert, and the Message-ID of the envelope and of the postacert the recipient
sees). Replies quote either, so both are keys. Disagreements are notes, never errors: anonymised
or rewritten messages disagree in practice, and daticert is preferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from connector.pec.classify import PecKind
from connector.pec.daticert import Daticert
from connector.pec.ids import msgid_list, normalize_msgid, unique
from connector.pec.parts import header_text


@dataclass(frozen=True)
class ThreadIds:
    msgid: str | None  # M, bare
    identificativo: str | None  # I, bare as daticert writes it
    thread_keys: tuple[str, ...]
    referenced_ids: tuple[str, ...]
    notes: tuple[str, ...] = ()


def thread_ids(kind: PecKind, *, message_id: str | None, riferimento: str | None,
               daticert: Daticert | None, inner: Message | None) -> ThreadIds:
    """Keys for a PEC message. Receipts: the keys of the message they certify (their own
    Message-ID is not one). Envelopes: I and M of the delivered message, and the ids the
    original answers (its In-Reply-To and References) as ``referenced_ids``."""
    notes: list[str] = []
    daticert_msgid = normalize_msgid(daticert.msgid) if daticert else None
    if riferimento and daticert_msgid and riferimento != daticert_msgid:
        notes.append(f"X-Riferimento-Message-ID {riferimento} differs from daticert msgid "
                     f"{daticert_msgid}: both kept as keys, daticert preferred")
    msgid = daticert_msgid or riferimento

    identificativo = daticert.identificativo if daticert else None
    if identificativo is None and kind is PecKind.TRANSPORT and message_id:
        identificativo = message_id
        notes.append("identificativo taken from the envelope Message-ID")
    ident_key = normalize_msgid(identificativo)
    if kind is PecKind.TRANSPORT and ident_key and message_id and ident_key != message_id:
        notes.append(f"envelope Message-ID {message_id} differs from identificativo {ident_key}")

    if kind is PecKind.RECEIPT:
        keys = unique((daticert_msgid, riferimento, ident_key))
        return ThreadIds(msgid, identificativo, keys, keys, tuple(notes))

    inner_id = inner_riferimento = None
    answered: tuple[str, ...] = ()
    if inner is not None:
        inner_id = normalize_msgid(header_text(inner, "Message-ID"))
        inner_riferimento = normalize_msgid(header_text(inner, "X-Riferimento-Message-ID"))
        answered = answered_ids(inner)
        if inner_riferimento and msgid and inner_riferimento != msgid:
            notes.append(f"postacert X-Riferimento-Message-ID {inner_riferimento} differs from "
                         f"{msgid}: both kept as keys")
    keys = unique((ident_key, message_id, inner_id, daticert_msgid, riferimento,
                   inner_riferimento))
    referenced = tuple(i for i in answered if i not in keys)
    return ThreadIds(msgid, identificativo, keys, referenced, tuple(notes))


def answered_ids(headers: Message) -> tuple[str, ...]:
    """In-Reply-To then References, nearest first."""
    in_reply_to = msgid_list(header_text(headers, "In-Reply-To"))
    references = msgid_list(" ".join(str(v) for v in headers.get_all("References") or []))
    return unique((*in_reply_to, *reversed(references)))
