"""FaceDetailer and the wire-your-own pieces on a real photograph with a tiny random-weight checkpoint:
pixels change inside the faces, every pixel outside their crop regions stays bit for bit the same."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atelier.engine import events as E
from atelier.engine.faces.detections import Faces
from atelier.engine.node import CancelToken


def link(node: str, output: str | int = 0) -> dict[str, Any]:
    return {"node": node, "output": output}


def detailer_wf(image: str, **inputs: Any) -> dict:
    fd = {
        "image": link("img", "IMAGE"),
        "model": link("ckpt", "MODEL"),
        "clip": link("ckpt", "CLIP"),
        "vae": link("ckpt", "VAE"),
        "guide_size": 64,
        "guide_size_for": "bbox",
        "max_size": 128,
        "seed": 3,
        "steps": 2,
        "cfg": 5.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "positive": link("pos"),
        "negative": link("neg"),
        "denoise": 0.6,
        "feather": 5,
        "noise_mask": True,
        "bbox_threshold": 0.5,
        "bbox_dilation": 10,
        "bbox_crop_factor": 2.0,
        "drop_size": 10,
        "detector": "retinaface",
        "mask_shape": "box",
        "face_prompt": "",
    }
    fd.update(inputs)
    return {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "img": {"type": "LoadImage", "inputs": {"image": image}},
            "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
            "pos": {
                "type": "CLIPTextEncode",
                "inputs": {"text": "a portrait photo", "clip": link("ckpt", "CLIP")},
            },
            "neg": {"type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": link("ckpt", "CLIP")}},
            "fd": {"type": "FaceDetailer", "inputs": fd},
            "save": {"type": "SaveImage", "inputs": {"images": link("fd", "image"), "filename_prefix": "fd"}},
        },
    }


class Run:
    """A job's result, events and the values of its nodes' outputs."""

    def __init__(self, engine: Any, wf: dict, cancel: CancelToken | None = None, **kw: Any) -> None:
        self.values: dict[str, tuple] = {}
        self.events: list[E.Event] = []
        engine.executor.observers.append(lambda nid, _t, outs: self.values.__setitem__(nid, outs))
        try:
            self.result = engine.executor.run(
                copy.deepcopy(wf), on_event=self.events.append, cancel=cancel, **kw
            )
        finally:
            engine.executor.observers.pop()
        self.engine = engine

    def saved(self, node: str = "save") -> np.ndarray:
        ref = self.result.outputs[node]["images"][0]
        return np.asarray(Image.open(self.engine.folders.output / ref["subfolder"] / ref["filename"]))

    def ui(self, node: str) -> dict[str, Any] | None:
        (done,) = [e for e in self.events if isinstance(e, E.NodeFinished) and e.node == node]
        return done.ui

    def progress(self, node: str) -> list[tuple[float, float | None]]:
        return [(e.value, e.max) for e in self.events if isinstance(e, E.Progress) and e.node == node]


def _outside(shape: tuple[int, ...], faces: Faces) -> np.ndarray:
    keep = np.ones(shape[:2], dtype=bool)
    for d in faces:
        x0, y0, x1, y1 = d.crop
        keep[y0:y1, x0:x1] = False
    return keep


def _input(engine: Any, name: str) -> np.ndarray:
    return np.asarray(Image.open(engine.folders.input / name).convert("RGB"))


def test_detailer_repaints_the_face_and_nothing_outside_its_crop_region(face_engine: Any) -> None:
    run = Run(face_engine, detailer_wf("astronaut.png"))
    assert run.result.ok, run.result.failure
    before, after = _input(face_engine, "astronaut.png"), run.saved()
    faces: Faces = run.values["fd"][2]
    (face,) = faces
    outside = _outside(before.shape, faces)
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(after[outside], before[outside])  # bit for bit
    x0, y0, x1, y1 = (round(v) for v in face.box)
    changed = np.any(after[y0:y1, x0:x1] != before[y0:y1, x0:x1], axis=-1)
    assert changed.mean() > 0.95  # random weights repaint the face
    # inside the crop region too, pixels the feathered mask does not reach are kept
    cx0, cy0, cx1, cy1 = face.crop
    assert np.array_equal(after[cy0 : cy0 + 3, cx0:cx1], before[cy0 : cy0 + 3, cx0:cx1])
    ui = run.ui("fd")
    assert ui == {"text": ["detailed 1 face(s) (1 at 104x128)"], "faces": [1]}
    # the MASK output is the face mask (the box grown by 10 px) in the image
    mask = run.values["fd"][1]
    assert mask.shape == (1, 512, 512)
    bw, bh = face.box_size
    assert float(mask.sum()) == pytest.approx((bw + 20) * (bh + 20), rel=1e-3)
    assert run.progress("fd") == [(1, 2), (2, 2), (2, 2)]  # two steps, then the paste


def test_two_faces_of_one_size_are_detailed_in_one_batch(face_engine: Any) -> None:
    run = Run(face_engine, detailer_wf("pair.png"))
    assert run.result.ok, run.result.failure
    before, after = _input(face_engine, "pair.png"), run.saved()
    faces: Faces = run.values["fd"][2]
    assert len(faces) == 2
    assert sorted(round(d.box[0]) // 512 for d in faces) == [0, 1]  # one face in each half
    assert run.ui("fd") == {"text": ["detailed 2 face(s) (2 at 104x128)"], "faces": [2]}
    outside = _outside(before.shape, faces)
    assert np.array_equal(after[outside], before[outside])
    for d in faces:
        x0, y0, x1, y1 = (round(v) for v in d.box)
        assert np.any(after[y0:y1, x0:x1] != before[y0:y1, x0:x1], axis=-1).mean() > 0.95
    # the two faces got different noise (one batch, one seed), so they are not painted the same
    (a, b) = sorted(faces, key=lambda d: d.box[0])
    ax0, ay0 = round(a.box[0]), round(a.box[1])
    bx0 = ax0 + 512
    assert not np.array_equal(after[ay0 : ay0 + 50, ax0 : ax0 + 50], after[ay0 : ay0 + 50, bx0 : bx0 + 50])
    progress = run.progress("fd")
    assert progress == [(2, 4), (4, 4), (4, 4)]  # 2 steps x 2 faces in one batch, then the paste


def test_no_face_passes_the_image_through_with_a_message(face_engine: Any) -> None:
    run = Run(face_engine, detailer_wf("grey.png"))
    assert run.result.ok, run.result.failure
    assert np.array_equal(run.saved(), _input(face_engine, "grey.png"))
    assert run.ui("fd") == {"text": ["no face found in the image: passed through unchanged"], "faces": [0]}
    assert float(run.values["fd"][1].sum()) == 0.0
    assert "sampler" not in {e.node for e in run.events if isinstance(e, E.Progress)}


def test_face_prompt_repaints_differently_from_the_main_prompt(face_engine: Any) -> None:
    main = Run(face_engine, detailer_wf("astronaut.png")).saved()
    own = Run(face_engine, detailer_wf("astronaut.png", face_prompt="an old man with a grey beard")).saved()
    again = Run(face_engine, detailer_wf("astronaut.png", face_prompt="an old man with a grey beard"))
    assert "fd" in again.result.cached  # same inputs: served from the cache
    assert not np.array_equal(main, own)
    face_engine.executor.cache.clear()
    assert np.array_equal(
        Run(face_engine, detailer_wf("astronaut.png", face_prompt="an old man with a grey beard")).saved(),
        own,
    )


def test_face_conditioning_input_wins_over_the_face_prompt(face_engine: Any) -> None:
    wf = detailer_wf("astronaut.png", face_prompt="ignored here")
    wf["nodes"]["fpos"] = {
        "type": "CLIPTextEncode",
        "inputs": {"text": "a smiling face", "clip": link("ckpt", "CLIP")},
    }
    wf["nodes"]["fd"]["inputs"]["face_positive"] = link("fpos")
    by_cond = Run(face_engine, wf).saved()
    by_text = Run(face_engine, detailer_wf("astronaut.png", face_prompt="a smiling face")).saved()
    assert np.array_equal(by_cond, by_text)


def test_detailer_honours_an_interrupt_between_steps(face_engine: Any) -> None:
    token = CancelToken()

    def cancel_on_first_step(ev: E.Event) -> None:
        if isinstance(ev, E.Progress) and ev.node == "fd":
            token.cancel("stopped by the test")

    face_engine.executor.listeners.append(cancel_on_first_step)
    try:
        run = Run(face_engine, detailer_wf("pair.png", steps=5), cancel=token)
    finally:
        face_engine.executor.listeners.remove(cancel_on_first_step)
    assert run.result.status == "interrupted"
    assert len(run.progress("fd")) == 1
    assert any(isinstance(e, E.JobInterrupted) and e.node == "fd" for e in run.events)


def test_crop_and_paste_faces_for_a_pass_wired_by_hand(face_engine: Any) -> None:
    nodes = {
        "img": {"type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": link("ckpt", "CLIP")}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"text": "", "clip": link("ckpt", "CLIP")}},
        "faces": {
            "type": "FaceDetect",
            "inputs": {
                "image": link("img", "IMAGE"),
                "detector": "retinaface",
                "threshold": 0.5,
                "dilation": 0,
                "crop_factor": 1.5,
                "drop_size": 10,
                "mask_shape": "ellipse",
            },
        },
        "crop": {
            "type": "CropFaces",
            "inputs": {"image": link("img", "IMAGE"), "faces": link("faces"), "width": 96, "height": 96},
        },
        "enc": {"type": "VAEEncode", "inputs": {"pixels": link("crop", "crops"), "vae": link("ckpt", "VAE")}},
        "nm": {
            "type": "SetLatentNoiseMask",
            "inputs": {"samples": link("enc"), "mask": link("crop", "masks")},
        },
        "ks": {
            "type": "KSampler",
            "inputs": {
                "model": link("ckpt", "MODEL"),
                "seed": 1,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": link("pos"),
                "negative": link("neg"),
                "latent_image": link("nm"),
                "denoise": 0.7,
            },
        },
        "dec": {"type": "VAEDecode", "inputs": {"samples": link("ks"), "vae": link("ckpt", "VAE")}},
        "paste": {
            "type": "PasteFaces",
            "inputs": {
                "image": link("img", "IMAGE"),
                "faces": link("crop", "faces"),
                "crops": link("dec"),
                "feather": 4,
            },
        },
        "same": {
            "type": "PasteFaces",
            "inputs": {
                "image": link("img", "IMAGE"),
                "faces": link("crop", "faces"),
                "crops": link("crop", "crops"),
                "feather": 4,
            },
        },
        "save": {"type": "SaveImage", "inputs": {"images": link("paste"), "filename_prefix": "byhand"}},
    }
    run = Run(
        face_engine, {"format": "atelier/workflow", "version": 1, "nodes": nodes}, outputs=["save", "same"]
    )
    assert run.result.ok, run.result.failure
    crops, masks, grown = run.values["crop"]
    assert crops.shape == (1, 96, 96, 3) and masks.shape == (1, 96, 96)
    (face,) = grown
    w, h = face.crop_size
    assert w == h  # the crop region was grown to the square of 96x96
    before, after = _input(face_engine, "astronaut.png"), run.saved()
    outside = _outside(before.shape, grown)
    assert np.array_equal(after[outside], before[outside])
    x0, y0, x1, y1 = (round(v) for v in face.box)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    assert np.any(after[cy - 20 : cy + 20, cx - 20 : cx + 20] != before[cy - 20 : cy + 20, cx - 20 : cx + 20])
    # pasting the unchanged crops back gives the image again, up to the resampling there and back
    (same,) = run.values["same"]
    original = before.astype(np.float32) / 255
    error = np.abs(same[0].numpy() - original)
    assert error.mean() < 0.002 and (error > 0.1).mean() < 0.002
    assert np.array_equal(error[outside], np.zeros_like(error[outside]))
