"""The ``oauth2:`` section of an account (``auth: oauth2``), validated like the rest of the file.

::

    accounts:
      - name: support
        provider: microsoft365            # or gmail: hosts, ports and auth: oauth2 preset
        username: support@contoso.com     # the mailbox (SASL user, Graph /users/{id})
        oauth2:
          provider: microsoft             # microsoft | google | generic
          tenant: contoso.onmicrosoft.com
          client_id: 00000000-0000-0000-0000-000000000000
          client_secret: ${M365_SECRET}   # or client_secret_file, or certificate_file (PEM)

Secrets follow the file's rule (``${ENV}`` or ``*_file``). Refresh tokens of delegated flows
are not configuration: ``postmaster-bridge accounts authorize NAME`` stores them in the state
directory (``token_file``, mode 0600).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from connector.config import _Reader

PROVIDERS = ("microsoft", "google", "generic")
FLOWS = ("client_credentials", "device_code", "refresh_token", "service_account")
MECHANISMS = ("auto", "xoauth2", "oauthbearer")

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
OUTLOOK_APP_SCOPE = "https://outlook.office365.com/.default"
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"
#: Delegated (one user's mailbox) scopes per protocol; msal adds offline_access itself.
OUTLOOK_USER_SCOPES = {
    "imap": ("https://outlook.office.com/IMAP.AccessAsUser.All",
             "https://outlook.office.com/SMTP.Send"),
    "pop3": ("https://outlook.office.com/POP.AccessAsUser.All",
             "https://outlook.office.com/SMTP.Send"),
    "graph": ("https://graph.microsoft.com/Mail.ReadWrite",
              "https://graph.microsoft.com/Mail.Send"),
}

_FLOWS_BY_PROVIDER = {
    "microsoft": ("client_credentials", "device_code"),
    "google": ("service_account", "refresh_token"),
    "generic": ("client_credentials", "refresh_token", "device_code"),
}


@dataclass(frozen=True)
class OAuth2Settings:
    """Everything a token provider needs; hashable, so providers can be kept per settings."""

    account: str
    provider: str
    flow: str
    username: str  # the mailbox: SASL identity, Google's subject default
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    certificate: str = field(default="", repr=False)  # PEM: private key + certificate
    tenant: str = ""
    authority_host: str = MICROSOFT_AUTHORITY
    token_url: str = ""
    device_authorization_url: str = ""
    authorization_url: str = ""  # Google installed apps: the browser sign-in (loopback redirect)
    scopes: tuple[str, ...] = ()
    service_account: str = field(default="", repr=False)  # the JSON key file's text
    subject: str = ""
    refresh_token: str = field(default="", repr=False)  # from the config; else token_file
    mechanism: str = "auto"
    ca_file: str | None = None
    token_file: Path | None = None
    timeout: float = 30.0

    @property
    def delegated(self) -> bool:
        """True when a person's consent (a refresh token) stands behind the tokens."""
        return self.flow in ("device_code", "refresh_token")

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant}"


def _url(r: _Reader, name: str, default: str = "", *, required: bool = False) -> str:
    from connector.config import _is_loopback

    value = r.get(name, str, default or None, required=required) or ""
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.error(name, f"must be an https:// URL, got {value!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise r.error(name, "must use https:// (http:// is allowed only for loopback test "
                      "servers): tokens and secrets travel on it")
    return value.rstrip("/")


def default_scopes(provider: str, flow: str, protocol: str) -> tuple[str, ...]:
    if provider == "google":
        return (GOOGLE_MAIL_SCOPE,)
    if provider == "microsoft":
        if flow == "client_credentials":
            return (GRAPH_APP_SCOPE,) if protocol == "graph" else (OUTLOOK_APP_SCOPE,)
        return OUTLOOK_USER_SCOPES.get(protocol, OUTLOOK_USER_SCOPES["imap"])
    return ()


def read_oauth2(r: _Reader, *, account: str, username: str, protocol: str,
                default_provider: str | None) -> OAuth2Settings:
    """Validate one ``oauth2:`` mapping (``r``) of the account ``account``."""
    provider = r.choice("provider", PROVIDERS, default_provider,
                        required=default_provider is None)
    client_secret = r.secret("client_secret", required=False)
    certificate = r.secret("certificate", required=False)
    service_account = r.secret("service_account", required=False)
    refresh_token = r.secret("refresh_token", required=False)
    if client_secret and certificate:
        raise r.error("certificate", "give either client_secret or certificate, not both")
    if provider == "microsoft":
        default_flow = "client_credentials" if client_secret or certificate else "device_code"
    elif provider == "google":
        default_flow = "service_account" if service_account else "refresh_token"
    else:
        default_flow = "client_credentials" if client_secret and not (
            refresh_token or r.has("device_authorization_url")) else "refresh_token"
    flow = r.choice("flow", FLOWS, default_flow)
    if flow not in _FLOWS_BY_PROVIDER[provider]:
        raise r.error("flow", f"provider {provider} supports "
                      f"{', '.join(_FLOWS_BY_PROVIDER[provider])}; got {flow!r}")
    client_id = r.get("client_id", str, "", required=flow != "service_account")
    tenant = r.get("tenant", str, "", required=provider == "microsoft")
    authority_host = _url(r, "authority_host", MICROSOFT_AUTHORITY)
    if provider == "microsoft" and not authority_host.startswith("https://"):
        raise r.error("authority_host", "must be https:// (Microsoft's sign-in library "
                      "accepts nothing else)")
    token_url = _url(r, "token_url", GOOGLE_TOKEN_URL if provider == "google" else "",
                     required=provider == "generic")
    device_url = _url(r, "device_authorization_url")
    authorization_url = _url(r, "authorization_url",
                             GOOGLE_AUTHORIZATION_URL if provider == "google" else "")
    if provider == "microsoft" and flow == "client_credentials" and not (
            client_secret or certificate):
        raise r.error("client_secret", "app-only access (flow client_credentials) needs "
                      "client_secret (${ENV} or client_secret_file) or certificate_file")
    if provider == "generic" and flow == "client_credentials" and not client_secret:
        raise r.error("client_secret", "is required for flow client_credentials "
                      "(as client_secret: ${ENV_NAME} or client_secret_file: PATH)")
    if provider == "generic" and flow == "device_code" and not device_url:
        raise r.error("device_authorization_url", "is required for flow device_code "
                      "(the IdP's RFC 8628 device authorization endpoint)")
    if provider == "google" and flow == "service_account" and not service_account:
        raise r.error("service_account_file", "is required for flow service_account (the "
                      "service account's JSON key, with domain-wide delegation)")
    if provider == "google" and flow == "refresh_token" and not client_secret:
        raise r.error("client_secret", "is required for an installed-app refresh token "
                      "(the OAuth client's secret, as client_secret_file or ${ENV})")
    scopes = r.str_list("scopes") or default_scopes(provider, flow, protocol)
    subject = r.get("subject", str, username)
    settings = OAuth2Settings(
        account=account,
        provider=provider,
        flow=flow,
        username=username,
        client_id=client_id,
        client_secret=client_secret,
        certificate=certificate,
        tenant=tenant,
        authority_host=authority_host,
        token_url=token_url,
        device_authorization_url=device_url,
        authorization_url=authorization_url,
        scopes=tuple(scopes),
        service_account=service_account,
        subject=subject,
        refresh_token=refresh_token,
        mechanism=r.choice("mechanism", MECHANISMS, "auto"),
        ca_file=str(r.path_value("ca_file")) if r.has("ca_file") else None,
        timeout=r.positive("timeout", float, 30.0),
    )
    r.finish()
    return settings
