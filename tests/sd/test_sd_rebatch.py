"""RebatchLatents / RebatchImages: ComfyUI's list nodes, and the nodes after them running once per batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from atelier.engine import events as E
from atelier.nodes.rebatch import RebatchImages, RebatchLatents


def latent(n: int, size: int = 8, mask: torch.Tensor | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "samples": torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 4, size, size)
    }
    if mask is not None:
        out["noise_mask"] = mask
    return {**out, **extra}


def test_rebatch_latents_groups_by_size_and_keeps_indices_and_masks() -> None:
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1.0
    got = RebatchLatents().run(
        None,  # type: ignore[arg-type]
        [latent(3), latent(2, mask=half), latent(1, size=16)],
        [2],
    )
    assert [b["samples"].shape[0] for b in got] == [2, 2, 1, 1]
    assert [b["batch_index"] for b in got] == [[0, 1], [2, 3], [4], [5]]
    assert [float(b["samples"][0, 0, 0, 0]) for b in got] == [0.0, 2.0, 1.0, 0.0]
    assert "noise_mask" not in got[0]  # all ones: no mask, as ComfyUI
    mask = got[1]["noise_mask"]  # one unmasked sample and one masked, at the picture's size
    assert mask.shape == (2, 1, 64, 64) and float(mask[0].min()) == 1.0 and float(mask[1].mean()) == 0.5
    assert got[3]["samples"].shape[-1] == 16  # a new size starts a new batch


def test_rebatch_images_splits_a_batch() -> None:
    images = [torch.rand(3, 8, 8, 3), torch.rand(2, 8, 8, 3)]
    got = RebatchImages().run(None, images, [4])  # type: ignore[arg-type]
    assert [g.shape[0] for g in got] == [4, 1]
    assert torch.equal(torch.cat(got), torch.cat(images))


def prompt(batch: int, rebatch: int | None) -> dict[str, Any]:
    p: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a portrait", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 11,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["10", 0] if rebatch else ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": f"rebatch{rebatch}"},
        },
    }
    if rebatch:
        p["10"] = {"class_type": "RebatchLatents", "inputs": {"latents": ["5", 0], "batch_size": rebatch}}
    return p


def test_nodes_after_a_rebatch_run_once_per_batch_and_paint_what_one_batch_paints(engine_env) -> None:
    events: list[E.Event] = []
    split = engine_env.run(prompt(5, 2), on_event=events.append)
    assert split.ok, split.failure
    runs = [e.node for e in events if isinstance(e, E.Progress) and e.node == "3" and e.value == e.max]
    assert len(runs) == 3  # the sampler ran for batches of 2, 2 and 1
    whole = engine_env.run(prompt(5, None))
    assert whole.ok, whole.failure

    def pixels(res: Any) -> np.ndarray:
        refs = res.outputs["9"]["images"]
        return np.stack(
            [np.asarray(Image.open(engine_env.folders.output / r["subfolder"] / r["filename"])) for r in refs]
        )

    a, b = pixels(split), pixels(whole)
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # each sample's own noise, as in one batch
    assert a.std() > 0 and not np.array_equal(a[0], a[1])
