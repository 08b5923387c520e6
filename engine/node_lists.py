"""List outputs and the nodes that map over them (ComfyUI's INPUT_IS_LIST / OUTPUT_IS_LIST).

A node may declare that an output is a list (``output_is_list``): its value travels as a :class:`ValueList`,
one value per element. A node downstream that takes single values runs once per element (the longest list
sets how many runs; a shorter list repeats its last element, a single value is given to every run), and each
of its outputs becomes a list too; their UI data is joined. A node that declares ``input_is_list`` takes every
input as a plain list (a single value as a list of one) and runs once. This is ComfyUI's rule, so its
list nodes (RebatchLatents, RebatchImages) behave as users know them.

The executor calls :func:`run_node`; nothing here knows what the nodes do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ValueList(list):  # type: ignore[type-arg]
    """The value of a list output: one value per element, which nodes downstream take one at a time."""


def run_node(
    run: Callable[..., Any],
    kwargs: dict[str, Any],
    input_is_list: bool,
    normalise: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any] | None]],
    output_lists: tuple[bool, ...],
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Call ``run`` (a node's ``run`` bound to its context) once, or once per list element, by the module's
    rule. ``normalise`` turns one return value into (outputs, ui); ``output_lists`` says, for every output,
    whether the node returns it as a list (it is wrapped as a :class:`ValueList`)."""
    if input_is_list:
        args = {k: list(v) if isinstance(v, ValueList) else [v] for k, v in kwargs.items()}
        outputs, ui = normalise(run(**args))
        return _wrap(outputs, output_lists), ui
    lengths = [len(v) for v in kwargs.values() if isinstance(v, ValueList)]
    if not lengths:
        outputs, ui = normalise(run(**kwargs))
        return _wrap(outputs, output_lists), ui
    count = 0 if min(lengths) == 0 else max(lengths)
    collected: list[ValueList] | None = None
    joined: dict[str, Any] | None = None
    for i in range(count):
        args = {k: v[min(i, len(v) - 1)] if isinstance(v, ValueList) else v for k, v in kwargs.items()}
        outputs, ui = normalise(run(**args))
        if collected is None:
            collected = [ValueList() for _ in outputs]
        for n, value in enumerate(outputs):
            if output_lists[n]:
                collected[n].extend(value)
            else:
                collected[n].append(value)
        joined = _join(joined, ui)
    if collected is None:  # an empty list upstream: nothing runs, every output is an empty list
        collected = [ValueList() for _ in range(len(output_lists))]
    return tuple(collected), joined


def _wrap(outputs: tuple[Any, ...], output_lists: tuple[bool, ...]) -> tuple[Any, ...]:
    return tuple(ValueList(v) if output_lists[n] else v for n, v in enumerate(outputs))


def _join(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """UI data of several runs as one: lists under the same key are joined (images, text)."""
    if a is None or b is None:
        return b if a is None else a
    out = dict(a)
    for key, value in b.items():
        if isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out
