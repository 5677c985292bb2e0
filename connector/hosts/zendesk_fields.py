"""How Zendesk takes the filters' control vocabulary: pure, no I/O.

The bridge speaks OTOBO's PostMaster words everywhere (``X-OTOBO-Queue``, ``-Priority``,
``-State``, ``-Type``, ``-Brand``, ``-DynamicField-*``; see connector.filters.controls), and the
account's ticket defaults are given in the same words (connector.config, ``TicketDefaults``).
Only here do they become Zendesk ticket fields: a queue becomes a ``group_id`` through
``host.groups`` (or is a group id already), a priority one of Zendesk's four words, a state one
of its statuses, a dynamic field a ``custom_fields`` id through ``host.custom_fields``.

``translate`` is what the decide stage asks before anything is pushed (its problems go into the
decision, ``filters test`` and ``check``) and what the adapter sends: the same function, so
the two cannot drift. Values apply in order, defaults first; a value Zendesk cannot take is a
problem and leaves the earlier value in place (a mail is never refused for a filter's typo).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.filters.controls import canonical_control
from connector.hosts.base import Translation

# OTOBO priorities are "1 very low" .. "5 very high"; Zendesk has four words.
_PRIORITY_WORDS = {"1": "low", "2": "low", "3": "normal", "4": "high", "5": "urgent",
                   "low": "low", "very low": "low", "normal": "normal", "medium": "normal",
                   "high": "high", "very high": "urgent", "urgent": "urgent"}
TICKET_TYPES = ("problem", "incident", "question", "task")
_DYNAMIC = re.compile(r"^X-OTOBO-(FollowUp-)?DynamicField-(.+)$")


def map_priority(value: str | None) -> str | None:
    """An OTOBO priority ("4 high") or a Zendesk word as Zendesk's word, None if neither."""
    if not value:
        return None
    text = value.strip().lower()
    return _PRIORITY_WORDS.get(text) or _PRIORITY_WORDS.get(text.split(" ", 1)[0])


def map_state(value: str | None) -> str | None:
    """OTOBO state names to Zendesk statuses ("closed successful" -> solved)."""
    if not value:
        return None
    text = value.strip().lower()
    if text in ("new", "open", "pending", "hold", "solved"):
        return text
    if text.startswith(("closed", "merged", "removed")):
        return "solved"
    if text.startswith("pending"):
        return "pending"
    if text in ("on hold", "on-hold"):
        return "hold"
    return None


@dataclass(frozen=True)
class ZendeskVocabulary:
    """The control vocabulary on Zendesk: ``groups`` maps queue names to group ids,
    ``custom_fields`` dynamic field names to custom field ids (``host.groups``,
    ``host.custom_fields``)."""

    groups: Mapping[str, int] = field(default_factory=dict)
    custom_fields: Mapping[str, int] = field(default_factory=dict)
    keeps_tags: bool = True  # Zendesk tickets have tags

    def translate(self, defaults: Iterable[tuple[str, object]],
                  controls: Iterable[tuple[str, object]], *,
                  follow_up: bool = False) -> Translation:
        """Zendesk ticket fields (``group_id``, ``brand_id``, ``priority``, ``status``,
        ``type``, ``custom_fields`` as ``[{"id", "value"}]``) for a new ticket, or for a
        follow-up (``FollowUp-State``/``-Priority``: ``status``/``priority``)."""
        out: dict[str, Any] = {}
        custom: dict[int, object] = {}
        problems: list[str] = []
        for layer, report in ((defaults, False), (controls, True)):
            # Within one layer X-Bridge-Group, a helpdesk group named by the filter itself,
            # wins over the Queue mapping (filters/README.md): it is applied last.
            for raw_name, value in sorted(layer, key=_names_the_group):
                problem = self._apply(raw_name, value, out, custom, follow_up)
                if problem and report:
                    problems.append(problem)
                elif problem:  # the account's own default: a configuration slip, say so too
                    problems.append(f"{problem} (account default)")
        if custom:
            out["custom_fields"] = [{"id": k, "value": v} for k, v in sorted(custom.items())]
        return Translation(out, tuple(problems))

    def _apply(self, raw_name: str, value: object, out: dict[str, Any],
               custom: dict[int, object], follow_up: bool) -> str | None:
        """Set what one control means on Zendesk; the problem when it means nothing."""
        name = canonical_control(raw_name) or raw_name
        text = str(value).strip() if isinstance(value, str | int) else ""
        if (dynamic := _DYNAMIC.match(name)) is not None:
            field_name = dynamic.group(2)
            field_id = int(field_name) if field_name.isdigit() else \
                self.custom_fields.get(field_name)
            if field_id is None:
                return f"dynamic field {field_name!r} is not mapped in host.custom_fields"
            if not follow_up and not dynamic.group(1):
                custom[field_id] = value  # a follow-up's comment update sets no fields
            return None
        prefix = "X-OTOBO-FollowUp-" if follow_up else "X-OTOBO-"
        bridge = "X-Bridge-"
        if not name.startswith((prefix, bridge)) or (not follow_up
                                                      and name.startswith("X-OTOBO-FollowUp-")):
            return None
        word = name[len(prefix):] if name.startswith(prefix) else name[len(bridge):]
        if text == "":
            return None
        if word == "Priority":
            if (mapped := map_priority(text)) is None:
                return (f"priority {text!r} has no helpdesk equivalent (low, normal, high, "
                        "urgent)")
            out["priority"] = mapped
        elif word == "State":
            if (mapped := map_state(text)) is None:
                return f"state {text!r} has no helpdesk equivalent"
            out["status"] = mapped
        elif follow_up:
            return None
        elif word in ("Queue", "Group"):
            if text.isdigit():
                out["group_id"] = int(text)
            elif text in self.groups:
                out["group_id"] = self.groups[text]
            else:
                return f"queue/group {text!r} is not mapped in host.groups"
        elif word == "Brand":
            if not text.isdigit():
                return f"brand {text!r} must be a numeric brand id"
            out["brand_id"] = int(text)
        elif word == "Type":
            if text.lower() not in TICKET_TYPES:
                return (f"type {text!r} has no helpdesk equivalent (problem, incident, "
                        "question, task)")
            out["type"] = text.lower()
        return None


def _names_the_group(control: tuple[str, object]) -> bool:
    return (canonical_control(control[0]) or control[0]) == "X-Bridge-Group"
