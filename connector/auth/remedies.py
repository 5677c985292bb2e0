"""Which token-endpoint errors mean "the grant is gone", and what the admin must do then.

Error codes as the issuers document them: RFC 6749 section 5.2 (``invalid_grant``,
``invalid_client``, ``unauthorized_client``, ``invalid_scope``), Microsoft Entra's ``AADSTS``
numbers in ``error_description`` / ``error_codes``, Google's descriptions (``Token has been
expired or revoked.``, ``Client is unauthorized to retrieve access tokens using this
method...``). Everything not listed (5xx, 429, ``temporarily_unavailable``, network) is
transient.
"""

from __future__ import annotations

import re

from connector.auth.settings import OAuth2Settings

#: RFC 6749 errors no retry can fix.
PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client",
                              "invalid_scope", "unsupported_grant_type", "access_denied",
                              "expired_token"})

_AADSTS = re.compile(r"AADSTS(\d+)")

#: AADSTS numbers that need the app registration fixed (not a new sign-in).
_APP_GONE = {700016}  # application not found in the directory
_SECRET_BAD = {7000215, 7000222, 700027, 7000274}  # invalid/expired secret, bad certificate
_NO_CONSENT = {65001, 650051, 500011, 90094, 90099}  # consent missing / resource not found
_SIGN_IN_AGAIN = {70000, 70008, 700082, 50173, 50076, 50079, 50078, 54005, 50132, 50089}


def aadsts(description: str, codes: object = None) -> int | None:
    """The AADSTS number of a Microsoft error (``error_codes`` first, else the text)."""
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    match = _AADSTS.search(description or "")
    return int(match.group(1)) if match else None


def _enable(s: OAuth2Settings) -> str:
    return f"then re-enable the account with 'postmaster-bridge accounts enable {s.account}'"


def _authorize(s: OAuth2Settings) -> str:
    return (f"Sign in again with 'postmaster-bridge accounts authorize {s.account}' (as "
            f"{s.username} or an account with access to it), {_enable(s)}")


def remedy(s: OAuth2Settings, error: str, description: str, codes: object = None) -> str | None:
    """What to do about ``error``, or None when it is worth retrying later."""
    number = aadsts(description, codes) if s.provider == "microsoft" else None
    where = f"tenant {s.tenant}" if s.tenant else "the identity provider"
    if number in _APP_GONE:
        return (f"The app registration {s.client_id} no longer exists in {where} (deleted?). "
                "Register the application again (README, 'Microsoft 365'), put its client ID "
                f"in oauth2.client_id, {_enable(s)}")
    if number in _SECRET_BAD:
        return (f"The client secret or certificate of app {s.client_id} is invalid or expired. "
                "In the Microsoft Entra admin center, App registrations > "
                "Certificates & secrets, add a new one, put it where oauth2.client_secret "
                f"(or certificate_file) points, {_enable(s)}")
    if number in _NO_CONSENT:
        return (f"Admin consent for app {s.client_id} is missing or was revoked in {where}. A "
                "Global or Privileged Role Administrator must grant it again (Enterprise "
                f"applications > Permissions > Grant admin consent), {_enable(s)}")
    if number in _SIGN_IN_AGAIN and s.delegated:
        return f"The sign-in of {s.username} expired or was revoked. {_authorize(s)}"
    if error not in PERMANENT_ERRORS and number is None:
        return None
    if s.provider == "google" and error == "unauthorized_client":
        client = s.client_id or "of the service account"
        return (f"Domain-wide delegation is not granted to client {client}. In the Google "
                "Admin console, Security > Access and data control > API controls > Manage "
                "domain-wide delegation, add the service "
                f"account's client ID with scope {' '.join(s.scopes)}, {_enable(s)}")
    if s.provider == "google" and s.flow == "service_account" and error == "invalid_grant":
        return (f"Google refused the service account's grant for {s.subject} ({description}). "
                "Check that the key is not deleted (IAM > Service accounts > Keys), that "
                f"{s.subject} is a user of the Workspace domain, {_enable(s)}")
    if error == "invalid_client":
        return (f"The issuer refused client {s.client_id}: the client ID or its secret is wrong, "
                f"or the client was deleted. Fix oauth2.client_id / client_secret, {_enable(s)}")
    if error == "invalid_scope":
        return (f"The issuer refused the scopes {' '.join(s.scopes)}: grant them to client "
                f"{s.client_id} or fix oauth2.scopes, {_enable(s)}")
    if s.delegated:
        return f"The refresh token was revoked or expired. {_authorize(s)}"
    if number is not None and error not in PERMANENT_ERRORS:
        return None
    return (f"The issuer refuses the grant of client {s.client_id}; check the app's permissions "
            f"and consent in {where}, {_enable(s)}")
