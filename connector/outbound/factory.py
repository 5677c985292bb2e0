"""The outbound side of the host a config names (``host.type``, or ``install --host``): the
worker's view of the helpdesk, and the install/uninstall commands of that helpdesk. Each host's
modules are imported only when chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from connector.config import Config
from connector.outbound.model import OutboundAPI
from connector.outbound.settings import OutboundConfig

#: ``install --host`` values that are OTOBO's GenericInterface (Znuny has the same one).
OTOBO_FLAVORS = ("otobo", "znuny")


def outbound_api(config: Config, outbound: OutboundConfig, adapter: Any = None) -> OutboundAPI:
    """The worker's view of the configured helpdesk, over ``adapter`` when given."""
    if config.host.type == "otobo":
        from connector.hosts.otobo import OtoboAdapter, OtoboSettings
        from connector.outbound.otobo_api import OtoboOutboundAPI

        if adapter is None:
            adapter = OtoboAdapter(OtoboSettings.from_host_config(config.host))
        # The agent's PECReply field stands for the reply tag.
        return OtoboOutboundAPI(adapter, {a.reply_tag: a.account
                                          for a in outbound.enabled_accounts})
    from connector.outbound.zendesk_commands import zendesk_outbound_api

    return zendesk_outbound_api(config, adapter)


def install(config: Config, flavor: str, *, dry_run: bool, suppress: bool, output: Path,
            out: TextIO) -> int:
    """What ``install`` does for ``flavor``: Zendesk's objects through its API, or OTOBO's /
    Znuny's web service and dynamic fields as files to import."""
    if flavor in OTOBO_FLAVORS:
        from connector.outbound.otobo_install import install_files
        from connector.outbound.settings import load_outbound

        return install_files(config, load_outbound(config), flavor, output, out)
    from connector.outbound.zendesk_commands import install as install_objects

    return install_objects(config, dry_run, suppress, out)


def uninstall(config: Config, flavor: str, *, dry_run: bool, out: TextIO) -> int:
    if flavor in OTOBO_FLAVORS:
        from connector.outbound.otobo_install import uninstall_steps

        return uninstall_steps(config, flavor, out)
    from connector.outbound.zendesk_commands import uninstall as uninstall_objects

    return uninstall_objects(config, dry_run, out)
