"""What OTOBO's / Znuny's invoker sends to ``/hooks/otobo/<account>``, and how it is checked.

The web service the bridge ships (contrib/otobo/PostmasterBridge.yml) has a Requester with one
invoker on the event ``TicketDynamicFieldUpdate_PECReply`` (with a condition: the field is not
empty). OTOBO's ``Generic::PassThrough`` (Znuny: ``Ticket::Generic``) invoker posts the event
data as JSON: ``{"Event": ..., "TicketID": "123", "FieldName": "PECReply", ...}``
(RotherOSS/otobo ``Kernel/GenericInterface/Event/Handler.pm``); the REST requester puts the
field's new value, the account, into the URL (``Controller: /hooks/otobo/:Value``,
``Kernel/GenericInterface/Transport/HTTP/REST.pm`` replaces ``:Name`` placeholders from the data).

Authentication. The invoker cannot sign: OTOBO's REST requester offers only static credentials
(``Authentication: BasicAuth`` in OTOBO and Znuny, ``AdditionalHeaders`` in OTOBO 10.1+), no
HMAC of the body and no timestamp. So the shared secret (``service.signing_secret``) travels as
the Basic-auth password, or as an ``X-PMB-Token`` header, over TLS, and is compared in constant
time. What a stolen secret allows is bounded: the request is only a signal; the worker reads
the ticket itself through TicketGet with its own session and sends only when ``PECReply`` on the
ticket names that account, and only the agent's latest article (once: the queue remembers which
article went out).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.outbound.webhook import Delivery, HookContext, Refused

#: OTOBO repeats a failed invocation (its scheduler); within this window a byte-identical
#: delivery is the same request, later it is the agent asking again.
OTOBO_REPLAY_WINDOW = 600


class OtoboInvokerHook:
    """OTOBO's / Znuny's side of the webhook (connector.outbound.webhook.HostHook).
    ``ticket_number``: TicketID -> TicketNumber (the id the bridge knows tickets by), for an
    invoker that sends only the TicketID."""

    route = "otobo"

    def __init__(self, ticket_number: Callable[[int], str | None] | None = None) -> None:
        self._ticket_number = ticket_number

    def verify(self, environ: Mapping[str, Any], body: bytes,
               context: HookContext) -> str | None:
        if authentic(environ, context.secrets):
            return None
        return "no matching shared secret (otobo invoker)"

    def read(self, environ: Mapping[str, Any], body: bytes,
             context: HookContext) -> Delivery | Refused:
        hook = parse_hook(body)
        if hook.problem is not None:
            return Refused(hook.problem)
        number = hook.ticket_number
        if number is None and hook.ticket_id is not None and self._ticket_number is not None:
            number = self._ticket_number(hook.ticket_id)
        if number is None:
            return Refused("unknown ticket", f"no ticket with TicketID {hook.ticket_id}")
        # The same request: the same bytes within one replay window (the invoker sends no
        # delivery id); the key is the one the bridge has always used for it.
        window = str(int(context.now // OTOBO_REPLAY_WINDOW)).encode("ascii")
        digest = hashlib.sha256(window + b"\x00" + body).hexdigest()
        return Delivery(number, f"otobo:{digest}",
                        {"ticket_id": number, "account": context.account, "event": hook.event},
                        detail=f"(otobo {hook.event or 'event'})")


@dataclass(frozen=True)
class InvokerRequest:
    """The ticket a delivery names: its TicketNumber when the invoker sends ticket data
    (Znuny's ``Ticket::Generic``), else its internal TicketID; ``problem`` for a 400."""

    ticket_number: str | None = None
    ticket_id: int | None = None  # OTOBO's internal TicketID
    event: str = ""
    problem: str | None = None


def presented_secret(environ: Mapping[str, Any]) -> str | None:
    """The secret the request carries: ``X-PMB-Token``, or the Basic-auth password."""
    token = environ.get("HTTP_X_PMB_TOKEN")
    if isinstance(token, str) and token.strip():
        return token.strip()
    auth = str(environ.get("HTTP_AUTHORIZATION") or "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


def authentic(environ: Mapping[str, Any], secrets: Iterable[str]) -> bool:
    presented = presented_secret(environ)
    if not presented:
        return False
    given = presented.encode("utf-8")
    # Every secret is compared (no early exit), each in constant time.
    results = [hmac.compare_digest(given, s.encode("utf-8")) for s in secrets if s]
    return any(results)


def _positive(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) \
        else ""
    if text.isascii() and text.isdigit() and 0 < len(text) <= 19:
        return int(text)
    return None


def parse_hook(body: bytes) -> InvokerRequest:
    try:
        data: Any = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return InvokerRequest(problem="the body is not JSON")
    if not isinstance(data, dict):
        return InvokerRequest(problem="the body is not a JSON object")
    given_ticket = data.get("Ticket")
    ticket: dict[str, Any] = given_ticket if isinstance(given_ticket, dict) else {}
    given = _positive(data.get("TicketNumber") or ticket.get("TicketNumber"))
    number = str(given) if given is not None else None
    internal = _positive(data.get("TicketID") or ticket.get("TicketID"))
    event = str(data.get("Event") or "")[:100]
    if number is None and internal is None:
        return InvokerRequest(event=event, problem="TicketID missing")
    return InvokerRequest(number, internal, event)
