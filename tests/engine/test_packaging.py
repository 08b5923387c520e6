"""The installed package names: engine/ and nodes/ install as atelier.engine and atelier.nodes."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _package_folders() -> set[str]:
    found = set()
    for top, name in (("engine", "atelier.engine"), ("nodes", "atelier.nodes")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join((name, *rel.parts)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert set(conf["packages"]) == _package_folders()
    assert conf["package-dir"] == {"atelier.engine": "engine", "atelier.nodes": "nodes"}


def test_no_module_is_imported_under_a_bare_top_level_name() -> None:
    import atelier.engine
    import atelier.nodes

    for pkg in (atelier.engine, atelier.nodes):
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if ".server" in info.name or info.name.endswith("__main__"):
                continue  # the server pulls in FastAPI; its modules are imported by the server tests
            importlib.import_module(info.name)
    assert "engine" not in sys.modules and "nodes" not in sys.modules
