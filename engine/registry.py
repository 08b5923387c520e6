"""Finds node types and describes them as JSON.

Node types come from installed packages that declare an entry point in the group ``atelier.nodes`` (a
package or module, a node class, or a callable returning node classes); Atelier's own node library is one
of them (see pyproject.toml), so the core names no node package.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from . import types as T
from .folders import Folders
from .node import Node

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "atelier.nodes"


class Registry:
    """A set of node types by type name."""

    def __init__(self, node_types: Iterable[type[Node]] = ()) -> None:
        self._types: dict[str, type[Node]] = {}
        self._instances: dict[str, Node] = {}
        #: Problems met while loading modules and plugins: (source, message). Loading never aborts.
        self.load_errors: list[tuple[str, str]] = []
        for t in node_types:
            self.add(t)

    def add(self, node_type: type[Node], *, source: str = "") -> None:
        name = node_type.spec.type
        existing = self._types.get(name)
        if existing is not None and existing is not node_type:
            self.load_errors.append(
                (
                    source or node_type.__module__,
                    f"node type {name!r} already defined by {existing.__module__}",
                )
            )
            return
        self._types[name] = node_type

    def add_module(self, module: ModuleType, *, source: str = "") -> int:
        """Add every node type defined in ``module`` (not those it imports). Returns how many."""
        n = 0
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Node)
                and obj.__module__ == module.__name__
                and "spec" in obj.__dict__
            ):
                self.add(obj, source=source or module.__name__)
                n += 1
        return n

    def discover_package(self, package: str) -> None:
        """Import every module of ``package`` (recursively) and add its node types."""
        try:
            pkg = importlib.import_module(package)
        except Exception as exc:  # a broken package must not take the engine down
            self.load_errors.append((package, f"{type(exc).__name__}: {exc}"))
            return
        self.add_module(pkg, source=package)
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=package + "."):
            try:
                module = importlib.import_module(info.name)
            except Exception as exc:
                log.warning("could not import node module %s: %s", info.name, exc)
                self.load_errors.append((info.name, f"{type(exc).__name__}: {exc}"))
                continue
            self.add_module(module)

    def discover_plugins(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load plugins declared under the entry-point group ``atelier.nodes``.

        An entry point may name a package (every module in it, recursively), a module (all its node
        types), a node class, or a callable returning an iterable of node classes.
        """
        for ep in entry_points(group=group):
            source = f"plugin {ep.name} ({ep.value})"
            try:
                obj = ep.load()
                if inspect.ismodule(obj) and hasattr(obj, "__path__"):
                    self.discover_package(obj.__name__)
                elif inspect.ismodule(obj):
                    self.add_module(obj, source=source)
                elif inspect.isclass(obj) and issubclass(obj, Node):
                    self.add(obj, source=source)
                elif callable(obj):
                    for t in obj():
                        self.add(t, source=source)
                else:
                    raise TypeError(
                        f"entry point gives {type(obj).__name__}, not a module, node class or callable"
                    )
            except Exception as exc:
                log.warning("could not load %s: %s", source, exc)
                self.load_errors.append((source, f"{type(exc).__name__}: {exc}"))

    # -- lookup -------------------------------------------------------------------------------------

    def get(self, type_name: str) -> type[Node] | None:
        return self._types.get(type_name)

    def instance(self, type_name: str) -> Node:
        inst = self._instances.get(type_name)
        if inst is None:
            inst = self._instances[type_name] = self._types[type_name]()
        return inst

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)

    def socket_types(self) -> dict[str, T.SocketType]:
        """Every socket type the node types use, as declared (types named only by a string get a bare
        :class:`SocketType`), plus the core's own."""
        out: dict[str, T.SocketType] = dict(T.CORE_TYPES)
        for name in sorted(self._types):
            spec = self._types[name].spec
            for s in (*spec.inputs, *spec.outputs):
                if s.socket is not None:
                    out[s.type] = s.socket
                elif s.type not in out and "," not in s.type:
                    out[s.type] = T.SocketType(s.type)
        return out

    def describe_types(self) -> dict[str, dict[str, str]]:
        """Every socket type with its description and the colour the canvas draws it in."""
        return {name: t.describe() for name, t in sorted(self.socket_types().items())}

    def describe(self, type_name: str | None = None, files: Folders | None = None) -> dict[str, Any]:
        """JSON description of one node type, or of all of them keyed by type name. Choice lists that
        change (model files, input images) are read from ``files``."""
        if type_name is not None:
            return self._types[type_name].spec.describe(files)
        return {name: self._types[name].spec.describe(files) for name in sorted(self._types)}


def default_registry() -> Registry:
    """Every node type installed: Atelier's node library and plugins (entry points ``atelier.nodes``)."""
    reg = Registry()
    reg.discover_plugins()
    return reg
