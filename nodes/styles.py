"""Prompt styles: apply a named style (Atelier's portrait styles, A1111 ``styles.csv`` rows) to a prompt
and a negative prompt; the texts chain into CLIPTextEncode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from atelier.engine import folders as _F
from atelier.engine import types as T
from atelier.engine.folders import Folders
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.embeddings import embedding_problems
from atelier.engine.models.styles import NO_STYLE, UnknownStyleError, load_styles
from atelier.engine.node import Choice, Context, Node, Output, String


def style_names(files: Folders) -> list[str]:
    """Choices: ``"none"`` and the styles of the engine's folders."""
    return load_styles(files).names()


class ApplyStyle(Node):
    """Apply a prompt style: "{prompt}" in the style's template is replaced by the prompt, a template
    without it is appended after a comma (as in A1111); the negative template applies to the negative."""

    category = "conditioning/styles"
    inputs = (
        Choice("style", style_names, NO_STYLE, description="a style from styles.csv files or Atelier's own"),
        String("prompt", "", multiline=True),
        String("negative", "", multiline=True),
    )
    outputs = (Output(T.STRING, "prompt"), Output(T.STRING, "negative"))

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> tuple[str, str] | str | None:
        """The chosen style's templates (a digest of all styles when the choice comes through a link):
        editing a styles file re-applies the style."""
        name = literals.get("style")
        if name == NO_STYLE:
            return None
        library = load_styles(ctx.files)
        if name is None:
            every = [(s.name, s.prompt, s.negative_prompt) for s in library.styles.values()]
            return "styles " + hashlib.sha256(repr(every).encode()).hexdigest()[:16]
        try:
            style = library.get(name)
        except UnknownStyleError:
            return None  # run() reports it
        return style.prompt, style.negative_prompt

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        """Unknown embeddings named by the prompts or by the chosen style's templates."""
        problems: list[tuple[str | None, str]] = []
        texts = {k: literals[k] for k in ("prompt", "negative") if isinstance(literals.get(k), str)}
        problems.extend(embedding_problems(files, **texts))
        name = literals.get("style")
        if isinstance(name, str) and name != NO_STYLE:
            try:
                style = load_styles(files).get(name)
            except UnknownStyleError as exc:
                return [*problems, ("style", str(exc))]
            for _, message in embedding_problems(files, prompt=style.prompt, negative=style.negative_prompt):
                problems.append(("style", f"style {name!r}: {message}"))
        return problems

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], prompt: str = "", negative: str = "", **_: Any
    ) -> Estimate | None:
        return Estimate([X.text_measure(text, k) for k, text in (("prompt", prompt), ("negative", negative))])

    def run(self, ctx: Context, style: str, prompt: str, negative: str) -> tuple[str, str]:
        if style == NO_STYLE:
            return prompt, negative
        return load_styles(ctx.files).get(style).apply(prompt, negative)
