"""Bounces (DSN/NDR): a bounce of a mail the bridge sent becomes an internal note on that
ticket; other bounces are ignored and logged. The reading itself lives in :mod:`.dsn`."""

from __future__ import annotations

from typing import ClassVar

from connector.filters.classifiers.base import ClassifierContext, Verdict
from connector.filters.classifiers.dsn import analyse, may_be_bounce
from connector.filters.verdicts import BounceDetails, Classification, Kind, Strength

SUSPECT_TAG = "bounce_suspect"

BOUNCE = "X-OTOBO-Bounce"
ORIGINAL = "X-OTOBO-Bounce-OriginalMessageID"
ERROR = "X-OTOBO-Bounce-ErrorMessage"


class BounceClassifier:
    name: ClassVar[str] = "bounce"
    sets: ClassVar[tuple[str, ...]] = (BOUNCE, ORIGINAL, ERROR)

    def run(self, ctx: ClassifierContext) -> Verdict:
        message = ctx.message
        if not may_be_bounce(message):
            return Verdict.quiet("not a delivery report")
        report = analyse(message.raw, subject=message.subject, text_body=message.text_body)
        if report is None:
            return Verdict.quiet("not a delivery report")
        if report.action == "delivered":
            return Verdict.quiet("a delivery success report, not a failure")
        # The bounced mail's Message-ID first; some MTAs only thread the bounce to it.
        candidates = [report.original_message_id] if report.original_message_id else []
        candidates += [mid for mid in message.thread_ids if mid not in candidates]
        own = [mid for mid in candidates if ctx.lookups.is_own_message_id(mid)]
        ticket_id = ctx.lookups.known_ticket_for(own) if own else None
        details = BounceDetails(
            action=report.action,
            status=report.status,
            permanent=report.permanent,
            failed_recipients=report.failed_recipients,
            original_message_id=report.original_message_id or (own[0] if own else None),
            diagnostic=report.diagnostic,
            standard=report.standard,
            ours=bool(own),
            ticket_id=ticket_id,
        )
        sets = {BOUNCE: "yes", ERROR: details.note()}
        if details.original_message_id:
            sets[ORIGINAL] = details.original_message_id
        whose = f"of our mail on ticket {ticket_id}" if ticket_id else (
            "of our mail (ticket unknown)" if own else "of a mail we did not send"
        )
        reason = f"{'DSN' if report.standard else 'non-standard bounce'} {whose}: " + "; ".join(
            report.evidence
        )
        strength = Strength.STRONG if report.strong else Strength.WEAK
        classification = Classification(Kind.BOUNCE, details.note(), self.name, details,
                                        strength)
        if strength is Strength.WEAK:
            # A daemon sender alone, or failure wording alone: tag it, the mail is ticketed.
            reason = f"weak signal, {reason}"
            return Verdict(True, reason, {}, (SUSPECT_TAG,), classification)
        return Verdict(True, reason, sets, (), classification)
