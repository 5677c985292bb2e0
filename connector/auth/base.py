"""What every OAuth2 token provider offers, and the cache in front of them.

A provider (``microsoft``, ``google``, ``generic``) knows one issuer and one grant; it asks for
a new access token when told to and says nothing about caching. ``TokenSource`` keeps the
current token, asks for a new one ``REFRESH_MARGIN`` seconds before it expires, and once more
when a server refused the token (``refresh()``). Delegated grants keep their refresh token in
a ``TokenFile`` in the state directory (mode 0600), never in the config or a log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: A token is renewed this many seconds before it expires, so no login starts with a token
#: that dies during the handshake (Microsoft and Google tokens live 60-90 minutes).
REFRESH_MARGIN = 300.0


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and what the issuer said about it."""

    value: str = field(repr=False)
    expires_at: float  # epoch seconds
    scopes: tuple[str, ...] = ()
    identity: str = ""  # who the token acts for: a mailbox, or the app for app-only grants

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at - now <= seconds


@dataclass(frozen=True)
class DeviceCode:
    """RFC 8628 device authorization: the person opens ``verification_uri`` and types
    ``user_code``; the bridge polls until they did (or ``expires_in`` passed)."""

    verification_uri: str
    user_code: str
    expires_in: int
    interval: int
    message: str = ""
    state: Mapping[str, Any] = field(default_factory=dict, repr=False)


class TokenProvider(Protocol):
    """One issuer, one grant."""

    #: ``microsoft``, ``google`` or ``generic``
    name: str

    def fetch_token(self) -> AccessToken:
        """A new access token from the issuer. Raises ``TokenError`` (try later) or
        ``GrantRevokedError`` (the grant is gone: the admin must act)."""

    def describe(self) -> str:
        """The grant in words, for ``check`` and logs; never a secret."""


class DeviceFlowProvider(TokenProvider, Protocol):
    """A provider whose grant a person authorizes once (``accounts authorize``)."""

    def start_device_flow(self) -> DeviceCode: ...

    def finish_device_flow(self, code: DeviceCode) -> AccessToken:
        """Polls until authorized; stores the refresh token. Raises TokenError when the code
        expired or was declined."""


class TokenSource:
    """The current token of one account, renewed before expiry; safe across threads (the
    poller and the outbound worker share it)."""

    def __init__(self, provider: TokenProvider, *, clock: Callable[[], float] = time.time,
                 margin: float = REFRESH_MARGIN) -> None:
        self.provider = provider
        self._clock = clock
        self._margin = margin
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self.fetches = 0

    def token(self) -> AccessToken:
        with self._lock:
            current = self._token
            if current is None or current.expires_within(self._margin, self._clock()):
                current = self._fetch()
            return current

    def refresh(self, refused: AccessToken | None = None) -> AccessToken:
        """A new token after a server refused ``refused``; another thread may already have
        replaced it, then that newer one is returned."""
        with self._lock:
            if refused is not None and self._token is not None and self._token != refused:
                return self._token
            return self._fetch()

    def _fetch(self) -> AccessToken:
        self._token = None
        token = self.provider.fetch_token()
        self.fetches += 1
        self._token = token
        log.debug("oauth2 token obtained provider=%s identity=%s expires_in=%.0fs",
                  self.provider.name, token.identity, token.expires_at - self._clock())
        return token


class TokenFile:
    """A small JSON document in the state directory, readable by the bridge's user only.

    Written to a temporary file created 0600 and renamed over the old one, so a crash never
    leaves half a file and the secret is never readable by others, not even for an instant.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("oauth2 token file unreadable path=%s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(dict(data), out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def update(self, **values: Any) -> None:
        data = self.load()
        data.update(values)
        self.save(data)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
