"""Reading typed values out of the config file, every problem with file and key path.

``Reader`` reads one mapping (a section); ``Problems`` gathers what every reader of one file
found, so that a run reports all of a file's problems at once instead of one per run. A value
that is wrong is noted and replaced by its default, so that the rest of the section can still
be checked; ``Problems.raise_if_any()`` then refuses the whole file. Shared by
``connector.config`` and the sections other stages own (``connector.outbound.settings``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from connector.errors import ConfigError, ConfigErrors
from connector.tls import INSECURE_KEY, unverified_refusal

T = TypeVar("T")

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
#: What a required value reads as once its absence is noted (the rest of the section goes on).
_NEUTRAL: dict[type, Any] = {str: "", int: 0, float: 0.0, bool: False, list: [], dict: {}}


def otobo_ticket_pattern(hook: str) -> str:
    """OTOBO's subject reference ``[Ticket#2026112310000012]`` for a ``Ticket::Hook`` (the
    accounts' default and the outbound subjects' under an OTOBO host)."""
    return r"\[" + re.escape(hook) + r"\s*(\d+)\]"


class Problems:
    """Every problem of one config file, in the order found. The first problem of a key path
    is the one reported: what a wrong value makes go wrong after it is noise."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self._keys: set[tuple[str | None, str | None]] = set()

    def add(self, error: ConfigError) -> None:
        for each in getattr(error, "problems", None) or [error]:
            where = (each.path, each.key)
            if where not in self._keys:
                self._keys.add(where)
                self.errors.append(each)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Note a ConfigError raised inside (a section that cannot go on) and carry on."""
        try:
            yield
        except ConfigError as exc:
            self.add(exc)

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


class Reader:
    """Reads typed values out of a mapping, remembering the key path for error messages.

    With ``problems``, a wrong value is noted there and read as its default; without, it raises
    at once. With ``secrets=False`` a secret that cannot be resolved here (an unset variable,
    an unreadable file) reads as "" and is listed in ``missing_secrets``: for the commands
    that never log in (``filters check``, ``filters test``)."""

    def __init__(self, data: Any, path: str, key: str, base_dir: Path, *,
                 problems: Problems | None = None, secrets: bool = True,
                 missing_secrets: list[str] | None = None) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping, got {type(data).__name__}", path=path, key=key)
        self.data = data
        self.path = path
        self.key = key
        self.base_dir = base_dir
        self.problems = problems
        self.secrets = secrets
        self.missing_secrets = missing_secrets if missing_secrets is not None else []
        self.used: set[str] = set()

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, key=self.sub(name))

    def problem(self, name: str, message: str) -> None:
        """Note a problem with ``name`` (raise it when this reader collects nothing)."""
        self.report(self.error(name, message))

    def report(self, error: ConfigError) -> None:
        if self.problems is None:
            raise error
        self.problems.add(error)

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def child(self, name: str) -> Reader:
        self.used.add(name)
        data = self.data.get(name) or {}
        if not isinstance(data, Mapping):
            self.problem(name, f"expected a mapping, got {type(data).__name__}")
            data = {}
        return Reader(data, self.path, self.sub(name), self.base_dir, problems=self.problems,
                      secrets=self.secrets, missing_secrets=self.missing_secrets)

    def has(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = None,
            *, required: bool = False) -> Any:
        self.used.add(name)
        if not self.has(name):
            if required:
                self.problem(name, "is required")
                first = kind[0] if isinstance(kind, tuple) else kind
                return default if default is not None else _NEUTRAL.get(first)
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, bool) and kind in (int, float):
            self.problem(name, f"must be a number, got {value!r}")
            return default
        if not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.problem(name, f"must be {want}, got {type(value).__name__} {value!r}")
            return default
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None,
               *, required: bool = False) -> Any:
        value = self.get(name, str, default, required=required)
        if value is not None and value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}; got {value!r}")
            return default
        return value

    def positive(self, name: str, kind: type, default: Any) -> Any:
        value = self.get(name, kind, default)
        if value is not None and value <= 0:
            self.problem(name, f"must be greater than 0, got {value!r}")
            return default
        return value

    def size(self, name: str, default: int) -> int:
        self.used.add(name)
        if not self.has(name):
            return default
        value = self.data[name]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _SIZE.match(str(value))
        unit = (match.group(2) or "").lower() if match else None
        if not match or unit not in _SIZE_UNITS or float(match.group(1)) <= 0:
            self.problem(name, f"must be a size such as 25MB or 1048576, got {value!r}")
            return default
        return int(float(match.group(1)) * _SIZE_UNITS[unit])

    def secret(self, name: str, *, required: bool) -> str:
        """A secret from ``${ENV}`` or ``<name>_file``; a literal secret is refused."""
        file_key = f"{name}_file"
        self.used.update({name, file_key})
        has_value, has_file = self.has(name), self.has(file_key)
        if has_value and has_file:
            self.problem(name, f"give either {name} or {file_key}, not both")
            return ""
        if has_file:
            file_path = self.path_value(file_key)
            try:
                return file_path.read_text(encoding="utf-8").strip()  # type: ignore[union-attr]
            except OSError as exc:
                return self._unavailable(file_key, f"cannot read {file_path}: {exc.strerror}")
        if has_value:
            raw = str(self.data[name])
            match = _ENV_REF.match(raw.strip())
            if not match:
                self.problem(name, "secrets are not written in the config file: use "
                             f"'{name}: ${{ENV_NAME}}' or '{file_key}: PATH'")
                return ""
            env_name = match.group(1)
            if env_name not in os.environ:
                return self._unavailable(name, f"environment variable {env_name} is not set")
            return os.environ[env_name]
        if required:
            self.problem(name, f"is required (as {name}: ${{ENV_NAME}} or {file_key}: PATH)")
        return ""

    def _unavailable(self, name: str, message: str) -> str:
        if self.secrets:
            self.problem(name, message)
        else:
            self.missing_secrets.append(f"{self.sub(name)}: {message}")
        return ""

    def path_value(self, name: str) -> Path | None:
        value = self.get(name, str)
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.base_dir / p)

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self.get(name, (list, str), [])
        items = [value] if isinstance(value, str) else value
        for i, item in enumerate(items):
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                self.report(ConfigError(f"must be a string, got {item!r}", path=self.path,
                                        key=f"{self.sub(name)}[{i}]"))
                return ()
        return tuple(str(i) for i in items)

    def int_map(self, name: str) -> dict[str, int]:
        value = self.get(name, dict, {})
        out: dict[str, int] = {}
        for k, v in value.items():
            if not isinstance(v, int) or isinstance(v, bool):
                self.report(ConfigError(f"must be an integer id, got {v!r}", path=self.path,
                                        key=f"{self.sub(name)}.{k}"))
                continue
            out[str(k)] = v
        return out

    def verify_tls(self, host: str) -> tuple[bool, bool]:
        """(verify_tls, insecure_tls_i_understand): off only for loopback or when
        acknowledged."""
        verify = self.get("verify_tls", bool, True)
        insecure = self.get(INSECURE_KEY, bool, False)
        refusal = unverified_refusal(host, verify, insecure)
        if refusal:
            self.problem("verify_tls", refusal)
        return verify, insecure

    def field_map(self, name: str) -> dict[str, int | str]:
        """Names to helpdesk fields: Zendesk's numeric ids or OTOBO's dynamic field names."""
        value = self.get(name, dict, {})
        out: dict[str, int | str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
                self.report(ConfigError(f"must be a field id or a dynamic field name, got "
                                        f"{v!r}", path=self.path, key=f"{self.sub(name)}.{k}"))
                continue
            out[str(k)] = v
        return out

    def ignore(self, *names: str) -> None:
        """Keys that are right in this file but not read here (another host type's)."""
        self.used.update(names)

    def finish(self, extra_allowed: tuple[str, ...] = ()) -> None:
        """Every key not read is unknown: one problem per key, with a did-you-mean."""
        known = sorted(self.used | set(extra_allowed))
        for name in sorted(set(map(str, self.data)) - self.used - set(extra_allowed)):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
            self.problem(name, "unknown key" + (f" (did you mean {close[0]!r}?)" if close
                                                else ""))
