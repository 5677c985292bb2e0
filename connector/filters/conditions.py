"""One matcher for every filter condition.

A condition reads one *field* of the message (a header, or a pseudo-field such as ``body``),
applies one *operator* to each of the field's values, and optionally negates the result.

Semantics (each one has a golden test in tests/test_filters_conditions.py):

- A missing header reads as one empty value, so ``not: true`` on a missing header holds
  (OTOBO does the opposite; Zammad agrees with us).
- A field with several values (a repeated header, several addresses, several attachment names)
  matches when *any* value matches; negated, it holds when *no* value matches.
- Matching is case-insensitive unless ``case_sensitive: true``. Regexes are unanchored
  searches; in ``address: true`` mode a regex must match the whole bare address (OTOBO's
  ``EMAILADDRESS:``).
- Every regex runs under a time budget (the ``regex`` package's ``timeout``): a pattern that
  backtracks catastrophically makes its condition fail with an error in the trace instead of
  hanging the bridge.
- Control headers (``X-OTOBO-*``, ``X-OTRS-*``, ``X-Bridge-*``) are read from the control
  overlay, not from the mail: the overlay holds the mail's own values only on trusted accounts,
  plus whatever classifiers and earlier filters set.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from connector.filters.controls import (
    canonical_control,
    is_control_namespace,
    unknown_control_message,
)
from connector.mail.addresses import getaddresses_safe as getaddresses
from connector.mail.model import Address, ParsedMessage

PSEUDO_FIELDS = ("body", "body_html", "attachment_names", "account", "recipient")
OPERATORS = ("regex", "contains", "is", "starts_with", "ends_with", "is_any_of", "exists")
# Headers whose parsed addresses the model already holds (display names decoded safely).
_MODEL_ADDRESS_HEADERS = {"from", "sender", "to", "cc", "reply-to"}
_SHOWN_CHARS = 120


class ConditionError(ValueError):
    """A condition cannot be built (bad operator, regex that does not compile...)."""


class RegexBudget:
    """Time budget for regex evaluation: a per-call limit and a per-message total.

    Pure in the sense that matters here: it only reads the monotonic clock.
    """

    def __init__(self, per_call_seconds: float, total_seconds: float) -> None:
        self.per_call = per_call_seconds
        self.remaining = total_seconds

    def search(self, pattern: regex.Pattern[str], text: str, *, whole: bool) -> Any:
        """``pattern.search`` (or ``fullmatch``) within the budget; raises TimeoutError."""
        if self.remaining <= 0:
            raise TimeoutError("regex time budget for this message is used up")
        limit = min(self.per_call, self.remaining)
        started = time.monotonic()
        try:
            if whole:
                return pattern.fullmatch(text, timeout=limit)
            return pattern.search(text, timeout=limit)
        finally:
            self.remaining -= time.monotonic() - started


@dataclass(frozen=True)
class MatchContext:
    """What a condition may look at."""

    message: ParsedMessage
    account: str
    controls: Mapping[str, str]
    budget: RegexBudget


@dataclass(frozen=True)
class ConditionResult:
    """The verdict of one condition, with the reason a human can read."""

    matched: bool
    reason: str
    captures: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Condition:
    """One compiled condition. Build it with :meth:`create`."""

    field: str  # header name as written, or a pseudo-field name
    pseudo: bool
    operator: str
    operand: Any  # str, tuple[str, ...] or bool, depending on the operator
    negate: bool = False
    case_sensitive: bool = False
    address: bool = False
    line: int = 0
    pattern: regex.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        field: str,
        pseudo: bool,
        operator: str,
        operand: Any,
        negate: bool = False,
        case_sensitive: bool = False,
        address: bool = False,
        line: int = 0,
    ) -> Condition:
        if operator not in OPERATORS:
            raise ConditionError(f"unknown operator {operator!r}")
        if pseudo and field not in PSEUDO_FIELDS:
            raise ConditionError(f"unknown pseudo-field {field!r}")
        if not pseudo and is_control_namespace(field) and canonical_control(field) is None:
            raise ConditionError(unknown_control_message(field))
        operand = _normalise_operand(operator, operand)
        pattern = _compile(operator, operand, case_sensitive)
        return cls(field, pseudo, operator, operand, negate, case_sensitive, address, line, pattern)

    @property
    def label(self) -> str:
        """``From``, ``body``... as shown in traces."""
        return self.field

    @property
    def capture_names(self) -> frozenset[str]:
        """Capture keys this condition can fill: group numbers (``"1"``...) and group names."""
        if self.operator != "regex" or self.negate or self.pattern is None:
            return frozenset()
        numbers = {str(i) for i in range(1, self.pattern.groups + 1)}
        return frozenset(numbers | set(self.pattern.groupindex))

    def describe(self) -> str:
        """The condition in one line, e.g. ``Subject regex /invoice (\\d+)/``."""
        neg = "not " if self.negate else ""
        mode = " (address)" if self.address else ""
        return f"{self.field}{mode} {neg}{self.operator} {_show_operand(self)}"

    def evaluate(self, ctx: MatchContext) -> ConditionResult:
        values, present = _field_values(self, ctx)
        if self.operator == "exists":
            holds = present == bool(self.operand)
            state = "present" if present else "missing"
            return self._verdict(holds, f"{self.field} is {state}", {})
        shown = self.field if present else f"{self.field} (missing, reads as empty)"
        for value in values:
            try:
                hit, captures = self._match_one(value, ctx.budget)
            except TimeoutError as exc:
                return ConditionResult(
                    False, f"{self.field}: regex gave up: {exc}", {}, error="timeout"
                )
            if hit:
                how = f"{shown} value {_show(value)} {self._verb()} {_show_operand(self)}"
                return self._verdict(True, how, captures)
        if len(values) == 1:
            how = f"{shown} value {_show(values[0])} does not {self._verb(base=True)} "
        else:
            how = f"none of {len(values)} values of {shown} {self._verb()} "
        return self._verdict(False, how + _show_operand(self), {})

    def _verdict(self, hit: bool, how: str, captures: Mapping[str, str]) -> ConditionResult:
        if self.negate:
            verdict = "fails" if hit else "holds"
            return ConditionResult(not hit, f"negated, so it {verdict}: {how}", {})
        return ConditionResult(hit, how, captures)

    def _verb(self, base: bool = False) -> str:
        verbs = {
            "regex": "match",
            "contains": "contain",
            "is": "equal",
            "starts_with": "start with",
            "ends_with": "end with",
            "is_any_of": "equal one of",
        }
        verb = verbs[self.operator]
        if base:
            return verb
        head, _, tail = verb.partition(" ")
        head = head + ("es" if head.endswith("h") else "s")
        return f"{head} {tail}".strip()

    def _match_one(self, value: str, budget: RegexBudget) -> tuple[bool, dict[str, str]]:
        if self.pattern is not None:
            whole = self.address and self.operator == "regex"
            m = budget.search(self.pattern, value, whole=whole)
            if m is None:
                return False, {}
            return True, _captures(m) if self.operator == "regex" else {}
        subject = value if self.case_sensitive else value.casefold()
        options = self.operand if isinstance(self.operand, tuple) else (self.operand,)
        if not self.case_sensitive:
            options = tuple(o.casefold() for o in options)
        if self.operator in ("is", "is_any_of"):
            return subject.strip() in options, {}
        if self.operator == "starts_with":
            return subject.startswith(options), {}
        return subject.endswith(options), {}  # ends_with


def _normalise_operand(operator: str, operand: Any) -> Any:
    if operator == "exists":
        if not isinstance(operand, bool):
            raise ConditionError("exists takes true or false")
        return operand
    if operator in ("starts_with", "ends_with", "is_any_of"):
        items = operand if isinstance(operand, list | tuple) else [operand]
        if not items or not all(isinstance(i, str) for i in items):
            raise ConditionError(f"{operator} takes a string or a list of strings")
        if operator != "is_any_of" and any(i == "" for i in items):
            raise ConditionError(f"{operator} with an empty string always matches")
        return tuple(items)
    if not isinstance(operand, str):
        raise ConditionError(f"{operator} takes a string")
    if operator in ("regex", "contains") and operand == "":
        raise ConditionError(f"{operator} with an empty value always matches")
    return operand


def _compile(operator: str, operand: Any, case_sensitive: bool) -> regex.Pattern[str] | None:
    flags = 0 if case_sensitive else regex.IGNORECASE
    if operator == "regex":
        try:
            return regex.compile(operand, flags)
        except regex.error as exc:
            raise ConditionError(f"regex {operand!r} does not compile: {exc}") from exc
    if operator == "contains":
        # Literal text with '*' as "any run of characters" (Zammad's contains).
        parts = [regex.escape(piece) for piece in operand.split("*")]
        return regex.compile(".*?".join(parts), flags | regex.DOTALL)
    return None


def _captures(m: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for index in range(1, (m.re.groups or 0) + 1):
        out[str(index)] = m.group(index) or ""
    for name in m.re.groupindex:
        out[name] = m.group(name) or ""
    return out


def _field_values(cond: Condition, ctx: MatchContext) -> tuple[list[str], bool]:
    """The field's values and whether the field is present. Missing reads as ``[""]``."""
    message = ctx.message
    values: list[str]
    if cond.pseudo:
        if cond.field == "body":
            values = [message.text_body] if message.text_body.strip() else []
        elif cond.field == "body_html":
            values = [message.html_body] if message.html_body else []
        elif cond.field == "attachment_names":
            parts = message.attachments + message.inline_images
            values = [a.filename for a in parts if a.filename]
        elif cond.field == "account":
            values = [ctx.account]
        else:  # recipient
            values = recipient_addresses(message)
    elif is_control_namespace(cond.field):
        value = ctx.controls.get(canonical_control(cond.field) or "")
        values = [value] if value is not None else []
    else:
        values = header_values(message, cond.field, address=cond.address)
    return (values, True) if values else ([""], False)


def header_values(message: ParsedMessage, name: str, *, address: bool) -> list[str]:
    """Values of header ``name``: unfolded text, or bare addresses in address mode."""
    raw = [_unfold(v) for v in message.header_all(name)]
    if not address:
        return raw
    lower = name.lower()
    if lower in _MODEL_ADDRESS_HEADERS and raw:
        model = _model_addresses(message, lower)
        if model:
            return [a.email for a in model]
    return [addr for _, addr in getaddresses(raw) if addr]


def recipient_addresses(message: ParsedMessage) -> list[str]:
    """Bare addresses from To, Cc and Delivered-To, in that order, without repeats."""
    seen: dict[str, None] = {}
    for addr in [a.email for a in message.to + message.cc] + list(message.delivered_to):
        if addr:
            seen.setdefault(addr, None)
    return list(seen)


def _model_addresses(message: ParsedMessage, lower: str) -> Sequence[Address]:
    if lower == "from":
        return (message.from_,) if message.from_ else ()
    if lower == "sender":
        return (message.sender,) if message.sender else ()
    if lower == "to":
        return message.to
    if lower == "cc":
        return message.cc
    return message.reply_to


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _show(value: str) -> str:
    flat = value.replace("\r", " ").replace("\n", " ")
    if len(flat) > _SHOWN_CHARS:
        flat = flat[:_SHOWN_CHARS] + "..."
    return repr(flat)


def _show_operand(cond: Condition) -> str:
    if cond.operator == "regex":
        return f"/{cond.operand}/"
    if isinstance(cond.operand, tuple):
        return "[" + ", ".join(repr(o) for o in cond.operand) + "]"
    return repr(cond.operand)
