"""A node written against the typed context alone: it loads a model, reads a file, reports progress and
previews without importing any other node module (only the engine's library modules)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from atelier.engine import events as E
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.models.sockets import IMAGE, LATENT
from atelier.engine.node import Choice, Context, Int, Node, Output, input_files, model_files
from atelier.engine.registry import Registry
from atelier.engine.runtime import Engine
from atelier.engine.sampling.preview import latent_preview


class EncodeInputImage(Node):
    """Loads a checkpoint, reads an input image, encodes it with the VAE in bands (progress per band,
    a preview after each)."""

    inputs = (
        Choice("ckpt_name", model_files("checkpoints")),
        Choice("image", input_files),
        Int("bands", 2, min=1, max=8),
    )
    outputs = (Output(LATENT), Output(IMAGE))

    def run(self, ctx: Context, ckpt_name: str, image: str, bands: int) -> tuple[dict, torch.Tensor]:
        _, _, vae = load_checkpoint_handles(ctx.models, ctx.files.find_model("checkpoints", ckpt_name))
        assert vae is not None
        pixels = np.asarray(Image.open(ctx.files.input_path(image)).convert("RGB"), np.float32) / 255.0
        img = torch.from_numpy(pixels)[None].to(ctx.device)
        rows = img.shape[1] // bands
        parts = []
        for i in range(bands):
            parts.append(vae.encode(img[:, i * rows : (i + 1) * rows]))
            ctx.progress(i + 1, bands)
            if ctx.wants_previews:
                ctx.preview(latent_preview(parts[-1], "sd15")[0], width=8, height=8)
        return {"samples": torch.cat(parts, dim=2)}, img


def test_a_node_needs_only_its_context(engine: Engine) -> None:
    engine.folders.ensure()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(engine.folders.input / "face.png")
    registry = Registry([EncodeInputImage, *(engine.registry.get(n) for n in engine.registry)])
    engine.executor.registry = registry
    events: list[E.Event] = []
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "enc": {
                "type": "EncodeInputImage",
                "inputs": {"ckpt_name": "tiny15.safetensors", "image": "face.png"},
            },
            "show": {"type": "PreviewImage", "inputs": {"images": {"node": "enc", "output": "IMAGE"}}},
        },
    }
    res = engine.executor.run(wf, on_event=events.append)
    assert res.ok, res.failure
    assert [(e.value, e.max) for e in events if isinstance(e, E.Progress)] == [(1, 2), (2, 2)]
    assert sum(isinstance(e, E.Preview) for e in events) == 2
    assert res.outputs["show"]["images"]
    # the checkpoint went through the engine's model loader: a second engine call does not reload it
    loads = engine.models.loads
    engine.cache.clear()
    assert engine.executor.run(wf).ok and engine.models.loads == loads
