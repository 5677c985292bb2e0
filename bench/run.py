"""Benchmark entry point: ``python bench/run.py COMMAND [options]`` (see bench/README.md).

Commands:
  e2e           the bridge end to end (AccountPoller.poll: IMAP list/fetch, pipeline, move)
                against Dovecot and a zero-latency host; ``--profile`` for where time goes
  fetch         the same IMAP fetch path alone (ImapMailbox.list_new + fetch)
  parse         parse_message alone on the corpus in memory, with stdlib comparisons
  idle-latency  APPEND -> host ticket create latency with IDLE (bridge as a real process)
  rss           peak RSS above idle while one large message goes end to end
  accounts      N mailboxes on one bridge: start-up, RSS, threads, idle CPU, APPEND -> ticket,
                recovery after a Dovecot restart (``--count N``)
  instances     several run processes on one ledger: msgs/s with 1..N, takeover p50/p95
  experiments   the measurements behind the recommendations (SQLite commits, batched MOVE,
                parsing in a process pool)

Nothing is written into the repository: everything goes to a temporary work directory (or
``--workdir``), reports to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from harness import REPO, BenchEnv  # noqa: E402
from measure import Counters, breakdown, format_breakdown, timed  # noqa: E402


def _corpus(args: argparse.Namespace) -> list[corpus.CorpusMail]:
    start = time.perf_counter()
    mails = list(corpus.generate(args.count, args.scale, args.seed))
    total = sum(m.size for m in mails)
    print(f"corpus: {len(mails)} mails, {total / 1e6:.1f} MB (seed {args.seed}, scale "
          f"{args.scale}), generated in {time.perf_counter() - start:.1f}s", flush=True)
    return mails


def _emit(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps({"command": name, **result}) + "\n")


def _setup_logging(workdir: Path, level: str) -> Path:
    """As the CLI does for ``run`` (INFO by default), into a file instead of the terminal."""
    path = workdir / "bridge.log"
    logging.basicConfig(level=getattr(logging, level.upper()), force=True,
                        filename=path, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return path


def build_poller(config_path: Path, counters: Counters | None = None,  # noqa: ANN201
                 parse_workers: int | None = None):
    """Store, host, filter stage, pipeline and poller as ``postmaster-bridge run`` builds them
    (``connector.cli._build``; both its older tuple and its ``Parts`` shape are accepted), with
    the parse pool ``run`` uses (``parse_workers``: None = as the config's
    ``service.parse_workers``, auto by default; 0 = no pool). The caller closes
    ``poller.parser`` when there is one."""
    from connector import cli
    from connector.config import load_config
    from connector.service.runner import AccountPoller

    config = load_config(config_path)
    account = config.accounts[0]
    parts = cli._build(config, sys.stdout)
    if hasattr(parts, "pipeline"):
        store, dry_run = parts.store, parts.dry_run
        if hasattr(parts, "metrics") and hasattr(parts.metrics, "watch_store"):
            parts.metrics.watch_store(store, [account.name])
        pipeline = parts.pipeline(account)
    else:
        store, host, filter_stage, dry_run = parts
        pipeline = cli._pipeline(config, account, store, host, filter_stage)
    if counters is not None and hasattr(store, "_db"):  # SQLite's statement trace
        store._db.set_trace_callback(counters.sql_callback)
    try:
        from connector.service.parsing import ParsePool, default_workers
    except ImportError:  # a tree from before parsing ahead
        return AccountPoller(account, store, pipeline, dry_run=dry_run), store
    configured = (config.raw.get("service") or {}).get("parse_workers", "auto")
    workers = parse_workers if parse_workers is not None else (
        default_workers() if configured == "auto" else int(configured))
    parser = ParsePool(workers) if workers > 0 else None
    return AccountPoller(account, store, pipeline, dry_run=dry_run, parser=parser), store


def _time_host_requests(host: Any) -> dict[str, list[float]]:
    """Wall time of each HTTP exchange as the bridge sees it, by method and route."""
    import re

    times: dict[str, list[float]] = {}
    host = getattr(host, "inner", host)  # the adapter under the pipeline's call recorder
    raw_request = getattr(host, "_raw_request", None)
    if raw_request is None:
        return times
    number = re.compile(r"/\d+")

    def timed_request(method: str, url: str, operation: str, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return raw_request(method, url, operation, **kwargs)
        finally:
            path = number.sub("/{id}", url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0])
            entry = times.setdefault(f"{method} /{path}", [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    host._raw_request = timed_request
    return times


def _time_store_transactions(store: Any) -> list[float]:
    """[count, seconds, fsync'd count, fsync'd seconds, reads, read seconds] of the store's
    write transactions (BEGIN .. COMMIT) and reads; fsync'd = committed durable
    (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit`` on), the others were made
    with ``durable=False``. Barriers (``make_durable``) are durable ones."""
    from contextlib import contextmanager

    totals = [0, 0.0, 0, 0.0, 0, 0.0]
    original = store._tx
    original_query = store._query

    def timed_query(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_query(*args, **kwargs)
        finally:
            totals[4] += 1
            totals[5] += time.perf_counter() - start

    @contextmanager
    def timed_tx(**kwargs: Any) -> Any:
        start = time.perf_counter()
        with original(**kwargs) as db:
            yield db
        seconds = time.perf_counter() - start
        totals[0] += 1
        totals[1] += seconds
        if kwargs.get("durable", True):
            totals[2] += 1
            totals[3] += seconds

    store._tx = timed_tx
    store._query = timed_query
    return totals


def _time_store_calls(store: Any) -> list[float]:
    """[calls, CPU seconds of the calling threads inside the store's public methods]: the
    ledger's cost to the bridge, without the waits (other threads holding the lock, the
    server's answer). Nested calls count once."""
    import threading

    totals = [0, 0.0]
    depth = threading.local()

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(depth, "n", 0):
                return method(*args, **kwargs)
            depth.n = 1
            start = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                depth.n = 0
                totals[0] += 1
                totals[1] += time.thread_time() - start
        return timed

    for name in dir(store):
        if not name.startswith("_") and name not in ("close", "dialect", "errors"):
            method = getattr(store, name)
            if callable(method) and not isinstance(method, type):
                setattr(store, name, wrap(method))
    return totals


def _profile_host_threads(poller: Any, profiles: dict[int, cProfile.Profile]) -> None:
    """cProfile sees only the thread that enabled it: with several mails in flight the
    pipeline runs on host worker threads, each profiled here by a profiler of its own."""
    import threading

    process = getattr(poller, "_process", None)
    if process is None:  # a tree from before several mails in flight: all on one thread
        return
    main = threading.get_ident()

    def profiled(item: Any) -> Any:
        ident = threading.get_ident()
        if ident == main:  # one mail at a time runs on the caller's thread, profiled already
            return process(item)
        # CPU time of this thread: wall time would count the waits for the store's lock and
        # the GIL as the time of whatever function waits.
        profile = profiles.setdefault(ident, cProfile.Profile(time.thread_time))
        profile.enable()
        try:
            return process(item)
        finally:
            profile.disable()

    poller._process = profiled


# -- e2e ---------------------------------------------------------------------------------------


def _one_e2e(env: BenchEnv, args: argparse.Namespace, messages: int, megabytes: float,
             profile: str | None, out_dir: Path | None,
             postgres: Any = None) -> dict[str, Any]:
    """One pass over the loaded mailbox; ``postgres`` (a tests/postgres.py server): the ledger
    in a fresh PostgreSQL database of it instead of a fresh SQLite file."""
    env.reset_host()
    inbox = env.restore()
    max_in_flight = getattr(args, "max_in_flight", None)
    account_extra = top_extra = ""
    if getattr(args, "pec_fields", False):
        # The bench provider's signer trusted (as real providers' chain to the shipped AgID
        # anchors) and the four PEC facts in custom fields: certified envelopes.
        anchor = env.workdir / "bench-pec-signer.pem"
        anchor.write_bytes(corpus.signer_pem())
        account_extra = ("pec_custom_fields: {identificativo: 9001, msgid: 9002, "
                         "certified_at: 9003, signature: 9004}")
        top_extra = f"pec:\n  trust_anchors: [{anchor}]\n"
    store_dsn = postgres.fresh_database() if postgres is not None else None
    config = env.write_config(batch_size=args.batch_size, host_extra=(
        f"max_in_flight: {max_in_flight}" if max_in_flight else ""),
        account_extra=account_extra, top_extra=top_extra, store_dsn=store_dsn)
    counters = Counters()
    lean = getattr(args, "lean", False)
    poller, store = build_poller(config, None if lean else counters, args.parse_workers)
    parser = getattr(poller, "parser", None)
    in_process = [0.0]
    in_settle = [0.0]
    from connector.service import runner as runner_module

    original_flush = runner_module._Moves.flush
    host_times: dict[str, list[float]] = {}
    tx_times = [0, 0.0, 0, 0.0, 0, 0.0]
    call_times = [0, 0.0]
    if not lean:  # the counters below cost the bridge ~0.1-0.2 ms of CPU per mail
        host_times = _time_host_requests(poller.pipeline.host)
        tx_times = _time_store_transactions(store)
        call_times = _time_store_calls(store)
        poller.pipeline.process = timed(in_process,  # type: ignore[method-assign]
                                        poller.pipeline.process)

        def flush(self: Any) -> None:
            started = time.perf_counter()
            try:
                original_flush(self)
            finally:
                in_settle[0] += time.perf_counter() - started

        runner_module._Moves.flush = flush  # type: ignore[method-assign]
    gc.collect()
    thread_profiles: dict[int, cProfile.Profile] = {}
    profiler: Any = None
    if profile == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    elif profile == "cprofile":
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        _profile_host_threads(poller, thread_profiles)
    before = env.cpu_mark()
    postgres_before = _postgres_cpu(postgres)
    with contextlib.nullcontext() if lean else counters.imap_commands():
        summary = poller.poll()
        if hasattr(poller, "close"):
            poller.close()  # the runner keeps its connection open between passes
    runner_module._Moves.flush = original_flush  # type: ignore[method-assign]
    time.sleep(0.3)  # let Dovecot reap the session's imap process, so its CPU time is counted
    used = env.cpu_mark().since(before)
    used.wall -= 0.3
    postgres_cpu = _postgres_cpu(postgres) - postgres_before
    if parser is not None:
        parser.close()  # after the mark: its workers' CPU is read while they are alive
    report = ""
    if profile == "pyinstrument":
        profiler.stop()
        report = profiler.output_text(unicode=True, color=False, show_all=False)
        if out_dir is not None:
            (out_dir / "e2e-pyinstrument.html").write_text(profiler.output_html())
            (out_dir / "e2e-pyinstrument.txt").write_text(report)
    elif profile == "cprofile":
        profiler.disable()
        stream = io.StringIO()
        # The main thread and every host worker (host.max_in_flight > 1) together.
        stats = pstats.Stats(profiler, *thread_profiles.values(), stream=stream)
        report = format_breakdown(breakdown(stats, messages))
        stats.sort_stats("tottime").print_stats(30)
        if out_dir is not None:
            stats.dump_stats(str(out_dir / "e2e.pstats"))
            (out_dir / "e2e-cprofile-top.txt").write_text(stream.getvalue())
        report += "\n\n" + stream.getvalue()
    store.close()
    host_stats = env.host.stats() if env.host_kind == "bench" else {}
    counts = env.folder_counts()
    result = {
        "messages": messages, "inbox_before": inbox, "megabytes": round(megabytes, 1),
        "summary": summary.line(), "wall_s": round(used.wall, 3),
        "msgs_per_s": round(messages / used.wall, 1), "mb_per_s": round(megabytes / used.wall, 1),
        "cpu_s": {"bridge": round(used.bridge, 2), "dovecot": round(used.dovecot, 2),
                  "host": round(used.host, 2), "parse_workers": round(used.workers, 2)},
        "parse_workers": getattr(parser, "workers", 0),
        "postgres_cpu_s": round(postgres_cpu, 2),
        "bridge_time_s": {"pipeline.process": round(in_process[0], 2),
                          "move (settle)": round(in_settle[0], 2),
                          "list+fetch+rest": round(used.wall - in_process[0] - in_settle[0], 2)},
        "sql_per_mail": {k: round(v / messages, 2) for k, v in counters.sql.most_common()},
        "imap_commands": dict(counters.imap.most_common()),
        "host_requests": host_stats.get("routes", {}),
        "host_requests_per_mail": round(sum(host_stats.get("routes", {}).values()) / messages, 2),
        "host_client_ms_per_request": {k: round(1000 * v[1] / v[0], 2)
                                       for k, v in sorted(host_times.items())},
        "store_transactions": {"count_per_mail": round(tx_times[0] / messages, 2),
                               "ms_each": round(1000 * tx_times[1] / max(tx_times[0], 1), 3),
                               "ms_per_mail": round(1000 * tx_times[1] / messages, 2),
                               "fsynced_per_mail": round(tx_times[2] / messages, 2),
                               "fsynced_ms_each": round(1000 * tx_times[3]
                                                        / max(tx_times[2], 1), 3),
                               "reads_per_mail": round(tx_times[4] / messages, 2),
                               "read_ms_per_mail": round(1000 * tx_times[5] / messages, 2)},
        "store": "postgresql" if postgres is not None else "sqlite",
        "store_calls": {"per_mail": round(call_times[0] / messages, 2),
                        "bridge_cpu_ms_per_mail": round(1000 * call_times[1] / messages, 3)},
        "folders_after": counts,
        "profile": profile,
        "lean": lean,
    }
    if report:
        result["report"] = report
    return result


def _e2e_result_line(result: dict[str, Any]) -> str:
    cpu = result["cpu_s"]
    return (f"{result['msgs_per_s']} msgs/s ({result['wall_s']:.1f}s; CPU bridge "
            f"{cpu['bridge']}s dovecot {cpu['dovecot']}s host {cpu['host']}s; "
            f"COMMIT/mail {result['sql_per_mail'].get('COMMIT')}; "
            f"UID MOVE {result['imap_commands'].get('UID MOVE')}) {result['summary']}")


def _print_e2e(result: dict[str, Any]) -> None:
    print(f"\n== e2e: {result['messages']} mails, {result['megabytes']} MB "
          f"(profile: {result['profile'] or 'off'}; store: {result.get('store', 'sqlite')})")
    print(f"  {result['summary']}")
    print(f"  wall {result['wall_s']:.2f}s -> {result['msgs_per_s']} msgs/s, "
          f"{result['mb_per_s']} MB/s")
    cpu = result["cpu_s"]
    print(f"  CPU seconds: bridge {cpu['bridge']}, parse workers ({result['parse_workers']}) "
          f"{cpu.get('parse_workers', 0.0)}, dovecot {cpu['dovecot']}, host double "
          f"{cpu['host']}, postgresql {result.get('postgres_cpu_s', 0.0)}  "
          f"(of {2 * result['wall_s']:.1f} available on 2 cores)")
    if not result.get("lean"):  # --lean measures none of these
        print(f"  bridge wall split: {result['bridge_time_s']}")
        print(f"  SQLite statements per mail: {result['sql_per_mail']}")
        print(f"  IMAP commands: {result['imap_commands']}")
    print(f"  host requests ({result['host_requests_per_mail']}/mail): "
          f"{result['host_requests']}")
    if not result.get("lean"):
        print(f"  host request wall time as the bridge sees it (ms): "
              f"{result['host_client_ms_per_request']}")
        print(f"  store write transactions: {result['store_transactions']}")
        print(f"  store calls (bridge CPU inside them): {result['store_calls']}")
    print(f"  folders after: {result['folders_after']}")
    if result.get("report"):
        print(result["report"])


def cmd_e2e(args: argparse.Namespace) -> int:
    mails = _corpus(args)
    megabytes = sum(m.size for m in mails) / 1e6
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with BenchEnv(Path(args.workdir) if args.workdir else None, host=args.host,
                  host_latency_ms=args.host_latency_ms,
                  host_rate_limit=args.host_rate_limit) as env:
        log_path = _setup_logging(env.workdir, args.log_level)
        start = time.perf_counter()
        env.load(m.raw for m in mails)
        mails_count = len(mails)
        del mails
        gc.collect()
        print(f"loaded into Dovecot in {time.perf_counter() - start:.1f}s", flush=True)
        stores = args.stores.split(",")
        postgres = _bench_postgres() if "postgresql" in stores else None
        try:
            for run in range(args.repeat):
                for store in stores:  # alternated: each engine sees the same machine load
                    result = _one_e2e(env, args, mails_count, megabytes, None, out_dir,
                                      postgres if store == "postgresql" else None)
                    result["run"] = run + 1
                    _print_e2e(result)
                    _emit(args, "e2e", result)
        finally:
            if postgres is not None:
                postgres.stop()
        if args.profile:
            for profile in args.profile.split(","):
                result = _one_e2e(env, args, mails_count, megabytes, profile, out_dir)
                _print_e2e(result)
                _emit(args, f"e2e-{profile}", {k: v for k, v in result.items() if k != "report"})
        print(f"\nbridge log: {log_path} (kept only with --workdir)")
    return 0


def _postgres_cpu(postgres: Any) -> float:
    """CPU seconds of the private PostgreSQL so far: the postmaster with what it reaped, and
    its live processes (a backend per bridge connection, WAL writer, checkpointer)."""
    if postgres is None:
        return 0.0
    from harness import _clock_ticks, descendants_cpu_seconds

    pid = int((postgres.data / "postmaster.pid").read_text().split()[0])
    return _clock_ticks(pid, children=True) + descendants_cpu_seconds(pid, set())


def _bench_postgres() -> Any:
    """A private PostgreSQL for the ledger (tests/postgres.py) with its own defaults: fsync
    on, so a durable commit costs its WAL flush as SQLite's costs its fsync."""
    from postgres import PostgresServer, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        raise SystemExit("--stores postgresql needs PostgreSQL (initdb, pg_ctl): "
                         "scripts/install-test-deps.sh installs it")
    server = PostgresServer(bindir, durable=True)
    server.start()
    return server


# -- fetch -------------------------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace) -> int:
    from connector.config import load_config
    from connector.fetch.imap import ImapMailbox

    mails = _corpus(args)
    megabytes = sum(m.size for m in mails) / 1e6
    with BenchEnv(Path(args.workdir) if args.workdir else None, host=args.host) as env:
        env.load(m.raw for m in mails)
        del mails
        gc.collect()
        for batch in args.batch_sizes:
            for run in range(args.repeat):
                config = load_config(env.write_config(batch_size=batch))
                before = env.cpu_mark()
                count = size = 0
                with ImapMailbox(config.accounts[0]) as mailbox:
                    listed = mailbox.list_new(set())
                    for message in mailbox.fetch(listed):
                        count += 1
                        size += len(message.raw or b"")
                time.sleep(0.3)
                used = env.cpu_mark().since(before)
                used.wall -= 0.3
                result = {"batch_size": batch, "run": run + 1, "messages": count,
                          "megabytes": round(size / 1e6, 1), "wall_s": round(used.wall, 3),
                          "msgs_per_s": round(count / used.wall, 1),
                          "mb_per_s": round(megabytes / used.wall, 1),
                          "cpu_s": {"bridge": round(used.bridge, 2),
                                    "dovecot": round(used.dovecot, 2)}}
                print(f"fetch batch={batch:4d} run {run + 1}: {count} mails in "
                      f"{used.wall:.2f}s -> {result['msgs_per_s']} msgs/s, "
                      f"{result['mb_per_s']} MB/s; CPU bridge {used.bridge:.2f}s dovecot "
                      f"{used.dovecot:.2f}s", flush=True)
                _emit(args, "fetch", result)
    return 0


# -- parse -------------------------------------------------------------------------------------


def _parse_variants() -> dict[str, Callable[[bytes], Any]]:
    from email import policy
    from email.parser import BytesParser

    from connector.mail.parse import parse_message

    default_parser = BytesParser(policy=policy.default)
    compat_parser = BytesParser(policy=policy.compat32)

    def stdlib_default(raw: bytes) -> Any:
        """What a policy.default-based reader does: parse, then decode every leaf."""
        msg = default_parser.parsebytes(raw)
        for part in msg.walk():
            if not part.is_multipart():
                part.get_content()
        return msg

    def stdlib_compat32(raw: bytes) -> Any:
        msg = compat_parser.parsebytes(raw)
        for part in msg.walk():
            if not part.is_multipart():
                part.get_payload(decode=True)
        return msg

    return {"parse_message": parse_message, "stdlib policy.default + get_content":
            stdlib_default, "stdlib compat32 + decode": stdlib_compat32}


def _pipeline_job_stage() -> Callable[[bytes], Any]:
    """parse + the PEC look the pipeline does on every mail (find_pec + plan_pec when the mail
    shows PEC signs) + HTML sanitizing for the ticket body: the CPU work of one message that
    needs neither the ledger nor the host."""
    from connector.decide.pec import plan_pec
    from connector.mail.html import html_to_text, sanitize_html
    from connector.mail.parse import parse_message
    from connector.pec import find_pec
    from connector.understand import may_be_pec as _may_be_pec

    def job(raw: bytes) -> Any:
        message = parse_message(raw)
        content = message
        if _may_be_pec(message):
            plan = plan_pec(message, find_pec(raw), account_is_pec=False, parse=parse_message)
            content = plan.content if plan is not None else message
        html = sanitize_html(content.html_body) if content.html_body else None
        text = content.text_body or (html_to_text(html) if html else "")
        return content, html, text

    return job


def cmd_parse(args: argparse.Namespace) -> int:
    mails = _corpus(args)
    raws = [m.raw for m in mails]
    megabytes = sum(len(r) for r in raws) / 1e6
    variants = _parse_variants()
    variants["pipeline CPU stage (parse+PEC+sanitize)"] = _pipeline_job_stage()
    wanted = args.variants.split(",") if args.variants else list(variants)
    for name in variants:
        if not any(w in name for w in wanted):
            continue
        func = variants[name]
        for run in range(args.repeat):
            gc.collect()
            start = time.perf_counter()
            cpu = time.process_time()
            for raw in raws:
                func(raw)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu
            result = {"variant": name, "run": run + 1, "messages": len(raws),
                      "wall_s": round(wall, 3), "msgs_per_s": round(len(raws) / wall, 1),
                      "mb_per_s": round(megabytes / wall, 1), "cpu_s": round(cpu, 2)}
            print(f"parse {name:44s} run {run + 1}: {result['msgs_per_s']:8.1f} msgs/s "
                  f"{result['mb_per_s']:6.1f} MB/s (one core)", flush=True)
            _emit(args, "parse", result)
    return 0


# -- the rest lives in their own modules -------------------------------------------------------


def cmd_idle(args: argparse.Namespace) -> int:
    from idle import run_idle_latency

    return run_idle_latency(args)


def cmd_rss(args: argparse.Namespace) -> int:
    from rss import run_rss

    return run_rss(args)


def cmd_experiments(args: argparse.Namespace) -> int:
    from experiments import run_experiments

    return run_experiments(args)


def cmd_accounts(args: argparse.Namespace) -> int:
    from accounts import run_accounts

    _emit(args, "accounts", run_accounts(args))
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    from instances import run_instances

    _emit(args, "instances", run_instances(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--count", type=int, default=corpus.DEFAULT_COUNT)
    common.add_argument("--scale", type=float, default=1.0)
    common.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    common.add_argument("--repeat", type=int, default=1)
    common.add_argument("--workdir", help="keep Dovecot, ledger and logs here (default: a "
                        "temporary directory, removed at the end)")
    common.add_argument("--out", help="directory for results.jsonl and profiles")
    common.add_argument("--host-latency-ms", type=float, default=0.0,
                        help="the bench host double answers after this delay (real Zendesk: "
                             "100-300 ms)")
    common.add_argument("--host-rate-limit", type=int, default=0,
                        help="the bench host double enforces this many requests per minute "
                             "(429 over it) and announces it in its headers")
    common.add_argument("--host", choices=("bench", "zendesk-double"), default="bench",
                        help="bench: bench/host_double.py (default); zendesk-double: "
                        "tests/zendesk_double.py")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("e2e", parents=[common], help="end to end through the bridge")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--parse-workers", type=int, default=None,
                   help="parse worker processes (default: as `run`: the cores less one, "
                   "at most 4; 0: parse in the main thread)")
    p.add_argument("--profile", help="after the timed runs, profiled runs: pyinstrument, "
                   "cprofile or both (comma-separated)")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="host.max_in_flight (default: the bridge's, 8); 1 runs every mail on "
                   "the main thread, where --profile sees it")
    p.add_argument("--pec-fields", action="store_true",
                   help="trust the corpus's PEC signer and map the PEC facts to custom fields "
                   "(pec_custom_fields): certified envelopes, no facts note by default")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    p.add_argument("--stores", default="sqlite",
                   help="comma-separated ledger engines, alternated in each repeat: sqlite, "
                        "postgresql (a private server, fsync on, a fresh database per run)")
    p.add_argument("--lean", action="store_true",
                   help="without the statement, request and transaction counters (they cost "
                   "the bridge CPU): rates and CPU only")
    p.set_defaults(func=cmd_e2e)

    p = sub.add_parser("fetch", parents=[common], help="IMAP list + fetch only")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[200])
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("parse", parents=[common], help="parsing only, one core")
    p.add_argument("--variants", help="comma-separated substrings of variant names")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("idle-latency", parents=[common],
                       help="APPEND -> ticket create latency with IDLE")
    p.add_argument("--messages", type=int, default=40)
    p.add_argument("--gap", type=float, default=1.0, help="seconds between APPENDs")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for one create before calling IDLE unavailable")
    p.add_argument("--account-extra", default="",
                   help="YAML lines added to the account (e.g. an IDLE switch)")
    p.add_argument("--bridge-verbose", action="store_true",
                   help="run the bridge with -v (DEBUG log in the work directory)")
    p.set_defaults(func=cmd_idle)

    p = sub.add_parser("rss", parents=[common], help="peak RSS on one large message")
    p.add_argument("--size-mb", type=float, default=25.0)
    p.add_argument("--copies", action="store_true",
                   help="also list the large live buffers (tracemalloc) at the peak")
    p.add_argument("--bounce-fix", action="store_true",
                   help="with the bounce pre-check on the header block only (experiments.py)")
    p.add_argument("--pec", action="store_true",
                   help="the large mail is a signed PEC envelope, on a PEC account")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_rss)

    p = sub.add_parser("accounts", parents=[common],
                       help="N mailboxes on one bridge (--count N): start-up, idle cost, "
                       "latency, recovery after a Dovecot restart")
    p.add_argument("--login-rate", type=float, default=50.0,
                   help="connections.login_rate for the bench Dovecot (logins per second)")
    p.add_argument("--login-burst", type=int, default=10)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--mails", type=int, default=40, help="mails for APPEND -> ticket")
    p.add_argument("--gap", type=float, default=0.3, help="seconds between those mails")
    p.add_argument("--outage", type=float, default=10.0, help="seconds Dovecot stays down")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--dovecot", choices=("many", "stock"), default="many",
                   help="many: process/client limits for N connections; stock: as the tests")
    p.set_defaults(func=cmd_accounts)

    p = sub.add_parser("instances", parents=[common],
                       help="several run instances on one ledger: msgs/s with 1..N of them, "
                       "takeover time after a SIGKILL")
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--accounts", type=int, default=12)
    p.add_argument("--ttl", type=float, default=20.0, help="leases.ttl")
    p.add_argument("--kills", type=int, default=8, help="takeovers timed per setting")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                   help="the shared store: a SQLite file, or a private PostgreSQL (fsync on)")
    p.set_defaults(func=cmd_instances)

    p = sub.add_parser("experiments", parents=[common],
                       help="measurements behind the recommendations")
    p.add_argument("--only", help="comma-separated: sqlite,move,pool,filters,bounce,prototype")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--profile", choices=("cprofile",), help="profile every e2e variant")
    p.set_defaults(func=cmd_experiments)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out and Path(args.out).resolve().is_relative_to(REPO):
        print("--out must be outside the repository", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
