"""Which of the account's own addresses a mail reached: the ticket's ``recipient``.

The helpdesk sends its notifications and agents' replies from a ticket's recipient address, so a
ticket that came in on ``billing@`` must say so, or replies go out from the default support
address. The envelope knows best: ``Delivered-To``/``X-Original-To`` (what the receiving MTA
delivered to, aliases resolved), then the visible To and Cc. Plus-addressed forms
(``support+urgent@``) count as their base address, which is the one the helpdesk knows.
"""

from __future__ import annotations

from collections.abc import Iterable

from connector.mail.model import ParsedMessage


def base_address(address: str) -> str:
    """``Support+Urgent@Example.com`` -> ``support@example.com``."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    return f"{local.split('+', 1)[0]}@{domain}"


def mail_recipient(message: ParsedMessage, own_addresses: Iterable[str]) -> str | None:
    """The own address the mail reached, else the account's first own address (the mailbox's
    address, for mail that reached it through an alias nobody listed), else None."""
    own = [a.strip().lower() for a in own_addresses if "@" in a]
    if not own:
        return None
    by_base = {base_address(a): a for a in own}
    candidates = (*message.delivered_to, *(a.email for a in (*message.to, *message.cc)))
    for candidate in candidates:
        if not candidate:
            continue
        address = candidate.strip().lower()
        if address in own:
            return address
        if (match := by_base.get(base_address(address))) is not None:
            return match
    return own[0]
