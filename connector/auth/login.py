"""One OAuth2 login, whatever the protocol: take the account's current token, try it, and when
the server refuses it get a new one and try once more.

A refusal with a token the issuer just handed out is not retried again: the server's view of
the grant (permissions, mailbox access) is the problem then, and the error says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from connector.auth import token_source
from connector.auth.base import AccessToken
from connector.auth.settings import OAuth2Settings
from connector.errors import AuthenticationError, TokenError

log = logging.getLogger(__name__)


def login_with_token(settings: OAuth2Settings, attempt: Callable[[AccessToken], None],
                     where: str) -> AccessToken:
    """Run ``attempt(token)`` (raises AuthenticationError when the server refuses it) with the
    current token, then once with a fresh one. Returns the token that was accepted."""
    source = token_source(settings)
    token = source.token()
    try:
        attempt(token)
        return token
    except TokenError:
        raise
    except AuthenticationError as first:
        log.info("oauth2 token refused account=%s server=%s: %s; getting a new one",
                 settings.account, where, first)
    token = source.refresh(token)
    try:
        attempt(token)
    except TokenError:
        raise
    except AuthenticationError as exc:
        raise AuthenticationError(
            f"{exc} (with a token just issued to {token.identity or settings.username}: check "
            f"that the app may use this mailbox over this protocol, scopes "
            f"{' '.join(token.scopes) or '?'})") from None
    return token
