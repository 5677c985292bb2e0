"""What the mail-processing commands report: one line per mail for a person, and the JSON
documents of ``--json`` (their keys are stable; README.md documents them)."""

from __future__ import annotations

import io
import json
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from connector.service.pipeline import Result
    from connector.service.runner import AccountSummary
    from connector.store.base import MessageRecord

#: The counters of a pass or an import, in the order the summary line shows them.
COUNT_KEYS = ("fetched", "ticketed", "followed_up", "noted", "ignored", "duplicate", "held",
              "failed", "retry", "skipped", "already_recorded")

_SUBJECT_CHARS = 40


def counts(summary: AccountSummary) -> dict[str, int]:
    c = summary.counts
    return {key: int(c["known" if key == "already_recorded" else key]) for key in COUNT_KEYS}


def summary_document(summary: AccountSummary) -> dict[str, Any]:
    return {"account": summary.account, "counts": counts(summary),
            "ignored_as": dict(sorted(summary.ignored_as.items())), "error": summary.error}


def message_entry(ref: str, result: Result, record: MessageRecord | None) -> dict[str, Any]:
    """One processed mail: what it is, what the bridge did (or, dry, would do) and why."""
    trace = (record.trace if record is not None else None) or {}
    classification = trace.get("classification") or {}
    decision = result.decision
    return {
        "ref": ref,
        "record_id": result.record_id,
        "outcome": result.outcome.value,
        "ticket_id": result.ticket_id,
        "already_recorded": result.already_recorded,
        "sender": record.sender if record is not None else None,
        "subject": record.subject if record is not None else None,
        "message_id": record.message_id if record is not None else None,
        "kind": classification.get("kind"),
        "tags": list((trace.get("tags") or {}).get("add") or []),
        "action": decision.action.value if decision is not None else
        (record.action if record is not None else None),
        "why": (decision.reason if decision is not None else None) or result.reason or None,
        "reason": result.reason or None,
    }


_DOING = {"ticketed": "new ticket #{t}", "followed_up": "follow-up on #{t}",
          "noted": "internal note on #{t}", "ignored": "ignored",
          "held": "held over the sender's daily cap ('held release' lets it through)",
          "duplicate": "duplicate of a mail already handled", "failed": "FAILED",
          "retry": "held back, retried next time", "skipped": "skipped",
          "deferred": "held to join one note on ticket #{t}"}


def message_line(entry: dict[str, Any]) -> str:
    """``FILE: [KIND] SENDER "SUBJECT" -> WHAT (WHY)`` on one line (the file's name; the
    JSON document has its whole path)."""
    subject = entry["subject"] or ""
    if len(subject) > _SUBJECT_CHARS:
        subject = subject[:_SUBJECT_CHARS - 1] + "…"
    what = f"{entry['kind']} " if entry["kind"] else ""
    who = entry["sender"] or "(sender unknown)"
    doing = _DOING.get(entry["outcome"], entry["outcome"]).format(t=entry["ticket_id"])
    if entry["already_recorded"]:
        doing = f"already recorded: {doing}"
    if entry["tags"]:
        doing += f", tags {' '.join(entry['tags'])}"
    why = entry["why"] if entry["outcome"] not in ("failed", "retry") else entry["reason"]
    line = f"{PurePath(entry['ref']).name}: {what}{who} \"{subject}\" -> {doing}"
    return line + (f" ({why})" if why else "")


class CallTap(io.StringIO):
    """Where the dry-run host writes its JSON lines while a command reports per mail: taken
    after each mail (``take()``) to print them, count them or put them in a JSON document."""

    def take(self) -> list[str]:
        lines = self.getvalue().splitlines()
        self.seek(0)
        self.truncate()
        return lines


def calls_of(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.strip()]


def dump(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
