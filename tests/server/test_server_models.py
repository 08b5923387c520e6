"""The model browser's routes (/atelier/v1/models/{kind}/browse, /info, /preview) over a models root of tiny
checkpoints written by the project's tiny-model writer and LoRAs with kohya-style metadata written here."""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from atelier.engine.models.tiny import write_tiny_checkpoint
from atelier.engine.server import service_models
from atelier.engine.server.app import create_app
from atelier.engine.server.settings import Settings
from tests.server.harness import engine_in

ARCHS = {"tiny15.safetensors": "sd15", "tiny2.safetensors": "sd2", "xl/tinyxl.safetensors": "sdxl"}
ARCHS["refiner.safetensors"] = "sdxl_refiner"

SD1_TAGS = {"10_ohwx woman": {"ohwx": 10, "smiling": 4, "red hair": 7}, "5_woman": {"smiling": 3, "": 2}}


def lora(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


def png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


class Boom:
    """A pickle that creates a folder when unpickled: the browser must never unpickle it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browse")
    models = base / "models"
    for name, arch in ARCHS.items():
        write_tiny_checkpoint(arch, models / "checkpoints" / name)  # type: ignore[arg-type]
    png(models / "checkpoints" / "tiny15.png", (200, 40, 40))
    (models / "checkpoints" / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    (models / "checkpoints" / "old.ckpt").write_bytes(pickle.dumps(Boom(base / "unpickled"), protocol=2))
    loras = models / "loras"
    lora(
        loras / "ohwx.safetensors",
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": (),
        },
        {
            "ss_tag_frequency": json.dumps(SD1_TAGS),
            "ss_output_name": "ohwx_v2",
            "ss_network_dim": "4",
            "ss_network_alpha": "2.0",
            "ss_resolution": "(512, 768)",
            "ss_base_model_version": "sd_v1",
        },
    )
    png(loras / "ohwx.jpg", (10, 10, 10))
    png(loras / "ohwx.preview.png", (40, 200, 40))  # civitai helpers' name wins over NAME.jpg
    lora(
        loras / "xl" / "portrait.safetensors",
        {
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
        },
        {
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.title": "Soft portrait",
            "modelspec.trigger_phrase": "pwrt style, soft light",
            "modelspec.resolution": "1024x1024",
        },
    )
    # no cross-attention and no text encoder layer: only the metadata says what it is for
    lora(
        loras / "metaonly.safetensors",
        {"lora_unet_mid_block_resnets_0_conv1.lora_down.weight": (4, 1280, 3, 3)},
        {"ss_base_model_version": "sdxl_base_v1-0", "ss_tag_frequency": "not json {"},
    )
    # PEFT names, SD2's 1024-wide context, metadata that lies (shapes win)
    lora(
        loras / "peft2.safetensors",
        {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (2, 1024)},
        {"ss_base_model_version": "sdxl_base_v1-0", "ss_tag_frequency": json.dumps(["a", "b"])},
    )
    (loras / "garbage.safetensors").write_bytes(os.urandom(64))
    (loras / "readme.txt").write_text("not a model")
    emb = models / "embeddings"
    emb.mkdir(parents=True)
    save_file({"emb_params": torch.zeros(2, 768)}, str(emb / "bad_hands.safetensors"))
    save_file(
        {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, str(emb / "xl_emb.safetensors")
    )
    outside = png(base / "outside.png", (1, 2, 3))
    (emb / "bad_hands.png").symlink_to(outside)  # a preview that links out of the folder is not served
    return base


@pytest.fixture(scope="module")
def http(root: Path) -> Iterator[TestClient]:
    engine = engine_in(root, root / "models")
    app = create_app(engine, Settings(database=root / "atelier.db"))
    with TestClient(app, base_url="http://127.0.0.1:8188") as client:
        yield client


def browse(http: TestClient, kind: str) -> dict[str, Any]:
    r = http.get(f"/atelier/v1/models/{kind}/browse")
    assert r.status_code == 200, r.text
    return r.json()


def by_name(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in listing["models"]}


def test_checkpoints_get_the_family_the_loader_detects_and_errors_stay_per_file(
    http: TestClient, root: Path
) -> None:
    listing = browse(http, "checkpoints")
    models = by_name(listing)
    assert set(models) == set(ARCHS) | {"broken.safetensors", "old.ckpt"}
    for name, arch in ARCHS.items():
        m = models[name]
        assert (m["family"], m["family_source"], m["error"]) == (arch, "tensors", None), name
        path = root / "models" / "checkpoints" / name
        assert m["size"] == path.stat().st_size and m["mtime"] == pytest.approx(path.stat().st_mtime)
    assert models["xl/tinyxl.safetensors"]["family_label"] == "SDXL"
    assert models["tiny15.safetensors"]["family_label"] == "SD1.x"
    broken = models["broken.safetensors"]
    assert broken["family"] == "unknown" and "not a valid safetensors file" in broken["error"]
    old = models["old.ckpt"]
    assert (old["format"], old["family"], old["error"]) == ("torch", "unknown", None)
    assert "not opened" in old["note"]
    assert not (root / "unpickled").exists()
    assert listing["loaders"][0] == {"type": "CheckpointLoaderSimple", "input": "ckpt_name"}


def test_lora_family_from_shapes_then_metadata(http: TestClient) -> None:
    listing = browse(http, "loras")
    models = by_name(listing)
    assert set(models) == {
        "ohwx.safetensors",
        "xl/portrait.safetensors",
        "metaonly.safetensors",
        "peft2.safetensors",
        "garbage.safetensors",
    }
    family = {name: (m["family"], m["family_source"]) for name, m in models.items()}
    assert family == {
        "ohwx.safetensors": ("sd15", "tensors"),
        "xl/portrait.safetensors": ("sdxl", "tensors"),
        "metaonly.safetensors": ("sdxl", "metadata"),
        "peft2.safetensors": ("sd2", "tensors"),
        "garbage.safetensors": ("unknown", ""),
    }
    assert models["garbage.safetensors"]["error"]
    assert [x["type"] for x in listing["loaders"]][:1] == ["LoraLoader"]
    assert {"type": "LoraLoaderModelOnly", "input": "lora_name"} in listing["loaders"]


def test_trigger_words_and_details_from_kohya_and_modelspec_metadata(http: TestClient) -> None:
    models = by_name(browse(http, "loras"))
    ohwx = models["ohwx.safetensors"]
    totals: Counter[str] = Counter()
    for folder in SD1_TAGS.values():
        totals.update({t: n for t, n in folder.items() if t})
    ranked = sorted(totals, key=lambda t: (-totals[t], t))
    assert ranked[0] == "ohwx"
    assert ohwx["trigger_words"] == ranked
    assert ohwx["tags"] == [[t, totals[t]] for t in ranked]
    assert ohwx["details"] == {
        "title": "ohwx_v2",
        "output_name": "ohwx_v2",
        "network_dim": "4",
        "network_alpha": "2.0",
        "resolution": "512x768",
        "base_model_version": "sd_v1",
    }
    portrait = models["xl/portrait.safetensors"]
    assert portrait["trigger_words"] == ["pwrt style", "soft light"]
    assert (
        portrait["details"]["title"] == "Soft portrait" and portrait["details"]["resolution"] == "1024x1024"
    )
    # JSON-in-string values that do not parse, or parse to the wrong shape, are left out, not errors
    for name in ("metaonly.safetensors", "peft2.safetensors"):
        assert (models[name]["tags"], models[name]["trigger_words"], models[name]["error"]) == ([], [], None)


def test_info_has_the_whole_metadata(http: TestClient) -> None:
    r = http.get("/atelier/v1/models/loras/info/xl/portrait.safetensors")
    assert r.status_code == 200
    assert r.json()["metadata"]["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    r = http.get("/atelier/v1/models/loras/info/nope.safetensors")
    assert r.status_code == 404 and "nope.safetensors" in r.json()["error"]


def test_previews_are_sibling_images_served_inside_the_folder(http: TestClient, root: Path) -> None:
    models = by_name(browse(http, "loras"))
    url = models["ohwx.safetensors"]["preview"]
    assert url.startswith("/atelier/v1/models/loras/preview/ohwx.safetensors?v=")
    r = http.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (root / "models" / "loras" / "ohwx.preview.png").read_bytes()
    assert models["xl/portrait.safetensors"]["preview"] is None
    checkpoints = by_name(browse(http, "checkpoints"))
    r = http.get(checkpoints["tiny15.safetensors"]["preview"])
    assert r.content == (root / "models" / "checkpoints" / "tiny15.png").read_bytes()
    # a preview linking out of the folder is neither listed nor served
    embeddings = by_name(browse(http, "embeddings"))
    assert embeddings["bad_hands.safetensors"]["preview"] is None
    assert http.get("/atelier/v1/models/embeddings/preview/bad_hands.safetensors").status_code == 404
    r = http.get("/atelier/v1/models/loras/preview/xl/%2E%2E/%2E%2E/checkpoints/tiny15.safetensors")
    assert r.status_code == 400 and "outside" in r.json()["error"]
    assert http.get("/atelier/v1/models/loras/preview/xl/portrait.safetensors").status_code == 404
    assert http.get(f"/atelier/v1/models/loras/preview/{'a' * 300}.safetensors").status_code == 404
    assert http.get(f"/atelier/v1/models/loras/info/{'a' * 300}.safetensors").status_code == 404


def test_embeddings_family_from_their_vectors(http: TestClient) -> None:
    models = by_name(browse(http, "embeddings"))
    assert models["bad_hands.safetensors"]["family"] == "sd15"
    assert models["xl_emb.safetensors"]["family"] == "sdxl"
    assert browse(http, "embeddings")["loaders"] == []


def test_upscalers_have_no_family_and_unknown_kinds_are_refused(http: TestClient, root: Path) -> None:
    up = root / "models" / "upscale_models"
    up.mkdir(exist_ok=True)
    save_file({"conv_first.weight": torch.zeros(4, 3, 3, 3)}, str(up / "x4.safetensors"))
    [m] = browse(http, "upscale_models")["models"]
    assert (m["name"], m["family"], m["family_label"]) == ("x4.safetensors", None, None)
    r = http.get("/atelier/v1/models/nonsense/browse")
    assert r.status_code == 404 and "unknown model kind 'nonsense'" in r.json()["error"]
    assert "loras" in r.json()["error"]


def test_headers_are_read_once_per_file_version(
    http: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browse(http, "loras")  # every file read once
    reads: list[Path] = []
    real = service_models.describe_file

    def counting(kind: str, path: Path) -> Any:
        reads.append(path)
        return real(kind, path)

    monkeypatch.setattr(service_models, "describe_file", counting)
    folder = root / "models" / "loras" / "cache"
    shapes = {"lora_unet_x_attn2_to_k.lora_down.weight": (2, 768)}
    path = lora(folder / "c.safetensors", shapes, {"ss_output_name": "first"})
    first = by_name(browse(http, "loras"))
    assert reads == [path]  # the others were read before
    by_name(browse(http, "loras"))
    assert reads == [path]
    lora(path, shapes, {"ss_output_name": "second version"})  # a new version: size and time change
    second = by_name(browse(http, "loras"))
    assert reads == [path, path]
    assert first["cache/c.safetensors"]["details"]["title"] == "first"
    assert second["cache/c.safetensors"]["details"]["title"] == "second version"
