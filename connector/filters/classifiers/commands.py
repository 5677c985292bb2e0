"""Commands from staff senders: ``#close#``, ``#tech#`` (internal note), ``#unsubscribe#`` /
``#unsub#``.

Recognised only in the subject or at the very top of the new text: leading lines made of
commands (or starting with them) before any other text. Quoted history (lines starting with
``>``, anything after the first ordinary line) is never read, so a customer quoting an
agent's ``#close#`` mail cannot close anything, and neither can a staff reply that merely
quotes one. Commands are removed from the subject and text handed on.

A staff From line alone proves nothing: commands run only for an authenticated sender
(connector.filters.authentication); mail from an unproven staff address stays ordinary mail,
tagged ``staff_unverified``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from connector.filters.authentication import TAG_STAFF_UNVERIFIED
from connector.filters.classifiers.base import ClassifierContext, Verdict
from connector.filters.verdicts import Classification, CommandDetails, Kind

COMMAND = re.compile(r"#(close|tech|unsubscribe|unsub)#", re.IGNORECASE)
_LEADING = re.compile(r"^\s*((?:#(?:close|tech|unsubscribe|unsub)#\s*)+)(.*)$", re.IGNORECASE)
_CANONICAL = {
    "close": "close",
    "tech": "tech",
    "unsubscribe": "unsubscribe",
    "unsub": "unsubscribe",
}


class CommandsClassifier:
    name: ClassVar[str] = "commands"
    sets: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: ClassifierContext) -> Verdict:
        message = ctx.message
        subject_commands = [m.group(1) for m in COMMAND.finditer(message.subject)]
        body_commands, text = top_commands(message.text_body)
        found = _unique(_CANONICAL[c.lower()] for c in subject_commands + body_commands)
        if not found:
            return Verdict.quiet("no command in the subject or at the top of the text")
        sender = message.from_
        if sender is None or not ctx.settings.is_staff(sender.email):
            who = sender.email if sender else "unknown sender"
            return Verdict.quiet(f"commands {', '.join(found)} ignored: {who} is not staff")
        if ctx.authenticated_sender is None:
            reason = (f"commands {', '.join(found)} ignored: the staff sender {sender.email} "
                      f"is not authenticated ({ctx.authentication.detail})")
            return Verdict(True, reason, add_tags=(TAG_STAFF_UNVERIFIED,))
        if ctx.classification is not None:
            return Verdict.quiet(
                f"commands {', '.join(found)} ignored: already classified as "
                f"{ctx.classification.kind}"
            )
        subject = re.sub(r"\s{2,}", " ", COMMAND.sub("", message.subject)).strip()
        details = CommandDetails(found, subject, text, sender)
        reason = f"{sender.email} issued {', '.join(found)}"
        classification = Classification(Kind.COMMAND, reason, self.name, details)
        return Verdict(True, reason, {}, (), classification)


def top_commands(text: str) -> tuple[list[str], str]:
    """Commands at the top of ``text`` and the text without them."""
    lines = text.splitlines()
    commands: list[str] = []
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith(">"):
            break
        match = _LEADING.match(line)
        if not match:
            if not line.strip() and commands:
                index += 1
                continue
            break
        commands += COMMAND.findall(match.group(1))
        rest = match.group(2).strip()
        if rest:
            lines[index] = rest
            break
        index += 1
    if not commands:
        return [], text
    return commands, "\n".join(lines[index:]).strip()


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
