"""``filters check`` and ``filters test``: the postmaster filters, changing nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from connector.cli.common import account_for, load, readonly_store
from connector.errors import HostError
from connector.exitcodes import EX_OK
from connector.hosts.unavailable import UnavailableHost


def cmd_filters_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from connector.filters import filters_check
    from connector.service.filtering import filter_dirs, filter_settings, host_check

    config = load(args, secrets=False)  # nothing here logs in anywhere
    _, settings = filter_settings(config)
    dirs = [Path(p) for p in args.dirs] if args.dirs else filter_dirs(config, settings)
    if not dirs:
        print("no filter directories configured (filters.filter_dirs)", file=out)
        return EX_OK
    return filters_check(dirs, out=out, host_check=host_check(config))


def cmd_filters_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the chain and the decision on one mail; nothing is written anywhere."""
    from connector.decide import Decider
    from connector.filters import filters_test, load_chain
    from connector.hosts.factory import make_host
    from connector.service.filtering import (
        StoreFilterLookups,
        filter_dirs,
        filter_settings,
        to_verdict,
    )
    from connector.service.pipeline import StoreThreadLookup
    from connector.store.sqlite import SQLiteStore

    config = load(args, secrets=False)  # asks the helpdesk only if its secret is at hand
    account = account_for(config, args.account)
    _, settings = filter_settings(config)
    chain = load_chain(filter_dirs(config, settings))
    raw = Path(args.mail).read_bytes()
    # Read-only: the ledger is opened only if it exists, the host is only read.
    store_path = config.store.path if config.store.path.exists() else ":memory:"
    store = SQLiteStore(store_path) if store_path == ":memory:" else readonly_store(store_path)
    missing = [m for m in config.missing_secrets if m.startswith("host.")]
    host = UnavailableHost(missing[0]) if missing else make_host(config.host, out=sys.stderr)
    decider = Decider(account, config.host, StoreThreadLookup(store, host))

    def decide(outcome):  # noqa: ANN001, ANN202
        verdict = to_verdict(outcome)
        try:
            return decider.decide(verdict.message or outcome.message, verdict).as_dict()
        except HostError as exc:
            return {"action": "unknown", "reason": f"the helpdesk could not be asked: {exc}"}

    try:
        return filters_test(raw, account=account.name, trusted=account.trusted, chain=chain,
                            settings=settings[account.name],
                            lookups=StoreFilterLookups(store), decide=decide,
                            as_json=args.json, out=out, authserv_ids=account.authserv_ids)
    finally:
        store.close()
