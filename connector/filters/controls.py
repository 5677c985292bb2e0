"""The control-header vocabulary, defined once.

Filters and classifiers talk to the decide stage only through control headers: OTOBO's
``X-OTOBO-*`` names (``X-OTRS-*`` is accepted as an alias and normalised away) plus a few
documented ``X-Bridge-*`` extensions for helpdesk-only concepts. Every other module asks this one
whether a name is a control, what its canonical spelling is, and whether a value is acceptable,
so a typo is a load-time error instead of a silent no-op.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

OTOBO = "X-OTOBO-"
OTRS = "X-OTRS-"
BRIDGE = "X-Bridge-"
CONTROL_PREFIXES = (OTOBO, OTRS, BRIDGE)

YES_NO = ("yes", "no", "true", "false")


@dataclass(frozen=True)
class ControlSpec:
    """One control header.

    ``settable`` is False for values only the bridge computes (attachment counts, bounce data):
    filters may match them but not set them. ``values`` lists the accepted values
    (case-insensitive) or is None for free text.
    """

    name: str
    description: str
    values: tuple[str, ...] | None = None
    settable: bool = True


def _otobo(
    suffix: str,
    description: str,
    values: tuple[str, ...] | None = None,
    settable: bool = True,
) -> ControlSpec:
    return ControlSpec(OTOBO + suffix, description, values, settable)


# Ticket attributes that have a FollowUp twin applying when the mail is a follow-up.
_TICKET_FIELDS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("Queue", "queue (mapped to the host's group)", None),
    ("Priority", "priority (mapped to the host's priority)", None),
    ("State", "ticket state (mapped to the host's status)", None),
    ("State-PendingTime", "pending-until time for a pending state", None),
    ("Type", "ticket type", None),
    ("Service", "service", None),
    ("SLA", "SLA", None),
    ("Owner", "owner (agent login or e-mail)", None),
    ("OwnerID", "owner id", None),
    ("Responsible", "responsible agent", None),
    ("ResponsibleID", "responsible agent id", None),
    ("Lock", "lock state", ("lock", "unlock")),
    ("Title", "ticket title", None),
    ("SenderType", "article sender type", ("customer", "agent", "system")),
    ("IsVisibleForCustomer", "article visible to the customer", ("0", "1")),
)

CONTROLS: tuple[ControlSpec, ...] = (
    *(_otobo(name, f"new ticket: {desc}", values=values) for name, desc, values in _TICKET_FIELDS),
    _otobo("CustomerNo", "customer (organisation) number"),
    _otobo("CustomerUser", "customer user (requester login or e-mail)"),
    _otobo("Ignore", "drop the mail: no ticket, no article", values=YES_NO),
    _otobo("Loop", "never send an automatic answer to this mail", values=YES_NO),
    *(
        _otobo(f"FollowUp-{name}", f"follow-up: {desc}", values=values)
        for name, desc, values in _TICKET_FIELDS
    ),
    _otobo("FollowUp-State-Keep", "follow-up: keep the ticket's state", values=YES_NO),
    _otobo("AttachmentCount", "number of attachments (inline images excluded)", settable=False),
    _otobo("AttachmentExists", "yes when the mail has attachments", settable=False),
    _otobo("Bounce", "yes when the mail is a delivery failure report", settable=False),
    _otobo("Bounce-OriginalMessageID", "Message-ID of the bounced mail", settable=False),
    _otobo("Bounce-ErrorMessage", "status and diagnostic of the bounce", settable=False),
    ControlSpec(BRIDGE + "Tags", "tags to add, comma or space separated"),
    ControlSpec(BRIDGE + "Group", "helpdesk group where the host has groups (wins over the "
                "Queue mapping set with it)"),
    ControlSpec(BRIDGE + "Brand", "helpdesk brand where the host has brands"),
    ControlSpec(BRIDGE + "Requester", "requester e-mail (e.g. the original sender of a forward)"),
    ControlSpec(BRIDGE + "PEC", "the kind of certified mail the bridge unwrapped",
                ("transport", "anomaly", "receipt"), settable=False),
    ControlSpec(BRIDGE + "PEC-Mailbox", "where certified mail arrived: a PEC account or an "
                "ordinary mailbox", ("pec", "ordinary"), settable=False),
)

# Dynamic fields are open-ended: X-OTOBO-DynamicField-<name>; <name> keeps its spelling.
_DYNAMIC_PREFIXES = ("DynamicField-", "FollowUp-DynamicField-")

_BY_LOWER: dict[str, ControlSpec] = {spec.name.lower(): spec for spec in CONTROLS}
# Lowered once: every header of every mail is asked whether it is a control.
_LOWER_PREFIXES = tuple(prefix.lower() for prefix in CONTROL_PREFIXES)
_LOWER_OTOBO, _LOWER_OTRS = OTOBO.lower(), OTRS.lower()
_LOWER_DYNAMIC_PREFIXES = tuple((prefix, prefix.lower()) for prefix in _DYNAMIC_PREFIXES)
_DYNAMIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def is_control_namespace(name: str) -> bool:
    """True for any header in a control namespace (known or not)."""
    return name.strip().lower().startswith(_LOWER_PREFIXES)


def canonical_control(name: str) -> str | None:
    """The canonical spelling of a control header, or None if it is not a known control.

    ``x-otrs-queue`` and ``X-OTOBO-QUEUE`` both give ``X-OTOBO-Queue``;
    ``X-OTRS-DynamicField-Contract`` gives ``X-OTOBO-DynamicField-Contract``.
    """
    stripped = name.strip()
    lower = stripped.lower()
    if lower.startswith(_LOWER_OTRS):
        stripped = OTOBO + stripped[len(OTRS) :]
        lower = stripped.lower()
    spec = _BY_LOWER.get(lower)
    if spec is not None:
        return spec.name
    if lower.startswith(_LOWER_OTOBO):
        rest = stripped[len(OTOBO) :]
        rest_lower = rest.lower()
        for prefix, prefix_lower in _LOWER_DYNAMIC_PREFIXES:
            if rest_lower.startswith(prefix_lower):
                field = rest[len(prefix) :]
                if _DYNAMIC_NAME.match(field):
                    return OTOBO + prefix + field
    return None


def spec_for(canonical: str) -> ControlSpec:
    """The spec of a canonical control name (dynamic fields get a generic spec)."""
    spec = _BY_LOWER.get(canonical.lower())
    if spec is not None:
        return spec
    return ControlSpec(canonical, "dynamic field")


def suggest_control(name: str) -> str | None:
    """The closest known control name, for did-you-mean messages."""
    lower = name.strip().lower().replace(OTRS.lower(), OTOBO.lower(), 1)
    candidates = [*_BY_LOWER, OTOBO.lower() + "dynamicfield-<name>"]
    match = difflib.get_close_matches(lower, candidates, n=1, cutoff=0.6)
    if not match:
        return None
    if match[0].endswith("<name>"):
        return OTOBO + "DynamicField-<name>"
    return _BY_LOWER[match[0]].name


def unknown_control_message(name: str) -> str:
    hint = suggest_control(name)
    suffix = f" (did you mean {hint}?)" if hint else ""
    return f"unknown control header {name!r}{suffix}"


def check_value(canonical: str, value: str) -> str | None:
    """An error message when ``value`` is not acceptable for the control, else None."""
    spec = spec_for(canonical)
    if spec.values is not None and value.strip().lower() not in spec.values:
        return f"{canonical} takes one of {', '.join(spec.values)}, not {value!r}"
    return None


def is_true(value: str | None) -> bool:
    """OTOBO's truth test for yes/no controls (``Ignore``, ``Loop``...)."""
    return value is not None and value.strip().lower() in ("yes", "true", "1")


def split_tags(value: str) -> list[str]:
    """Tags from a comma- or space-separated control value."""
    return [tag for tag in re.split(r"[\s,]+", value.strip()) if tag]
