"""The Zendesk objects of the PEC reply channel: what they should look like, how to tell ours
from others' (a marker in the description), and how to compare them with what Zendesk has.

Pure: no I/O. ``install`` reads Zendesk, compares with these, and writes the difference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from connector.config import account_tag
from connector.decide.pec import TAG_PEC
from connector.outbound.settings import OutboundSettings, ServiceSettings

MARKER = "managed-by=postmaster-bridge"
WEBHOOK_NAME_PREFIX = "postmaster-bridge"
_MARKER_RE = re.compile(r"\[managed-by=postmaster-bridge kind=([a-z_]+)(?: account=([^\]\s]+))?\]")
PLACEHOLDER_RE = re.compile(r"\{\{pmb:([a-z_]+)(?::([^}]+))?\}\}")
#: Trigger actions that e-mail the requester (Zendesk's default notification triggers).
_REQUESTER_TARGETS = frozenset({"requester_id", "requester_and_ccs"})

KIND_WEBHOOK = "webhook"
KIND_CATEGORY = "trigger_category"
KIND_TRIGGER = "trigger"
KIND_PUBLIC_REPLY = "public_reply_trigger"
#: Both are Zendesk triggers.
TRIGGER_KINDS = (KIND_TRIGGER, KIND_PUBLIC_REPLY)
#: Zendesk's "Update via" value for the Web service (API): the bridge's own public comments
#: (a customer's follow-up, written as the customer through the API) must not be sent back.
VIA_API = "5"
KIND_MACRO = "macro"
KIND_NOTIFICATION = "notification_trigger"
KIND_SECRET = "signing_secret"


def marker(kind: str, account: str | None = None) -> str:
    return f"[{MARKER} kind={kind}" + (f" account={account}]" if account else "]")


def read_marker(description: Any) -> tuple[str, str | None] | None:
    match = _MARKER_RE.search(str(description or ""))
    return (match.group(1), match.group(2)) if match else None


def webhook_placeholder(account: str) -> str:
    return f"{{{{pmb:webhook:{account}}}}}"


CATEGORY_PLACEHOLDER = "{{pmb:category}}"


# -- what we want -------------------------------------------------------------------------------

def desired_webhook(settings: OutboundSettings, service: ServiceSettings) -> dict[str, Any]:
    return {
        "name": f"{WEBHOOK_NAME_PREFIX} PEC reply ({settings.account})",
        "description": f"PEC replies sent by postmaster-bridge from {settings.from_address}. "
                       + marker(KIND_WEBHOOK, settings.account),
        "endpoint": service.endpoint(settings.account),
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": ["conditional_ticket_events"],
    }


def webhook_body_template(settings: OutboundSettings) -> str:
    """The JSON body the trigger sends. Zendesk fills the placeholders; the bridge reads only
    the ticket id from it and renders the message from the API itself (kept for the record)."""
    return json.dumps({"ticket_id": "{{ticket.id}}", "account": settings.account, "v": 1,
                       "subject": settings.subject_template,
                       "message": settings.message_template}, ensure_ascii=False)


def desired_trigger(settings: OutboundSettings, service: ServiceSettings, webhook_id: str,
                    category_id: str) -> dict[str, Any]:
    return {
        "title": f"Reply by PEC Connector [{settings.account}]",
        "description": f"Sends the ticket's reply by PEC from {settings.from_address} "
                       "(postmaster-bridge). Edit the templates in the bridge configuration "
                       "and run install again. " + marker(KIND_TRIGGER, settings.account),
        "active": True,
        "category_id": category_id,
        "conditions": {
            "all": [{"field": "current_tags", "operator": "includes",
                     "value": settings.reply_tag}],
            "any": [],
        },
        "actions": [
            {"field": "notification_webhook",
             "value": [webhook_id, webhook_body_template(settings)]},
            {"field": "remove_tags", "value": settings.reply_tag},
            {"field": "current_tags", "value": f"{settings.pending_tag} {service.suppress_tag}"},
        ],
    }


def desired_public_reply_trigger(settings: OutboundSettings, service: ServiceSettings,
                                 webhook_id: str, category_id: str) -> dict[str, Any]:
    """Every public comment an agent adds to a PEC ticket of this account is sent by PEC, as
    the channel app does: tickets the account opened from PEC mail carry its account tag and
    ``pec_connector`` (which the notification triggers' suppression condition also reads, so
    Zendesk itself does not mail the requester). The bridge's own updates come through the API
    and are left out; replies from the agent interface, mobile apps and agents' e-mail count."""
    return {
        "title": f"Public reply by PEC [{settings.account}]",
        "description": f"A public reply by an agent on a PEC ticket of {settings.account} is sent "
                       f"by PEC from {settings.from_address} (postmaster-bridge). "
                       + marker(KIND_PUBLIC_REPLY, settings.account),
        "active": True,
        "category_id": category_id,
        "conditions": {
            "all": [
                {"field": "update_type", "operator": "is", "value": "Change"},
                {"field": "comment_is_public", "operator": "is", "value": "true"},
                {"field": "role", "operator": "is", "value": "agent"},
                {"field": "current_via_id", "operator": "is_not", "value": VIA_API},
                {"field": "current_tags", "operator": "includes",
                 "value": account_tag(settings.account)},
                {"field": "current_tags", "operator": "includes", "value": TAG_PEC},
            ],
            "any": [],
        },
        "actions": [
            {"field": "notification_webhook",
             "value": [webhook_id, webhook_body_template(settings)]},
            {"field": "current_tags", "value": f"{settings.pending_tag} {service.suppress_tag}"},
        ],
    }


def desired_macro(settings: OutboundSettings, service: ServiceSettings) -> dict[str, Any]:
    return {
        "title": f"Reply by PEC ({settings.account})",
        "description": f"Send this ticket's reply by PEC from {settings.from_address}. "
                       + marker(KIND_MACRO, settings.account),
        "active": True,
        "actions": [{"field": "current_tags",
                     "value": f"{settings.reply_tag} {service.suppress_tag}"}],
    }


def suppression_condition(service: ServiceSettings) -> dict[str, Any]:
    return {"field": "current_tags", "operator": "not_includes", "value": service.suppress_tag}


# -- comparing ---------------------------------------------------------------------------------

def _conditions(value: Any) -> dict[str, list[tuple[str, str, str]]]:
    value = value if isinstance(value, Mapping) else {}

    def rows(items: Any) -> list[tuple[str, str, str]]:
        return [(str(c.get("field")), str(c.get("operator")), json.dumps(c.get("value")))
                for c in items or [] if isinstance(c, Mapping)]

    return {"all": rows(value.get("all")), "any": rows(value.get("any"))}


def _actions(value: Any) -> list[tuple[str, str]]:
    out = []
    for action in value or []:
        if not isinstance(action, Mapping):
            continue
        item = action.get("value")
        if action.get("field") == "notification_webhook" and isinstance(item, list) \
                and len(item) == 2:
            try:
                item = [str(item[0]), json.loads(item[1])]
            except (TypeError, ValueError):
                item = [str(item[0]), item[1]]
        elif isinstance(item, str):
            item = " ".join(item.split())
        out.append((str(action.get("field")), json.dumps(item, sort_keys=True)))
    return out


def trigger_differences(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    diffs = [name for name in ("title", "description", "active")
             if current.get(name) != wanted.get(name)]
    if str(current.get("category_id") or "") != str(wanted.get("category_id") or ""):
        diffs.append("category")
    if _conditions(current.get("conditions")) != _conditions(wanted.get("conditions")):
        diffs.append("conditions")
    if _actions(current.get("actions")) != _actions(wanted.get("actions")):
        diffs.append("actions")
    return diffs


def macro_differences(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    diffs = [name for name in ("title", "description", "active")
             if (current.get(name) or None) != (wanted.get(name) or None)]
    if _actions(current.get("actions")) != _actions(wanted.get("actions")):
        diffs.append("actions")
    return diffs


def webhook_differences(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    diffs = [name for name in ("name", "description", "endpoint", "http_method",
                               "request_format", "status") if current.get(name) != wanted[name]]
    if sorted(current.get("subscriptions") or []) != sorted(wanted["subscriptions"]):
        diffs.append("subscriptions")
    return diffs


def notifies_requester(trigger: Mapping[str, Any]) -> bool:
    for action in trigger.get("actions") or []:
        if not isinstance(action, Mapping) or action.get("field") != "notification_user":
            continue
        value = action.get("value")
        target = value[0] if isinstance(value, list) and value else value
        if str(target) in _REQUESTER_TARGETS:
            return True
    return False


def _condition_key(condition: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(condition.get("field")), str(condition.get("operator")),
            json.dumps(condition.get("value")))


def has_condition(trigger: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    return _condition_key(condition) in _conditions(trigger.get("conditions"))["all"]


def with_condition(trigger: Mapping[str, Any], condition: Mapping[str, Any]) -> dict[str, Any]:
    """The update body of ``trigger`` with ``condition`` added to its "all" conditions.

    Zendesk replaces conditions and actions together on update, so both are sent whole.
    """
    conditions = trigger.get("conditions") or {}
    return {"title": trigger.get("title"),
            "conditions": {"all": [*(conditions.get("all") or []), dict(condition)],
                           "any": list(conditions.get("any") or [])},
            "actions": list(trigger.get("actions") or [])}


def without_condition(trigger: Mapping[str, Any], condition: Mapping[str, Any]) -> dict[str, Any]:
    """The update body of ``trigger`` with ``condition`` removed (exactly that one)."""
    conditions = trigger.get("conditions") or {}
    kept = [c for c in conditions.get("all") or []
            if _condition_key(c) != _condition_key(condition)]
    return {"title": trigger.get("title"),
            "conditions": {"all": kept, "any": list(conditions.get("any") or [])},
            "actions": list(trigger.get("actions") or [])}
