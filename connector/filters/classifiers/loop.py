"""Loop protection: our own mail coming back is never ticketed, and a per-sender daily cap
stops mail storms (two auto-responders answering each other through us).

The cap counts a sender's mails by the day of their ``Date``, not by when the bridge reads
them: importing a month's backlog is thirty days of mail, not one storm. A mail over the cap is
held (``Kind.STORM``), never dropped: an admin releases it with ``held release``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import ClassVar

from connector.filters.classifiers.base import ClassifierContext, Verdict, sender_address
from connector.filters.controls import is_true
from connector.filters.verdicts import Classification, Kind, LoopDetails
from connector.mail.model import ParsedMessage

IGNORE = "X-OTOBO-Ignore"
#: A Date further ahead than this is a wrong clock, not a day: such mail counts on today.
FUTURE_SLACK = timedelta(days=1)


def mail_day(message: ParsedMessage, now: datetime | None = None) -> date:
    """The UTC day a mail was written (its ``Date``), or today when it has no usable Date."""
    now = now or datetime.now(UTC)
    written = message.date
    if written is None:
        return now.date()
    if written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    if written > now + FUTURE_SLACK:
        return now.date()
    return written.astimezone(UTC).date()


class LoopClassifier:
    name: ClassVar[str] = "loop"
    sets: ClassVar[tuple[str, ...]] = (IGNORE,)

    def run(self, ctx: ClassifierContext) -> Verdict:
        message = ctx.message
        sender = sender_address(ctx)
        for who in (message.from_, message.sender):
            if who is not None and ctx.settings.is_own_address(who.email):
                return self._loop("own_address", f"sent from our own address {who.email}", sender)
        if message.message_id and ctx.lookups.is_own_message_id(message.message_id):
            reason = f"Message-ID {message.message_id} is one we sent"
            return self._loop("own_message_id", reason, sender)
        # Only a trusted mail's own X-OTOBO-Loop reaches the overlay: untrusted ones were
        # stripped before classifiers run, so a customer cannot suppress their own mail.
        if is_true(ctx.controls.get("X-OTOBO-Loop")):
            return self._loop("loop_header", "the mail carries X-OTOBO-Loop", sender)
        cap = ctx.settings.sender_cap_per_day
        if cap and sender:
            day = mail_day(message)
            # Proven mail (the sender authenticated) and unproven mail in a sender's name are
            # counted apart: a forger writing in a customer's name can exhaust only the count
            # of forgeable mail, never hold back the customer's authenticated mail.
            proven = ctx.authenticated_sender is not None
            count = ctx.lookups.sender_count_on(sender, day, proven=proven)
            kind = "authenticated " if proven else ""
            if count >= cap:
                details = LoopDetails("sender_cap", sender, count, cap)
                reason = (f"{sender} already sent {count} {kind}mails dated {day.isoformat()} "
                          f"(cap {cap}): held")
                classification = Classification(Kind.STORM, reason, self.name, details)
                return Verdict(True, reason, {}, (), classification, stop=True)
            return Verdict.quiet(f"not our own mail; {sender} sent {count} of {cap} "
                                 f"{kind}mails dated {day.isoformat()}")
        return Verdict.quiet("not our own mail")

    def _loop(self, signal: str, reason: str, sender: str | None) -> Verdict:
        classification = Classification(Kind.LOOP, reason, self.name, LoopDetails(signal, sender))
        return Verdict(True, reason, {IGNORE: "yes"}, (), classification, stop=True)
