"""Build the host adapter the config names."""

from __future__ import annotations

import sys
from typing import TextIO

from connector.config import HostConfig
from connector.errors import ConfigError
from connector.hosts.base import HostAdapter


def make_host(config: HostConfig, *, out: TextIO | None = None) -> HostAdapter:
    if config.type == "dry-run":
        from connector.hosts.dryrun import DryRunAdapter

        # With a url, the dry run reads from that helpdesk (tickets, users) to decide as the
        # real run would, and still writes nothing.
        reader = _zendesk(config) if config.url else None
        return DryRunAdapter(out or sys.stdout, reader=reader)
    if config.type == "zendesk":
        return _zendesk(config)
    raise ConfigError(f"unknown host type {config.type!r}", key="host.type")


def _zendesk(config: HostConfig) -> HostAdapter:
    from connector.hosts.zendesk import ZendeskAdapter, ZendeskSettings

    return ZendeskAdapter(ZendeskSettings.from_host_config(config))
