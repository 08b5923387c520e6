"""Socket types: the names on node inputs and outputs, checked when a link is made.

The engine knows these only as names. What travels along a link of each type (a torch tensor, a model
handle, a list of conditionings) is the node library's business; the table below documents it for the
node catalogue and the canvas (which colours sockets by type).
"""

from __future__ import annotations

from typing import Final

INT: Final = "INT"
FLOAT: Final = "FLOAT"
STRING: Final = "STRING"
BOOLEAN: Final = "BOOLEAN"
COMBO: Final = "COMBO"
ANY: Final = "*"

PRIMITIVES: Final = frozenset({INT, FLOAT, STRING, BOOLEAN})

#: Known socket types, what travels on them, and the colour the canvas draws them in.
SOCKET_TYPES: Final[dict[str, tuple[str, str]]] = {
    "MODEL": ("a denoising model handle (UNet + noise schedule + patches)", "#b39ddb"),
    "CLIP": ("a text-encoder handle (one or two CLIP models + tokenizers)", "#ffd54f"),
    "VAE": ("a VAE handle", "#ef5350"),
    "CONDITIONING": ("list of (embedding [B,T,C], extras: pooled output, area, strength)", "#ffa726"),
    "LATENT": ("{samples: [B,C,h,w], noise_mask?: [B,1,h,w]}", "#ec407a"),
    "IMAGE": ("float tensor [B,H,W,C] in 0..1", "#64b5f6"),
    "MASK": ("float tensor [B,H,W] in 0..1", "#81c784"),
    "UPSCALE_MODEL": ("an image upscaler model", "#9575cd"),
    "CONTROL_NET": ("a ControlNet model", "#4db6ac"),
    "FACES": ("detected face boxes and crops", "#f48fb1"),
    INT: ("integer", "#7fa8d8"),
    FLOAT: ("floating-point number", "#9ccc65"),
    STRING: ("text", "#b0bec5"),
    BOOLEAN: ("true or false", "#ce93d8"),
    COMBO: ("one of a list of choices", "#90a4ae"),
    ANY: ("anything", "#e0e0e0"),
}


def describe_type(name: str) -> dict[str, str]:
    """Description and colour of a socket type; types nobody declared get a stable colour from the name."""
    known = SOCKET_TYPES.get(name)
    if known is not None:
        return {"description": known[0], "color": known[1]}
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) % 360
    return {"description": "", "color": f"hsl({h} 55% 65%)"}


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
