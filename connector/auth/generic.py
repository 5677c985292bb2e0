"""Any RFC 6749 token endpoint (Keycloak, Dovecot's IdP, Authentik...): client credentials,
a refresh token, or the RFC 8628 device flow that obtains one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from connector.auth.base import AccessToken, DeviceCode, TokenFile
from connector.auth.http import make_session
from connector.auth.jwt import claims, identity_of, scopes_of
from connector.auth.remedies import remedy
from connector.auth.settings import OAuth2Settings
from connector.errors import GrantRevokedError, TokenError

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def token_from_response(data: Mapping[str, Any], settings: OAuth2Settings,
                        now: float) -> AccessToken:
    """An ``AccessToken`` from a token endpoint's JSON (RFC 6749 section 5.1)."""
    value = data.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError(f"account {settings.account}: the token endpoint answered without an "
                         "access_token")
    try:
        lifetime = float(data.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    jwt = claims(value)
    scope = data.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else scopes_of(jwt)
    return AccessToken(value=value, expires_at=now + lifetime, scopes=scopes,
                       identity=identity_of(jwt) or settings.username)


def raise_for_error(settings: OAuth2Settings, status: int, data: Mapping[str, Any],
                    what: str) -> None:
    """A failed token-endpoint answer as GrantRevokedError or TokenError."""
    error = str(data.get("error") or f"HTTP {status}")
    description = str(data.get("error_description") or "").strip()
    text = f"account {settings.account}: {what} refused: {error}"
    if description:
        text += f" ({description.splitlines()[0]})"
    if status < 500 and status != 429:
        fix = remedy(settings, error, description, data.get("error_codes"))
        if fix is not None:
            raise GrantRevokedError(text, remedy=fix)
    raise TokenError(text)


class GenericProvider:
    """RFC 6749 token endpoint at ``oauth2.token_url``."""

    name = "generic"

    def __init__(self, settings: OAuth2Settings, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 session: requests.Session | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._session = session or make_session(settings.token_url, settings.ca_file)
        self.store = TokenFile(settings.token_file) if settings.token_file else None

    def describe(self) -> str:
        s = self.settings
        return f"{s.flow} at {s.token_url} as client {s.client_id}"

    # -- grants ----------------------------------------------------------------------------
    def fetch_token(self) -> AccessToken:
        s = self.settings
        if s.flow == "client_credentials":
            form = {"grant_type": "client_credentials"}
        else:
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token()}
        if s.scopes:
            form["scope"] = " ".join(s.scopes)
        data = self._post(s.token_url, form, "token request")
        return self._accept(data)

    def _refresh_token(self) -> str:
        s = self.settings
        stored = self.store.load().get("refresh_token") if self.store else None
        token = stored or s.refresh_token
        if not token:
            raise GrantRevokedError(
                f"account {s.account}: no refresh token yet",
                remedy=f"Run 'postmaster-bridge accounts authorize {s.account}' once to sign "
                       "in (the refresh token is kept in the state directory)")
        return str(token)

    def _accept(self, data: Mapping[str, Any]) -> AccessToken:
        token = token_from_response(data, self.settings, self._clock())
        rotated = data.get("refresh_token")
        if self.store is not None and isinstance(rotated, str) and rotated:
            # Issuers that rotate refresh tokens invalidate the old one: keep the new one.
            self.store.update(refresh_token=rotated, identity=token.identity,
                              scopes=list(token.scopes), obtained_at=self._clock())
        return token

    # -- RFC 8628 device flow -------------------------------------------------------------
    def start_device_flow(self) -> DeviceCode:
        s = self.settings
        form = {"scope": " ".join(s.scopes)} if s.scopes else {}
        data = self._post(s.device_authorization_url, form, "device authorization")
        uri = data.get("verification_uri_complete") or data.get("verification_uri")
        return DeviceCode(verification_uri=str(uri), user_code=str(data.get("user_code")),
                          expires_in=int(data.get("expires_in", 600)),
                          interval=int(data.get("interval", 5)),
                          state={"device_code": data.get("device_code")})

    def finish_device_flow(self, code: DeviceCode) -> AccessToken:
        s = self.settings
        deadline = self._clock() + code.expires_in
        interval = max(code.interval, 1)
        while True:
            response = self._raw_post(s.token_url, {"grant_type": DEVICE_GRANT,
                                                    "device_code": code.state["device_code"]})
            data = _json(response)
            if response.status_code == 200:
                if not data.get("refresh_token"):
                    raise TokenError(f"account {s.account}: the issuer granted no refresh "
                                     "token (ask for offline access in oauth2.scopes)")
                return self._accept(data)
            error = data.get("error")
            if error == "slow_down":
                interval += 5  # RFC 8628 section 3.5
            elif error != "authorization_pending":
                raise_for_error(s, response.status_code, data, "device authorization")
            if self._clock() + interval > deadline:
                raise TokenError(f"account {s.account}: the code was not entered in time")
            self._sleep(interval)

    # -- HTTP ------------------------------------------------------------------------------
    def _raw_post(self, url: str, form: dict[str, str]) -> requests.Response:
        s = self.settings
        form = {**form, "client_id": s.client_id} if s.client_id else dict(form)
        auth = None
        if s.client_secret:
            # RFC 6749 section 2.3.1: client_secret_basic is the method servers must support.
            auth = (s.client_id, s.client_secret)
            form.pop("client_id", None)
        try:
            return self._session.post(url, data=form, auth=auth, timeout=s.timeout,
                                      headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise TokenError(f"account {s.account}: cannot reach {url}: "
                             f"{type(exc).__name__}") from exc

    def _post(self, url: str, form: dict[str, str], what: str) -> dict[str, Any]:
        response = self._raw_post(url, form)
        data = _json(response)
        if response.status_code != 200:
            raise_for_error(self.settings, response.status_code, data, what)
        return data


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
