"""Prompt weighting: turn ``"a (red:1.3) car, ((shiny))"`` into weighted text segments.

The syntax follows ComfyUI's ``CLIPTextEncode``, so that a prompt copied from a ComfyUI workflow means
the same thing here:

- ``(text)`` multiplies the weight of ``text`` by 1.1; groups nest, so ``((text))`` is 1.21.
- ``(text:1.3)`` gives ``text`` the weight 1.3. As in ComfyUI the explicit number *replaces* the
  weight of the enclosing groups (``((a:1.3))`` is 1.3, not 1.43); only the bare-parenthesis factors
  multiply. The number must sit at the very end of the group, after the last ``:`` (``(a:b:0.8)`` is the
  text ``a:b`` at 0.8). A colon at the very start (``(:2)``) or a suffix that is not a plain decimal
  number (``(a:big)``, ``(a:nan)``) leaves the text as written and the weight at x1.1.
- ``[text]`` is literal text in ComfyUI (brackets and all), and so it is here by default.
  ``style="a1111"`` switches to the AUTOMATIC1111 reading instead: ``[text]`` divides by 1.1 and
  ``(text:w)`` *multiplies* the enclosing weight by ``w``.
- ``\\(``, ``\\)``, ``\\[`` and ``\\]`` are the literal characters, without the backslash. Any other
  backslash is kept as written.
- Unbalanced brackets never raise. A ``)`` (or ``]``) that closes nothing is literal text. A ``(`` (or
  ``[``) still open at the end of the prompt is literal text too, and what follows it is read normally
  (complete groups inside it keep their weights). ComfyUI keeps such a tail entirely literal and can
  misread later groups after a stray ``)``; the cases where this matters are typos either way.
- ``BREAK`` (upper case, a whole word, as in A1111) ends the current 77-token chunk: the encoder pads
  it and starts a new one. The whitespace around it is dropped. It works inside groups too.
- ``embedding:NAME`` (a word starting with ``embedding:``, as in ComfyUI) stands for the vectors of the
  textual-inversion embedding file ``NAME`` (``NAME``, ``NAME.pt``, ``sub/NAME.safetensors``, ...). It
  takes the weight of its group like any word: ``(embedding:NAME:1.2)``. The name ends at whitespace or
  at a ``<`` or ``[``; trailing commas are not part of it (``embedding:NAME,`` is the embedding and a
  comma). :func:`split_embedding_reference` and :func:`embedding_names` read these; this module only
  parses, the encoder resolves the names (``engine/models/embeddings.py``).

Segments come back in prompt order, empty texts dropped and adjacent segments never merged: the
boundary between ``a`` and ``(b)`` in ``a(b)`` is a word boundary for the tokenizer, as in ComfyUI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

__all__ = [
    "EMBEDDING_PREFIX",
    "PromptStyle",
    "Segment",
    "embedding_names",
    "parse_prompt",
    "split_embedding_reference",
    "strip_weighting",
]

PromptStyle = Literal["comfy", "a1111"]

#: Factor of one bare pair of parentheses (and the divisor of ``[]`` in A1111 style).
EMPHASIS: Final = 1.1

_ESCAPABLE: Final = frozenset("()[]")
_BREAK_RE: Final = re.compile(r"\s*\bBREAK\b\s*")
_NUMBER_RE: Final = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
#: A word starting with this names a textual-inversion embedding (ComfyUI's syntax).
EMBEDDING_PREFIX: Final = "embedding:"
_NAME_END_RE: Final = re.compile(r"[<\[]")


class Segment(NamedTuple):
    """A run of prompt text with one weight. ``is_break`` marks a ``BREAK`` (its text is empty)."""

    text: str
    weight: float
    is_break: bool = False


@dataclass
class _Group:
    """An open or closed bracket group while parsing; ``opener`` is ``""`` for the whole prompt. Text is
    gathered in pieces and joined once (``flush``): appending to a string item character by character
    would copy it each time, quadratic in the prompt's length."""

    opener: str
    items: list[str | _Group] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        self.pending.append(text)

    def add_group(self, group: _Group) -> None:
        self.flush()
        self.items.append(group)

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        if self.items and isinstance(self.items[-1], str):
            self.items[-1] += text
        else:
            self.items.append(text)


def _parse_tree(prompt: str, style: PromptStyle) -> _Group:
    """Bracket structure of ``prompt``; unclosed groups are dissolved into literal text."""
    openers = {"(": ")", "[": "]"} if style == "a1111" else {"(": ")"}
    closers = {v: k for k, v in openers.items()}
    stack: list[_Group] = [_Group("")]
    i = 0
    n = len(prompt)
    while i < n:
        ch = prompt[i]
        if ch == "\\" and i + 1 < n and prompt[i + 1] in _ESCAPABLE:
            stack[-1].add_text(prompt[i + 1])
            i += 2
            continue
        if ch in openers:
            stack.append(_Group(ch))
        elif ch in closers and stack[-1].opener == closers[ch]:
            group = stack.pop()
            group.flush()
            stack[-1].add_group(group)
        else:
            stack[-1].add_text(ch)
        i += 1
    while len(stack) > 1:
        group = stack.pop()
        group.flush()
        parent = stack[-1]
        parent.add_text(group.opener)
        for item in group.items:
            if isinstance(item, str):
                parent.add_text(item)
            else:
                parent.add_group(item)
    stack[0].flush()
    return stack[0]


def _explicit_weight(group: _Group) -> tuple[list[str | _Group], float] | None:
    """Split a trailing ``:number`` off a round group: (remaining items, number), or None."""
    if not group.items or not isinstance(group.items[-1], str):
        return None
    last = group.items[-1]
    colon = last.rfind(":")
    if colon < 0 or (colon == 0 and len(group.items) == 1):
        return None
    suffix = last[colon + 1 :]
    if not _NUMBER_RE.fullmatch(suffix):
        return None
    head = last[:colon]
    items = [*group.items[:-1], head] if head else list(group.items[:-1])
    return items, float(suffix)


def _flatten(root: _Group, style: PromptStyle) -> list[Segment]:
    """Depth-first walk with an explicit stack, so that deep nesting cannot hit the recursion limit."""
    out: list[Segment] = []
    stack: list[tuple[Iterator[str | _Group], float]] = [(iter(root.items), 1.0)]
    while stack:
        items, weight = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
        elif isinstance(item, str):
            _emit_text(item, weight, out)
        elif item.opener == "[":
            stack.append((iter(item.items), weight / EMPHASIS))
        else:
            explicit = _explicit_weight(item)
            if explicit is None:
                stack.append((iter(item.items), weight * EMPHASIS))
            else:
                inner, number = explicit
                stack.append((iter(inner), number * weight if style == "a1111" else number))
    return out


def _emit_text(text: str, weight: float, out: list[Segment]) -> None:
    start = 0
    for match in _BREAK_RE.finditer(text):
        if match.start() > start:
            out.append(Segment(text[start : match.start()], weight))
        out.append(Segment("", weight, is_break=True))
        start = match.end()
    if start < len(text):
        out.append(Segment(text[start:], weight))


def parse_prompt(prompt: str, *, style: PromptStyle = "comfy") -> list[Segment]:
    """Weighted segments of ``prompt`` (see the module docstring for the syntax). Never raises.

    ``parse_prompt("a (b:1.5) c")`` gives the segments ``("a ", 1.0)``, ``("b", 1.5)``, ``(" c", 1.0)``.
    """
    if style not in ("comfy", "a1111"):
        raise ValueError(f"unknown prompt style {style!r}; expected 'comfy' or 'a1111'")
    return _flatten(_parse_tree(prompt, style), style)


def strip_weighting(prompt: str, *, style: PromptStyle = "comfy") -> str:
    """The prompt's text with the weighting syntax removed (``BREAK`` becomes a newline)."""
    return "".join("\n" if s.is_break else s.text for s in parse_prompt(prompt, style=style))


def split_embedding_reference(word: str) -> tuple[str, str] | None:
    """``(name, leftover text)`` when the whitespace-free ``word`` references an embedding, else None.

    ``"embedding:skin,"`` gives ``("skin", ",")``; ``"embedding:sub/face.pt"`` gives ``("sub/face.pt", "")``;
    a bare ``"embedding:"`` (no name) is plain text, as is a word that merely contains the prefix.
    """
    if not word.startswith(EMBEDDING_PREFIX):
        return None
    rest = word[len(EMBEDDING_PREFIX) :]
    end = _NAME_END_RE.search(rest)
    cut = end.start() if end is not None else len(rest)
    name = rest[:cut].rstrip(",")
    if not name:
        return None
    return name, rest[len(name) :]


def embedding_names(prompt: str, *, style: PromptStyle = "comfy") -> list[str]:
    """The embedding names ``prompt`` references, each once, in prompt order."""
    names: dict[str, None] = {}
    for segment in parse_prompt(prompt, style=style):
        for word in segment.text.split():
            ref = split_embedding_reference(word)
            if ref is not None:
                names.setdefault(ref[0])
    return list(names)
