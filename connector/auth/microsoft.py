"""Microsoft Entra ID (Microsoft 365) tokens through msal.

App-only (``flow: client_credentials``): the app registration's secret or certificate, scope
``https://outlook.office365.com/.default`` for IMAP/POP/SMTP (the ``IMAP.AccessAsApp``,
``POP.AccessAsApp``, ``SMTP.SendAsApp`` model) or ``https://graph.microsoft.com/.default``.
Delegated (``flow: device_code``): one person signs in once with ``accounts authorize``; msal's
token cache (which holds the refresh token) is kept in the account's token file.

``authority_host`` is normally https://login.microsoftonline.com; sovereign clouds and the
tests set another. For hosts msal does not know, instance discovery and authority validation
are off: the admin named the host.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.auth.base import AccessToken, DeviceCode, TokenFile
from connector.auth.generic import raise_for_error
from connector.auth.http import make_session
from connector.auth.jwt import claims, identity_of, scopes_of
from connector.auth.settings import MICROSOFT_AUTHORITY, OAuth2Settings
from connector.errors import ConfigError, GrantRevokedError, TokenError

log = logging.getLogger(__name__)


def certificate_credential(pem: str, where: str) -> dict[str, str]:
    """msal's certificate credential from one PEM holding the private key and certificate."""
    data = pem.encode()
    try:
        key = serialization.load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: certificate_file must hold the private key (unencrypted) "
                          f"and the certificate in PEM: {exc}") from None
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"private_key": key_pem,
            "thumbprint": hashlib.sha1(der).hexdigest(),  # noqa: S324 - x5t is SHA-1 by spec
            "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}


class MicrosoftProvider:
    name = "microsoft"

    def __init__(self, settings: OAuth2Settings, *, clock: Callable[[], float] = time.time
                 ) -> None:
        self.settings = settings
        self._clock = clock
        self.store = TokenFile(settings.token_file) if settings.token_file else None
        self._app: msal.ClientApplication | None = None
        self._cache = msal.SerializableTokenCache()

    def describe(self) -> str:
        s = self.settings
        kind = "app-only" if s.flow == "client_credentials" else f"delegated ({s.username})"
        return f"Microsoft {kind}, app {s.client_id} in tenant {s.tenant}"

    # -- msal ------------------------------------------------------------------------------
    def _application(self) -> msal.ClientApplication:
        if self._app is not None:
            return self._app
        s = self.settings
        known = s.authority_host.rstrip("/") == MICROSOFT_AUTHORITY
        session = make_session(s.authority, s.ca_file)
        options: dict[str, Any] = {
            "authority": s.authority, "http_client": session, "timeout": s.timeout,
            "token_cache": self._cache,
        }
        if not known:
            options.update(validate_authority=False, instance_discovery=False)
        try:
            if s.flow == "client_credentials":
                credential: Any = s.client_secret or certificate_credential(
                    s.certificate, f"account {s.account} oauth2")
                self._app = msal.ConfidentialClientApplication(
                    s.client_id, client_credential=credential, **options)
            else:
                if self.store is not None:
                    cached = self.store.load().get("msal_cache")
                    if cached:
                        self._cache.deserialize(cached)
                self._app = msal.PublicClientApplication(s.client_id, **options)
        except (ValueError, requests.RequestException) as exc:
            # msal reads the tenant's OpenID configuration first; an unknown tenant ends here.
            raise TokenError(f"account {s.account}: cannot reach the Microsoft sign-in "
                             f"service for tenant {s.tenant}: {exc}") from exc
        return self._app

    def _scopes(self) -> list[str]:
        # msal adds openid/profile/offline_access itself and refuses them in the list.
        reserved = {"openid", "profile", "offline_access"}
        return [scope for scope in self.settings.scopes if scope not in reserved]

    # -- grants ----------------------------------------------------------------------------
    def fetch_token(self) -> AccessToken:
        s = self.settings
        app = self._application()
        try:
            if isinstance(app, msal.ConfidentialClientApplication):
                # The TokenSource caches; a fetch means "a new one", so msal must not answer
                # from its own cache (after a refused login that token is the refused one).
                for item in list(self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                    self._cache.remove_at(item)
                result = app.acquire_token_for_client(scopes=self._scopes())
            else:
                result = self._silent(app)
        except requests.RequestException as exc:
            raise TokenError(f"account {s.account}: cannot reach the Microsoft sign-in "
                             f"service: {type(exc).__name__}") from exc
        return self._accept(result, "token request")

    def _silent(self, app: msal.ClientApplication) -> Mapping[str, Any]:
        s = self.settings
        accounts = app.get_accounts(username=s.username) or app.get_accounts()
        if not accounts:
            raise GrantRevokedError(
                f"account {s.account}: nobody has signed in for this mailbox yet",
                remedy=f"Run 'postmaster-bridge accounts authorize {s.account}' and sign in "
                       f"as {s.username}")
        result = app.acquire_token_silent_with_error(self._scopes(), account=accounts[0],
                                                     force_refresh=True)
        if result is None:
            raise GrantRevokedError(
                f"account {s.account}: the stored sign-in has no refresh token",
                remedy=f"Run 'postmaster-bridge accounts authorize {s.account}' again")
        return result

    def _accept(self, result: Mapping[str, Any] | None, what: str) -> AccessToken:
        s = self.settings
        if not result or "access_token" not in result:
            result = result or {}
            status = 400 if result.get("error") else 503
            raise_for_error(s, status, result, what)
        self._persist()
        value = str(result["access_token"])
        jwt = claims(value)
        id_claims = result.get("id_token_claims") or {}
        scope = result.get("scope")
        return AccessToken(
            value=value,
            expires_at=self._clock() + float(result.get("expires_in", 3600)),
            scopes=tuple(scope.split()) if isinstance(scope, str) else scopes_of(jwt),
            identity=identity_of(jwt) or identity_of(id_claims) or s.username)

    def _persist(self) -> None:
        if self.store is not None and self.settings.delegated and self._cache.has_state_changed:
            self.store.update(msal_cache=self._cache.serialize(), obtained_at=self._clock())
            self._cache.has_state_changed = False

    # -- device code -----------------------------------------------------------------------
    def start_device_flow(self) -> DeviceCode:
        app = self._application()
        flow = app.initiate_device_flow(scopes=self._scopes())
        if "user_code" not in flow:
            raise_for_error(self.settings, 400, flow, "device authorization")
        return DeviceCode(verification_uri=str(flow["verification_uri"]),
                          user_code=str(flow["user_code"]),
                          expires_in=int(flow.get("expires_in", 900)),
                          interval=int(flow.get("interval", 5)),
                          message=str(flow.get("message", "")), state=flow)

    def finish_device_flow(self, code: DeviceCode) -> AccessToken:
        app = self._application()
        try:
            result = app.acquire_token_by_device_flow(dict(code.state))
        except requests.RequestException as exc:
            raise TokenError(f"account {self.settings.account}: cannot reach the Microsoft "
                             f"sign-in service: {type(exc).__name__}") from exc
        if "access_token" in result and self.store is not None:
            self._cache.has_state_changed = True
        return self._accept(result, "sign-in")
