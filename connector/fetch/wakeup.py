"""Waiting on a socket without waking to poll: a stop event a ``poll()`` can watch too.

An idling account waits for one of three things: its server says something (new mail, BYE,
the connection closed), the service stops, or it is time to renew IDLE. ``wait_readable``
blocks in one ``poll()`` on the account's socket and on ``StopEvent``'s pipe, with the renewal
as its only timeout, so 1,000 idling accounts cost no CPU between those events. ``poll()``
rather than ``select()``: past 1,024 open files ``select`` cannot watch a descriptor.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from enum import Enum


class StopEvent(threading.Event):
    """A ``threading.Event`` whose ``set()`` also makes ``fileno()`` readable, so a thread
    blocked in ``poll()`` on a socket wakes at once on shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def set(self) -> None:
        if not self.is_set():
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_fd, b"x")
        super().set()

    def clear(self) -> None:
        super().clear()
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 512):
                pass

    def __del__(self) -> None:
        for fd in (getattr(self, "_read_fd", -1), getattr(self, "_write_fd", -1)):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Woken(Enum):
    READABLE = "readable"  # data, EOF or an error on the socket: read it to know which
    STOPPED = "stopped"
    TIMEOUT = "timeout"


def wait_readable(sock: socket.socket, stop: threading.Event | None,
                  timeout: float | None) -> Woken:
    """Block until ``sock`` is readable (or failed), ``stop`` is set or ``timeout`` seconds
    pass (None: no timeout). A plain ``threading.Event`` cannot wake the ``poll()``: it is
    looked at before waiting only, so pass a ``StopEvent`` wherever shutdown must be prompt."""
    if stop is not None and stop.is_set():
        return Woken.STOPPED
    poller = select.poll()
    mask = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
    poller.register(sock.fileno(), mask)
    stop_fd = stop.fileno() if isinstance(stop, StopEvent) else None
    if stop_fd is not None:
        poller.register(stop_fd, select.POLLIN)
    millis = None if timeout is None else max(0, int(timeout * 1000))
    events = poller.poll(millis)
    if stop is not None and stop.is_set():
        return Woken.STOPPED
    if any(fd == sock.fileno() for fd, _ in events):
        return Woken.READABLE
    return Woken.TIMEOUT


__all__ = ["StopEvent", "Woken", "wait_readable"]
