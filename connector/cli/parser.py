"""The command line: every command, its options and the function that runs it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from connector import __version__
from connector.cli.admin import (
    cmd_accounts,
    cmd_accounts_authorize,
    cmd_errors,
    cmd_held,
    cmd_log,
    cmd_messages,
)
from connector.cli.filters import cmd_filters_check, cmd_filters_test
from connector.cli.ingest import cmd_deliver, cmd_import
from connector.cli.init import cmd_init
from connector.cli.outbound import cmd_install, cmd_outbound, cmd_serve, cmd_uninstall
from connector.cli.service import cmd_check, cmd_run
from connector.exitcodes import EX_USAGE
from connector.store import commands as store_commands


class _Parser(argparse.ArgumentParser):
    """argparse, exiting with sysexits' EX_USAGE (64) on a wrong command line instead of 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="postmaster-bridge",
        description="Turn mailboxes (IMAP, POP3, PEC) into helpdesk tickets.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-c", "--config", default=os.environ.get("PMB_CONFIG", "config.yaml"),
                        help="config file (default: $PMB_CONFIG or ./config.yaml)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="config file (may also be given before the command)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write config.yaml and the example filters into DIR for a "
                       "new install (never overwrites)")
    p.add_argument("dir", metavar="DIR", help="created if missing")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("check", parents=[common],
                       help="validate the config, then try every login")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", parents=[common],
                       help="process all accounts on their poll intervals")
    p.add_argument("--once", action="store_true", help="one pass, then a summary and exit")
    p.add_argument("--account", action="append", help="only this account (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="with --once: the summary as one JSON document on stdout")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", parents=[common],
                       help="ingest .eml files, mbox files or Maildirs")
    p.add_argument("paths", nargs="+")
    p.add_argument("--account", help="account whose settings apply (default: the first)")
    p.add_argument("--calls", action="store_true",
                   help="dry run: print the helpdesk calls as JSON lines on stdout (also -v)")
    p.add_argument("--json", action="store_true",
                   help="one JSON document on stdout: every mail, its outcome and (dry run) "
                   "its calls")
    p.add_argument("--history", action="store_true",
                   help="old mail: the helpdesk's import API, original dates, no triggers or "
                   "notifications; a conversation's replies become its ticket's comments")
    p.add_argument("--status", choices=("new", "open", "pending", "hold", "solved", "closed"),
                   help="with --history: the status of every imported ticket")
    p.add_argument("--archive", action="store_true",
                   help="with --history --status closed: straight to the helpdesk's archive")
    p.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="with --history, when not on a terminal: seconds between progress "
                   "lines (default 10)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("deliver", parents=[common],
                       help="ingest one message from stdin (MTA pipe)")
    p.add_argument("--account", help="account whose settings apply (default: the first)")
    p.add_argument("--keep-failed", action="store_true",
                   help="exit 0, not 65, for a mail that failed for good (kept in 'errors "
                   "list'): the MTA then never bounces it to a possibly forged sender")
    p.set_defaults(func=cmd_deliver)

    p = sub.add_parser("accounts", parents=[common],
                       help="each account's state; enable or disable one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_accounts)
    asub = p.add_subparsers(dest="accounts_command")
    for verb in ("enable", "disable"):
        q = asub.add_parser(verb, parents=[common], help=f"{verb} an account")
        q.add_argument("name")
        q.set_defaults(func=cmd_accounts)
    q = asub.add_parser("authorize", parents=[common],
                        help="sign in once for an OAuth2 account (device code)")
    q.add_argument("name")
    q.set_defaults(func=cmd_accounts_authorize)

    p = sub.add_parser("log", parents=[common], help="the communication log")
    p.add_argument("--account")
    p.add_argument("--level", choices=("debug", "info", "notice", "warning", "error"),
                   default="info", help="this level and above (default: info; debug adds "
                   "every helpdesk call and IDLE wake-up)")
    p.add_argument("--since", help="e.g. 2h, 30m, 7d or an ISO time")
    p.add_argument("--message", help="a Message-ID, a message ref or a log id")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("messages", parents=[common],
                       help="any processed message: what it was, what was done, and why")
    msub = p.add_subparsers(dest="messages_command", required=True)
    q = msub.add_parser("show", parents=[common],
                        help="sender, subject, outcome, ticket, helpdesk calls, log and the "
                        "whole filter/classifier trace")
    q.add_argument("key", metavar="ID|MESSAGE-ID", help="a ledger id (as in 'errors list'), a "
                   "Message-ID or a ref")
    q.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=cmd_messages)

    p = sub.add_parser("errors", parents=[common], help="messages that failed: list, show, "
                       "export, replay, dismiss")
    esub = p.add_subparsers(dest="errors_command", required=True)
    q = esub.add_parser("list", parents=[common])
    q.add_argument("--account")
    q.add_argument("--all", action="store_true", help="dismissed failures too")
    q.add_argument("--json", action="store_true")
    q = esub.add_parser("show", parents=[common], help="the same as 'messages show'")
    q.add_argument("id", metavar="ID|MESSAGE-ID")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q = esub.add_parser("dismiss", parents=[common],
                        help="a failure handled by hand: out of 'errors list' (kept with --all)")
    q.add_argument("id", type=int)
    q.add_argument("--reason", required=True, help="what was done (kept with the message)")
    q = esub.add_parser("export", parents=[common])
    q.add_argument("id", type=int)
    q.add_argument("-o", "--output", default=".", help="file or directory (default: .)")
    q = esub.add_parser("replay", parents=[common],
                        help="run failed messages through the pipeline again")
    q.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser("held", parents=[common], help="mail held over the per-sender daily "
                       "cap: list, release")
    hsub = p.add_subparsers(dest="held_command", required=True)
    q = hsub.add_parser("list", parents=[common])
    q.add_argument("--account")
    q.add_argument("--json", action="store_true")
    q = hsub.add_parser("release", parents=[common],
                        help="process held messages again, the cap lifted")
    q.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=cmd_held)

    p = sub.add_parser("install", parents=[common],
                       help="create or update the Zendesk webhook, triggers and macros for "
                       "outbound PEC replies (idempotent)")
    p.add_argument("--dry-run", action="store_true", help="print what would change")
    p.add_argument("--suppress-email-notifications", action="store_true",
                   help="keep Zendesk's default notification triggers from e-mailing PEC "
                   "requesters by ordinary mail")
    p.add_argument("--host", choices=("zendesk", "otobo", "znuny"),
                   help="the helpdesk (default: the config's host); otobo/znuny write the "
                   "web service and dynamic field files and print the import steps")
    p.add_argument("--output", default="otobo-webservice",
                   help="otobo/znuny: directory for the files (default: ./otobo-webservice)")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("uninstall", parents=[common], help="remove exactly what install made")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--host", choices=("zendesk", "otobo", "znuny"),
                   help="the helpdesk (default: the config's host); otobo/znuny print the "
                   "removal steps")
    p.set_defaults(func=cmd_uninstall)
    p = sub.add_parser("serve", parents=[common],
                       help="run only the outbound webhook and sender")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("outbound", parents=[common], help="outbound jobs: list, show, retry")
    osub = p.add_subparsers(dest="outbound_command", required=True)
    q = osub.add_parser("list", parents=[common])
    q.add_argument("--state", choices=("queued", "working", "sending", "sent", "failed",
                                       "skipped", "uncertain"))
    q.add_argument("--account")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true", help="one JSON document")
    for verb in ("show", "retry"):
        q = osub.add_parser(verb, parents=[common])
        q.add_argument("job_id", type=int)
    p.set_defaults(func=cmd_outbound)

    store_commands.register(sub, common)

    p = sub.add_parser("filters", parents=[common], help="check or try the postmaster filters")
    fsub = p.add_subparsers(dest="filters_command", required=True)
    q = fsub.add_parser("check", parents=[common],
                        help="validate every filter file (file:line errors)")
    q.add_argument("dirs", nargs="*", help="filter directories (default: from the config)")
    q.set_defaults(func=cmd_filters_check)
    q = fsub.add_parser("test", parents=[common],
                        help="run the filters and the decision on one mail, changing nothing")
    q.add_argument("mail", help="an .eml file")
    q.add_argument("--account", help="account whose settings apply (default: the first)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_filters_test)
    return parser
