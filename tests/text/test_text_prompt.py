"""Prompt weighting syntax (ComfyUI's, with A1111's as an option)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atelier.engine.models.prompt import Segment, parse_prompt, strip_weighting


def pairs(prompt: str, **kwargs: str) -> list[tuple[str, float]]:
    return [(s.text, round(s.weight, 6)) for s in parse_prompt(prompt, **kwargs) if not s.is_break]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("", []),
        ("(cat)", [("cat", 1.1)]),
        ("((cat))", [("cat", 1.21)]),
        ("(((cat)))", [("cat", 1.331)]),
        ("(cat:1.3)", [("cat", 1.3)]),
        ("(cat: 0.5 )", [("cat", 0.5)]),
        ("(cat:-1)", [("cat", -1.0)]),
        ("(cat:.5)", [("cat", 0.5)]),
        ("a (red:1.5) car", [("a ", 1.0), ("red", 1.5), (" car", 1.0)]),
        # ComfyUI: an explicit weight replaces the enclosing weight; bare groups inside it multiply.
        ("((cat:1.3))", [("cat", 1.3)]),
        ("(a (b) c:2)", [("a ", 2.0), ("b", 2.2), (" c", 2.0)]),
        ("(a:b:0.8)", [("a:b", 0.8)]),
        ("(a:big)", [("a:big", 1.1)]),
        ("(a:nan)", [("a:nan", 1.1)]),
        ("(a:1e3)", [("a:1e3", 1.1)]),
        ("(:2)", [(":2", 1.1)]),
        ("(a:1.2 (b))", [("a:1.2 ", 1.1), ("b", 1.21)]),
        # ComfyUI reads [] literally.
        ("[cat]", [("[cat]", 1.0)]),
        ("([cat])", [("[cat]", 1.1)]),
        # Escapes drop the backslash; other backslashes stay.
        (r"\(cat\)", [("(cat)", 1.0)]),
        (r"\[cat\]", [("[cat]", 1.0)]),
        (r"(a \(b\))", [("a (b)", 1.1)]),
        (r"a\b", [(r"a\b", 1.0)]),
        (r"(a\):2)", [("a)", 2.0)]),
        # Unbalanced: stray closers and unclosed openers are literal text.
        ("a)b", [("a)b", 1.0)]),
        ("a)b(c)", [("a)b", 1.0), ("c", 1.1)]),
        ("(a", [("(a", 1.0)]),
        ("(a (b) c", [("(a ", 1.0), ("b", 1.1), (" c", 1.0)]),
        ("((a)", [("(", 1.0), ("a", 1.1)]),
        ("())", [(")", 1.0)]),
        ("()", []),
    ],
)
def test_comfy_weighting(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert pairs(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[cat]", [("cat", round(1 / 1.1, 6))]),
        ("[[cat]]", [("cat", round(1 / 1.21, 6))]),
        ("((cat:1.5))", [("cat", 1.65)]),
        ("([cat])", [("cat", 1.0)]),
        ("[a (b:2)]", [("a ", round(1 / 1.1, 6)), ("b", round(2 / 1.1, 6))]),
        ("a]b[c", [("a]b[c", 1.0)]),
        ("(a]", [("(a]", 1.0)]),
    ],
)
def test_a1111_weighting(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert pairs(prompt, style="a1111") == expected


def test_unknown_style_is_an_error() -> None:
    with pytest.raises(ValueError, match="style"):
        parse_prompt("a", style="nai")  # type: ignore[arg-type]


def test_break_splits_and_eats_whitespace() -> None:
    segments = parse_prompt("a cat BREAK (a dog BREAK blue)")
    assert segments == [
        Segment("a cat", 1.0),
        Segment("", 1.0, True),
        Segment("a dog", 1.1),
        Segment("", 1.1, True),
        Segment("blue", 1.1),
    ]
    # Only the upper-case whole word counts.
    assert not any(s.is_break for s in parse_prompt("break BREAKFAST xBREAK Break"))
    assert strip_weighting("a BREAK b") == "a\nb"


def test_deep_nesting_does_not_recurse() -> None:
    segments = parse_prompt("(" * 5000 + "x" + ")" * 5000)
    assert [s.text for s in segments] == ["x"]
    assert parse_prompt("(" * 5000 + "x") == [Segment("(" * 5000 + "x", 1.0)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab :.1\\()[]BREAK\n"), max_size=40) | st.text(max_size=60))
def test_arbitrary_prompts_never_raise(prompt: str) -> None:
    for style in ("comfy", "a1111"):
        segments = parse_prompt(prompt, style=style)  # type: ignore[arg-type]
        assert all(s.text or s.is_break for s in segments)
        assert all(math.isfinite(s.weight) for s in segments)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab ,()[]é\n"), max_size=50))
def test_text_is_the_prompt_without_brackets(prompt: str) -> None:
    """Without colons, backslashes or BREAK, the texts are the prompt minus the bracket characters
    that were read as syntax, and every weight is a power of 1.1."""
    text = "".join(s.text for s in parse_prompt(prompt))
    assert text.replace("(", "").replace(")", "") == prompt.replace("(", "").replace(")", "")
    assert text.count("[") == prompt.count("[")
    for s in parse_prompt(prompt):
        exponent = math.log(s.weight) / math.log(1.1)
        assert abs(exponent - round(exponent)) < 1e-9 and round(exponent) >= 0
    text_a = "".join(s.text for s in parse_prompt(prompt, style="a1111"))
    strip = str.maketrans("", "", "()[]")
    assert text_a.translate(strip) == prompt.translate(strip)


# A prompt built as a tree, rendered to text, with the weight every character must get.
_LEAF = st.text(alphabet=st.sampled_from("abc ,é"), min_size=1, max_size=6)
_WEIGHT = st.none() | st.integers(min_value=0, max_value=300).map(lambda k: k / 100)


def _group(children: list, weight: float | None) -> tuple[str, list]:
    return ("group", [children, weight])


_TREE = st.recursive(
    _LEAF,
    lambda inner: st.builds(_group, st.lists(inner, min_size=1, max_size=3), _WEIGHT),
    max_leaves=12,
)


def _render(node: str | tuple[str, list], weight: float, style: str) -> tuple[str, list[tuple[str, float]]]:
    if isinstance(node, str):
        return node, [(ch, weight) for ch in node]
    children, explicit = node[1]
    if explicit is None:
        inner = weight * 1.1
    else:
        inner = explicit * weight if style == "a1111" else explicit
    text, chars = "", []
    for child in children:
        t, c = _render(child, inner, style)
        text, chars = text + t, chars + c
    suffix = "" if explicit is None else f":{explicit:.2f}"
    return f"({text}{suffix})", chars


@settings(max_examples=300, deadline=None)
@given(st.lists(_TREE, min_size=1, max_size=4), st.sampled_from(["comfy", "a1111"]))
def test_generated_trees_round_trip(nodes: list, style: str) -> None:
    prompt, expected = "", []
    for node in nodes:
        t, c = _render(node, 1.0, style)
        prompt, expected = prompt + t, expected + c
    got = [(ch, s.weight) for s in parse_prompt(prompt, style=style) for ch in s.text]  # type: ignore[arg-type]
    assert [ch for ch, _ in got] == [ch for ch, _ in expected]
    for (_, w_got), (_, w_exp) in zip(got, expected, strict=True):
        assert w_got == pytest.approx(w_exp, rel=1e-9, abs=1e-12)
