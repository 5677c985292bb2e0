"""The loaded filter chain: YAML filters as immutable data, in run order."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connector.errors import ConfigError
from connector.filters.conditions import Condition

# [***] is group 1 of the first condition that captured; [***name] a named group;
# [***2] group 2. Every occurrence in a value is replaced.
PLACEHOLDER = re.compile(r"\[\*\*\*([A-Za-z0-9_]*)\]")


class FilterLoadError(ConfigError):
    """Filter files are invalid. ``errors`` holds one ``file:line: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        super().__init__(f"{count} {noun} in filter files:\n" + "\n".join(self.errors))


@dataclass(frozen=True)
class SetAction:
    """``control: value`` in a filter's ``set``; ``control`` is the canonical name."""

    control: str
    value: str
    line: int

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(PLACEHOLDER.findall(self.value))

    def render(self, captures: list[Mapping[str, str]]) -> str:
        """The value with placeholders filled from the conditions' captures, in order."""

        def fill(m: re.Match[str]) -> str:
            key = m.group(1) or "1"
            for found in captures:
                if key in found:
                    return found[key]
            return ""

        return PLACEHOLDER.sub(fill, self.value)


@dataclass(frozen=True)
class Filter:
    """One YAML filter. ``file``/``line`` say where it was written."""

    name: str
    conditions: tuple[Condition, ...]
    sets: tuple[SetAction, ...] = ()
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    stop_after_match: bool = False
    description: str = ""
    file: str = "<string>"
    line: int = 0

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


# Given a canonical control name and its literal value (None when the value has placeholders
# and is only known per message), return why the host cannot take it, or None.
HostCheck = Callable[[str, str | None], str | None]


@dataclass(frozen=True)
class FilterChain:
    """The YAML filters of every file, in run order (directories in order, files by name)."""

    filters: tuple[Filter, ...] = ()
    files: tuple[str, ...] = ()

    def host_errors(self, accepts: HostCheck) -> list[str]:
        """``file:line: message`` for every set value the host cannot take.

        The lead's config calls this at load time with a check built from the host mapping
        (Queue to a group, DynamicField-X to a custom field id...). Values with placeholders
        are checked by name only here, and per message by the decide stage.
        """
        errors = []
        for flt in self.filters:
            for action in flt.sets:
                literal = None if action.placeholders else action.value
                problem = accepts(action.control, literal)
                if problem:
                    errors.append(f"{flt.file}:{action.line}: filter {flt.name!r}: {problem}")
        return errors
