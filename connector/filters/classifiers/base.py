"""The shape every built-in classifier shares.

A classifier is a small class with a ``name``, the control headers it may set (``sets``,
checked by the engine), and ``run(ctx) -> Verdict``. It reads the immutable message and a
snapshot of the controls so far, and returns what it concluded; it never mutates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from connector.filters.authentication import SenderAuthentication
from connector.filters.lookups import FilterLookups
from connector.filters.settings import FilterSettings
from connector.filters.verdicts import Classification
from connector.mail.model import ParsedMessage


@dataclass(frozen=True)
class ClassifierContext:
    message: ParsedMessage
    account: str
    trusted: bool
    settings: FilterSettings
    lookups: FilterLookups
    authentication: SenderAuthentication  # what is proven about the From address
    controls: Mapping[str, str]
    classification: Classification | None

    @property
    def authenticated_sender(self) -> str | None:
        """The From address when it is proven (trusted account, our MTA's DKIM/DMARC pass,
        or a DKIM signature the bridge verified), else None: acting in a sender's name
        (staff commands and forwards, silencing a sender) needs this."""
        auth = self.authentication
        return auth.address if auth.authenticated else None


@dataclass(frozen=True)
class Verdict:
    """What one classifier concluded. ``stop`` ends the whole chain (loops, storms)."""

    fired: bool
    reason: str
    sets: Mapping[str, str] = field(default_factory=dict)
    add_tags: tuple[str, ...] = ()
    classification: Classification | None = None
    stop: bool = False

    @classmethod
    def quiet(cls, reason: str) -> Verdict:
        return cls(False, reason)


class Classifier(Protocol):
    name: ClassVar[str]
    sets: ClassVar[tuple[str, ...]]

    def run(self, ctx: ClassifierContext) -> Verdict: ...


def sender_address(ctx: ClassifierContext) -> str | None:
    """The From address, lower-cased (None when the mail has no usable From)."""
    sender = ctx.message.from_
    if sender is None or not sender.email:
        return None
    return sender.normalized
