"""One registry for every named table of the library: data formats, encoders, decoder ops, cell ops, aggregations.

A ``Registry`` is an ordered ``dict`` from name to object (a class or a factory). The order is the registration order,
which is what a search space's columns or tokens index, so names are only ever appended. Registering a name twice
raises; a failed lookup raises ``UnknownNameError`` listing the valid names::

    OPS = Registry("decoder op")

    @OPS.register("identity")
    def _identity(channels, dilation, *, causal=True): ...

    OPS.register("my_op", my_factory)   # or directly, without the decorator
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["Registry", "UnknownNameError", "DuplicateNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry lookup failed; the message names the registry and lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(KeyError, ValueError):
    """A name was registered twice (a KeyError and a ValueError, whichever a caller catches)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(dict[str, T]):
    """Name -> object, in registration order.

    Args:
        what: what the entries are ("decoder op", "data format"...), used in error messages.
        error: the exception type of a failed lookup (a subclass of ``UnknownNameError``).
        listed_as: how a failed lookup introduces the valid names ("valid names: ...", "valid ops: ...").
    """

    def __init__(self, what: str, *, error: type[UnknownNameError] = UnknownNameError,
                 listed_as: str = "names") -> None:
        super().__init__()
        self.what = what
        self.error = error
        self.listed_as = listed_as

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Add ``obj`` under ``name`` (appended); without ``obj``, a decorator that adds what it decorates.

        Raises:
            DuplicateNameError: ``name`` is already registered.
        """

        def add(item: T) -> T:
            if name in self:
                raise DuplicateNameError(f"{self.what} {name!r} is already registered")
            self[name] = item
            return item

        return add if obj is None else add(obj)

    def __missing__(self, name: str) -> T:
        raise self.error(f"unknown {self.what} {name!r}; valid {self.listed_as}: {', '.join(self)}")

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self)})"
