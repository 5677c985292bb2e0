"""Dispatch by address (OTOBO's DispatchingBy=From, Jitbit's plus addressing).

The first recipient that is a configured system address picks the queue, looking at
Resent-To, Envelope-To, To, Cc, Delivered-To and X-Original-To in that order (OTOBO's order).
``support+billing@example.com`` matches its own entry first, then ``support@example.com``'s.
No match leaves the queue unset, so the account's default applies. A trusted mail's own
X-OTOBO-Queue wins, and YAML filters run afterwards and may override it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from connector.filters.classifiers.base import ClassifierContext, Verdict
from connector.filters.conditions import header_values

QUEUE = "X-OTOBO-Queue"
_RECIPIENT_HEADERS = ("Resent-To", "Envelope-To", "To", "Cc", "Delivered-To", "X-Original-To")


class DispatchClassifier:
    name: ClassVar[str] = "dispatch"
    sets: ClassVar[tuple[str, ...]] = (QUEUE,)

    def run(self, ctx: ClassifierContext) -> Verdict:
        table = ctx.settings.dispatch
        if not table:
            return Verdict.quiet("no dispatch map configured")
        if QUEUE in ctx.controls:
            return Verdict.quiet(f"the trusted mail's own {QUEUE} is kept")
        for header in _RECIPIENT_HEADERS:
            for address in header_values(ctx.message, header, address=True):
                queue, key = lookup(table, address)
                if queue is not None:
                    reason = f"{header} {address} is a system address ({key}) -> {queue}"
                    return Verdict(True, reason, {QUEUE: queue})
        return Verdict.quiet("no recipient is a system address; the account default applies")


def lookup(mapping: Mapping[str, str], address: str) -> tuple[str | None, str]:
    """The queue for ``address``: exact entry first, then its base without ``+tag``."""
    lower = address.strip().lower()
    if lower in mapping:
        return mapping[lower], lower
    local, _, domain = lower.rpartition("@")
    if "+" in local:
        base = local.split("+", 1)[0] + "@" + domain
        if base in mapping:
            return mapping[base], base
    return None, lower
