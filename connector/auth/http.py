"""The HTTP session token endpoints (and Graph) are called with.

requests lets ``REQUESTS_CA_BUNDLE`` from the environment override a session's own ``verify``
at every call, so an ``oauth2.ca_file`` would be silently ignored on hosts that set it. As the
Zendesk adapter does (connector/hosts/factory.py), the environment is read once here: its
proxies and CA bundle apply unless the account names a CA file.
"""

from __future__ import annotations

import os

import requests


def make_session(url: str, ca_file: str | None, *, verify: bool = True) -> requests.Session:
    """``verify=False`` (an account's ``verify_tls: false``, which the config allows only for
    loopback test servers) turns certificate checks off."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.verify = (ca_file or bundle or True) if verify else False
    return session
