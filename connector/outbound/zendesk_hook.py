"""What Zendesk's trigger sends to ``/hooks/zendesk/<account>``, and how it is checked.

Every request is authenticated by Zendesk's webhook signature (HMAC-SHA256 over timestamp and
body, connector.outbound.zendesk_signature) within ``service.timestamp_tolerance``. Zendesk
signs the body, not the URL: the account that sends is the one the signed body names
(``install`` writes it into each account's trigger), and the URL must agree. Duplicates (the
same invocation id, or the same signed delivery replayed) are the same request.

The JSON body is read leniently: Zendesk fills the trigger's template without always
escaping quotes in placeholder output, so a body that does not parse still yields its ticket
id when the signature proves it is Zendesk's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.outbound.webhook import Delivery, HookContext, Refused
from connector.outbound.zendesk_signature import delivery_digest, verify

_TICKET_ID = re.compile(r'"ticket_id"\s*:\s*"?\s*(\d+)')
_ACCOUNT = re.compile(r'"account"\s*:\s*"([^"\\]{0,100})"')
_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_INVOCATION = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
#: What a job keeps of the trigger's body.
_KEPT = ("v", "ticket_id", "subject", "message", "account")

#: Zendesk ticket ids are positive 64-bit integers; anything longer is not an id.
MAX_TICKET_ID = 2**63 - 1


class ZendeskHook:
    """Zendesk's side of the webhook (connector.outbound.webhook.HostHook)."""

    route = "zendesk"

    def verify(self, environ: Mapping[str, Any], body: bytes,
               context: HookContext) -> str | None:
        verdict = verify(list(context.secrets),
                         environ.get("HTTP_X_ZENDESK_WEBHOOK_SIGNATURE"),
                         environ.get("HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP"), body,
                         now=datetime.fromtimestamp(context.now, UTC),
                         tolerance=context.service.timestamp_tolerance)
        return None if verdict else verdict.reason

    def read(self, environ: Mapping[str, Any], body: bytes,
             context: HookContext) -> Delivery | Refused:
        request = parse_request(body)
        if request.problem is not None:
            return Refused(request.problem, f"signed request refused: {request.problem}")
        if request.account != context.account:
            return Refused("account mismatch",
                           f"the signed body names account {request.account!r}")
        assert request.ticket_id is not None
        timestamp = str(environ.get("HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP"))
        invocation = str(environ.get("HTTP_X_ZENDESK_WEBHOOK_INVOCATION_ID") or "").strip()
        digest = delivery_digest(timestamp, body)
        key = f"inv:{invocation}" if _INVOCATION.match(invocation) else f"sig:{digest}"
        record: dict[str, Any] = {k: v for k, v in request.payload.items() if k in _KEPT
                                  and isinstance(v, str | int | float | bool)}
        record["invocation_id"] = invocation or None
        record["webhook_id"] = environ.get("HTTP_X_ZENDESK_WEBHOOK_ID")
        return Delivery(request.ticket_id, key, record, digest,
                        f"invocation={invocation or '-'}")


@dataclass(frozen=True)
class HookRequest:
    """What a signed delivery asks for; ``problem`` says why it cannot be queued (a 400)."""

    ticket_id: str | None = None
    account: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


def parse_request(body: bytes) -> HookRequest:
    """Ticket id, account and the JSON object of a delivery; lenient when the JSON is broken
    (Zendesk does not always escape placeholder output), strict about the values."""
    text = body.decode("utf-8", "replace")
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        id_match, account_match = _TICKET_ID.search(text), _ACCOUNT.search(text)
        return _checked(id_match.group(1) if id_match else None,
                        account_match.group(1) if account_match else None, {})
    if not isinstance(data, dict):
        return HookRequest(problem="the body is not a JSON object")
    return _checked(data.get("ticket_id"), data.get("account"), data)


def _checked(raw_id: Any, raw_account: Any, payload: dict[str, Any]) -> HookRequest:
    if raw_id is None:
        return HookRequest(problem="ticket_id missing")
    text = str(raw_id).strip() if isinstance(raw_id, str | int) and \
        not isinstance(raw_id, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or \
            not 0 < int(text) <= MAX_TICKET_ID:
        return HookRequest(problem="ticket_id is not a ticket id")
    if not isinstance(raw_account, str) or not _ACCOUNT_NAME.match(raw_account):
        return HookRequest(problem="account missing or invalid")
    return HookRequest(str(int(text)), raw_account, payload)
