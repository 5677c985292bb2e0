"""Peak memory while one large message goes end to end (``bench/run.py rss``).

The bridge runs in a child process that does nothing else. It first processes one small mail
(imports done, connections and caches warm), then a separate process APPENDs the large mail
(so the child's own memory is untouched), then the child reads its RSS (the idle baseline),
resets the kernel's high-water mark (``/proc/self/clear_refs``), polls once more and reads
``VmHWM``: peak minus baseline is what the large message cost.

A sampler thread reads RSS every 2 ms together with the innermost ``connector`` function the
main thread is in, so the report says *where* memory grew. With ``--copies`` a second child
runs with tracemalloc and, at the fetch, after parsing and at each host request, lists every
live buffer of 1 MB or more with the line that allocated it: the copies of the message.

With ``--pec`` the large mail is a signed PEC envelope (``corpus.large_pec_message``: its
postacert.eml carries the attachment) and the account is a PEC account, so the envelope is
unwrapped, its signature checked and the certified original parsed as well.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PAGE = os.sysconf("SC_PAGE_SIZE")
BIG = 1024 * 1024
_KEEP_PATCH: Any = None


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _where(frame: Any) -> str:
    """Innermost frame in the connector package (or the library it called into)."""
    inner = None
    while frame is not None:
        name = frame.f_code.co_filename
        if "/connector/" in name:
            short = name.split("/connector/", 1)[1]
            return f"{short}:{frame.f_code.co_name}" + (f" > {inner}" if inner else "")
        if inner is None:
            inner = f"{Path(name).stem}.{frame.f_code.co_name}"
        frame = frame.f_back
    return inner or "?"


class Sampler(threading.Thread):
    def __init__(self, main_ident: int, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.main_ident = main_ident
        self.interval = interval
        self.samples: list[tuple[float, int, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stopped.is_set():
            frame = sys._current_frames().get(self.main_ident)
            self.samples.append((time.perf_counter() - start, _rss_bytes(), _where(frame)))
            time.sleep(self.interval)


def _big_blocks(label: str, out: list[dict[str, Any]]) -> None:
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    blocks = []
    for stat in snapshot.statistics("traceback"):
        if stat.size < BIG or stat.size / stat.count < BIG / 2:
            continue  # only large buffers, not many small objects
        innermost_first = list(reversed(stat.traceback))[:6]
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in innermost_first]
        blocks.append({"mb": round(stat.size / BIG, 1), "count": stat.count,
                       "allocated_at": " < ".join(frames)})
    current, peak = tracemalloc.get_traced_memory()
    out.append({"at": label, "traced_mb": round(current / BIG, 1),
                "traced_peak_mb": round(peak / BIG, 1),
                "blocks": sorted(blocks, key=lambda b: -b["mb"])})


def _install_copy_probes(probes: list[dict[str, Any]]) -> None:
    """Snapshots at the points where copies of the message live."""
    from connector.hosts.zendesk import ZendeskAdapter
    from connector.service import pipeline as pipeline_module

    original_request = ZendeskAdapter._raw_request
    original_job = pipeline_module.Pipeline._job

    def request_probe(self: Any, method: str, url: str, operation: str, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if data is not None and len(data) >= BIG or url.endswith("/api/v2/tickets"):
            _big_blocks(f"host {method} {url.rsplit('/', 1)[-1]}", probes)
        return original_request(self, method, url, operation, **kwargs)

    def job_probe(self: Any, ctx: Any, record: Any, raw: bytes, *rest: Any, **kw: Any) -> Any:
        _big_blocks("pipeline: fetched, before parsing", probes)
        job = original_job(self, ctx, record, raw, *rest, **kw)
        _big_blocks("pipeline: parsed, filtered", probes)
        return job

    ZendeskAdapter._raw_request = request_probe  # type: ignore[method-assign]
    pipeline_module.Pipeline._job = job_probe  # type: ignore[method-assign]


def child(spec_path: str) -> int:
    """Runs in the measured process."""
    sys.path.insert(0, str(BENCH))
    from run import _setup_logging, build_poller

    spec = json.loads(Path(spec_path).read_text())
    _setup_logging(Path(spec["workdir"]), "info")
    if spec.get("bounce_fix"):
        from experiments import bounce_check_on_headers

        global _KEEP_PATCH  # noqa: PLW0603 - a collected context manager would undo it
        _KEEP_PATCH = bounce_check_on_headers()
        _KEEP_PATCH.__enter__()  # for the life of this child process
    poller, store = build_poller(Path(spec["config"]))
    warm = poller.poll()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--append", spec["large"],
                    "--port", str(spec["port"]), "--user", spec["user"],
                    "--password", spec["password"]], check=True)
    gc.collect()
    time.sleep(0.2)
    baseline = _rss_bytes()
    probes: list[dict[str, Any]] = []
    if spec["copies"]:
        import tracemalloc

        _install_copy_probes(probes)
        tracemalloc.start(8)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    sampler = Sampler(threading.get_ident())
    sampler.start()
    started = time.perf_counter()
    summary = poller.poll()
    elapsed = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    peak = _status_kb("VmHWM") * 1024
    if hasattr(poller, "close"):
        poller.close()
    store.close()
    by_stage: dict[str, int] = {}
    for _t, rss, where in sampler.samples:
        by_stage[where] = max(by_stage.get(where, 0), rss)
    top = sorted(by_stage.items(), key=lambda kv: -kv[1])[:12]
    result = {
        "warmup": warm.line(), "summary": summary.line(), "seconds": round(elapsed, 2),
        "baseline_mb": round(baseline / BIG, 1), "peak_mb": round(peak / BIG, 1),
        "above_baseline_mb": round((peak - baseline) / BIG, 1),
        "top_rss_by_location_mb": [(where, round((rss - baseline) / BIG, 1))
                                   for where, rss in top],
        "timeline": [(round(t, 3), round((rss - baseline) / BIG, 1), where)
                     for t, rss, where in sampler.samples[:: max(1, len(sampler.samples) // 60)]],
        "probes": probes,
    }
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def _append_main(args: argparse.Namespace) -> int:
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", args.port, ssl=False, timeout=60)
    client._imap.debug = 0
    client.login(args.user, args.password)
    client.append("INBOX", Path(args.append).read_bytes())
    client.logout()
    return 0


def _warm_mail(*, pec: bool) -> bytes:
    """The small mail processed first: a PEC envelope on a PEC account, so the PEC code is
    imported and warm too."""
    import corpus

    for mail in corpus.generate(200):
        if not pec or mail.kind == "pec":
            return mail.raw
    raise AssertionError("no PEC mail in the first 200 of the corpus")


def _run_child(env: Any, large: Path, *, copies: bool, bounce_fix: bool,
               pec: bool = False) -> dict[str, Any]:
    env.clear()
    env.load([_warm_mail(pec=pec)])
    # A PEC account skips what is already in the box on its first pass: the warm-up mail
    # must be processed like any other.
    extra = "pec: true\ninitial_sync: all" if pec else ""
    config = env.write_config(batch_size=200, account_extra=extra)
    spec = env.workdir / f"rss-spec-{int(copies)}.json"
    result = env.workdir / f"rss-result-{int(copies)}.json"
    assert env.user is not None
    spec.write_text(json.dumps({
        "workdir": str(env.workdir), "config": str(config), "large": str(large),
        "port": env.dovecot.imap_port, "user": env.user.name, "password": env.user.password,
        "copies": copies, "bounce_fix": bounce_fix, "result": str(result)}))
    subprocess.run([sys.executable, str(BENCH / "run.py"), "rss", "--child", str(spec)],
                   check=True)
    return json.loads(result.read_text())


def run_rss(args: argparse.Namespace) -> int:
    if args.child:
        return child(args.child)
    import corpus
    from harness import BenchEnv

    size = int(args.size_mb * BIG)
    pec = bool(getattr(args, "pec", False))
    raw = (corpus.large_pec_message if pec else corpus.large_message)(size, args.seed)
    with BenchEnv(Path(args.workdir) if args.workdir else None) as env:
        large = env.workdir / "large.eml"
        large.write_bytes(raw)
        del raw
        result = _run_child(env, large, copies=False, bounce_fix=args.bounce_fix, pec=pec)
        message_mb = size / BIG
        result["pec"] = pec
        result["message_mb"] = round(message_mb, 1)
        result["ratio_to_message"] = round(result["above_baseline_mb"] / message_mb, 2)
        what = "PEC envelope on a PEC account" if pec else "message"
        print(f"rss: one {message_mb:.1f} MB {what} ({result['summary']}) in "
              f"{result['seconds']}s")
        print(f"  idle baseline {result['baseline_mb']} MB, peak {result['peak_mb']} MB, "
              f"peak above baseline {result['above_baseline_mb']} MB = "
              f"{result['ratio_to_message']}x the message (target < 4x)")
        print("  highest RSS above baseline seen in (MB):")
        for where, mb in result["top_rss_by_location_mb"]:
            print(f"    {mb:7.1f}  {where}")
        if args.copies:
            copies = _run_child(env, large, copies=True, bounce_fix=args.bounce_fix, pec=pec)
            result["probes"] = copies["probes"]
            print("  large live buffers (tracemalloc, >= 1 MB) at each probe:")
            for probe in copies["probes"]:
                print(f"   {probe['at']}: traced {probe['traced_mb']} MB "
                      f"(peak so far {probe['traced_peak_mb']} MB)")
                for block in probe["blocks"]:
                    print(f"      {block['mb']:6.1f} MB  {block['allocated_at']}")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "results.jsonl", "a") as fh:
                fh.write(json.dumps({"command": "rss", **result}) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--append", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    sys.exit(_append_main(parser.parse_args()))
