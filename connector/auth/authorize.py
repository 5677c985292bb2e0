"""``postmaster-bridge accounts authorize NAME``: a person signs in once for a delegated grant
(device code: the bridge shows a URL and a code, the person enters it in any browser; Google,
which has no device flow for Gmail: the browser sign-in of installed apps), and the refresh
token lands in the state directory (mode 0600). Also the token line ``check`` prints."""

from __future__ import annotations

import time
from typing import TextIO

from connector.auth import make_provider, token_source
from connector.auth.base import AccessToken
from connector.auth.settings import OAuth2Settings
from connector.errors import ConfigError


def token_summary(token: AccessToken, now: float | None = None) -> str:
    """Identity, scopes and expiry of a token, for ``check``; never the token."""
    now = time.time() if now is None else now
    minutes = max(0, round((token.expires_at - now) / 60))
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(token.expires_at))
    return (f"token for {token.identity or '?'}, scopes {' '.join(token.scopes) or '(none said)'}"
            f", expires {expires} (in {minutes} min)")


def check_line(settings: OAuth2Settings) -> str:
    source = token_source(settings)
    return f"{source.provider.describe()}; {token_summary(source.token())}"


def _authorize_google(settings: OAuth2Settings, out: TextIO) -> AccessToken:
    """Google has no device flow for the Gmail scope: the installed-app browser sign-in."""
    from connector.auth.google import GoogleProvider

    def show(url: str, port: int) -> None:
        print(f"To sign in, open this URL in a browser and sign in as {settings.username}:\n"
              f"{url}", file=out)
        print(f"Google sends the browser back to 127.0.0.1:{port}; on a server without a "
              f"browser, forward that port first (ssh -L {port}:127.0.0.1:{port} this-host). "
              "Waiting up to 10 minutes...", file=out, flush=True)

    token = GoogleProvider(settings).authorize_in_browser(show)
    print(f"ok    {settings.account}: signed in; {token_summary(token)}", file=out)
    print(f"      the refresh token is kept in {settings.token_file} (mode 0600)", file=out)
    return token


def authorize(settings: OAuth2Settings, out: TextIO) -> AccessToken:
    """Run the device flow for ``settings``; prints the instructions, waits, stores the grant.
    Raises ConfigError when the account's grant is not a delegated one, TokenError when the
    code expired or the sign-in was refused."""
    name = settings.account
    if not settings.delegated:
        raise ConfigError(f"account {name} uses {settings.flow} (app-only): there is nobody to "
                          "sign in. The tenant admin grants the app's permissions instead "
                          "(README: 'Microsoft 365' / 'Google Workspace')")
    if settings.provider == "google":
        return _authorize_google(settings, out)
    if settings.provider == "generic" and not settings.device_authorization_url:
        raise ConfigError(f"account {name}: set oauth2.device_authorization_url (the IdP's "
                          "RFC 8628 endpoint) to sign in from here")
    provider = make_provider(settings)
    code = provider.start_device_flow()  # type: ignore[attr-defined]
    print(code.message or f"To sign in, open {code.verification_uri} in a browser and enter "
          f"the code {code.user_code}", file=out)
    print(f"Sign in as {settings.username} (or an account allowed to use that mailbox). "
          f"Waiting up to {max(1, code.expires_in // 60)} minutes...", file=out, flush=True)
    token: AccessToken = provider.finish_device_flow(code)  # type: ignore[attr-defined]
    print(f"ok    {name}: signed in; {token_summary(token)}", file=out)
    print(f"      the refresh token is kept in {settings.token_file} (mode 0600)", file=out)
    if token.identity and token.identity.lower() != settings.username.lower():
        print(f"      note: signed in as {token.identity}, the mailbox is {settings.username}",
              file=out)
    return token
