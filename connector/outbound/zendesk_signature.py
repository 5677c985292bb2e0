"""Zendesk webhook signatures: ``base64(HMAC-SHA256(secret, timestamp + raw_body))``.

The secret string itself is the key (not base64-decoded). The timestamp is the ISO string of
``X-Zendesk-Webhook-Signature-Timestamp``; one outside the tolerance window is refused, which
limits what a captured request is good for (the queue also remembers every signature it
accepted, so a replay inside the window is a duplicate, not a second send).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
INVOCATION_HEADER = "X-Zendesk-Webhook-Invocation-Id"
WEBHOOK_ID_HEADER = "X-Zendesk-Webhook-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature Zendesk sends for ``body`` at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + body,
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def format_timestamp(when: datetime) -> str:
    """Zendesk's timestamp form, e.g. ``2021-03-25T05:09:27Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def verify(secrets: Iterable[str], signature: str | None, timestamp: str | None, body: bytes,
           *, now: datetime, tolerance: float) -> Verdict:
    """Check a delivery against each candidate secret, in constant time per comparison.

    Every secret is tried even after a match, so timing tells nothing about which one (or
    whether any) matched.
    """
    if not signature or not timestamp:
        return Verdict(False, "missing signature headers")
    sent = parse_timestamp(timestamp)
    if sent is None:
        return Verdict(False, "unreadable signature timestamp")
    received = signature.strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = sign(secret, timestamp, body).encode("ascii")
        matched |= hmac.compare_digest(expected, received)
    if not matched:
        return Verdict(False, "signature does not match")
    skew = abs((now - sent).total_seconds())
    if skew > tolerance:
        return Verdict(False, f"timestamp {timestamp} is {skew:.0f}s away from now")
    return Verdict(True)


def delivery_digest(timestamp: str, body: bytes) -> str:
    """Identity of one signed delivery, to recognise a replay of it."""
    return hashlib.sha256(timestamp.encode("utf-8") + b"\x00" + body).hexdigest()
