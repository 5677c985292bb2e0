"""The outbound commands: ``install``, ``uninstall``, ``serve``, ``outbound``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from connector.cli.common import load


def _helpdesk(args: argparse.Namespace, config: Any) -> str:
    """``--host`` if given, else what the config's host is (a dry run's url decides nothing)."""
    if args.host:
        return str(args.host)
    return "otobo" if config.host.otobo is not None else "zendesk"


def cmd_install(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import factory

    config = load(args)
    return factory.install(config, _helpdesk(args, config), dry_run=args.dry_run,
                           suppress=args.suppress_email_notifications,
                           output=Path(args.output), out=out)


def cmd_uninstall(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import factory

    config = load(args)
    return factory.uninstall(config, _helpdesk(args, config), dry_run=args.dry_run, out=out)


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import commands as oc

    return oc.serve(load(args), out)


def cmd_outbound(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import commands as oc

    config = load(args, secrets=False)  # the queue only: the running service sends
    if args.outbound_command == "list":
        return oc.outbound_list(config, out, state=args.state, account=args.account,
                                limit=args.limit, as_json=args.json)
    if args.outbound_command == "show":
        return oc.outbound_show(config, args.job_id, out)
    return oc.outbound_retry(config, args.job_id, out)
