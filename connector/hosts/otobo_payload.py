"""Pure request building for OTOBO / Znuny: control headers, articles, attachments.

The filters speak OTOBO's own PostMaster language (``X-OTOBO-Queue``, ``X-OTOBO-DynamicField-*``
...; RotherOSS/otobo ``Kernel/System/PostMaster/NewTicket.pm`` and ``FollowUp.pm`` read the same
headers from a trusted mail). Here those values become the GenericInterface's ``Ticket``,
``Article`` and ``DynamicField`` parameters (``Kernel/GenericInterface/Operation/Ticket/
TicketCreate.pm`` and ``TicketUpdate.pm``), natively: a queue is a queue name, a priority is
``"3 normal"``, a state is ``"pending reminder"``, no mapping table in between.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from connector.filters.controls import canonical_control
from connector.hosts.base import Translation, Upload

#: Zendesk-style words the account's defaults may use (``new_ticket.status``,
#: ``follow_up.status``) -> OTOBO's default state and priority names; ``host.otobo.states`` /
#: ``priorities`` override them. OTOBO's own names pass through unchanged.
DEFAULT_STATES: Mapping[str, str] = {
    "new": "new", "open": "open", "pending": "pending reminder", "hold": "pending reminder",
    "solved": "closed successful",
}
DEFAULT_PRIORITIES: Mapping[str, str] = {
    "low": "2 low", "normal": "3 normal", "high": "4 high", "urgent": "5 very high",
}

#: Control header (canonical, without ``X-OTOBO-``) -> TicketCreate ``Ticket`` parameter.
NEW_TICKET_FIELDS: Mapping[str, str] = {
    "Queue": "Queue", "Priority": "Priority", "State": "State", "Type": "Type",
    "Service": "Service", "SLA": "SLA", "Owner": "Owner", "OwnerID": "OwnerID",
    "Responsible": "Responsible", "ResponsibleID": "ResponsibleID", "Title": "Title",
    "CustomerNo": "CustomerID", "CustomerUser": "CustomerUser",
}
#: ``X-OTOBO-FollowUp-*`` -> TicketUpdate ``Ticket`` parameter (FollowUp.pm's set).
FOLLOW_UP_FIELDS: Mapping[str, str] = {
    "Queue": "Queue", "Priority": "Priority", "State": "State", "Type": "Type",
    "Service": "Service", "SLA": "SLA", "Owner": "Owner", "OwnerID": "OwnerID",
    "Responsible": "Responsible", "ResponsibleID": "ResponsibleID", "Title": "Title",
}
_OTOBO = "X-OTOBO-"
#: X-Bridge-* controls that are ticket attributes elsewhere (Zendesk group, brand) only.
_NO_OTOBO_ATTRIBUTE = ("X-Bridge-Group", "X-Bridge-Brand")
_PENDING_DIFF = re.compile(r"^\+?(\d+)\s*([mhd]?)$", re.IGNORECASE)
_PENDING_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::\d{2})?$")
_MINUTES = {"": 1, "m": 1, "h": 60, "d": 1440}


@dataclass(frozen=True)
class NativeControls:
    """What the control headers ask of one TicketCreate or TicketUpdate."""

    ticket: Mapping[str, object]
    article: Mapping[str, object]
    dynamic_fields: Mapping[str, str]
    keep_state: bool = False


def pending_time(value: str) -> dict[str, int] | None:
    """``X-OTOBO-State-PendingTime`` as TicketCreate's ``PendingTime``: a date
    ``2026-12-01 10:00`` (Year/Month/Day/Hour/Minute) or ``+3d`` / ``+90`` (Diff, minutes),
    the two forms PostMaster accepts."""
    text = value.strip()
    if m := _PENDING_DATE.match(text):
        year, month, day, hour, minute = (int(g) for g in m.groups())
        return {"Year": year, "Month": month, "Day": day, "Hour": hour, "Minute": minute}
    if m := _PENDING_DIFF.match(text):
        return {"Diff": int(m.group(1)) * _MINUTES[m.group(2).lower()]}
    return None


def native_controls(controls: Iterable[tuple[str, str]], *, follow_up: bool) -> NativeControls:
    """The controls that apply to a new ticket (``follow_up`` False) or to a follow-up article
    (the ``FollowUp-`` twins), as GenericInterface parameters."""
    ticket: dict[str, object] = {}
    article: dict[str, object] = {}
    fields: dict[str, str] = {}
    keep_state = False
    table = FOLLOW_UP_FIELDS if follow_up else NEW_TICKET_FIELDS
    for raw_name, value in controls:
        name = canonical_control(raw_name)
        if name is None or not name.startswith(_OTOBO):
            continue
        rest = name[len(_OTOBO):]
        if follow_up:
            if not rest.startswith("FollowUp-"):
                continue
            rest = rest[len("FollowUp-"):]
        elif rest.startswith("FollowUp-"):
            continue
        if rest.startswith("DynamicField-"):
            fields[rest[len("DynamicField-"):]] = value
        elif rest in table:
            ticket[table[rest]] = value
        elif rest == "State-PendingTime" and (when := pending_time(value)) is not None:
            ticket["PendingTime"] = when
        elif rest == "SenderType":
            article["SenderType"] = value.strip().lower()
        elif rest == "IsVisibleForCustomer":
            article["IsVisibleForCustomer"] = 1 if value.strip() == "1" else 0
        elif rest == "State-Keep" and value.strip().lower() in ("yes", "true", "1"):
            keep_state = True
    return NativeControls(ticket, article, fields, keep_state)


@dataclass(frozen=True)
class OtoboVocabulary:
    """The control vocabulary on OTOBO/Znuny: native, so nothing is a problem here (OTOBO
    itself refuses a queue or state it does not have, with a typed error). Only the account's
    Zendesk-style words for states and priorities go through ``states``/``priorities``."""

    states: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATES))
    priorities: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    keeps_tags: bool = False  # OTOBO has no tags; a tags_field (text dynamic field) keeps them

    def native(self, defaults: Iterable[tuple[str, object]],
               controls: Iterable[tuple[str, object]], *, follow_up: bool) -> NativeControls:
        """``defaults`` then ``controls`` as GenericInterface parameters."""
        first = native_controls(_texts(defaults), follow_up=follow_up)
        then = native_controls(_texts(controls), follow_up=follow_up)
        ticket = {**first.ticket, **then.ticket}
        for key, table in (("State", self.states), ("Priority", self.priorities)):
            if key in ticket:
                ticket[key] = table.get(str(ticket[key]), ticket[key])
        return NativeControls(ticket, {**first.article, **then.article},
                              {**first.dynamic_fields, **then.dynamic_fields},
                              first.keep_state or then.keep_state)

    def translate(self, defaults: Iterable[tuple[str, object]],
                  controls: Iterable[tuple[str, object]], *,
                  follow_up: bool = False) -> Translation:
        controls = list(controls)
        native = self.native(defaults, controls, follow_up=follow_up)
        # Zendesk's group and brand have no ticket attribute here (an OTOBO group is a
        # permission group of queues): said, not silently dropped.
        named = [canonical_control(name) for name, value in controls if str(value).strip()]
        problems = tuple(f"{name} has no OTOBO/Znuny equivalent (route with X-OTOBO-Queue)"
                         for name in named if name in _NO_OTOBO_ATTRIBUTE and not follow_up)
        return Translation({"Ticket": dict(native.ticket), "Article": dict(native.article),
                            "DynamicField": dict(native.dynamic_fields)}, problems)


def _texts(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, str]]:
    return [(name, value if isinstance(value, str) else str(value)) for name, value in pairs]


def base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def human_size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB" if size >= 1_048_576 else f"{size / 1024:.0f} kB"


def fit_attachments(uploads: Iterable[Upload], budget: int) -> tuple[list[Upload], list[Upload]]:
    """The uploads that fit in ``budget`` bytes of base64 (in order, each taken when it fits)
    and those left out. Each attachment costs its base64 plus its JSON keys and names."""
    kept: list[Upload] = []
    left: list[Upload] = []
    used = 0
    for upload in uploads:
        cost = base64_size(len(upload.data)) + len(upload.filename.encode()) * 2 + 120
        if used + cost <= budget:
            kept.append(upload)
            used += cost
        else:
            left.append(upload)
    return kept, left


def attachment_entries(uploads: Iterable[Upload]) -> list[dict[str, str]]:
    """GenericInterface ``Attachment`` items (``Common.pm``, ``CreateAttachment``): Content in
    base64 without line breaks, ContentType, Filename; inline images keep their Content-ID."""
    out: list[dict[str, str]] = []
    for upload in uploads:
        item = {"Content": base64.b64encode(upload.data).decode("ascii"),
                "ContentType": upload.content_type, "Filename": upload.filename}
        if upload.content_id:
            item["ContentID"] = f"<{upload.content_id.strip('<>')}>"
            item["Disposition"] = "inline"
        out.append(item)
    return out


def left_out_note(left: Iterable[Upload], max_length: int) -> str:
    """The line the article carries for attachments the web service could not take."""
    names = ", ".join(f"{u.filename} ({human_size(len(u.data))})" for u in left)
    return (f"[postmaster-bridge: not attached, larger than the web service accepts "
            f"(MaxLength {human_size(max_length)}): {names}. The original mail is kept in "
            f"the bridge's archive.]")


def dynamic_field_list(fields: Mapping[str, object]) -> list[dict[str, object]]:
    return [{"Name": name, "Value": value} for name, value in fields.items()]


def summarized(request: Mapping[str, object]) -> dict[str, object]:
    """A GenericInterface request as the dry run prints it: bodies as length, hash and preview,
    attachments as name, type, size and hash, never their bytes."""
    import hashlib

    out: dict[str, object] = dict(request)
    article = request.get("Article")
    if isinstance(article, Mapping):
        body = str(article.get("Body") or "")
        out["Article"] = {**article, "Body": {
            "chars": len(body), "sha256": hashlib.sha256(body.encode("utf-8", "surrogatepass"))
            .hexdigest(), "preview": " ".join(body.split())[:120]}}
    files = request.get("Attachment")
    if isinstance(files, list):
        summary = []
        for item in files:
            data = base64.b64decode(str(item.get("Content") or ""))
            summary.append({"Filename": item.get("Filename"),
                            "ContentType": item.get("ContentType"), "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        out["Attachment"] = summary
    return out
