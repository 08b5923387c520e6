"""What a job may ask for, and the vocabulary nodes use to say what they will need.

:class:`Limits` are an engine's (and a server's) admission limits. A node type says what it will need by
overriding ``Node.estimate`` and returning an :class:`Estimate`: :class:`Measure` s (a picture's pixels,
a batch, a step count, a prompt's length, an input file's frames and decoded bytes), each tied to the
input that sets it, and the :class:`Extent` of what flows out of its outputs, so that the nodes downstream
can size themselves (``engine/admission.py`` walks the graph). Nothing here knows which nodes exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["pixels", "batch", "steps", "text", "frames", "decoded_bytes"]

GiB = 1 << 30


class Limits(BaseModel):
    """Admission limits: a job whose estimate goes over one is refused by the server (before it is queued)
    and warned about by the command line."""

    model_config = ConfigDict(frozen=True)

    max_image_pixels: int = Field(8192 * 8192, ge=1, description="pixels of one image (or latent, decoded)")
    max_batch: int = Field(64, ge=1, description="images in one batch")
    max_steps: int = Field(1000, ge=1, description="sampling steps of one sampler")
    max_prompt_chars: int = Field(32768, ge=1, description="characters of one prompt")
    max_frames: int = Field(256, ge=1, description="frames of one input image (GIF, APNG, TIFF pages)")
    max_decoded_bytes: int = Field(
        4 * GiB, ge=1, description="bytes one input image takes once all its frames are decoded"
    )
    memory_fraction: float = Field(
        0.9, gt=0.0, le=1.0, description="share of the available memory a job's estimate may take"
    )
    memory_bytes: int | None = Field(
        None, ge=1, description="the memory jobs may use (default: measured on the device when checked)"
    )

    def limit(self, kind: Kind) -> tuple[str, int]:
        """The name and value of the limit on ``kind``."""
        name = _LIMIT_OF[kind]
        return name, getattr(self, name)

    def exceeded(self, m: Measure) -> str | None:
        """Why ``m`` is over its limit (naming the limit), or None when it is within."""
        name, limit = self.limit(m.kind)
        if m.value <= limit:
            return None
        return f"{m.what or f'{m.value} ({m.kind})'} is over the limit {name}={limit}"


_LIMIT_OF: dict[str, str] = {
    "pixels": "max_image_pixels",
    "batch": "max_batch",
    "steps": "max_steps",
    "text": "max_prompt_chars",
    "frames": "max_frames",
    "decoded_bytes": "max_decoded_bytes",
}


@dataclass(frozen=True)
class Extent:
    """The size of what flows on one output, as far as it is known before running: a batch of
    ``width`` x ``height`` arrays of ``channels`` elements of ``element_bytes``. What the numbers mean
    (pixels, latent cells) is for the node types that produce and consume it to agree on."""

    width: int
    height: int
    batch: int = 1
    channels: int = 3
    element_bytes: int = 4

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.batch * self.channels * self.element_bytes


@dataclass(frozen=True)
class Measure:
    """One figure to hold against a limit: ``value`` of ``kind``, set by ``input`` (None: the node as a
    whole), ``what`` says in words what was measured ("a 16384x16384 latent")."""

    kind: Kind
    value: int
    input: str | None = None
    what: str = ""


@dataclass
class Estimate:
    """What a node will need: the figures to check, the extents of its outputs (by output index) and the
    memory it works in while running beyond its inputs and outputs (bytes)."""

    measures: list[Measure] = field(default_factory=list)
    outputs: dict[int, Extent] = field(default_factory=dict)
    work_bytes: int = 0
