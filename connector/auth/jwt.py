"""What an access token says about itself, for ``check``: identity, scopes, expiry.

Microsoft's and most IdPs' access tokens are JWTs; their claims are read without verifying
the signature, only to show them (the mail server verifies the token). Opaque tokens (Google's)
show what the token endpoint said.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

#: Claims naming who a token acts for, most specific first.
IDENTITY_CLAIMS = ("upn", "preferred_username", "email", "unique_name", "app_displayname",
                   "appid", "azp", "client_id", "sub")


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, or {} for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def identity_of(data: Mapping[str, Any]) -> str:
    for name in IDENTITY_CLAIMS:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def scopes_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Delegated scopes (``scp``, space separated) and application roles (``roles``)."""
    found: list[str] = []
    scp = data.get("scp") or data.get("scope")
    if isinstance(scp, str):
        found += scp.split()
    roles = data.get("roles")
    if isinstance(roles, list):
        found += [str(r) for r in roles]
    return tuple(found)
