"""The outbound commands: ``install``, ``uninstall``, ``serve``, ``outbound``."""

from __future__ import annotations

import argparse
from typing import TextIO

from connector.cli.common import load


def cmd_install(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import commands as oc

    return oc.install(load(args), args.dry_run, args.suppress_email_notifications, out)


def cmd_uninstall(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.outbound import commands as oc

    return oc.uninstall(load(args), args.dry_run, out)


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
