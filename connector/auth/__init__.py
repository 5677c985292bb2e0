"""OAuth2 for mailbox logins: token providers behind one interface, one token source per
account (shared by the poller, ``check`` and the outbound worker)."""

from __future__ import annotations

import threading

from connector.auth.base import AccessToken, DeviceCode, TokenProvider, TokenSource
from connector.auth.settings import OAuth2Settings

_sources: dict[OAuth2Settings, TokenSource] = {}
_lock = threading.Lock()


def make_provider(settings: OAuth2Settings) -> TokenProvider:
    if settings.provider == "microsoft":
        from connector.auth.microsoft import MicrosoftProvider

        return MicrosoftProvider(settings)
    if settings.provider == "google":
        from connector.auth.google import GoogleProvider

        return GoogleProvider(settings)
    from connector.auth.generic import GenericProvider

    return GenericProvider(settings)


def token_source(settings: OAuth2Settings) -> TokenSource:
    """The one token source of these settings: a token outlives connections, so IMAP, SMTP and
    ``check`` of one account share it."""
    with _lock:
        source = _sources.get(settings)
        if source is None:
            source = _sources[settings] = TokenSource(make_provider(settings))
        return source


def forget_sources() -> None:
    """Drop every cached token (tests; a reloaded configuration)."""
    with _lock:
        _sources.clear()


__all__ = ["AccessToken", "DeviceCode", "OAuth2Settings", "TokenProvider", "TokenSource",
           "forget_sources", "make_provider", "token_source"]
