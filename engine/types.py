"""Socket types: the names on node inputs and outputs, checked when a link is made.

A socket type is a small object: its name (what workflows and the catalogue carry), what travels on it,
the colour the canvas draws it in, and the Python carrier a node's output of that type must be an
instance of (checked by the executor, so a node returning the wrong thing fails on that node, by name).

The engine core defines the primitives; node libraries define their own types next to their carriers
(Stable Diffusion's MODEL, LATENT, IMAGE, ... live in ``engine/models/sockets.py``) and use those objects
in their declarations, never bare strings repeated across files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class SocketType:
    """A socket type: name, description, canvas colour and the Python carrier of its values."""

    name: str
    description: str = ""
    color: str | None = None
    #: isinstance() check for node outputs of this type; None: anything goes
    carrier: type | tuple[type, ...] | None = None

    def __str__(self) -> str:
        return self.name

    def accepts(self, value: Any) -> bool:
        return self.carrier is None or isinstance(value, self.carrier)

    def describe(self) -> dict[str, str]:
        return {"description": self.description, "color": self.color or fallback_color(self.name)}


INT: Final = "INT"
FLOAT: Final = "FLOAT"
STRING: Final = "STRING"
BOOLEAN: Final = "BOOLEAN"
COMBO: Final = "COMBO"
ANY: Final = "*"

PRIMITIVES: Final = frozenset({INT, FLOAT, STRING, BOOLEAN})

#: The core's own socket types (primitives, choices and the wildcard).
CORE_TYPES: Final[dict[str, SocketType]] = {
    t.name: t
    for t in (
        SocketType(INT, "integer", "#7fa8d8", int),
        SocketType(FLOAT, "floating-point number", "#9ccc65", (float, int)),
        SocketType(STRING, "text", "#b0bec5", str),
        SocketType(BOOLEAN, "true or false", "#ce93d8", bool),
        SocketType(COMBO, "one of a list of choices", "#90a4ae"),
        SocketType(ANY, "anything", "#e0e0e0"),
    )
}

TypeRef = SocketType | str


def type_name(t: TypeRef) -> str:
    return t.name if isinstance(t, SocketType) else t


def fallback_color(name: str) -> str:
    """A stable colour for a socket type nobody gave one (derived from its name)."""
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) % 360
    return f"hsl({h} 55% 65%)"


def compatible(output_type: str, input_type: str) -> bool:
    """Whether an output of ``output_type`` may feed an input of ``input_type``.

    Types match by name; ``*`` matches anything. Comma-separated input types accept any listed type
    (``"IMAGE,MASK"``).
    """
    if output_type == input_type or output_type == ANY or input_type == ANY:
        return True
    if "," in input_type:
        return output_type in {t.strip() for t in input_type.split(",")}
    return False
