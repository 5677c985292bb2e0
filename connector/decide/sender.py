"""Who a mail is from, for the ticket: never a reason to refuse the mail.

The requester is the first usable address of, in order: a trusted control
(X-OTOBO-CustomerUser / X-Bridge-Requester), ``From``, ``Sender``, ``Reply-To`` and
``Return-Path`` (the envelope sender the final MTA recorded). A bounce with ``From: <>`` or a
bare ``MAILER-DAEMON`` is classified before anyone asks this, so it is still a bounce. When no
header holds a usable address, the account's ``unknown_sender`` stands in (the original From is
shown in the ticket), or, with ``unknown_sender: ignore``, the mail is ignored with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from connector.mail.addresses import parse_address_list
from connector.mail.model import Address, ParsedMessage

#: The headers asked, in order, after a trusted override.
SENDER_HEADERS = ("From", "Sender", "Reply-To", "Return-Path")


@dataclass(frozen=True)
class Requester:
    """``address`` is None only when nothing is usable and the account ignores such mail.
    ``source`` names where it came from (a header, ``control`` or ``unknown_sender``);
    ``shown`` is the original From as the mail wrote it (for the ticket and the trace)."""

    address: Address | None
    source: str
    shown: str

    @property
    def found(self) -> bool:
        """True when the mail itself (or a trusted control) named the requester."""
        return self.address is not None and self.source != "unknown_sender"

    def to_json(self) -> dict[str, str | None]:
        return {"address": str(self.address) if self.address else None,
                "source": self.source, "from": self.shown}


def usable(address: Address | None) -> bool:
    return address is not None and address.valid and bool(address.email)


def _candidates(message: ParsedMessage) -> Iterator[tuple[str, Address | None]]:
    yield "From", message.from_
    yield "Sender", message.sender
    for address in message.reply_to:
        yield "Reply-To", address
    # Parsed only when asked: nearly every mail has a usable From.
    for address in parse_address_list(message.header("Return-Path") or ""):
        yield "Return-Path", address


def resolve_requester(message: ParsedMessage, *, override: str | None = None,
                      unknown_sender: str = "ignore") -> Requester:
    """The requester of ``message``; see the module docstring for the order."""
    shown = str(message.from_) if message.from_ else (message.header("From") or "(missing)")
    if override and "@" in override:
        parsed = parse_address_list(override)
        if parsed and usable(parsed[0]):
            return Requester(parsed[0], "control", shown)
    for source, address in _candidates(message):
        if usable(address):
            return Requester(address, source, shown)
    if unknown_sender == "ignore":
        return Requester(None, "unknown_sender", shown)
    return Requester(Address("unknown sender", unknown_sender.strip()), "unknown_sender", shown)
