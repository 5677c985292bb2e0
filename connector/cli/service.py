"""``check`` (the config, every login, the helpdesk) and ``run`` (the service)."""

from __future__ import annotations

import argparse
import io
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from connector.cli.common import EX_CONFIG, EX_FAILURE, EX_OK, Parts, build, load
from connector.config import Config
from connector.errors import FetchError, HostError

if TYPE_CHECKING:
    from connector.outbound.settings import ServiceSettings

log = logging.getLogger("connector.cli")


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from connector.errors import AuthenticationError
    from connector.fetch import open_mailbox
    from connector.hosts.factory import make_host
    from connector.pec.providers import auth_failure_hint
    from connector.service.filtering import FilterStage
    from connector.store.sqlite import SQLiteStore

    config = load(args)
    print(f"ok    config {config.path}: {len(config.accounts)} account(s)", file=out)
    stage = FilterStage(config, SQLiteStore(":memory:"))  # raises on invalid filter files
    from connector.outbound.settings import load_outbound

    sending = load_outbound(config).enabled_accounts
    if sending:
        print(f"ok    outbound: {', '.join(a.account for a in sending)}", file=out)
    print(f"ok    filters: {len(stage.chain.filters)} filter(s) in {len(stage.chain.files)} "
          "file(s)", file=out)
    failures = 0
    for account in config.accounts:
        try:
            with open_mailbox(account) as mailbox:
                line = mailbox.check()
            print(f"ok    account {account.name}: {line}", file=out)
        except AuthenticationError as exc:
            failures += 1
            print(f"FAIL  account {account.name}: {exc}", file=out)
            if account.pec:
                print(f"      hint: {auth_failure_hint(account.provider)}", file=out)
        except FetchError as exc:
            failures += 1
            print(f"FAIL  account {account.name}: {exc}", file=out)
    try:
        who = make_host(config.host, out=io.StringIO()).check_credentials()
        print(f"ok    host {config.host.type}: {who}", file=out)
    except HostError as exc:
        failures += 1
        print(f"FAIL  host {config.host.type}: {exc}", file=out)
    return EX_OK if failures == 0 else EX_FAILURE


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from connector.outbound.settings import load_outbound
    from connector.service.parsing import ParsePool, default_workers
    from connector.service.runner import AccountPoller, Service

    config = load(args)
    stop = threading.Event()
    parts = build(config, out, stop)
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
    service = Service(pollers, log_retention_days=config.store.log_retention_days, stop=stop)

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
