"""The chain runner: trust, classifiers, YAML filters, classifiers, with a full trace.

Order (fixed, documented in :mod:`connector.filters.classifiers`):

1. Trust: on an untrusted account every X-OTOBO-*, X-OTRS-* and X-Bridge-* header of the mail
   is dropped (and listed in the outcome); on a trusted one the known controls are taken in.
   Then what is proven about the sender (:mod:`connector.filters.authentication`), once: the
   classifiers that act in the sender's name read it from their context.
2. Built-in classifiers before the filters (loop, attachments, bounce, auto_reply, forwarded,
   commands, dispatch). When ``loop`` fires, nothing else runs.
3. YAML filters in order; a filter applies when all its conditions hold; ``stop_after_match``
   ends the YAML filters (not the classifiers after them).
4. Built-in classifiers after the filters (keywords).

The message is never changed: controls and tags accumulate in a private overlay that later
conditions read, and the outcome is built from it at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from connector.filters.authentication import SenderAuthentication, authenticate_sender
from connector.filters.chain import Filter, FilterChain
from connector.filters.classifiers import AFTER_FILTERS, BEFORE_FILTERS
from connector.filters.classifiers.base import Classifier, ClassifierContext, Verdict
from connector.filters.conditions import Condition, ConditionResult, MatchContext, RegexBudget
from connector.filters.controls import (
    canonical_control,
    check_value,
    is_control_namespace,
    spec_for,
    split_tags,
)
from connector.filters.lookups import FilterLookups
from connector.filters.outcome import FilterError, FilterOutcome
from connector.filters.settings import FilterSettings
from connector.filters.verdicts import Classification
from connector.mail.model import ParsedMessage

TRACE_VERSION = 1
TAGS_CONTROL = "X-Bridge-Tags"
_SHOWN = 300


@dataclass(frozen=True)
class _Run:
    """The fixed inputs of one run."""

    message: ParsedMessage
    account: str
    trusted: bool
    settings: FilterSettings
    lookups: FilterLookups
    authentication: SenderAuthentication


@dataclass
class _Overlay:
    """Mutable working state of one run; never leaves this module."""

    controls: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    add: dict[str, None] = field(default_factory=dict)
    remove: dict[str, None] = field(default_factory=dict)
    classification: Classification | None = None
    warnings: list[str] = field(default_factory=list)

    def set(self, control: str, value: str, source: str) -> None:
        self.controls[control] = value
        self.sources[control] = source
        if control == TAGS_CONTROL:
            for tag in split_tags(value):
                self.add_tag(tag)

    def add_tag(self, tag: str) -> None:
        self.remove.pop(tag, None)
        self.add[tag] = None

    def remove_tag(self, tag: str) -> None:
        self.add.pop(tag, None)
        self.remove[tag] = None

    def snapshot(self) -> MappingProxyType[str, str]:
        return MappingProxyType(dict(self.controls))


def run_filters(
    message: ParsedMessage,
    *,
    account: str,
    trusted: bool,
    chain: FilterChain,
    settings: FilterSettings,
    lookups: FilterLookups,
    evaluate_all: bool = False,
    computed: Mapping[str, str] | None = None,
    authentication: SenderAuthentication | None = None,
) -> FilterOutcome:
    """Run the whole filter stage on one message. Pure apart from ``lookups``.

    ``computed`` are controls the bridge itself established before filtering (what PEC
    unwrapping found: ``X-Bridge-PEC``...): classifiers and filters match them, nobody sets
    them, and a mail cannot forge them (the trust step strips the mail's own).

    ``evaluate_all`` evaluates every condition even after one failed (for ``filters test``:
    the trace then says why each condition did or did not match); the outcome is the same.
    ``authentication`` is what the caller proved about the sender (without it, only a
    ``trusted`` account proves it). Raises :class:`FilterError` when a built-in classifier
    fails on the message.
    """
    if authentication is None:
        authentication = authenticate_sender(message, trusted=trusted)
    run = _Run(message, account, trusted, settings, lookups, authentication)
    overlay = _Overlay()
    steps: list[dict[str, Any]] = []
    stripped = _apply_trust(message, trusted, overlay, steps)
    if computed:
        for control, value in computed.items():
            overlay.set(control, value, "bridge")
        steps.append({"stage": "computed", "name": "bridge", "sets": dict(computed)})
    stopped = _run_classifiers(BEFORE_FILTERS, run, overlay, steps)
    budget = RegexBudget(settings.regex_timeout_ms / 1000, settings.match_budget_ms / 1000)
    stop_reason = "the loop classifier fired" if stopped else None
    for flt in chain.filters:
        if stop_reason is not None:
            steps.append(_skipped_filter(flt, stop_reason))
            continue
        step = _run_filter(flt, message, account, overlay, budget, evaluate_all)
        steps.append(step)
        if step["matched"] and flt.stop_after_match:
            stop_reason = f"stop_after_match of {flt.name!r}"
    if not stopped:
        _run_classifiers(AFTER_FILTERS, run, overlay, steps)
    trace = {**_trace(message, account, trusted, stripped, steps, overlay),
             "authentication": authentication.as_dict()}
    return FilterOutcome(
        message=message,
        controls=overlay.snapshot(),
        control_sources=MappingProxyType(dict(overlay.sources)),
        add_tags=tuple(overlay.add),
        remove_tags=tuple(overlay.remove),
        stripped_headers=tuple(stripped),
        classification=overlay.classification,
        trace=trace,
        warnings=tuple(overlay.warnings),
        sender_proven=authentication.authenticated,
    )


def _apply_trust(
    message: ParsedMessage, trusted: bool, overlay: _Overlay, steps: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    stripped: list[tuple[str, str]] = []
    honoured: dict[str, str] = {}
    for name, value in message.headers:
        if not is_control_namespace(name):
            continue
        if not trusted:
            stripped.append((name, value))
            continue
        canonical = canonical_control(name)
        if canonical is None:
            overlay.warnings.append(f"ignored unknown control header {name!r} in the mail")
        elif not spec_for(canonical).settable:
            overlay.warnings.append(f"ignored {canonical} in the mail: the bridge computes it")
        elif canonical in overlay.controls:
            continue  # the first occurrence wins
        elif problem := check_value(canonical, value):
            overlay.warnings.append(f"ignored {name!r} in the mail: {problem}")
        else:
            overlay.set(canonical, value.strip(), "mail")
            honoured[canonical] = value.strip()
    steps.append(
        {
            "stage": "trust",
            "name": "trust",
            "trusted": trusted,
            "stripped": [{"name": n, "value": _short(v)} for n, v in stripped],
            "honoured": honoured,
        }
    )
    return stripped


def _run_classifiers(
    classifiers: tuple[Classifier, ...],
    run: _Run,
    overlay: _Overlay,
    steps: list[dict[str, Any]],
) -> bool:
    """Run classifiers in order; True when one asked to stop the whole chain."""
    for classifier in classifiers:
        step: dict[str, Any] = {"stage": "classifier", "name": classifier.name}
        steps.append(step)
        if not run.settings.classifiers.enabled(classifier.name):
            step.update(enabled=False, fired=False, reason="switched off in the configuration")
            continue
        ctx = ClassifierContext(
            message=run.message,
            account=run.account,
            trusted=run.trusted,
            settings=run.settings,
            lookups=run.lookups,
            authentication=run.authentication,
            controls=overlay.snapshot(),
            classification=overlay.classification,
        )
        try:
            verdict = classifier.run(ctx)
        except Exception as exc:  # one policy for all: a failing classifier stops the mail
            raise FilterError(
                f"classifier {classifier.name} failed: {type(exc).__name__}: {exc}",
                stage=classifier.name,
            ) from exc
        _apply_verdict(classifier, verdict, overlay)
        step.update(
            enabled=True,
            fired=verdict.fired,
            reason=verdict.reason,
            sets=dict(verdict.sets),
            add_tags=list(verdict.add_tags),
            classification=str(verdict.classification.kind) if verdict.classification else None,
        )
        if verdict.stop:
            step["stop"] = True
            return True
    return False


def _apply_verdict(classifier: Classifier, verdict: Verdict, overlay: _Overlay) -> None:
    undeclared = set(verdict.sets) - set(classifier.sets)
    if undeclared:  # a programming error, caught by the tests of every classifier
        raise FilterError(
            f"classifier {classifier.name} set undeclared controls {sorted(undeclared)}",
            stage=classifier.name,
        )
    for control, value in verdict.sets.items():
        overlay.set(control, value, f"classifier:{classifier.name}")
    for tag in verdict.add_tags:
        overlay.add_tag(tag)
    # The first classification wins, except that a strong one replaces a weak one: a
    # list's auto-responder (List-Id, then Auto-Submitted) is an auto-reply for sure.
    current = overlay.classification
    if verdict.classification is not None and (
            current is None or (current.weak and not verdict.classification.weak)):
        overlay.classification = verdict.classification


def _run_filter(
    flt: Filter,
    message: ParsedMessage,
    account: str,
    overlay: _Overlay,
    budget: RegexBudget,
    evaluate_all: bool,
) -> dict[str, Any]:
    ctx = MatchContext(message, account, overlay.snapshot(), budget)
    results: list[ConditionResult | None] = []
    holds = True
    for condition in flt.conditions:
        if not holds and not evaluate_all:
            results.append(None)
            continue
        result = condition.evaluate(ctx)
        if result.error:
            overlay.warnings.append(
                f"filter {flt.name!r} ({flt.file}:{condition.line}): {result.reason}"
            )
        results.append(result)
        holds = holds and result.matched
    step: dict[str, Any] = {
        "stage": "filter",
        "name": flt.name,
        "file": flt.file,
        "line": flt.line,
        "matched": holds,
        "conditions": [
            _condition_step(condition, result)
            for condition, result in zip(flt.conditions, results, strict=True)
        ],
        "sets": {},
        "add_tags": [],
        "remove_tags": [],
        "stop_after_match": flt.stop_after_match,
    }
    if not holds:
        return step
    captures = [r.captures for r in results if r is not None and r.captures]
    for action in flt.sets:
        value = action.render(captures)
        problem = check_value(action.control, value) if action.placeholders else None
        if problem:
            overlay.warnings.append(f"filter {flt.name!r} ({flt.file}:{action.line}): {problem}")
            step["sets"][action.control] = {"value": value, "rejected": problem}
            continue
        overlay.set(action.control, value, f"filter:{flt.name}")
        step["sets"][action.control] = value
    for tag in flt.add_tags:
        overlay.add_tag(tag)
    for tag in flt.remove_tags:
        overlay.remove_tag(tag)
    step["add_tags"] = list(flt.add_tags)
    step["remove_tags"] = list(flt.remove_tags)
    return step


def _condition_step(condition: Condition, result: ConditionResult | None) -> dict[str, Any]:
    step: dict[str, Any] = {"line": condition.line, "condition": condition.describe()}
    if result is None:
        step.update(matched=None, reason="not evaluated: an earlier condition failed")
        return step
    step.update(matched=result.matched, reason=result.reason)
    if result.captures:
        step["captures"] = {k: _short(v) for k, v in result.captures.items()}
    if result.error:
        step["error"] = result.error
    return step


def _skipped_filter(flt: Filter, why: str) -> dict[str, Any]:
    return {
        "stage": "filter",
        "name": flt.name,
        "file": flt.file,
        "line": flt.line,
        "matched": None,
        "skipped": f"not run: {why}",
    }


def _trace(
    message: ParsedMessage,
    account: str,
    trusted: bool,
    stripped: list[tuple[str, str]],
    steps: list[dict[str, Any]],
    overlay: _Overlay,
) -> dict[str, Any]:
    classification = overlay.classification
    return {
        "version": TRACE_VERSION,
        "account": account,
        "trusted": trusted,
        "message": {
            "message_id": message.message_id,
            "from": str(message.from_) if message.from_ else None,
            "subject": _short(message.subject),
        },
        "stripped_headers": [{"name": n, "value": _short(v)} for n, v in stripped],
        "steps": steps,
        "controls": {
            name: {"value": value, "source": overlay.sources[name]}
            for name, value in overlay.controls.items()
        },
        "tags": {"add": list(overlay.add), "remove": list(overlay.remove)},
        "classification": classification.to_json() if classification else None,
        "warnings": list(overlay.warnings),
    }


def _short(value: str) -> str:
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
