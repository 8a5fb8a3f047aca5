"""Registries: the one place where each kind of interchangeable part is declared by name.

A :class:`Registry` maps names to entries (model types, probability paths, couplings,
time samplers). Everything that offers a choice of them, the command line, run folders,
evaluation, benchmarks and the report, iterates over a registry instead of naming the
entries itself, so that a new entry is one registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Part", "Registry", "UnknownName"]

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that a registry does not hold; the message lists the names it does."""


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    Arguments:
        what: what an entry is, for messages (e.g. ``"probability path"``).

    Example:
        >>> r = Registry("colour")
        >>> r.register("red", 1)
        1
        >>> r.get("red"), r.names()
        (1, ('red',))
        >>> r.get("blue")
        Traceback (most recent call last):
        ...
        flowscope.registry.UnknownName: unknown colour 'blue'; choose one of: red
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises:
            ValueError: if the name is taken or not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated class or function."""

        def add(entry: T) -> T:
            return self.register(name, entry)

        return add

    def get(self, name: Any) -> T:
        """The entry named ``name``.

        Raises:
            UnknownName: naming the choices.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(
                f"unknown {self.what} {name!r}; choose one of: {', '.join(self._entries)}"
            ) from None

    def build(self, spec: Any) -> Any:
        """A :class:`Part` from a name, a config dict ``{"name": ..., **arguments}`` or an
        instance of a registered class (returned as it is).

        Raises:
            UnknownName: for a name the registry does not hold.
            ValueError: for arguments the part does not take or refuses.
            TypeError: for a spec of another type.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        if isinstance(spec, dict):
            args = dict(spec)
            name = args.pop("name", None)
            cls = self.get(name)
            try:
                return cls(**args)
            except TypeError as err:
                raise ValueError(f"{self.what} {name!r}: {err}") from None
        if any(isinstance(spec, cls) for cls in self._entries.values() if isinstance(cls, type)):
            return spec
        raise TypeError(
            f"a {self.what} is a name ({', '.join(self._entries)}), a dict with a 'name', or "
            f"an instance; got {type(spec).__name__}"
        )

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


class Part:
    """A small configurable piece of a model, chosen by name from a :class:`Registry`.

    Subclasses set ``name`` (their registered name) and return their constructor's
    arguments from :meth:`arguments`; :meth:`config` is what a run folder records, and
    ``registry.build(part.config())`` rebuilds an equal part.
    """

    name: str = ""

    def arguments(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-safe)."""
        return {}

    def config(self) -> dict[str, Any]:
        """``{"name": name, **arguments}``."""
        return {"name": self.name, **self.arguments()}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments().items())
        return f"{type(self).__name__}({args})"
