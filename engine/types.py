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
    "UPSCALE_MODEL": ("an image upscaler model", "#a1887f"),
    "CONTROL_NET": ("a ControlNet model", "#00897b"),
    "FACES": ("detected face boxes and crops", "#f06292"),
    INT: ("integer", "#90a4ae"),
    FLOAT: ("floating-point number", "#90a4ae"),
    STRING: ("text", "#90a4ae"),
    BOOLEAN: ("true or false", "#90a4ae"),
    COMBO: ("one of a list of choices", "#90a4ae"),
    ANY: ("anything", "#e0e0e0"),
}


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
