"""What the outbound commands of every host share: the checked outbound settings, the queue
(or none for a dry run before the first run), and the exit code of a helpdesk failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from connector.config import Config
from connector.errors import ConfigError, HostError, TransientHostError
from connector.exitcodes import EX_FAILURE, EX_UNAVAILABLE
from connector.outbound.queue import OutboundQueue
from connector.outbound.settings import OutboundConfig, load_outbound


def sending_outbound(config: Config) -> OutboundConfig:
    """The outbound settings of a config that sends: an account with outbound, a service."""
    outbound = load_outbound(config)
    if not outbound.enabled_accounts:
        raise ConfigError("no account has outbound enabled (accounts[].outbound)",
                          path=str(config.path), key="accounts")
    if outbound.service is None:
        raise ConfigError("is required for outbound", path=str(config.path), key="service")
    return outbound


@contextmanager
def queue_of(config: Config) -> Iterator[OutboundQueue]:
    from connector.store.factory import open_queue

    queue = open_queue(config.store)
    try:
        yield queue
    finally:
        queue.close()


@contextmanager
def queue_if_present(config: Config) -> Iterator[OutboundQueue | None]:
    """The queue for a dry run: None when no store file exists yet (a dry run creates none)."""
    from connector.store.factory import store_exists

    if not store_exists(config.store):
        yield None
        return
    with queue_of(config) as queue:
        yield queue


def host_failure(exc: HostError) -> int:
    """69 when the helpdesk could not be reached (worth running again), 1 when it refused."""
    return EX_UNAVAILABLE if isinstance(exc, TransientHostError) else EX_FAILURE
