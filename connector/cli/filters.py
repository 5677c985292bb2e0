"""``filters check`` and ``filters test``: the postmaster filters, changing nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from connector.cli.common import account_for, load, readonly_store
from connector.errors import HostError
from connector.exitcodes import EX_OK, EX_UNAVAILABLE
from connector.hosts.unavailable import UnavailableHost


def cmd_filters_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.filters import filters_check
    from connector.service.filtering import filter_dirs, filter_settings, host_check

    config = load(args, secrets=False)  # nothing here logs in anywhere
    _, settings = filter_settings(config)
    dirs = [Path(p) for p in args.dirs] if args.dirs else filter_dirs(config, settings)
    if not dirs:
        print("no filter directories configured (filters.filter_dirs)", file=out)
        return EX_OK
    return filters_check(dirs, out=out, host_check=host_check(config))


def cmd_filters_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Understand one mail exactly as ``run`` does (parse, PEC, classifiers, filters,
    requester, decision) and print the trace ``run`` records; nothing is written anywhere."""
    from connector.filters import filters_test, load_chain
    from connector.hosts.factory import make_host
    from connector.hosts.vocabulary import vocabulary_for
    from connector.service.filtering import StoreLookups, filter_dirs, filter_settings
    from connector.understand import Rules, understand

    config = load(args, secrets=False)  # asks the helpdesk only if its secret is at hand
    account = account_for(config, args.account)
    _, settings = filter_settings(config)
    rules = Rules(load_chain(filter_dirs(config, settings)), settings, config.host)
    raw = Path(args.mail).read_bytes()
    # Read-only: the ledger is opened only if it exists, the host is only read.
    store = readonly_store(config)
    missing = [m for m in config.missing_secrets if m.startswith("host.")]
    host = UnavailableHost(missing[0], vocabulary_for(config.host)) if missing \
        else make_host(config.host, out=sys.stderr)

    otobo = _otobo_builder(config.host, host)

    def trace_of(mail: bytes):  # noqa: ANN202
        understood = understand(mail, account, rules, StoreLookups(store, host),
                                evaluate_all=True)
        if not isinstance(understood.trace.get("decision"), dict):
            return understood.trace
        shown = dict(understood.trace["decision"])
        request = _otobo_request(otobo, understood.decision, understood.content)
        if request is not None:
            # OTOBO/Znuny: the GenericInterface call as it would be sent, controls landed.
            shown["host_request"] = request
        return {**understood.trace, "decision": shown}

    try:
        return filters_test(raw, understand=trace_of, as_json=args.json, out=out)
    except HostError as exc:
        print(f"the helpdesk could not be asked: {exc}", file=err)
        return EX_UNAVAILABLE
    finally:
        store.close()


def _otobo_builder(config: Any, host: Any) -> Any:
    """An OTOBO/Znuny adapter to build requests with (no I/O) when the host is one, also
    when its secret is not at hand; None for other hosts."""
    from connector.hosts.otobo import OtoboAdapter, OtoboSettings

    found = host if isinstance(host, OtoboAdapter) else getattr(host, "_reader", None)
    if isinstance(found, OtoboAdapter):
        return found
    if config.otobo is not None:
        return OtoboAdapter(OtoboSettings.from_host_config(config))
    return None


def _otobo_request(otobo: Any, decision: Any, message: Any) -> dict[str, Any] | None:
    """The GenericInterface call an OTOBO/Znuny host would get for this decision, as sent
    (bodies and files summarised), so ``filters test`` shows the X-OTOBO controls landing."""
    from connector.decide.decision import Action
    from connector.hosts.base import Comment, NewTicket
    from connector.hosts.otobo_payload import summarized

    if otobo is None or decision.action == Action.IGNORE:
        return None
    text = message.text_body or ""
    if decision.action == Action.NEW_TICKET and decision.requester is not None:
        ticket = NewTicket(
            subject=decision.subject, requester_email=decision.requester.email,
            requester_name=decision.requester.name or decision.requester.email,
            body_text=text, public=decision.public, tags=decision.tags,
            email_ccs=decision.email_ccs, defaults=decision.defaults,
            controls=decision.controls,
            external_id=f"pmb-{message.dedupe_key}"[:64])
        return {"method": "POST", "path": "/Ticket", "operation": "TicketCreate",
                "body": summarized(otobo.create_request(ticket))}
    if decision.ticket_id is None:
        return None
    comment = Comment(ticket_id=decision.ticket_id, body_text=text, public=decision.public,
                      author_email=message.from_.email if message.from_ else None,
                      subject=message.subject or None, defaults=decision.defaults,
                      controls=decision.controls,
                      dedupe_key=f"pmb-{message.dedupe_key}")
    payload, changes = otobo.comment_request(comment, None)
    if changes:
        payload["Ticket"] = changes
    return {"method": "PATCH", "path": f"/Ticket/<TicketID of {decision.ticket_id}>",
            "operation": "TicketUpdate", "body": summarized(payload)}
