"""Prompt styles: named positive/negative templates applied to a prompt, A1111's way.

A style's template holding ``{prompt}`` has it replaced by the prompt (every occurrence); a template
without it is appended to the prompt after a comma (``"a cat"`` + ``"film grain"`` gives ``"a cat, film
grain"``; an empty side leaves the other alone). The negative template applies to the negative prompt the
same way. This is A1111's ``merge_prompts``.

Where styles come from, in this order (a later style of the same name replaces an earlier one, keeping
its place in the list):

1. the portrait styles shipped with Atelier (``configs/styles/*.json``);
2. the ``styles`` model folders (``models/styles``, or ``[models.paths] styles = [...]`` in the config
   file): every ``*.csv`` there is read as an A1111 ``styles.csv``, every ``*.json`` whose ``format`` is
   ``atelier/styles`` as Atelier's format. An entry may also be a file, so A1111's own
   ``stable-diffusion-webui/styles.csv`` can be named directly.

A1111's CSV is read as A1111 reads it: UTF-8 with or without a byte-order mark, columns ``name``,
``prompt``, ``negative_prompt`` (or the old ``name``, ``text``), quoted fields that hold commas, quotes
(``""``) and line breaks, spaces after the delimiter skipped, rows without a name and rows whose name
starts with ``#`` (section dividers) ignored. Atelier's JSON: ``{"format": "atelier/styles", "version":
1, "styles": [{"name": ..., "prompt": ..., "negative_prompt": ...}, ...]}``.

A file that cannot be read is reported (``StyleLibrary.problems``, logged), never fatal to the others.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from atelier.engine.folders import Folders

__all__ = [
    "NO_STYLE",
    "SHIPPED_STYLES",
    "Style",
    "StyleFileError",
    "StyleLibrary",
    "UnknownStyleError",
    "load_styles",
    "merge_template",
    "read_styles_csv",
    "read_styles_json",
]

log = logging.getLogger(__name__)

KIND: Final = "styles"
#: The choice that leaves the prompts as they are.
NO_STYLE: Final = "none"
PLACEHOLDER: Final = "{prompt}"
JSON_FORMAT: Final = "atelier/styles"
SHIPPED_STYLES: Final = Path(__file__).resolve().parent / "configs" / "styles"


class StyleFileError(ValueError):
    """A styles file that cannot be read."""


class UnknownStyleError(LookupError):
    """A style name that no styles file defines."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


def merge_template(template: str, text: str) -> str:
    """``template`` applied to ``text``: ``{prompt}`` replaced, or appended after a comma (A1111)."""
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, text)
    return ", ".join(part for part in (text.strip(), template.strip()) if part)


@dataclass(frozen=True)
class Style:
    """A named pair of templates, and the file it came from."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    source: str = ""

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The styled (prompt, negative prompt)."""
        return merge_template(self.prompt, prompt), merge_template(self.negative_prompt, negative)


# -- reading files ------------------------------------------------------------------------------------


def read_styles_csv(path: Path) -> list[Style]:
    """The styles of an A1111 ``styles.csv`` (see the module docstring for the quirks handled)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next(reader, None)
            if header is None:
                return []
            columns = [h.strip().lower() for h in header]
            if "name" not in columns:
                raise StyleFileError(f"styles file {path}: no 'name' column (columns: {', '.join(header)})")
            text_column = "prompt" if "prompt" in columns else "text" if "text" in columns else None
            styles = []
            for row in reader:
                cells = dict(zip(columns, row, strict=False))
                name = cells.get("name", "").strip()
                if not name or name.startswith("#"):
                    continue
                prompt = cells.get(text_column, "") if text_column else ""
                styles.append(Style(name, prompt, cells.get("negative_prompt", ""), str(path)))
            return styles
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StyleFileError(f"styles file {path}: {exc}") from exc


def read_styles_json(path: Path) -> list[Style]:
    """The styles of an Atelier styles file (``{"format": "atelier/styles", "styles": [...]}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StyleFileError(f"styles file {path}: {exc}") from exc
    if not _is_styles_json(data):
        raise StyleFileError(f"styles file {path}: not an {JSON_FORMAT!r} file")
    entries = data.get("styles")
    if not isinstance(entries, list):
        raise StyleFileError(f"styles file {path}: 'styles' must be a list")
    styles = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise StyleFileError(f"styles file {path}: style {n} needs a name")
        texts = {k: entry.get(k, "") for k in ("prompt", "negative_prompt")}
        for key, value in texts.items():
            if not isinstance(value, str):
                raise StyleFileError(f"styles file {path}: style {entry['name']!r}: {key} must be text")
        styles.append(Style(entry["name"].strip(), texts["prompt"], texts["negative_prompt"], str(path)))
    return styles


def _is_styles_json(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == JSON_FORMAT


def _style_files(entry: Path) -> list[Path]:
    """The styles files of a configured entry: the file itself, or a folder's ``*.csv`` and Atelier
    ``*.json`` files (top level only: an A1111 install folder holds much else)."""
    if entry.is_file():
        return [entry]
    if not entry.is_dir():
        return []
    files = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
    return [
        p for p in files if p.suffix.lower() == ".csv" or (p.suffix.lower() == ".json" and _json_is_ours(p))
    ]


def _json_is_ours(path: Path) -> bool:
    try:
        return _is_styles_json(json.loads(path.read_text(encoding="utf-8-sig")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _read(path: Path) -> list[Style]:
    return read_styles_json(path) if path.suffix.lower() == ".json" else read_styles_csv(path)


# -- the library ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleLibrary:
    """Styles by name in list order, and the files that could not be read."""

    styles: dict[str, Style] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """The choices: ``"none"``, then every style in order."""
        return [NO_STYLE, *(n for n in self.styles if n != NO_STYLE)]

    def get(self, name: str) -> Style:
        """The style called ``name`` (``"none"``: an empty style), or :class:`UnknownStyleError`."""
        if name == NO_STYLE:
            return Style(NO_STYLE)
        style = self.styles.get(name)
        if style is None:
            raise UnknownStyleError(self.unknown_message(name))
        return style

    def unknown_message(self, name: str) -> str:
        shown = ", ".join(repr(n) for n in self.names()[:12]) + (", ..." if len(self.styles) > 11 else "")
        extra = f"; unreadable: {'; '.join(self.problems)}" if self.problems else ""
        return f"unknown style {name!r} (styles: {shown}{extra})"


def load_styles(files: Folders, *, shipped: Path | None = SHIPPED_STYLES) -> StyleLibrary:
    """The styles shipped with Atelier, then those of the engine's ``styles`` folders and files."""
    entries: list[Path] = [shipped] if shipped is not None else []
    entries += files.models.get(KIND, [])
    return _library(path for entry in entries for path in _style_files(entry))


def _library(paths: Iterable[Path]) -> StyleLibrary:
    styles: dict[str, Style] = {}
    problems: list[str] = []
    for path in paths:
        try:
            for style in _read(path):
                styles[style.name] = style
        except StyleFileError as exc:
            log.warning("%s", exc)
            problems.append(str(exc))
    return StyleLibrary(styles, tuple(problems))
