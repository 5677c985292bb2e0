"""The ``postmaster-bridge`` command."""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from connector import __version__
from connector.config import AccountConfig, Config, load_config
from connector.errors import BridgeError, ConfigError, FetchError, HostError, StoreCorruptError
from connector.store import commands as store_commands

if TYPE_CHECKING:
    from connector.hosts.base import HostAdapter
    from connector.outbound.settings import ServiceSettings
    from connector.service.metrics import Metrics
    from connector.service.pipeline import Pipeline
    from connector.store.sqlite import SQLiteStore
    from connector.understand import Rules

log = logging.getLogger("connector.cli")

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78  # sysexits EX_CONFIG
EX_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: the MTA keeps the mail and retries
EX_DATAERR = 65  # sysexits EX_DATAERR: the MTA bounces the mail to its sender


def _setup_logging(verbosity: int, stream: TextIO) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _config(args: argparse.Namespace) -> Config:
    from connector.mail.mimetree import set_limits

    config = load_config(args.config)
    set_limits(config.limits)  # every parse of this process, parse-ahead workers included
    return config


@dataclass
class Parts:
    """What every processing command assembles from the config."""

    config: Config
    store: SQLiteStore
    host: HostAdapter
    rules: Rules
    metrics: Metrics
    dry_run: bool

    def pipeline(self, account: AccountConfig) -> Pipeline:
        from connector.service.pipeline import Pipeline

        return Pipeline(account, self.config.host, self.store, self.host, self.rules,
                        metrics=self.metrics)


def _build(config: Config, out: TextIO, stop: threading.Event | None = None, *,
           checked_within: float = 0.0) -> Parts:
    """Store, host adapter and filter stage for a config. Dry-run never writes the store.
    With ``stop``, a shutdown cuts short the waits between helpdesk retries;
    ``checked_within`` skips the ledger's quick_check when one passed that recently."""
    from connector.hosts.factory import make_host
    from connector.service.filtering import load_rules
    from connector.service.metrics import Metrics
    from connector.store.sqlite import SQLiteStore

    dry_run = config.host.type == "dry-run"
    store = SQLiteStore(":memory:" if dry_run else config.store.path,
                        checked_within=checked_within)
    metrics = Metrics()
    sleep = stop.wait if stop is not None else time.sleep
    host = make_host(config.host, out=out, observer=metrics, sleep=sleep)
    return Parts(config, store, host, load_rules(config), metrics, dry_run)


# -- commands ---------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from connector.errors import AuthenticationError
    from connector.fetch import open_mailbox
    from connector.hosts.factory import make_host
    from connector.pec.providers import auth_failure_hint
    from connector.service.filtering import load_rules
    from connector.tls import certificate_failure, describe_certificate_failure

    config = _config(args)
    print(f"ok    config {config.path}: {len(config.accounts)} account(s)", file=out)
    rules = load_rules(config)  # raises on invalid filter files
    from connector.outbound.settings import load_outbound

    sending = load_outbound(config).enabled_accounts
    if sending:
        print(f"ok    outbound: {', '.join(a.account for a in sending)}", file=out)
    print(f"ok    filters: {len(rules.chain.filters)} filter(s) in {len(rules.chain.files)} "
          "file(s)", file=out)
    from datetime import UTC, datetime

    from connector.pec.trust import describe_store

    if any(a.pec for a in config.accounts) or config.raw.get("pec"):
        # All anchors expired: new PEC mail can no longer be certified (only older mail).
        trust = config.pec_trust
        store_line, *anchors = describe_store(trust)
        current = len(trust.expired(datetime.now(UTC))) < len(trust.anchors)
        print(f"{'ok  ' if current else 'WARN'}  {store_line}", file=out)
        for line in anchors:
            print(f"      {line}", file=out)
    failures = 0
    for account in config.accounts:
        try:
            with open_mailbox(account) as mailbox:
                line = mailbox.check()
            print(f"ok    account {account.name}: {line}", file=out)
            if account.oauth2 is not None:
                from connector.auth.authorize import check_line

                print(f"ok    oauth2 {account.name}: {check_line(account.oauth2)}", file=out)
        except AuthenticationError as exc:
            failures += 1
            print(f"FAIL  account {account.name}: {exc}", file=out)
            if account.pec:
                print(f"      hint: {auth_failure_hint(account.provider)}", file=out)
        except FetchError as exc:
            failures += 1
            print(f"FAIL  account {account.name}: {exc}", file=out)
            failure = certificate_failure(exc)
            if failure is not None:
                print("      " + describe_certificate_failure(
                    failure, f"{account.host}:{account.port}"), file=out)
        if (rules.for_account(account).staff and not account.trusted
                and not account.authserv_ids and not account.verify_dkim):
            print(f"WARN  account {account.name}: staff commands and forwards can never act: "
                  "nothing authenticates a sender (set authserv_id, verify_dkim or trusted)",
                  file=out)
    try:
        who = make_host(config.host, out=io.StringIO()).check_credentials()
        print(f"ok    host {config.host.type}: {who}", file=out)
    except HostError as exc:
        failures += 1
        print(f"FAIL  host {config.host.type}: {exc}", file=out)
    return EX_OK if failures == 0 else EX_FAILURE


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from connector.fetch.wakeup import StopEvent
    from connector.outbound.settings import load_outbound
    from connector.service.connections import pacing_from_config, persisting_board
    from connector.service.parsing import ParsePool, default_workers
    from connector.service.runner import AccountPoller, Service

    config = _config(args)
    stop = StopEvent()  # wakes accounts blocked in IDLE at once on SIGTERM
    parts = _build(config, out, stop)
    store, dry_run = parts.store, parts.dry_run
    accounts = [a for a in config.accounts if a.enabled
                and (not args.account or a.name in args.account)]
    if not accounts:
        print("no enabled account to run", file=sys.stderr)
        return EX_CONFIG
    parts.metrics.watch_store(store, [a.name for a in accounts])
    # Shared by every account; its workers start only when a pass has a backlog to parse.
    service_settings = load_outbound(config).service
    workers = service_settings.parse_workers if service_settings is not None else None
    if workers is None:
        workers = default_workers()
    parser = ParsePool(workers) if workers > 0 else None
    pollers = [AccountPoller(a, store, parts.pipeline(a), dry_run=dry_run, parser=parser)
               for a in accounts]
    board = persisting_board(None if dry_run else store)
    parts.metrics.watch_connections(board)
    service = Service(pollers, log_retention_days=config.store.log_retention_days,
                      retention_days=config.store.retention_days, stop=stop,
                      pacing=pacing_from_config(config), board=board)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current message, then stopping", signum)
        service.stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    http = None
    if service_settings is not None and not (args.once or dry_run):
        http = _start_http(config, service_settings, parts, [a.name for a in accounts])
    try:
        if args.once:
            summaries = service.run_once()
            for summary in summaries:
                print(summary.line(), file=out)
            return EX_FAILURE if any(s.error for s in summaries) else EX_OK
        if not service.run_forever():
            if service.fatal is not None:
                raise service.fatal
            log.error("every account worker ended unexpectedly; exiting so a supervisor "
                      "restarts the bridge")
            return EX_FAILURE
        return EX_OK
    finally:
        if http is not None:
            http.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if parser is not None:
            parser.close()
        store.close()


def _start_http(config: Config, service: ServiceSettings, parts: Parts,  # noqa: ANN202
                accounts: list[str]):
    """The ``service:`` section's HTTP server: the outbound webhook and worker (when an
    account sends) and /metrics and /healthz."""
    from connector.outbound.commands import start_outbound
    from connector.service.http import WsgiServer
    from connector.service.metrics import make_observability_app

    observability = make_observability_app(parts.metrics, parts.store, accounts)
    routes = {"/metrics": observability, "/healthz": observability}
    outbound = start_outbound(config, store=parts.store, adapter=parts.host,
                              extra_routes=routes)
    if outbound is not None:
        parts.metrics.watch_queue(outbound.queue.counts)
        return outbound
    server = WsgiServer(observability, host=service.host, port=service.port,
                        threads=service.threads, name="observability")
    server.start()
    log.info("serving /metrics and /healthz on %s", server.url)
    return server


def _account_for(config: Config, name: str | None) -> AccountConfig:
    if name:
        return config.account(name)
    return config.accounts[0]


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    from connector.fetch.files import iter_files
    from connector.service.pipeline import Outcome
    from connector.service.runner import AccountSummary

    if args.history:
        return cmd_import_history(args, out)
    if args.status or args.archive:
        print("postmaster-bridge: --status and --archive apply to --history only",
              file=sys.stderr)
        return EX_USAGE
    config = _config(args)
    account = _account_for(config, args.account)
    parts = _build(config, out)
    store, pipeline = parts.store, parts.pipeline(account)
    summary = AccountSummary(account.name)
    try:
        for message in iter_files([Path(p) for p in args.paths], max_size=account.max_size):
            result = pipeline.process(f"file:{message.ref}", message.raw, message.size)
            summary.add_result(result)
            if result.outcome in (Outcome.FAILED, Outcome.RETRY):
                print(f"{message.ref}: {result.outcome.value}: {result.reason}",
                      file=sys.stderr)
        store.make_durable()  # the ledger was written without fsyncs: on disk before "done"
    finally:
        store.close()
    print(summary.line(), file=out)
    return EX_FAILURE if summary.counts["failed"] or summary.counts["retry"] else EX_OK


def cmd_import_history(args: argparse.Namespace, out: TextIO) -> int:
    """``import --history``: old mail as tickets with their own dates (the host's import API),
    with a progress bar on a terminal and plain lines elsewhere (on stderr)."""
    from dataclasses import replace

    from connector.fetch.files import iter_files
    from connector.service.history import import_history
    from connector.service.progress import progress_for

    config = _config(args)
    account = _account_for(config, args.account)
    policy = replace(account.history, **{k: v for k, v in (("status", args.status),
                                                          ("archive", args.archive or None))
                                         if v is not None})
    if policy.archive and policy.status != "closed":
        print("postmaster-bridge: --archive needs the tickets imported as closed "
              "(--status closed)", file=sys.stderr)
        return EX_USAGE
    parts = _build(config, out)
    try:
        # The same refs as a plain import, so either recognises what the other recorded.
        messages = (replace(m, ref=f"file:{m.ref}")
                    for m in iter_files([Path(p) for p in args.paths]))
        summary = import_history(
            parts.pipeline(account), messages,
            policy, progress=lambda total: progress_for(
                sys.stderr, total, label=f"history {account.name}",
                interval=args.progress_interval))
    finally:
        parts.store.close()
    print(summary.line(), file=out)
    return EX_FAILURE if summary.counts["failed"] or summary.counts["retry"] else EX_OK


def cmd_deliver(args: argparse.Namespace, out: TextIO) -> int:
    """One message on stdin (MTA pipe): 0 once recorded, 75 on a temporary failure."""
    from connector.fetch.files import read_stdin_message
    from connector.service.pipeline import Outcome
    from connector.service.runner import INTEGRITY_CHECK_SECONDS

    try:
        config = _config(args)
        account = _account_for(config, args.account)
        message = read_stdin_message(account=account.name, max_size=account.max_size)
        # Once per mail: the full-file quick_check at most every INTEGRITY_CHECK_SECONDS.
        parts = _build(config, out, checked_within=INTEGRITY_CHECK_SECONDS)
        store = parts.store
    except (ConfigError, FetchError, StoreCorruptError) as exc:
        print(f"postmaster-bridge: {exc}", file=sys.stderr)
        return EX_TEMPFAIL  # a broken config or ledger must not bounce the customer's mail
    try:
        pipeline = parts.pipeline(account)
        result = pipeline.process(message.ref, message.raw, message.size)
        # Exit 0 tells the MTA to drop its copy: the ledger, written without fsyncs, must be
        # on disk first.
        store.make_durable()
    except Exception as exc:  # any surprise: keep the mail at the MTA
        print(f"postmaster-bridge: temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        store.close()
    print(f"{result.outcome.value}" + (f" ticket #{result.ticket_id}" if result.ticket_id
                                       else "") + (f": {result.reason}" if result.reason
                                                   else ""), file=out)
    if result.outcome == Outcome.RETRY:
        return EX_TEMPFAIL
    if message.raw is None:
        # Over max_size and not kept: the MTA bounces it to the sender with this reason
        # (as a mailbox over its size limit does) instead of dropping it.
        print(f"postmaster-bridge: {result.reason}", file=sys.stderr)
        return EX_DATAERR
    # FAILED is recorded too (with the raw bytes in the archive, if configured); the MTA has
    # nothing better to do with it than we do.
    return EX_OK


def cmd_filters_check(args: argparse.Namespace, out: TextIO) -> int:
    from connector.filters import filters_check
    from connector.service.filtering import filter_dirs, filter_settings, host_check

    config = _config(args)
    _, settings = filter_settings(config)
    dirs = [Path(p) for p in args.dirs] if args.dirs else filter_dirs(config, settings)
    if not dirs:
        print("no filter directories configured (filters.filter_dirs)", file=out)
        return EX_OK
    return filters_check(dirs, out=out, host_check=host_check(config))


def cmd_filters_test(args: argparse.Namespace, out: TextIO) -> int:
    """Understand one mail exactly as ``run`` does (parse, PEC, classifiers, filters,
    requester, decision) and print the trace ``run`` records; nothing is written anywhere."""
    from connector.filters import filters_test, load_chain
    from connector.hosts.factory import make_host
    from connector.service.filtering import StoreLookups, filter_dirs, filter_settings
    from connector.store.sqlite import SQLiteStore
    from connector.understand import Rules, understand

    config = _config(args)
    account = _account_for(config, args.account)
    _, settings = filter_settings(config)
    rules = Rules(load_chain(filter_dirs(config, settings)), settings, config.host)
    raw = Path(args.mail).read_bytes()
    # Read-only: the ledger is opened only if it exists, the host is only read.
    store_path = config.store.path if config.store.path.exists() else ":memory:"
    store = SQLiteStore(store_path) if store_path == ":memory:" else _readonly_store(store_path)
    host = make_host(config.host, out=sys.stderr)

    def trace_of(mail: bytes):  # noqa: ANN202
        understood = understand(mail, account, rules, StoreLookups(store, host),
                                evaluate_all=True)
        request = _otobo_request(host, understood.decision, understood.content)
        if request is None or not isinstance(understood.trace.get("decision"), dict):
            return understood.trace
        # OTOBO/Znuny: the GenericInterface call as it would be sent, controls landed.
        return {**understood.trace,
                "decision": {**understood.trace["decision"], "host_request": request}}

    try:
        return filters_test(raw, understand=trace_of, as_json=args.json, out=out)
    except HostError as exc:
        print(f"the helpdesk could not be asked: {exc}", file=out)
        return EX_USAGE
    finally:
        store.close()


def _otobo_request(host: Any, decision: Any, message: Any) -> dict[str, Any] | None:
    """The GenericInterface call an OTOBO/Znuny host would get for this decision, as sent
    (bodies and files summarised), so ``filters test`` shows the X-OTOBO controls landing."""
    from connector.decide.decision import Action
    from connector.hosts.base import Comment, NewTicket
    from connector.hosts.otobo import OtoboAdapter
    from connector.hosts.otobo_payload import summarized

    otobo = host if isinstance(host, OtoboAdapter) else getattr(host, "_reader", None)
    if not isinstance(otobo, OtoboAdapter) or decision.action == Action.IGNORE:
        return None
    text = message.text_body or ""
    if decision.action == Action.NEW_TICKET and decision.requester is not None:
        ticket = NewTicket(
            subject=decision.subject, requester_email=decision.requester.email,
            requester_name=decision.requester.name or decision.requester.email,
            body_text=text, public=decision.public, tags=decision.tags,
            priority=decision.priority, status=decision.status,
            ticket_type=decision.ticket_type, custom_fields=decision.custom_fields,
            email_ccs=decision.email_ccs, controls=decision.controls,
            external_id=f"pmb-{message.dedupe_key}"[:64])
        return {"method": "POST", "path": "/Ticket", "operation": "TicketCreate",
                "body": summarized(otobo.create_request(ticket))}
    if decision.ticket_id is None:
        return None
    comment = Comment(ticket_id=decision.ticket_id, body_text=text, public=decision.public,
                      author_email=message.from_.email if message.from_ else None,
                      subject=message.subject or None, status=decision.status,
                      priority=decision.priority, controls=decision.controls,
                      dedupe_key=f"pmb-{message.dedupe_key}")
    payload, changes = otobo.comment_request(comment, None)
    if changes:
        payload["Ticket"] = changes
    return {"method": "PATCH", "path": f"/Ticket/<TicketID of {decision.ticket_id}>",
            "operation": "TicketUpdate", "body": summarized(payload)}


def _readonly_store(path: Path):  # noqa: ANN202
    """The ledger opened read-only (SQLite URI mode=ro), for commands that only look."""
    from connector.store.sqlite import SQLiteStore

    return SQLiteStore(f"file:{path}?mode=ro", uri=True)


def _store_for_admin(config: Config):  # noqa: ANN202
    from connector.store.sqlite import SQLiteStore

    return SQLiteStore(config.store.path)


def cmd_accounts(args: argparse.Namespace, out: TextIO) -> int:
    from connector.service.admin import accounts_report

    config = _config(args)
    store = _store_for_admin(config)
    try:
        action = getattr(args, "accounts_command", None)
        if action in ("enable", "disable"):
            account = config.account(args.name)
            store.set_account_enabled(account.name, action == "enable",
                                      "disabled by the admin" if action == "disable" else None)
            store.log_event(level="notice", kind="connection", account=account.name,
                            event=f"account {action}d", detail="by the admin")
            print(f"{account.name}: {action}d", file=out)
            if action == "enable" and not account.enabled:
                print(f"{account.name}: note: the config file still says 'enabled: false', "
                      "which keeps it off", file=out)
            return EX_OK
        accounts_report(config, store, out, as_json=args.json)
        return EX_OK
    finally:
        store.close()


def cmd_accounts_authorize(args: argparse.Namespace, out: TextIO) -> int:
    """Sign in once for an account's delegated OAuth2 grant (device code)."""
    from connector.auth.authorize import authorize

    config = _config(args)
    account = config.account(args.name)
    if account.oauth2 is None:
        raise ConfigError(f"account {account.name} logs in with a password (auth: password)",
                          path=str(config.path), key="accounts")
    authorize(account.oauth2, out)
    store = _store_for_admin(config)
    try:
        health = store.get_health(account.name)
        store.log_event(level="notice", kind="connection", account=account.name,
                        event="oauth2 authorized", detail="device code sign-in")
    finally:
        store.close()
    if not health.enabled:
        print(f"      the account is disabled ({health.disabled_reason}); enable it with "
              f"'postmaster-bridge accounts enable {account.name}'", file=out)
    return EX_OK


def cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    from connector.service.admin import print_log

    config = _config(args)
    store = _store_for_admin(config)
    try:
        print_log(store, out, account=args.account, level=args.level, since=args.since,
                  message=args.message, as_json=args.json, limit=args.limit)
    finally:
        store.close()
    return EX_OK


def cmd_errors(args: argparse.Namespace, out: TextIO) -> int:
    from connector.fetch import open_mailbox
    from connector.service import admin

    config = _config(args)
    if args.errors_command == "replay":
        parts = _build(config, out)
        store = parts.store
        if parts.dry_run:
            print("replay needs a real host: a dry run records nothing", file=sys.stderr)
            store.close()
            return EX_USAGE
    else:
        store = _store_for_admin(config)
    try:
        if args.errors_command == "list":
            admin.errors_list(store, out, account=args.account, as_json=args.json)
        elif args.errors_command == "show":
            admin.errors_show(store, out, args.id)
        elif args.errors_command == "export":
            path = admin.errors_export(store, args.id, Path(args.output))
            print(f"wrote {path}", file=out)
        else:
            failures = 0
            for record_id in args.ids:
                record = store.get_message_by_id(record_id)
                if record is None:
                    print(f"{record_id}: no such message", file=out)
                    failures += 1
                    continue
                account = config.account(record.account)
                pipeline = parts.pipeline(account)
                outcome = admin.errors_replay(store, record_id, account, pipeline,
                                              open_mailbox, out)
                failures += outcome.value in ("failed", "retry")
            return EX_FAILURE if failures else EX_OK
    finally:
        store.close()
    return EX_OK


def _helpdesk(args: argparse.Namespace, config: Any) -> str:
    """``--host`` if given, else what the config's host is (a dry run's url decides nothing)."""
    if args.host:
        return str(args.host)
    return "otobo" if config.host.otobo is not None else "zendesk"


def cmd_held(args: argparse.Namespace, out: TextIO) -> int:
    """Mail held over the per-sender cap: list it, or release it through the same path."""
    from connector.fetch import open_mailbox
    from connector.service import admin

    config = _config(args)
    if args.held_command == "list":
        store = _store_for_admin(config)
        try:
            admin.held_list(store, out, account=args.account, as_json=args.json)
        finally:
            store.close()
        return EX_OK
    parts = _build(config, out)
    if parts.dry_run:
        print("release needs a real host: a dry run records nothing", file=sys.stderr)
        parts.store.close()
        return EX_USAGE
    failures = 0
    try:
        for record_id in args.ids:
            record = parts.store.get_message_by_id(record_id)
            if record is None:
                print(f"{record_id}: no such message", file=out)
                failures += 1
                continue
            account = config.account(record.account)
            outcome = admin.held_release(parts.store, record_id, account,
                                         parts.pipeline(account), open_mailbox, out)
            failures += outcome.value in ("failed", "retry")
    finally:
        parts.store.close()
    return EX_FAILURE if failures else EX_OK


def cmd_install(args: argparse.Namespace, out: TextIO) -> int:
    from connector.outbound import commands as oc

    config = _config(args)
    flavor = _helpdesk(args, config)
    if flavor in ("otobo", "znuny"):
        from connector.outbound.otobo_install import install_files
        from connector.outbound.settings import load_outbound

        return install_files(config, load_outbound(config), flavor, Path(args.output), out)
    return oc.install(config, args.dry_run, args.suppress_email_notifications, out)


def cmd_uninstall(args: argparse.Namespace, out: TextIO) -> int:
    from connector.outbound import commands as oc

    config = _config(args)
    flavor = _helpdesk(args, config)
    if flavor in ("otobo", "znuny"):
        from connector.outbound.otobo_install import uninstall_steps

        return uninstall_steps(config, flavor, out)
    return oc.uninstall(config, args.dry_run, out)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from connector.outbound import commands as oc

    return oc.serve(_config(args), out)


def cmd_outbound(args: argparse.Namespace, out: TextIO) -> int:
    from connector.outbound import commands as oc

    config = _config(args)
    if args.outbound_command == "list":
        return oc.outbound_list(config, out, state=args.state, account=args.account,
                                limit=args.limit)
    if args.outbound_command == "show":
        return oc.outbound_show(config, args.job_id, out)
    return oc.outbound_retry(config, args.job_id, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    p = sub.add_parser("check", parents=[common],
                       help="validate the config, then try every login")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", parents=[common],
                       help="process all accounts on their poll intervals")
    p.add_argument("--once", action="store_true", help="one pass, then a summary and exit")
    p.add_argument("--account", action="append", help="only this account (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", parents=[common],
                       help="ingest .eml files, mbox files or Maildirs")
    p.add_argument("paths", nargs="+")
    p.add_argument("--account", help="account whose settings apply (default: the first)")
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
                   help="this level and above")
    p.add_argument("--since", help="e.g. 2h, 30m, 7d or an ISO time")
    p.add_argument("--message", help="a Message-ID, a message ref or a log id")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("errors", parents=[common], help="messages that failed: list, show, "
                       "export, replay")
    esub = p.add_subparsers(dest="errors_command", required=True)
    q = esub.add_parser("list", parents=[common])
    q.add_argument("--account")
    q.add_argument("--json", action="store_true")
    q = esub.add_parser("show", parents=[common])
    q.add_argument("id", type=int)
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


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose, sys.stderr)
    try:
        return int(args.func(args, out))
    except ConfigError as exc:
        print(f"postmaster-bridge: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except BridgeError as exc:
        print(f"postmaster-bridge: {exc}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
