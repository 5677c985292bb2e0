"""Build the host adapter the config names."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TextIO

from connector.config import HostConfig
from connector.errors import ConfigError
from connector.hosts.base import HostAdapter


class HostObserver(Protocol):
    def observe_host_response(self, method: str, status: int | str) -> None: ...

    def observe_host_retry(self) -> None: ...


def make_host(config: HostConfig, *, out: TextIO | None = None,
              observer: HostObserver | None = None,
              sleep: Callable[[float], object] = time.sleep) -> HostAdapter:
    """``sleep`` is how retries wait; ``run`` passes one that a shutdown interrupts."""
    if config.type == "dry-run":
        from connector.hosts.dryrun import DryRunAdapter

        # With a url, the dry run reads from that helpdesk (tickets, users) to decide as the
        # real run would, and still writes nothing.
        reader = None
        if config.otobo is not None:
            reader = _otobo(config, observer, sleep)
        elif config.url:
            reader = _zendesk(config, observer, sleep)
        from connector.hosts.vocabulary import vocabulary_for

        return DryRunAdapter(out or sys.stdout, reader=reader,
                             max_uploads_per_mail=config.max_uploads_per_mail,
                             max_ccs_per_mail=config.max_ccs_per_mail,
                             vocabulary=vocabulary_for(config))
    if config.type == "zendesk":
        return _zendesk(config, observer, sleep)
    if config.type == "otobo":
        return _otobo(config, observer, sleep)
    raise ConfigError(f"unknown host type {config.type!r}", key="host.type")


def _otobo(config: HostConfig, observer: HostObserver | None,
           sleep: Callable[[float], object]) -> HostAdapter:
    import requests

    from connector.hosts.otobo import OtoboAdapter, OtoboSettings

    session = requests.Session()
    session.trust_env = False  # as for Zendesk: the environment is read once, here
    session.proxies.update(requests.utils.get_environ_proxies(config.url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and config.ca_file is None and config.verify_tls:
        config = replace(config, ca_file=bundle)
    adapter = OtoboAdapter(OtoboSettings.from_host_config(config), session=session, sleep=sleep)
    if observer is not None:
        adapter.on_response = observer.observe_host_response
        adapter.on_retry = observer.observe_host_retry
    return adapter


def _zendesk(config: HostConfig, observer: HostObserver | None,
             sleep: Callable[[float], object]) -> HostAdapter:
    import requests

    from connector.hosts.zendesk import ZendeskAdapter, ZendeskSettings

    session = requests.Session()
    # requests would read proxy and CA settings from the environment on every call; they are
    # read once, here. (The adapter's transport skips Session.request anyway, see
    # connector/hosts/transport.py; with trust_env it too would read them only once.)
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(config.url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and config.ca_file is None and config.verify_tls:
        config = replace(config, ca_file=bundle)
    adapter = ZendeskAdapter(ZendeskSettings.from_host_config(config), session=session,
                             sleep=sleep)
    if observer is not None:
        # Every answer, the OAuth token request's and refused tokens' included.
        adapter.on_response = observer.observe_host_response
        adapter.on_retry = observer.observe_host_retry
    return adapter
