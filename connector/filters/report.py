"""Rendering a filter trace for people (``filters test``) and for machines (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def render_json(trace: Mapping[str, Any], decision: Mapping[str, Any] | None = None) -> str:
    """``{"trace": ..., "decision": ...}`` as indented JSON."""
    return json.dumps({"trace": trace, "decision": decision}, ensure_ascii=False, indent=2) + "\n"


def render_text(trace: Mapping[str, Any], decision: Mapping[str, Any] | None = None) -> str:
    """A readable account of what every step did and why."""
    lines: list[str] = []
    msg = trace.get("message", {})
    lines.append(f"Message-ID: {msg.get('message_id') or '(none)'}")
    lines.append(f"From:       {msg.get('from') or '(none)'}")
    lines.append(f"Subject:    {msg.get('subject') or ''}")
    trust = "trusted" if trace.get("trusted") else "untrusted"
    lines.append(f"Account:    {trace.get('account')} ({trust})")
    pec = trace.get("pec")
    if pec:
        lines.append(f"PEC:        {pec.get('kind')} unwrapped; the filters read the certified "
                     "message")
    requester = trace.get("requester")
    if requester:
        lines.append(f"Requester:  {requester.get('address') or '(none)'} "
                     f"(from {requester.get('source')})")
    auth = trace.get("authentication")
    if auth:
        proven = (f"authenticated ({auth.get('method')})" if auth.get("authenticated")
                  else "NOT authenticated")
        lines.append(f"Sender:     {auth.get('address')} {proven}: {auth.get('detail')}")
    lines.append("")
    for step in trace.get("steps", []):
        lines.extend(_step(step))
    lines.append("")
    lines.extend(_summary(trace))
    if decision is not None:
        lines.append("")
        lines.append("Decision:")
        for key, value in decision.items():
            lines.append(f"  {key}: {_value(value)}")
    return "\n".join(lines) + "\n"


def _step(step: Mapping[str, Any]) -> list[str]:
    stage = step.get("stage")
    if stage == "trust":
        return _trust(step)
    if stage == "classifier":
        return _classifier(step)
    if stage == "computed":
        return [f"bridge: {name} = {value}" for name, value in (step.get("sets") or {}).items()]
    return _filter(step)


def _trust(step: Mapping[str, Any]) -> list[str]:
    out = []
    stripped = step.get("stripped") or []
    if step.get("trusted"):
        honoured = step.get("honoured") or {}
        out.append(f"trust: account trusted, {len(honoured)} control header(s) honoured")
        out += [f"    {name}: {value}" for name, value in honoured.items()]
    else:
        out.append(f"trust: account untrusted, {len(stripped)} control header(s) stripped")
        out += [f"    stripped {h['name']}: {h['value']}" for h in stripped]
    return out


def _classifier(step: Mapping[str, Any]) -> list[str]:
    name = step.get("name")
    if step.get("enabled") is False:
        return [f"classifier {name}: off ({step.get('reason')})"]
    state = "FIRED" if step.get("fired") else "quiet"
    out = [f"classifier {name}: {state} - {step.get('reason')}"]
    for control, value in (step.get("sets") or {}).items():
        out.append(f"    sets {control} = {value}")
    if step.get("add_tags"):
        out.append(f"    adds tags {', '.join(step['add_tags'])}")
    if step.get("classification"):
        out.append(f"    classification: {step['classification']}")
    if step.get("stop"):
        out.append("    stops the chain: nothing after this runs")
    return out


def _filter(step: Mapping[str, Any]) -> list[str]:
    where = f"{step.get('file')}:{step.get('line')}"
    name = step.get("name")
    if step.get("skipped"):
        return [f"filter {name} ({where}): {step['skipped']}"]
    state = "MATCHED" if step.get("matched") else "no match"
    out = [f"filter {name} ({where}): {state}"]
    for cond in step.get("conditions", []):
        mark = {True: "[yes]", False: "[no] ", None: "[--] "}[cond.get("matched")]
        out.append(f"    {mark} line {cond.get('line')}: {cond.get('condition')}")
        out.append(f"          {cond.get('reason')}")
        if cond.get("captures"):
            caps = ", ".join(f"{k}={v!r}" for k, v in cond["captures"].items())
            out.append(f"          captures: {caps}")
    for control, value in (step.get("sets") or {}).items():
        if isinstance(value, dict):
            out.append(f"    NOT set {control} = {value.get('value')!r}: {value.get('rejected')}")
        else:
            out.append(f"    sets {control} = {value}")
    if step.get("add_tags"):
        out.append(f"    adds tags {', '.join(step['add_tags'])}")
    if step.get("remove_tags"):
        out.append(f"    removes tags {', '.join(step['remove_tags'])}")
    if step.get("matched") and step.get("stop_after_match"):
        out.append("    stop_after_match: later filters do not run")
    return out


def _summary(trace: Mapping[str, Any]) -> list[str]:
    out = ["Controls:"]
    controls = trace.get("controls") or {}
    if not controls:
        out.append("  (none)")
    for name, entry in controls.items():
        out.append(f"  {name} = {entry['value']}   (set by {entry['source']})")
    tags = trace.get("tags") or {}
    out.append(f"Tags to add: {', '.join(tags.get('add') or []) or '-'}")
    out.append(f"Tags to remove: {', '.join(tags.get('remove') or []) or '-'}")
    classification = trace.get("classification")
    if classification:
        out.append(f"Classification: {classification['kind']} - {classification['reason']}")
    else:
        out.append("Classification: none (an ordinary mail)")
    for warning in trace.get("warnings") or []:
        out.append(f"Warning: {warning}")
    return out


def _value(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, ensure_ascii=False)
