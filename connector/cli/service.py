"""``check`` (the config, every login, the helpdesk) and ``run`` (the service)."""

from __future__ import annotations

import argparse
import io
import logging
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from connector.cli.common import Parts, build, load
from connector.cli.report import dump, summary_document
from connector.config import Config
from connector.errors import FetchError, HostError
from connector.exitcodes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, for_mail, worst

if TYPE_CHECKING:
    from connector.outbound.settings import ServiceSettings
    from connector.service.leases import LeaseKeeper
    from connector.service.runner import AccountSummary

log = logging.getLogger("connector.cli")


def _check_shared_store(config: Config, report: Any) -> None:
    """The PostgreSQL store: reachable with the configured DSN, its schema up to date (a
    pending migration is applied by the first ``run``; one from a newer bridge fails)."""
    from connector.errors import StoreSchemaError, StoreUnavailableError
    from connector.store.factory import describe, pending_migrations

    try:
        todo = pending_migrations(config.store)
    except (StoreUnavailableError, StoreSchemaError) as exc:
        report("store", config.store.type, False, str(exc))
        return
    if todo:
        report("store", config.store.type, True, f"{describe(config.store)}: "
               f"{len(todo)} schema migration(s) pending, applied at the next start or by "
               "'store migrate'", warn=True)
    else:
        report("store", config.store.type, True,
               f"{describe(config.store)}: schema up to date")


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The config, the filters, every account's login and the helpdesk's: one line each, or
    with ``--json`` one document. 78 for a config error, 69 when a login failed."""
    from connector.errors import AuthenticationError
    from connector.fetch import open_mailbox
    from connector.hosts.factory import make_host
    from connector.outbound.settings import load_outbound
    from connector.pec.providers import auth_failure_hint
    from connector.pec.trust import describe_store
    from connector.service.filtering import load_rules
    from connector.tls import certificate_failure, describe_certificate_failure

    config = load(args)
    checks: list[dict[str, Any]] = []

    def report(check: str, name: str | None, ok: bool, detail: str, hint: str | None = None,
               *, warn: bool = False, lines: list[str] | None = None,
               labelled: bool = True) -> None:
        """``warn``: worth a look, but nothing fails (the exit code stays 0). ``labelled``:
        the line names the check (the trust store's line says what it is itself)."""
        status = "warn" if warn else "ok" if ok else "fail"
        checks.append({"check": check, "name": name, "ok": ok, "status": status,
                       "detail": detail, "hint": hint, "lines": lines or []})
        if args.json:
            return
        label = (f"{check} {name}" if name else check) if labelled else ""
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[status]
        print(f"{mark}  {label}: {detail}" if label else f"{mark}  {detail}", file=out)
        for line in (lines or []) + ([f"hint: {hint}"] if hint else []):
            print(f"      {line}", file=out)

    report("config", str(config.path), True, f"{len(config.accounts)} account(s)")
    rules = load_rules(config)  # raises on invalid filter files
    sending = load_outbound(config).enabled_accounts
    if sending:
        report("outbound", None, True, ", ".join(a.account for a in sending))
    for settings in sending:
        if settings.transport != "smtp" or settings.smtp is None:
            continue
        from connector.outbound.smtp import SendError, SmtpSender

        try:
            report("smtp", settings.account, True, SmtpSender(settings.smtp).check())
        except SendError as exc:
            # A certificate the bridge does not trust fails every reply: say so here, not
            # only in the failed jobs.
            report("smtp", settings.account, False, str(exc))
    report("filters", None, True, f"{len(rules.chain.filters)} filter(s) in "
           f"{len(rules.chain.files)} file(s)")
    if config.store.shared:
        _check_shared_store(config, report)
    if any(a.pec for a in config.accounts) or config.raw.get("pec"):
        # All anchors expired: new PEC mail can no longer be certified (only older mail).
        trust = config.pec_trust
        store_line, *anchors = describe_store(trust)
        current = len(trust.expired(datetime.now(UTC))) < len(trust.anchors)
        report("pec_trust", None, True, store_line, warn=not current, lines=anchors,
               labelled=False)
    for account in config.accounts:
        try:
            with open_mailbox(account) as mailbox:
                line = mailbox.check()
            report("account", account.name, True, line)
            if account.oauth2 is not None:
                from connector.auth.authorize import check_line

                report("oauth2", account.name, True, check_line(account.oauth2))
        except AuthenticationError as exc:
            report("account", account.name, False, str(exc),
                   auth_failure_hint(account.provider) if account.pec else None)
        except FetchError as exc:
            failure = certificate_failure(exc)
            report("account", account.name, False, str(exc), lines=[
                describe_certificate_failure(failure, f"{account.host}:{account.port}")]
                if failure is not None else None)
        if (rules.for_account(account).staff and not account.trusted
                and not account.authserv_ids and not account.verify_dkim):
            report("account", account.name, True, "staff commands and forwards can never act: "
                   "nothing authenticates a sender (set authserv_id, verify_dkim or trusted)",
                   warn=True)
    try:
        who = make_host(config.host, out=io.StringIO()).check_credentials()
        report("host", config.host.type, True, who)
    except HostError as exc:
        report("host", config.host.type, False, str(exc))
    code = EX_OK if all(c["ok"] for c in checks) else EX_UNAVAILABLE
    if args.json:
        dump({"command": "check", "config": str(config.path), "exit_code": code,
              "checks": checks}, out)
    return code


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.fetch.wakeup import StopEvent
    from connector.outbound.settings import load_outbound
    from connector.service.connections import pacing_from_config, persisting_board
    from connector.service.leases import LeaseKeeper
    from connector.service.parsing import ParsePool, default_workers
    from connector.service.runner import AccountPoller, Service

    config = load(args)
    stop = StopEvent()  # wakes accounts blocked in IDLE at once on SIGTERM
    # The dry-run host's calls are JSON lines on stdout, unless stdout carries --json's
    # document: then they go with the human output.
    parts = build(config, err if args.json else out, stop)
    store, dry_run = parts.store, parts.dry_run
    accounts = [a for a in config.accounts if a.enabled
                and (not args.account or a.name in args.account)]
    if not accounts:
        print("no enabled account to run", file=err)
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
    # Every instance sharing the ledger works only the accounts it holds a lease on; the one
    # holding the sweep's lease runs the outbound sweep. A dry run changes nothing: no lease.
    leases = None if dry_run else LeaseKeeper(
        store, [a.name for a in accounts], ttl=config.leases.ttl,
        local_liveness=config.leases.local_liveness,
        sweep=bool(load_outbound(config).enabled_accounts) and not args.once)
    if leases is not None:
        parts.metrics.watch_leases(leases)
    service = Service(pollers, log_retention_days=config.store.log_retention_days,
                      retention_days=config.store.retention_days, stop=stop,
                      pacing=pacing_from_config(config), board=board, leases=leases)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current message, then stopping", signum)
        service.stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    http = None
    if service_settings is not None and not (args.once or dry_run):
        http = _start_http(config, service_settings, parts, [a.name for a in accounts],
                           leases)
        if leases is not None:  # where its /healthz is, for `accounts` to show
            leases.url = http.url
    try:
        if args.once:
            return _report_pass(service.run_once(), dry_run, args.json, out, err)
        if args.json:
            print("--json needs --once (run without it reports to the log)", file=err)
        if not service.run_forever():
            if service.fatal is not None:
                raise service.fatal
            log.error("every account worker ended unexpectedly; exiting so a supervisor "
                      "restarts the bridge")
            return EX_SOFTWARE
        return EX_OK
    finally:
        if http is not None:
            http.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if parser is not None:
            parser.close()
        store.close()


def _report_pass(summaries: list[AccountSummary], dry_run: bool, as_json: bool, out: TextIO,
                 err: TextIO) -> int:
    """``run --once``: a line per account on ``err`` or one document on ``out``; the exit
    code says whether any account was unreachable, any mail failed or was held back."""
    code = worst(for_mail(failed=s.counts["failed"], held=s.counts["retry"],
                          unreachable=s.error is not None) for s in summaries)
    if as_json:
        dump({"command": "run", "dry_run": dry_run, "exit_code": code,
              "accounts": [summary_document(s) for s in summaries]}, out)
    else:
        for summary in summaries:
            print(summary.line(), file=err)
    return code


def _start_http(config: Config, service: ServiceSettings, parts: Parts,  # noqa: ANN202
                accounts: list[str], leases: LeaseKeeper | None):
    """The ``service:`` section's HTTP server: the outbound webhook and worker (when an
    account sends; the sweep only while this instance holds its lease) and /metrics and
    /healthz."""
    from connector.outbound.commands import start_outbound
    from connector.service.http import WsgiServer
    from connector.service.metrics import make_observability_app

    observability = make_observability_app(parts.metrics, parts.store, accounts, leases)
    routes = {"/metrics": observability, "/healthz": observability}
    outbound = start_outbound(config, store=parts.store, adapter=parts.host,
                              extra_routes=routes,
                              may_sweep=leases.holds_sweep if leases is not None else None)
    if outbound is not None:
        parts.metrics.watch_queue(outbound.queue.counts)
        return outbound
    server = WsgiServer(observability, host=service.host, port=service.port,
                        threads=service.threads, name="observability")
    server.start()
    log.info("serving /metrics and /healthz on %s", server.url)
    return server
