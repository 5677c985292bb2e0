"""SASL initial responses for bearer tokens, and the choice between the two mechanisms.

XOAUTH2 is Google's and Microsoft's (Exchange Online announces only it); OAUTHBEARER is the
standard one (RFC 7628). Both carry the same token; with ``mechanism: auto`` the standard one is
used when the server announces it.
"""

from __future__ import annotations

from collections.abc import Collection

from connector.errors import AuthenticationError

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"


def xoauth2(user: str, token: str) -> bytes:
    """``user=<user>^Aauth=Bearer <token>^A^A`` (Google's and Microsoft's XOAUTH2)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    """RFC 7628 section 3.1: GS2 header with the authorization identity, then key/values."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return (f"n,a={authzid},\x01host={host}\x01port={port}\x01"
            f"auth=Bearer {token}\x01\x01").encode()


def initial_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    if mechanism == OAUTHBEARER:
        return oauthbearer(user, token, host, port)
    return xoauth2(user, token)


#: What the client answers to a server's error challenge: RFC 7628 wants ^A (a dummy
#: response) to end the exchange; XOAUTH2 clients send an empty response.
ABORT_RESPONSE = {OAUTHBEARER: b"\x01", XOAUTH2: b""}


def choose_mechanism(announced: Collection[str], preference: str, where: str) -> str:
    """The mechanism to use, from what the server announced (upper-case names) and the
    account's ``oauth2.mechanism`` (auto, xoauth2, oauthbearer)."""
    names = {name.upper() for name in announced}
    if preference != "auto":
        wanted = preference.upper()
        if wanted not in names:
            raise AuthenticationError(f"{where} does not announce SASL {wanted} (it offers "
                                      f"{', '.join(sorted(names)) or 'none'})")
        return wanted
    for mechanism in (OAUTHBEARER, XOAUTH2):
        if mechanism in names:
            return mechanism
    raise AuthenticationError(f"{where} announces neither SASL OAUTHBEARER nor XOAUTH2 (it "
                              f"offers {', '.join(sorted(names)) or 'none'}): it does not "
                              "take OAuth2 logins")
