"""Options of the filter stage (global or per account), read from the config's ``filters:``."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from connector.errors import ConfigError


def classifier_names() -> tuple[str, ...]:
    """The switchable classifiers: the registry's names (``filters.classifiers.NAMES``)."""
    # Imported here: the classifiers read these settings, so the registry imports this module.
    from connector.filters.classifiers import NAMES

    return NAMES


@dataclass(frozen=True)
class ClassifierSwitches:
    """Which built-in classifiers run: all but those in ``off`` (names from the registry)."""

    off: frozenset[str] = frozenset()

    def enabled(self, name: str) -> bool:
        return name not in self.off


@dataclass(frozen=True)
class FilterSettings:
    """Options of the filter stage. YAML shape (under ``filters:``, global or per account)::

        filters:
          filter_dirs: [filters, /etc/postmaster-bridge/filters.d]  # relative to the config file
          classifiers:            # each built-in classifier can be switched off
            loop: true
            attachments: true
            bounce: true
            auto_reply: true
            forwarded: true
            commands: true
            dispatch: true
            keywords: true
          own_addresses: [support@example.com]   # the bridge's sending addresses
          sender_cap_per_day: 40                 # mails per sender per Date day, more are held
          dispatch:                              # system address -> queue/group name
            billing@example.com: Billing
            support+sales@example.com: Sales
          staff: [alice@example.com, "@example.com"]   # addresses or @domains
          keywords:                              # keyword -> tags (subject and body)
            invoice: [billing]
            outage: [outage, urgent]
          list_mail_is_auto_reply: false         # true: list mail is also a weak auto-reply
          regex_timeout_ms: 200                  # per regex evaluation
          match_budget_ms: 2000                  # all regexes of one message together

    Addresses are compared lower-cased. A per-account block is read with ``base=`` the global
    settings: keys it gives replace the global ones, the others are inherited.
    """

    filter_dirs: tuple[Path, ...] = ()
    classifiers: ClassifierSwitches = field(default_factory=ClassifierSwitches)
    own_addresses: frozenset[str] = frozenset()
    sender_cap_per_day: int = 40
    dispatch: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    staff: tuple[str, ...] = ()
    keywords: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    list_mail_is_auto_reply: bool = False
    regex_timeout_ms: int = 200
    match_budget_ms: int = 2000

    def is_staff(self, address: str | None) -> bool:
        """True when ``address`` is listed in ``staff`` or its domain is (``@example.com``)."""
        if not address:
            return False
        addr = address.strip().lower()
        domain = "@" + addr.rpartition("@")[2]
        return addr in self.staff or domain in self.staff

    def is_own_address(self, address: str | None) -> bool:
        """True when ``address`` is one of the bridge's own sending addresses."""
        return address is not None and address.strip().lower() in self.own_addresses

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | None,
        *,
        path: str,
        key: str,
        base: FilterSettings | None = None,
    ) -> FilterSettings:
        """Read and validate the ``filters:`` mapping; raises ``ConfigError(path=, key=)``."""
        reader = _Reader(path, key)
        base = base or cls()
        if data is None:
            return base
        if not isinstance(data, Mapping):
            raise ConfigError("must be a mapping", path=path, key=key)
        known = [f.name for f in fields(cls)]
        for name in data:
            if name not in known:
                reader.unknown(str(name), known)
        changes: dict[str, Any] = {}
        if "filter_dirs" in data:
            changes["filter_dirs"] = reader.dirs(data["filter_dirs"], "filter_dirs")
        if "classifiers" in data:
            changes["classifiers"] = reader.switches(data["classifiers"], base.classifiers)
        if "own_addresses" in data:
            addresses = reader.addresses(data["own_addresses"], "own_addresses")
            changes["own_addresses"] = frozenset(addresses)
        for name in ("sender_cap_per_day", "regex_timeout_ms", "match_budget_ms"):
            if name in data:
                changes[name] = reader.count(data[name], name, minimum=0 if "cap" in name else 1)
        if "dispatch" in data:
            changes["dispatch"] = MappingProxyType(reader.dispatch(data["dispatch"]))
        if "staff" in data:
            changes["staff"] = tuple(reader.staff(data["staff"]))
        if "keywords" in data:
            changes["keywords"] = MappingProxyType(reader.keywords(data["keywords"]))
        if "list_mail_is_auto_reply" in data:
            changes["list_mail_is_auto_reply"] = reader.flag(
                data["list_mail_is_auto_reply"], "list_mail_is_auto_reply"
            )
        return replace(base, **changes)


class _Reader:
    """Typed reading of config values, each error naming the file and the dotted key."""

    def __init__(self, path: str, key: str) -> None:
        self.path = path
        self.key = key

    def fail(self, sub: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, key=f"{self.key}.{sub}" if sub else self.key)

    def unknown(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise self.fail(name, f"unknown key{hint}")

    def flag(self, value: Any, sub: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(sub, "must be true or false")
        return value

    def count(self, value: Any, sub: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(sub, f"must be a whole number >= {minimum}")
        return value

    def strings(self, value: Any, sub: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(sub, "must be a list of non-empty strings")
        return [v.strip() for v in value]

    def dirs(self, value: Any, sub: str) -> tuple[Path, ...]:
        root = Path(self.path).parent if self.path else Path(".")
        return tuple(
            Path(d) if Path(d).is_absolute() else root / d for d in self.strings(value, sub)
        )

    def addresses(self, value: Any, sub: str) -> list[str]:
        out = []
        for item in self.strings(value, sub):
            if item.count("@") != 1 or item.startswith("@") or item.endswith("@"):
                raise self.fail(sub, f"{item!r} is not an e-mail address")
            out.append(item.lower())
        return out

    def staff(self, value: Any) -> list[str]:
        out = []
        for item in self.strings(value, "staff"):
            if item.count("@") != 1 or item.endswith("@"):
                raise self.fail("staff", f"{item!r} is neither an address nor an @domain")
            out.append(item.lower())
        return out

    def switches(self, value: Any, base: ClassifierSwitches) -> ClassifierSwitches:
        if not isinstance(value, Mapping):
            raise self.fail("classifiers", "must be a mapping of classifier names to true/false")
        names = classifier_names()
        off = set(base.off)
        for name, flag in value.items():
            if name not in names:
                close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(f"classifiers.{name}", f"unknown classifier{hint}")
            if self.flag(flag, f"classifiers.{name}"):
                off.discard(name)
            else:
                off.add(name)
        return ClassifierSwitches(frozenset(off))

    def dispatch(self, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise self.fail("dispatch", "must be a mapping of addresses to queue names")
        out = {}
        for address, queue in value.items():
            if not isinstance(address, str) or address.count("@") != 1:
                raise self.fail("dispatch", f"{address!r} is not an e-mail address")
            if not isinstance(queue, str) or not queue.strip():
                raise self.fail(f"dispatch.{address}", "must be a queue/group name")
            out[address.strip().lower()] = queue.strip()
        return out

    def keywords(self, value: Any) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            raise self.fail("keywords", "must be a mapping of keywords to tags")
        out = {}
        for word, tags in value.items():
            if not isinstance(word, str) or not word.strip():
                raise self.fail("keywords", f"{word!r} is not a keyword")
            tag_list = self.strings(tags, f"keywords.{word}")
            if any(" " in t or "," in t for t in tag_list):
                raise self.fail(f"keywords.{word}", "tags cannot contain spaces or commas")
            out[word.strip()] = tuple(tag_list)
        return out
