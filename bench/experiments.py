"""The measurements behind the recommendations (``bench/run.py experiments``).

Each experiment changes one thing *inside the benchmark process only* (monkeypatching; no file
outside bench/ is touched) and runs the same end-to-end pass on the same corpus:

- ``sqlite``: the cost of one COMMIT on this disk with ``synchronous=FULL`` and ``NORMAL``;
  then e2e with the store's early transactions of each mail (begin, describe, claim) committed
  without their own fsync (``synchronous=OFF`` for just those; in WAL the next FULL commit's
  fsync makes them durable too, which is what merging them into that transaction would give):
  **2 fsyncs per mail** (before the host call, after it) instead of 6.
- ``move``: per-mail ``UID MOVE`` (as the runner does) against one ``UID MOVE`` of a set.
- ``pool``: parse_message (+ the PEC look) on the corpus in a 2-process pool vs one core.
- ``prototype``: e2e with all of it: 2 fsyncs per mail, one UID MOVE per fetched batch, and
  parsing + PEC unwrapping done ahead in a 2-process pool while the main process does the
  ledger and the host calls for earlier mail.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

# -- patches -----------------------------------------------------------------------------------


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def two_fsyncs_per_mail() -> Iterator[None]:
    """begin_message, describe_message and claim_dedupe_key commit without fsync; the next
    FULL commit (set_pending before the host call, finish_message after) syncs the WAL."""
    from connector.store.sqlite import SQLiteStore

    def unsynced(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._db.execute("PRAGMA synchronous=OFF")
                try:
                    return method(self, *args, **kwargs)
                finally:
                    self._db.execute("PRAGMA synchronous=FULL")
        return wrapper

    with contextlib.ExitStack() as stack:
        for name in ("begin_message", "describe_message", "claim_dedupe_key"):
            stack.enter_context(patched(SQLiteStore, name, unsynced(getattr(SQLiteStore, name))))
        yield


@contextlib.contextmanager
def batched_moves() -> Iterator[None]:
    """The runner's per-mail _settle collects handles; one UID MOVE per folder per fetched
    batch (and at the end of the pass). Safe: the ledger already says each mail is done, and
    a pass that finds a recorded mail still in the inbox only moves it."""
    from connector.service.runner import AccountPoller

    original_poll = AccountPoller._poll
    original_settle = AccountPoller._settle

    def flush(self: AccountPoller, mailbox: Any) -> None:
        pending: dict[str, list[Any]] = getattr(self, "_bench_moves", {})
        self._bench_moves = {}  # type: ignore[attr-defined]
        client = getattr(mailbox, "_client", None)
        for action, handles in pending.items():
            if client is None or not client.has_capability("MOVE"):
                for handle in handles:  # not IMAP (or no MOVE): as the runner does
                    original_settle(self, mailbox, handle, action)
                continue
            target = (mailbox.settings.processed_folder if action == "processed"
                      else mailbox.settings.error_folder)
            client.move([h.uid for h in handles], target)

    def settle(self: AccountPoller, mailbox: Any, handle: Any, outcome: Any) -> None:
        action = outcome.mailbox_action
        if self.dry_run or action is None:
            return
        pending = self.__dict__.setdefault("_bench_moves", {})
        pending.setdefault(action, []).append(handle)
        if sum(len(v) for v in pending.values()) >= self.account.batch_size:
            flush(self, mailbox)

    def poll(self: AccountPoller, mailbox: Any, summary: Any) -> None:
        try:
            original_poll(self, mailbox, summary)
        finally:
            flush(self, mailbox)

    with patched(AccountPoller, "_settle", settle), patched(AccountPoller, "_poll", poll):
        yield


@contextlib.contextmanager
def bounce_check_on_headers() -> Iterator[None]:
    """The bounce classifier's pre-check without its second parse of the whole mail: only the
    header block goes through the header parser, and the whole-mail case-insensitive regex
    runs only when a plain substring search finds "delivery-status" at all."""
    from email.parser import BytesHeaderParser

    from connector.filters.classifiers import dsn

    class HeaderBlockParser(BytesHeaderParser):
        def parsebytes(self, text: bytes, headersonly: bool = True) -> Any:
            end = text.find(b"\r\n\r\n")
            end = text.find(b"\n\n") if end < 0 else end
            return super().parsebytes(text if end < 0 else text[: end + 2], headersonly)

    class PrecheckedPattern:
        def __init__(self, pattern: Any) -> None:
            self.pattern = pattern

        def search(self, data: bytes) -> Any:
            if b"elivery-status" not in data and b"ELIVERY-STATUS" not in data:
                return None
            return self.pattern.search(data)

    with patched(dsn, "BytesHeaderParser", HeaderBlockParser), \
            patched(dsn, "_DSN_PART", PrecheckedPattern(dsn._DSN_PART)):
        yield


def _cpu_stage(raw: bytes) -> tuple[Any, Any]:
    """What a worker does: parse, and the PEC analysis when the mail shows PEC signs. The raw
    bytes are not sent back (the main process has them)."""
    from connector.mail.parse import parse_message
    from connector.pec import find_pec
    from connector.understand import may_be_pec as _may_be_pec

    message = parse_message(raw)
    pec = find_pec(raw) if _may_be_pec(message) else None
    return replace(message, raw=b""), pec


@contextlib.contextmanager
def parse_ahead(workers: int = 2) -> Iterator[None]:
    """ImapMailbox.fetch hands every fetched mail to a process pool at once; the pipeline's
    parse_message / find_pec take the worker's answer (waiting for it if needed)."""
    from connector.fetch.imap import ImapMailbox
    from connector.mail.parse import parse_message
    from connector.pec import find_pec
    from connector.service import pipeline as pipeline_module

    futures: dict[int, Future[tuple[Any, Any]]] = {}
    pec_found: dict[int, Any] = {}
    pool = ProcessPoolExecutor(workers)
    original_fetch = ImapMailbox.fetch

    def fetch(self: ImapMailbox, messages: Any) -> Iterator[Any]:
        # One batch ahead: batch k+1 is downloaded and handed to the pool before batch k is
        # processed, so the workers never wait for the main process to ask.
        previous: list[Any] = []
        current: list[Any] = []
        for message in original_fetch(self, messages):
            if message.raw is not None:
                futures[id(message.raw)] = pool.submit(_cpu_stage, message.raw)
            current.append(message)
            if len(current) >= max(self.settings.batch_size, 1):
                yield from previous
                previous, current = current, []
        yield from previous
        yield from current

    def parse(raw: bytes) -> Any:
        future = futures.pop(id(raw), None)
        if future is None:
            return parse_message(raw)  # a nested message (PEC postacert): small
        message, found = future.result()
        if found is not None:
            pec_found[id(raw)] = found
        return replace(message, raw=raw)

    def pec(raw: bytes, **kwargs: Any) -> Any:
        found = pec_found.pop(id(raw), None)
        return found if found is not None else find_pec(raw, **kwargs)

    try:
        with patched(ImapMailbox, "fetch", fetch), \
                patched(pipeline_module, "parse_message", parse), \
                patched(pipeline_module, "find_pec", pec):
            yield
    finally:
        pool.shutdown(cancel_futures=True)
        futures.clear()
        pec_found.clear()


# -- experiments -------------------------------------------------------------------------------


def sqlite_commit_cost(commits: int = 400) -> dict[str, float]:
    """ms per small write transaction on this disk, WAL, for each synchronous setting."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="pmb-sqlite-") as tmp:
        for sync in ("FULL", "NORMAL"):
            db = sqlite3.connect(os.path.join(tmp, f"{sync}.db"), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
            start = time.perf_counter()
            for i in range(commits):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 300))
                db.execute("COMMIT")
            out[f"{sync}_ms_per_commit"] = round(1000 * (time.perf_counter() - start) / commits,
                                                 3)
            db.close()
    return out


def move_cost(env: Any, messages: int = 400, batch: int = 200) -> dict[str, float]:
    import corpus

    small = [m.raw for m in corpus.generate(messages * 2, 0.05) if m.kind == "plain"]
    small = (small * (messages // max(len(small), 1) + 1))[:messages]
    out: dict[str, float] = {}
    for mode in ("one UID MOVE per mail", f"one UID MOVE per {batch} mails"):
        env.clear()
        env.load(small)
        with env.imap() as client:
            client.select_folder("INBOX")
            uids = sorted(client.search("ALL"))
            start = time.perf_counter()
            if mode.startswith("one UID MOVE per mail"):
                for uid in uids:
                    client.move([uid], "Processed")
            else:
                for i in range(0, len(uids), batch):
                    client.move(uids[i:i + batch], "Processed")
            out[f"{mode} (ms/mail)"] = round(1000 * (time.perf_counter() - start) / len(uids), 3)
    env.clear()
    return out


def pool_parse(mails: list[bytes], workers: int = 2) -> dict[str, float]:
    megabytes = sum(len(r) for r in mails) / 1e6
    out: dict[str, float] = {}
    gc.collect()
    start = time.perf_counter()
    for raw in mails:
        _cpu_stage(raw)
    wall = time.perf_counter() - start
    out["one core msgs/s"] = round(len(mails) / wall, 1)
    out["one core MB/s"] = round(megabytes / wall, 1)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_cpu_stage, mails[:workers * 4]))  # start the workers
        start = time.perf_counter()
        for _ in pool.map(_cpu_stage, mails, chunksize=8):
            pass
        wall = time.perf_counter() - start
    out[f"{workers}-process pool msgs/s"] = round(len(mails) / wall, 1)
    out[f"{workers}-process pool MB/s"] = round(megabytes / wall, 1)
    return out


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "as is": contextlib.nullcontext,
    "2 fsyncs per mail": two_fsyncs_per_mail,
    "batched UID MOVE": batched_moves,
}


@contextlib.contextmanager
def prototype() -> Iterator[None]:
    with two_fsyncs_per_mail(), batched_moves(), parse_ahead(2):
        yield


@contextlib.contextmanager
def prototype_and_bounce() -> Iterator[None]:
    with prototype(), bounce_check_on_headers():
        yield


def filter_stage_cost(mails: list[bytes]) -> dict[str, float]:
    """The filter stage alone on parsed mail (in-memory ledger), as is and with the bounce
    pre-check on the header block only."""
    from connector.config import config_from_mapping
    from connector.filters import run_filters
    from connector.mail.parse import parse_message
    from connector.service.filtering import StoreLookups, load_rules
    from connector.store.sqlite import SQLiteStore

    config = config_from_mapping({
        "store": {"path": ":memory:"},
        "host": {"type": "dry-run"},
        "accounts": [{"name": "bench", "protocol": "imap", "host": "127.0.0.1",
                      "security": "none", "username": "support@bench.example.com",
                      "password": "${PATH}"}]}, "bench", Path(tempfile.gettempdir()))
    rules = load_rules(config)
    lookups = StoreLookups(SQLiteStore(":memory:"), None)
    account = config.accounts[0]
    settings = rules.for_account(account)

    def stage(message: Any) -> None:
        run_filters(message, account=account.name, trusted=account.trusted, chain=rules.chain,
                    settings=settings, lookups=lookups)

    parsed = [parse_message(raw) for raw in mails]
    out: dict[str, float] = {}
    for name, variant in (("as is", contextlib.nullcontext),
                          ("bounce pre-check on headers only", bounce_check_on_headers)):
        with variant():
            gc.collect()
            start = time.perf_counter()
            for message in parsed:
                stage(message)
            out[f"{name} (ms/mail)"] = round(1000 * (time.perf_counter() - start) / len(parsed),
                                             3)
    return out


def run_experiments(args: argparse.Namespace) -> int:
    import corpus
    from harness import BenchEnv
    from run import _e2e_result_line, _one_e2e, _setup_logging

    only = (set(args.only.split(",")) if args.only else
            {"sqlite", "move", "pool", "filters", "bounce", "prototype"})
    results: dict[str, Any] = {}
    if "sqlite" in only:
        results["sqlite_commit"] = sqlite_commit_cost()
        print(f"SQLite commit cost on this disk: {results['sqlite_commit']}", flush=True)
    mails = list(corpus.generate(args.count, args.scale, args.seed))
    megabytes = sum(m.size for m in mails) / 1e6
    if "filters" in only:
        results["filter_stage"] = filter_stage_cost([m.raw for m in mails])
        print(f"filter stage alone: {results['filter_stage']}", flush=True)
    if "pool" in only:
        results["pool_parse"] = pool_parse([m.raw for m in mails])
        print(f"parse + PEC look, one core vs pool: {results['pool_parse']}", flush=True)
    with BenchEnv(Path(args.workdir) if args.workdir else None) as env:
        _setup_logging(env.workdir, "info")
        if "move" in only:
            results["move"] = move_cost(env)
            print(f"IMAP MOVE against Dovecot: {results['move']}", flush=True)
        variants: dict[str, Callable[[], Any]] = {}
        if "sqlite" in only:
            variants["as is"] = VARIANTS["as is"]
            variants["2 fsyncs per mail"] = VARIANTS["2 fsyncs per mail"]
        if "move" in only:
            variants.setdefault("as is", VARIANTS["as is"])
            variants["batched UID MOVE"] = VARIANTS["batched UID MOVE"]
        if "bounce" in only:
            variants.setdefault("as is", VARIANTS["as is"])
            variants["bounce pre-check on headers only"] = bounce_check_on_headers
        if "prototype" in only:
            variants.setdefault("as is", VARIANTS["as is"])
            variants["prototype: 2 fsyncs + batched MOVE + parse in 2-process pool"] = prototype
            variants["prototype + bounce pre-check on headers only"] = prototype_and_bounce
        if variants:
            env.clear()
            env.load(m.raw for m in mails)
            count = len(mails)
            del mails
            gc.collect()
            for name, variant in variants.items():
                for run in range(args.repeat):
                    with variant():
                        result = _one_e2e(env, args, count, megabytes, args.profile, None)
                    result["variant"] = name
                    results.setdefault("e2e", []).append(result)
                    print(f"e2e [{name}] run {run + 1}: {_e2e_result_line(result)}", flush=True)
                    if result.get("report"):
                        print(result.pop("report"))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps({"command": "experiments", **results}) + "\n")
    return 0
