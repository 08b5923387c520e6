"""CLIPTextEncodeSDXLRefiner: a prompt for SDXL's refiner, with the size and aesthetic score its UNet is
conditioned on (the refiner checkpoint itself loads through CheckpointLoaderSimple)."""

from __future__ import annotations

from atelier.engine.models.embeddings import EmbeddingLibrary
from atelier.engine.models.handles import ClipHandle
from atelier.engine.models.sockets import CLIP, CONDITIONING
from atelier.engine.node import Context, Float, Int, Output, Socket, String
from atelier.engine.sampling.conditioning import CondEntry, Conditioning, SizeCond
from atelier.nodes.conditioning import _PromptNode


class CLIPTextEncodeSDXLRefiner(_PromptNode):
    """Encode a prompt for the SDXL refiner; ``ascore`` is the aesthetic score it aims for (6 for a
    positive prompt, 2.5 is usual for a negative one)."""

    display_name = "CLIP Text Encode (SDXL Refiner)"
    category = "advanced/conditioning"
    inputs = (
        Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
        Int("width", 1024, min=0, max=16384),
        Int("height", 1024, min=0, max=16384),
        String("text", "", multiline=True),
        Socket("clip", CLIP),
    )
    outputs = (Output(CONDITIONING),)

    def run(
        self, ctx: Context, ascore: float, width: int, height: int, text: str, clip: ClipHandle
    ) -> Conditioning:
        cond, pooled = clip.encode(text, EmbeddingLibrary(ctx.files, clip.embedding_cache))
        return [CondEntry(cond, pooled, size=SizeCond(width, height, aesthetic_score=ascore))]
