"""Embeddings through the engine: validation names unknown ones, CLIPTextEncode(SDXL) encode them like
the tokens they hold, their files are part of the cache signature and of a saved PNG's provenance."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from atelier.engine import types as T
from atelier.engine.executor import JobResult
from atelier.engine.models.handles import ClipHandle, load_checkpoint_handles
from atelier.engine.node import Context, Node, Output, String
from atelier.engine.pnginfo import read_metadata
from atelier.engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[2]


class TextSource(Node):
    """Gives its text on a STRING output: a prompt that reaches CLIPTextEncode through a link."""

    category = "testing"
    inputs = (String("text", ""),)
    outputs = (Output(T.STRING),)

    def run(self, ctx: Context, text: str) -> str:
        return text


def portrait() -> dict[str, Any]:
    return json.loads((ROOT / "workflows" / "portrait.json").read_text())


def run(engine: Engine, wf: dict[str, Any], **overrides: Any) -> JobResult:
    base = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64}
    base.update(overrides)
    return engine.executor.run(copy.deepcopy(wf), overrides=base)


def pixels(engine: Engine, res: JobResult) -> np.ndarray:
    assert res.ok, res.failure or res.errors
    ref = res.outputs["save"]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


def clip_of(engine: Engine, name: str) -> ClipHandle:
    _, clip, _ = load_checkpoint_handles(engine.models, engine.folders.find_model("checkpoints", name))
    return clip


def token_rows(clip: ClipHandle, index: int, text: str) -> torch.Tensor:
    spec = clip.encoders[index]
    ids = spec.tokenizer(text, add_special_tokens=False).input_ids
    return spec.model.get_input_embeddings().weight[ids].detach().float().clone()


def write_pt(path: Path, vectors: torch.Tensor) -> None:
    torch.save({"string_to_param": {"*": torch.nn.Parameter(vectors)}, "name": path.stem, "step": 10}, path)
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # a new version even within one clock tick


def test_unknown_embedding_is_a_validation_error_naming_it(engine: Engine, emb_dir: Path) -> None:
    wf = portrait()
    over = {
        "checkpoint": "tiny15.safetensors",
        "prompt": "a portrait, (embedding:foo:1.2)",
        "negative": "embedding:bar",
    }
    checked = engine.check(wf, over)
    errors = sorted((e.node, e.input, e.message) for e in checked.errors if e.severity == "error")
    assert errors == [
        ("negative", "text", f"unknown embedding 'bar' (embeddings folder: {emb_dir})"),
        ("positive", "text", f"unknown embedding 'foo' (embeddings folder: {emb_dir})"),
    ]
    write_pt(emb_dir / "foo.pt", torch.zeros(1, 8))
    save_file({"emb_params": torch.zeros(1, 8)}, str(emb_dir / "bar.safetensors"))
    assert engine.check(wf, over).ok


def test_embedding_paints_like_the_tokens_it_holds(engine: Engine, emb_dir: Path) -> None:
    clip = clip_of(engine, "tiny15.safetensors")
    write_pt(emb_dir / "elder.pt", token_rows(clip, 0, "old man"))
    wf = portrait()
    with_embedding = pixels(engine, run(engine, wf, prompt="portrait of an (embedding:elder:1.2), smiling"))
    with_words = pixels(engine, run(engine, wf, prompt="portrait of an (old man:1.2), smiling"))
    other = pixels(engine, run(engine, wf, prompt="portrait of an (old woman:1.2), smiling"))
    assert (with_embedding == with_words).all()
    assert not (with_embedding == other).all()


def test_editing_the_embedding_file_reencodes_and_is_recorded(engine: Engine, emb_dir: Path) -> None:
    clip = clip_of(engine, "tiny15.safetensors")
    path = emb_dir / "face.pt"
    write_pt(path, token_rows(clip, 0, "cat"))
    wf = portrait()
    first = run(engine, wf, prompt="a embedding:face")
    again = run(engine, wf, prompt="a embedding:face")
    assert "positive" in again.cached and "positive" in first.executed
    write_pt(path, token_rows(clip, 0, "dog"))
    edited = run(engine, wf, prompt="a embedding:face")
    assert "positive" in edited.executed and "negative" in edited.cached
    assert not (pixels(engine, first) == pixels(engine, edited)).all()
    assert (pixels(engine, edited) == pixels(engine, run(engine, wf, prompt="a dog"))).all()
    ref = edited.outputs["save"]["images"][0]
    meta = read_metadata(engine.folders.output / ref["subfolder"] / ref["filename"])
    assert meta["files"]["positive"]["embeddings"] == {"face": engine.folders.sha256(path)}


def linked_prompt_workflow(text: str) -> dict[str, Any]:
    wf = portrait()
    wf["nodes"]["source"] = {"type": "TextSource", "inputs": {"text": text}}
    wf["nodes"]["positive"]["inputs"]["text"] = {"node": "source", "output": 0}
    del wf["parameters"]["prompt"]
    return wf


def test_linked_text_unknown_embedding_fails_at_run_time_naming_it(engine: Engine, emb_dir: Path) -> None:
    engine.registry.add(TextSource)
    res = run(engine, linked_prompt_workflow("a embedding:ghost"))
    assert res.status == "failed" and res.failure is not None
    assert res.failure.node == "positive"
    assert res.failure.message.endswith(f"unknown embedding 'ghost' (embeddings folder: {emb_dir})")


def test_linked_text_is_reencoded_when_an_embedding_file_changes(engine: Engine, emb_dir: Path) -> None:
    engine.registry.add(TextSource)
    clip = clip_of(engine, "tiny15.safetensors")
    write_pt(emb_dir / "face.pt", token_rows(clip, 0, "cat"))
    wf = linked_prompt_workflow("a embedding:face")
    first = run(engine, wf)
    assert "positive" in run(engine, wf).cached
    write_pt(emb_dir / "face.pt", token_rows(clip, 0, "dog"))
    edited = run(engine, wf)
    assert "positive" in edited.executed
    assert (pixels(engine, edited) == pixels(engine, run(engine, portrait(), prompt="a dog"))).all()
    assert not (pixels(engine, first) == pixels(engine, edited)).all()


def sdxl_workflow(text_g: str, text_l: str) -> dict[str, Any]:
    enc = {"type": "CLIPTextEncodeSDXL", "inputs": {"clip": {"node": "ckpt", "output": "CLIP"}}}
    size = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
    return {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tinyxl.safetensors"}},
            "pos": {**enc, "inputs": {**enc["inputs"], **size, "text_g": text_g, "text_l": text_l}},
            "neg": {**enc, "inputs": {**enc["inputs"], **size, "text_g": "", "text_l": ""}},
            "latent": {"type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sampler": {
                "type": "KSampler",
                "inputs": {
                    "model": {"node": "ckpt", "output": "MODEL"},
                    "seed": 3,
                    "steps": 2,
                    "cfg": 5.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "positive": {"node": "pos", "output": 0},
                    "negative": {"node": "neg", "output": 0},
                    "latent_image": {"node": "latent", "output": 0},
                    "denoise": 1.0,
                },
            },
            "decode": {
                "type": "VAEDecode",
                "inputs": {
                    "samples": {"node": "sampler", "output": 0},
                    "vae": {"node": "ckpt", "output": "VAE"},
                },
            },
            "save": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "decode", "output": 0}, "filename_prefix": "xl"},
            },
        },
    }


@pytest.mark.parametrize("layout", ["sdxl", "sd1"])
def test_sdxl_node_with_embeddings(engine: Engine, emb_dir: Path, layout: str) -> None:
    """An SDXL file conditions both encoders; an SD1 file (CLIP-L's width) conditions CLIP-L only."""
    clip = clip_of(engine, "tinyxl.safetensors")
    if layout == "sdxl":
        rows = {
            "clip_l": token_rows(clip, 0, "cat").contiguous(),
            "clip_g": token_rows(clip, 1, "cat").contiguous(),
        }
        save_file(rows, str(emb_dir / "kitty.safetensors"))
    else:
        write_pt(emb_dir / "kitty.pt", token_rows(clip, 0, "cat"))
    got = engine.executor.run(sdxl_workflow("a (embedding:kitty:1.1)", "a (embedding:kitty:1.1)"))
    text_g = "a (cat:1.1)" if layout == "sdxl" else "a"
    want = engine.executor.run(sdxl_workflow(text_g, "a (cat:1.1)"))
    assert (pixels(engine, got) == pixels(engine, want)).all()


def test_sdxl_node_validation_names_the_text_input(engine: Engine, emb_dir: Path) -> None:
    checked = engine.check(sdxl_workflow("embedding:nope", "a photo"))
    assert [(e.node, e.input, e.message) for e in checked.errors] == [
        ("pos", "text_g", f"unknown embedding 'nope' (embeddings folder: {emb_dir})")
    ]
