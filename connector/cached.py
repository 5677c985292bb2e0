"""A cached property without a lock, for values that are computed from frozen data.

Python 3.11's ``functools.cached_property`` takes one ``RLock`` per property, shared by every
instance of the class (removed in 3.12, bpo-43468): with ``host.max_in_flight`` worker threads,
every message's ``sha256``, header index and safe HTML waited on the same lock as every other
message's. The values cached here are pure functions of frozen dataclasses, so two threads that
race on one instance compute the same value and the second write is harmless, which is what
3.12 does too.

Like ``functools.cached_property`` it is a non-data descriptor that writes the value into the
instance's ``__dict__`` (which also works for frozen dataclasses: their ``__setattr__`` guard is
not involved), so later reads find the attribute without calling the descriptor at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:  # type checkers know functools' signature; the runtime class is below
    from functools import cached_property as cached_property
else:

    class cached_property(Generic[_T]):  # noqa: N801 - a drop-in for functools' name
        """``functools.cached_property`` minus the class-wide lock (see the module)."""

        def __init__(self, func: Callable[[Any], _T]) -> None:
            self.func = func
            self.attrname: str | None = None
            self.__doc__ = func.__doc__
            self.__module__ = func.__module__

        def __set_name__(self, owner: type, name: str) -> None:
            if self.attrname is not None and self.attrname != name:
                raise TypeError(f"cannot assign the same cached_property to two names "
                                f"({self.attrname!r} and {name!r})")
            self.attrname = name

        def __get__(self, instance: object | None, owner: type | None = None) -> Any:
            if instance is None:
                return self
            if self.attrname is None:
                raise TypeError("cached_property used without __set_name__")
            value = self.func(instance)
            instance.__dict__[self.attrname] = value
            return value
