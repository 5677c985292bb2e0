"""``install`` / ``uninstall`` for Zendesk: the webhook, trigger category, triggers and macros
the bridge needs, made and removed through Zendesk's API (connector.outbound.zendesk_install
plans them), and the worker's Zendesk view."""

from __future__ import annotations

from typing import Any, TextIO

from connector.config import Config
from connector.errors import ConfigError, HostError
from connector.exitcodes import EX_OK
from connector.outbound.command_support import (
    host_failure,
    queue_if_present,
    queue_of,
    sending_outbound,
)
from connector.outbound.settings import load_outbound
from connector.outbound.zendesk_api import ZendeskOutboundAPI
from connector.outbound.zendesk_install import apply, plan_install, plan_uninstall


def zendesk_outbound_api(config: Config, adapter: Any = None) -> ZendeskOutboundAPI:
    """The worker's Zendesk view, over ``adapter`` or one built from ``host:``."""
    if adapter is None:
        if config.host.type != "zendesk":
            raise ConfigError("outbound replies need host.type: zendesk", path=str(config.path),
                              key="host.type")
        from connector.hosts.zendesk import ZendeskAdapter, ZendeskSettings

        adapter = ZendeskAdapter(ZendeskSettings.from_host_config(config.host))
    return ZendeskOutboundAPI(adapter)


def install(config: Config, dry_run: bool, suppress: bool, out: TextIO, *,
            adapter: Any = None) -> int:
    """Create or update the webhook, trigger category, triggers and macros (idempotent)."""
    outbound = sending_outbound(config)
    api = zendesk_outbound_api(config, adapter)
    with (queue_if_present(config) if dry_run else queue_of(config)) as queue:
        try:
            plan = plan_install(api, outbound, queue, suppress=suppress)
            if dry_run or plan.empty:
                for line in plan.describe():
                    print(line, file=out)
                if plan.empty:
                    print("nothing to change", file=out)
                elif dry_run:
                    print(f"dry run: {len(plan.changes)} change(s) not made", file=out)
                return EX_OK
            for line in [f"ok       {u}" for u in plan.unchanged]:
                print(line, file=out)
            assert queue is not None
            apply(plan, api, queue, outbound, out)
            for warning in plan.warnings:
                print(f"warning  {warning}", file=out)
        except HostError as exc:
            print(f"install failed: {exc}", file=out)
            return host_failure(exc)
    print(f"installed: {len(plan.changes)} change(s)", file=out)
    return EX_OK


def uninstall(config: Config, dry_run: bool, out: TextIO, *, adapter: Any = None) -> int:
    """Remove exactly what install created (and undo the conditions it added)."""
    outbound = load_outbound(config)
    api = zendesk_outbound_api(config, adapter)
    with (queue_if_present(config) if dry_run else queue_of(config)) as queue:
        try:
            plan = plan_uninstall(api, outbound, queue)
            if dry_run or plan.empty:
                for line in plan.describe():
                    print(line, file=out)
                print("nothing to remove" if plan.empty else
                      f"dry run: {len(plan.changes)} change(s) not made", file=out)
                return EX_OK
            assert queue is not None
            apply(plan, api, queue, outbound, out)
            for warning in plan.warnings:
                print(f"warning  {warning}", file=out)
        except HostError as exc:
            print(f"uninstall failed: {exc}", file=out)
            return host_failure(exc)
    print(f"uninstalled: {len(plan.changes)} change(s)", file=out)
    return EX_OK
