"""The functions the CLI calls: outbound list/show/retry, serve, start_outbound."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import StoreTarget
from outbound_oas import BASE, FakeZendesk

from connector.config import Config, HostConfig, StoreConfig
from connector.errors import ConfigError
from connector.exitcodes import EX_NOINPUT
from connector.hosts.zendesk import ApiTokenAuth, ZendeskAdapter, ZendeskSettings
from connector.outbound import commands, factory, zendesk_commands
from connector.outbound.queue import JobState, process_owner
from connector.store.factory import open_queue

ME = process_owner("test")


def make_config(tmp_path: Path, *, outbound: bool = True, host_type: str = "zendesk",
                store: StoreConfig | None = None) -> Config:
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "secret").write_text("whsec-commands-0123456789")
    account: dict[str, Any] = {"name": "pec-main", "username": "assistenza@pec.example.it",
                               "password_file": "pw"}
    if outbound:
        account["outbound"] = {"provider": "aruba"}
    raw = {"accounts": [account],
           "service": {"public_url": "https://bridge.example.it", "signing_secret_file": "secret",
                       "port": 0}}
    return Config(path=tmp_path / "config.yaml", accounts=(),
                  host=HostConfig(type=host_type, url=BASE),
                  store=store or StoreConfig(path=tmp_path / "bridge.sqlite3"), raw=raw)


def run(func: Any, *args: Any, **kw: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = func(*args, out, **kw)
    return code, out.getvalue()


@pytest.fixture
def store_config(target: StoreTarget, tmp_path: Path) -> StoreConfig:
    """The commands' store on each engine."""
    if target.engine == "sqlite":
        return StoreConfig(path=Path(target.where))
    return StoreConfig(path=tmp_path / "unused.sqlite3", type="postgresql", dsn=target.where)


@pytest.fixture
def jobs(target: StoreTarget) -> dict[str, int]:
    queue = target.queue()
    ids = {}
    for name in ("sent", "failed", "queued"):
        ids[name] = queue.enqueue("pec-main", 4700 + len(ids), source="webhook",
                                  dedupe_key=f"inv:{name}",
                                  payload={"subject": f"Oggetto {name}"}).job_id
    queue.claim_next(ME, 600)
    queue.begin_send(ids["sent"], ME, message_id="pmb.1@pec.example.it",
                     recipient="mario@pec.example.it", subject="Richiesta [#4700]")
    queue.mark_sent(ids["sent"], ME, "250 2.0.0 Ok: queued as Q1")
    queue.mark_reported(ids["sent"], ME)
    queue.claim_next(ME, 600)
    queue.mark_failed(ids["failed"], ME, "550 5.1.1 recipient unknown")
    queue.mark_reported(ids["failed"], ME)
    queue.close()
    return ids


def test_list_shows_jobs_newest_first(tmp_path: Path, jobs: dict[str, int],
                                      store_config: StoreConfig) -> None:
    config = make_config(tmp_path, store=store_config)
    code, out = run(commands.outbound_list, config)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "state", "account", "ticket"]
    assert [line.split()[1] for line in lines[1:4]] == ["queued", "failed", "sent"]
    assert "550 5.1.1 recipient unknown" in out
    assert lines[-1] == "(1 failed, 1 queued, 1 sent)"
    code, out = run(commands.outbound_list, config, state="failed")
    assert len(out.splitlines()) == 3
    with pytest.raises(ConfigError, match="unknown state"):
        run(commands.outbound_list, config, state="lost")


def test_list_json_is_one_document_with_every_job_and_the_counts(
    tmp_path: Path, jobs: dict[str, int], store_config: StoreConfig,
) -> None:
    code, out = run(commands.outbound_list, make_config(tmp_path, store=store_config), as_json=True)
    assert code == 0
    document = json.loads(out)
    assert document["counts"] == {"failed": 1, "queued": 1, "sent": 1}
    assert [(j["id"], j["state"]) for j in document["jobs"]] == [
        (jobs["queued"], "queued"), (jobs["failed"], "failed"), (jobs["sent"], "sent")]
    assert all(tuple(j) == commands.JOB_KEYS for j in document["jobs"])
    sent = document["jobs"][2]
    assert (sent["recipient"], sent["smtp_reply"]) == ("mario@pec.example.it",
                                                       "250 2.0.0 Ok: queued as Q1")


def test_show_one_job(tmp_path: Path, jobs: dict[str, int], store_config: StoreConfig) -> None:
    code, out = run(commands.outbound_show, make_config(tmp_path, store=store_config), jobs["sent"])
    assert code == 0
    assert re.search(r"^state:\s+sent$", out, re.M)
    assert re.search(r"^message-id:\s+<pmb.1@pec.example.it>$", out, re.M)
    assert re.search(r"^provider answer:\s+250 2.0.0 Ok: queued as Q1$", out, re.M)
    assert re.search(r"^request subject:\s+Oggetto sent$", out, re.M)
    config = make_config(tmp_path, store=store_config)
    assert run(commands.outbound_show, config, 999)[0] == EX_NOINPUT


def test_retry(tmp_path: Path, jobs: dict[str, int], store_config: StoreConfig) -> None:
    config = make_config(tmp_path, store=store_config)
    code, out = run(commands.outbound_retry, config, jobs["failed"])
    assert code == 0 and "queued again" in out
    queue = open_queue(store_config)
    assert queue.job(jobs["failed"]).state == JobState.QUEUED
    queue.close()
    code, out = run(commands.outbound_retry, config, jobs["sent"])
    assert code == 1 and "was sent" in out
    assert run(commands.outbound_retry, config, jobs["queued"])[0] == 1
    assert run(commands.outbound_retry, config, 999)[0] == EX_NOINPUT


def test_configuration_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no account has outbound enabled"):
        run(zendesk_commands.install, make_config(tmp_path, outbound=False), True, False)
    with pytest.raises(ConfigError, match="host.type: zendesk") as info:
        run(zendesk_commands.install, make_config(tmp_path, host_type="dry-run"), True, False)
    assert info.value.key == "host.type"
    assert commands.start_outbound(make_config(tmp_path, outbound=False)) is None


def test_install_and_uninstall_are_the_named_hosts(tmp_path: Path) -> None:
    """``install --host zendesk`` goes to Zendesk's API (refused without a Zendesk host), and
    writes no OTOBO files; ``--host otobo`` is tested in test_otobo_cli."""
    config = make_config(tmp_path, host_type="dry-run")
    with pytest.raises(ConfigError, match="host.type: zendesk"):
        factory.install(config, "zendesk", dry_run=True, suppress=False,
                        output=tmp_path / "otobo", out=io.StringIO())
    with pytest.raises(ConfigError, match="host.type: zendesk"):
        factory.uninstall(config, "zendesk", dry_run=True, out=io.StringIO())
    assert not (tmp_path / "otobo").exists()


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeZendesk(rsps)


def test_serve_listens_until_stopped(tmp_path: Path, zendesk: FakeZendesk) -> None:
    adapter = ZendeskAdapter(ZendeskSettings(base_url=BASE,
                                             auth=ApiTokenAuth("agent@example.it", "tok")))
    stop = threading.Event()
    out = io.StringIO()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(commands.serve(
        make_config(tmp_path), out, stop=stop, adapter=adapter)))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while "serving webhooks on" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", out.getvalue()).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.close()
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
    # The worker's first sweep asked Zendesk for tickets still waiting for a reply.
    assert zendesk.calls_to("GET", r"/api/v2/search$")
