"""Loading YAML filter files, validating everything before any mail is touched.

Files are read with ``yaml.compose`` so every node keeps its line: each error names the file
and the line (``filters/10-route.yaml:7: unknown key 'stop_after_matches' (did you mean
'stop_after_match'?)``). All files are checked and all errors collected, then one
:class:`FilterLoadError` lists them.

File format: a YAML list of filters. See filters/README.md for the full reference.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from connector.filters.chain import Filter, FilterChain, FilterLoadError, SetAction
from connector.filters.conditions import OPERATORS, PSEUDO_FIELDS, Condition, ConditionError
from connector.filters.controls import (
    canonical_control,
    check_value,
    is_control_namespace,
    spec_for,
    unknown_control_message,
)

FILTER_KEYS = (
    "name",
    "description",
    "match",
    "set",
    "add_tags",
    "remove_tags",
    "stop_after_match",
)
CONDITION_KEYS = ("header", "field", *OPERATORS, "not", "case_sensitive", "address")
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_TAG_TEXT = re.compile(r"^[^\s,]+$")
# Pseudo-field names that cannot sensibly be header names: `header: body` is a mistake.
_NOT_HEADERS = {"body", "body_html", "attachment_names"}


_T = TypeVar("_T")
# Reports one problem: (line, message).
_Report = Callable[[int, str], None]


class _Invalid(Exception):
    """One problem at one line; the loader turns it into ``file:line: message``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_chain(dirs: Sequence[Path | str]) -> FilterChain:
    """Load every ``*.yaml``/``*.yml`` file of ``dirs`` (directories in order, files by name).

    Raises :class:`FilterLoadError` listing every problem found.
    """
    errors: list[str] = []
    filters: list[Filter] = []
    files: list[str] = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            errors.append(f"{directory}: filter directory does not exist")
            continue
        for path in filter_files(directory):
            files.append(str(path))
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"{path}: cannot read: {exc}")
                continue
            filters.extend(parse_filters(text, str(path), errors))
    errors.extend(_duplicate_names(filters))
    if errors:
        raise FilterLoadError(errors)
    return FilterChain(tuple(filters), tuple(files))


def load_text(text: str, source: str = "<string>") -> FilterChain:
    """Load one file's text (for tests and tools); raises :class:`FilterLoadError`."""
    errors: list[str] = []
    filters = parse_filters(text, source, errors)
    errors.extend(_duplicate_names(filters))
    if errors:
        raise FilterLoadError(errors)
    return FilterChain(tuple(filters), (source,))


def filter_files(directory: Path) -> list[Path]:
    """The filter files of one directory, in name order (hidden files skipped)."""
    return sorted(
        (
            p
            for p in directory.iterdir()
            if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )


def parse_filters(text: str, source: str, errors: list[str]) -> list[Filter]:
    """The filters of one file; problems are appended to ``errors``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(f"{source}:{line}: YAML syntax error: {problem}")
        return []
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        return []  # a file holding only comments
    if not isinstance(root, SequenceNode):
        errors.append(f"{source}:{_line(root)}: a filter file is a list of filters")
        return []
    filters = []
    for item in root.value:
        local: list[_Invalid] = []
        flt = _filter(item, source, local)
        errors.extend(f"{source}:{problem.line}: {problem.message}" for problem in local)
        if flt is not None and not local:
            filters.append(flt)
    return filters


def _filter(node: Node, source: str, problems: list[_Invalid]) -> Filter | None:
    if not isinstance(node, MappingNode):
        problems.append(_Invalid(_line(node), "a filter is a mapping (name, match, set...)"))
        return None
    fields = _mapping(node, FILTER_KEYS, "filter", problems)
    name_node = fields.get("name")
    name = _guard(problems, lambda: _text(name_node, "name")) if name_node else None
    if name_node is None:
        problems.append(_Invalid(_line(node), "filter has no name"))
    label = f"filter {name!r}: " if name else ""

    def invalid(line: int, message: str) -> None:
        problems.append(_Invalid(line, label + message))

    def labelled(read: Callable[[], _T]) -> _T | None:
        try:
            return read()
        except _Invalid as problem:
            invalid(problem.line, problem.message)
            return None

    description = ""
    if "description" in fields:
        description = labelled(lambda: _text(fields["description"], "description")) or ""

    conditions: list[Condition] = []
    match_node = fields.get("match")
    if match_node is None:
        invalid(_line(node), "filter has no match list (a filter without conditions never runs)")
    elif not isinstance(match_node, SequenceNode) or not match_node.value:
        invalid(_line(match_node), "match must be a non-empty list of conditions")
    else:
        for cond_node in match_node.value:
            try:
                conditions.append(_condition(cond_node))
            except _Invalid as problem:
                invalid(problem.line, problem.message)

    sets = _sets(fields.get("set"), conditions, invalid)
    add_tags = _tags(fields.get("add_tags"), "add_tags", invalid)
    remove_tags = _tags(fields.get("remove_tags"), "remove_tags", invalid)
    if not any(key in fields for key in ("set", "add_tags", "remove_tags")):
        invalid(_line(node), "filter does nothing: give set, add_tags or remove_tags")
    stop = False
    if "stop_after_match" in fields:
        stop = bool(labelled(lambda: _bool(fields["stop_after_match"], "stop_after_match")))
    if name is None:
        return None
    return Filter(
        name=name,
        conditions=tuple(conditions),
        sets=tuple(sets),
        add_tags=tuple(add_tags),
        remove_tags=tuple(remove_tags),
        stop_after_match=stop,
        description=description,
        file=source,
        line=_line(node),
    )


def _condition(node: Node) -> Condition:
    if not isinstance(node, MappingNode):
        raise _Invalid(_line(node), "a condition is a mapping such as {header: From, regex: ...}")
    problems: list[_Invalid] = []
    fields = _mapping(node, CONDITION_KEYS, "condition", problems)
    if problems:
        raise problems[0]
    line = _line(node)
    targets = [k for k in ("header", "field") if k in fields]
    if len(targets) != 1:
        raise _Invalid(line, "a condition names exactly one of header: or field:")
    pseudo = targets[0] == "field"
    target = _text(fields[targets[0]], targets[0])
    if pseudo and target not in PSEUDO_FIELDS:
        raise _Invalid(_line(fields["field"]), _unknown("pseudo-field", target, PSEUDO_FIELDS))
    if not pseudo and target.lower() in _NOT_HEADERS:
        hint = f"{target!r} is a pseudo-field: write field: {target}"
        raise _Invalid(_line(fields["header"]), hint)
    if not pseudo and is_control_namespace(target) and canonical_control(target) is None:
        raise _Invalid(_line(fields["header"]), unknown_control_message(target))
    operators = [k for k in OPERATORS if k in fields]
    if len(operators) != 1:
        raise _Invalid(line, f"a condition has exactly one operator of: {', '.join(OPERATORS)}")
    operator = operators[0]
    op_node = fields[operator]
    operand: object
    if operator == "exists":
        operand = _bool(op_node, "exists")
    elif operator in ("starts_with", "ends_with", "is_any_of"):
        operand = _text_list(op_node, operator)
    else:
        operand = _text(op_node, operator, allow_empty=operator == "is")
    try:
        return Condition.create(
            field=target,
            pseudo=pseudo,
            operator=operator,
            operand=operand,
            negate=_bool(fields["not"], "not") if "not" in fields else False,
            case_sensitive=(
                _bool(fields["case_sensitive"], "case_sensitive")
                if "case_sensitive" in fields
                else False
            ),
            address=_bool(fields["address"], "address") if "address" in fields else False,
            line=line,
        )
    except ConditionError as exc:
        raise _Invalid(_line(op_node), str(exc)) from exc


def _sets(node: Node | None, conditions: list[Condition], invalid: _Report) -> list[SetAction]:
    if node is None:
        return []
    if not isinstance(node, MappingNode) or not node.value:
        invalid(_line(node), "set must be a non-empty mapping of control headers to values")
        return []
    available: set[str] = set()
    for cond in conditions:
        available |= cond.capture_names
    actions: list[SetAction] = []
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = _line(key_node)
        try:
            key = _text(key_node, "control header")
            value = _text(value_node, key, allow_empty=True)
        except _Invalid as problem:
            invalid(problem.line, problem.message)
            continue
        control = canonical_control(key)
        if control is None:
            if is_control_namespace(key):
                invalid(line, unknown_control_message(key))
            else:
                invalid(line, f"{key!r} is not a control header (X-OTOBO-*, X-Bridge-*)")
            continue
        if not spec_for(control).settable:
            invalid(line, f"{control} is set by the bridge; filters can match it, not set it")
            continue
        if control in seen:
            invalid(line, f"{control} is set twice (first at line {seen[control]})")
            continue
        seen[control] = line
        action = SetAction(control, value, line)
        for name in sorted(action.placeholders):
            key_name = name or "1"
            if key_name not in available:
                what = "[***]" if not name else f"[***{name}]"
                invalid(line, f"{what} has no capture: no regex condition defines group {key_name}")
        if not action.placeholders:
            problem = check_value(control, value)
            if problem:
                invalid(_line(value_node), problem)
        actions.append(action)
    return actions


def _tags(node: Node | None, key: str, invalid: _Report) -> list[str]:
    if node is None:
        return []
    try:
        tags = _text_list(node, key)
    except _Invalid as problem:
        invalid(problem.line, problem.message)
        return []
    bad = [t for t in tags if not _TAG_TEXT.match(t)]
    if bad:
        invalid(_line(node), f"{key}: tags cannot contain spaces or commas: {bad!r}")
        return []
    return tags


def _mapping(
    node: MappingNode, allowed: Sequence[str], what: str, problems: list[_Invalid]
) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            problems.append(_Invalid(_line(key_node), f"{what} keys must be plain words"))
            continue
        key = key_node.value
        if key not in allowed:
            problems.append(_Invalid(_line(key_node), _unknown(f"{what} key", key, allowed)))
        elif key in out:
            problems.append(_Invalid(_line(key_node), f"duplicate {what} key {key!r}"))
        else:
            out[key] = value_node
    return out


def _unknown(what: str, key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r}{hint}"


def _text(node: Node | None, what: str, *, allow_empty: bool = False) -> str:
    """A scalar's text exactly as written: ``yes`` stays ``"yes"``, ``01`` stays ``"01"``."""
    if not isinstance(node, ScalarNode):
        raise _Invalid(_line(node), f"{what} must be a single value, not a list or mapping")
    if node.tag == _NULL_TAG and node.value in ("", "~", "null", "Null", "NULL"):
        if allow_empty:
            return ""
        raise _Invalid(_line(node), f"{what} is empty")
    if not node.value and not allow_empty:
        raise _Invalid(_line(node), f"{what} is empty")
    return node.value


def _text_list(node: Node, what: str) -> list[str]:
    if isinstance(node, ScalarNode):
        return [_text(node, what)]
    if not isinstance(node, SequenceNode) or not node.value:
        raise _Invalid(_line(node), f"{what} must be a value or a non-empty list of values")
    return [_text(item, what) for item in node.value]


def _bool(node: Node, what: str) -> bool:
    if not isinstance(node, ScalarNode) or node.tag != _BOOL_TAG:
        raise _Invalid(_line(node), f"{what} must be true or false")
    return node.value.lower() in ("true", "yes", "on", "y")


def _guard(problems: list[_Invalid], read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except _Invalid as problem:
        problems.append(problem)
        return None


def _line(node: Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _duplicate_names(filters: list[Filter]) -> list[str]:
    first: dict[str, Filter] = {}
    errors = []
    for flt in filters:
        if flt.name in first:
            earlier = first[flt.name]
            errors.append(
                f"{flt.location}: filter name {flt.name!r} is already used at {earlier.location}"
            )
        else:
            first[flt.name] = flt
    return errors
