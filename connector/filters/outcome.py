"""The result of the filter stage, handed to decide and stored (as a trace) with the message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.errors import UnreadableMail
from connector.filters.controls import is_true
from connector.filters.verdicts import Classification, ForwardDetails, Kind
from connector.mail.model import ParsedMessage


class FilterError(UnreadableMail):
    """A classifier failed on a message. ``stage`` names it; the message goes to the error
    folder at once rather than being ticketed half-filtered (or retried to no end)."""

    def __init__(self, message: str, *, stage: str) -> None:
        self.stage = stage
        super().__init__(message)


@dataclass(frozen=True)
class FilterOutcome:
    """What the filter stage concluded about one message.

    ``controls`` maps canonical control names (``X-OTOBO-Queue``...) to values: set by
    classifiers and filters, plus the mail's own control headers when the account is trusted.
    ``control_sources`` says who set each (``mail``, ``classifier:dispatch``,
    ``filter:<name>``). ``stripped_headers`` are the mail's control headers dropped because
    the account is untrusted. ``trace`` is plain JSON data (see :meth:`trace_json`).
    """

    message: ParsedMessage = field(repr=False)
    controls: Mapping[str, str]
    control_sources: Mapping[str, str]
    add_tags: tuple[str, ...]
    remove_tags: tuple[str, ...]
    stripped_headers: tuple[tuple[str, str], ...]
    classification: Classification | None
    trace: Mapping[str, Any] = field(repr=False)
    warnings: tuple[str, ...] = ()
    sender_proven: bool = False  # the From address was authenticated (see authentication.py)

    @property
    def ignored(self) -> bool:
        """X-OTOBO-Ignore is yes/true: drop the mail (it still counts as processed)."""
        return is_true(self.controls.get("X-OTOBO-Ignore"))

    @property
    def effective_message(self) -> ParsedMessage:
        """The message to ticket: the original for a staff forward, else the mail itself."""
        if self.classification is not None and self.classification.kind is Kind.FORWARDED:
            details = self.classification.details
            if isinstance(details, ForwardDetails):
                return details.message
        return self.message

    def control(self, name: str) -> str | None:
        """A control by canonical name (``X-OTOBO-Queue``); None when unset."""
        return self.controls.get(name)

    def trace_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.trace, ensure_ascii=False, indent=indent)
