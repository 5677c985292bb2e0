"""Google Workspace tokens through google-auth (and ``accounts authorize``'s browser sign-in
for installed apps, connector.auth.loopback).

``flow: service_account``: a service account with domain-wide delegation acts as the mailbox
(``subject``, default the account's username) with scope ``https://mail.google.com/``.
``flow: refresh_token``: an installed-app OAuth client and a user's refresh token (from
``refresh_token_file`` / ``${ENV}``, or stored in the token file).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import requests

from connector.auth.base import AccessToken, TokenFile
from connector.auth.generic import raise_for_error, token_from_response
from connector.auth.http import make_session
from connector.auth.settings import OAuth2Settings
from connector.errors import ConfigError, GrantRevokedError, TokenError


class GoogleProvider:
    name = "google"

    def __init__(self, settings: OAuth2Settings, *, clock: Callable[[], float] = time.time
                 ) -> None:
        self.settings = settings
        self._clock = clock
        self.store = TokenFile(settings.token_file) if settings.token_file else None
        self._session = make_session(settings.token_url, settings.ca_file)
        self._request = google.auth.transport.requests.Request(self._session)
        self._credentials: Any = None

    def describe(self) -> str:
        s = self.settings
        if s.flow == "service_account":
            return f"Google service account {self._service_email()} acting as {s.subject}"
        return f"Google installed app {s.client_id} for {s.username}"

    def _service_info(self) -> dict[str, Any]:
        try:
            info = json.loads(self.settings.service_account)
        except ValueError:
            info = None
        if not isinstance(info, dict) or "private_key" not in info:
            raise ConfigError(f"account {self.settings.account}: oauth2.service_account_file is "
                              "not a Google service account JSON key")
        return {**info, "token_uri": self.settings.token_url}

    def _service_email(self) -> str:
        try:
            return str(self._service_info().get("client_email", "?"))
        except ConfigError:
            return "?"

    def _make_credentials(self) -> Any:
        s = self.settings
        if s.flow == "service_account":
            return google.oauth2.service_account.Credentials.from_service_account_info(
                self._service_info(), scopes=list(s.scopes), subject=s.subject)
        stored = self.store.load().get("refresh_token") if self.store else None
        refresh_token = stored or s.refresh_token
        if not refresh_token:
            raise GrantRevokedError(
                f"account {s.account}: no refresh token for {s.username}",
                remedy="Put the user's refresh token in oauth2.refresh_token_file (or "
                       "${ENV}), then re-enable the account")
        return google.oauth2.credentials.Credentials(
            token=None, refresh_token=refresh_token, client_id=s.client_id,
            client_secret=s.client_secret, token_uri=s.token_url, scopes=list(s.scopes))

    def authorize_in_browser(self, show: Callable[[str, int], None]) -> AccessToken:
        """Installed app: sign in through the browser (loopback redirect, PKCE), redeem the
        code, keep the refresh token in the token file."""
        from connector.auth.loopback import sign_in_in_browser

        s = self.settings
        code, redirect_uri, verifier = sign_in_in_browser(
            authorization_url=s.authorization_url, client_id=s.client_id, scopes=s.scopes,
            login_hint=s.username, show=show)
        try:
            response = self._session.post(s.token_url, timeout=s.timeout, data={
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "client_id": s.client_id,
                "client_secret": s.client_secret, "code_verifier": verifier})
        except requests.RequestException as exc:
            raise TokenError(f"account {s.account}: cannot reach {s.token_url}: "
                             f"{type(exc).__name__}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code != 200 or not isinstance(data, dict):
            raise_for_error(s, response.status_code, data if isinstance(data, dict) else {},
                            "code redemption")
        if not data.get("refresh_token"):
            raise TokenError(f"account {s.account}: Google granted no refresh token (the "
                             "request asks for offline access; revoke the app's access in the "
                             "Google account and sign in again)")
        if self.store is not None:
            self.store.update(refresh_token=data["refresh_token"], identity=s.username,
                              scopes=list(s.scopes), obtained_at=self._clock())
        self._credentials = None
        return token_from_response(data, s, self._clock())

    def fetch_token(self) -> AccessToken:
        s = self.settings
        if self._credentials is None:
            self._credentials = self._make_credentials()
        credentials = self._credentials
        try:
            credentials.refresh(self._request)
        except google.auth.exceptions.RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            status = 503 if getattr(exc, "retryable", False) or not data else 400
            raise_for_error(s, status, data or {"error": str(exc.args[0] if exc.args else exc)},
                            "token request")
        except google.auth.exceptions.TransportError as exc:
            raise TokenError(f"account {s.account}: cannot reach {s.token_url}: "
                             f"{type(exc).__name__}") from exc
        expiry = credentials.expiry
        expires_at = (calendar.timegm(expiry.timetuple()) if expiry is not None
                      else self._clock() + 3600)
        rotated = getattr(credentials, "refresh_token", None)
        if s.flow == "refresh_token" and self.store is not None and rotated and \
                rotated != self.store.load().get("refresh_token"):
            self.store.update(refresh_token=rotated, obtained_at=self._clock())
        granted = getattr(credentials, "granted_scopes", None) or s.scopes
        identity = s.subject if s.flow == "service_account" else s.username
        return AccessToken(value=str(credentials.token), expires_at=float(expires_at),
                           scopes=tuple(granted), identity=identity)
