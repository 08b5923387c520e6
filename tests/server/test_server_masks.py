"""Saving a painted mask (``POST /atelier/v1/upload/mask`` and ComfyUI's ``POST /upload/mask``): a copy of
the image with the mask's alpha lands in the input folder, and LoadImage's MASK reads it back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from atelier.engine.folders import Folders
from atelier.engine.server.service_files import FileService, Limits, Uploaded, UploadRefused
from atelier.engine.server.service_masks import OriginalRef, parse_original_ref, upload_mask
from tests.server.harness import Server, wait_job

W, H = 24, 16


def picture(size: tuple[int, int] = (W, H), seed: int = 0) -> Image.Image:
    """An RGB picture of random colours, so a channel mixed up or lost shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def encode(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def mask_image(size: tuple[int, int] = (W, H)) -> tuple[bytes, np.ndarray]:
    """A mask as the editor sends it: black, alpha 0 where painted (a rectangle, half-transparent at its
    edge), 255 elsewhere; and that alpha."""
    alpha = np.full((size[1], size[0]), 255, dtype=np.uint8)
    alpha[4:10, 5:15] = 0
    alpha[3, 5:15] = 128
    rgba = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    return encode(Image.fromarray(rgba, "RGBA")), alpha


@pytest.fixture()
def files(tmp_path: Path) -> FileService:
    return FileService(
        Folders(input=tmp_path / "input", output=tmp_path / "output", temp=tmp_path / "temp"),
        Limits(max_upload_bytes=1_000_000, max_image_pixels=10_000),
    )


def test_the_copy_has_the_originals_colours_and_the_masks_alpha(files: FileService) -> None:
    out = files.folders.output
    out.mkdir(parents=True)
    info = PngInfo()
    info.add_text("workflow", '{"nodes": {}}')
    original = picture()
    (out / "portrait_00001_.png").write_bytes(encode(original, pnginfo=info))
    data, alpha = mask_image()
    ref = OriginalRef(filename="portrait_00001_.png", type="output")
    saved = upload_mask(files, data, "portrait_masked.webp", "", False, ref)
    # stored as PNG whatever the name said: only PNG keeps the alpha exactly
    assert saved == Uploaded("portrait_masked.png", "", W, H)
    with Image.open(files.folders.input / "portrait_masked.png") as im:
        assert im.mode == "RGBA" and im.format == "PNG"
        assert im.text["workflow"] == '{"nodes": {}}'  # the workflow the picture carries is kept
        rgba = np.asarray(im)
    # colours under the mask (alpha 0) are the original's, not the black a browser canvas would give
    assert np.array_equal(rgba[..., :3], np.asarray(original))
    assert np.array_equal(rgba[..., 3], alpha)
    # a second save keeps the first
    again = upload_mask(files, data, "portrait_masked.png", "", False, ref)
    assert isinstance(again, Uploaded) and again.name == "portrait_masked (1).png"


def test_a_mask_follows_the_exif_orientation_the_browser_shows(files: FileService) -> None:
    """A photo stored sideways with an EXIF rotation is painted upright: the copy is stored upright."""
    inp = files.folders.input
    inp.mkdir(parents=True)
    stored = picture((H, W), seed=3)  # 16 wide, 24 high as stored; shown 24x16 after the rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    (inp / "phone.jpg").write_bytes(encode(stored, "JPEG", exif=exif, quality=95))
    data, alpha = mask_image()  # 24x16, as shown
    saved = upload_mask(
        files, data, "phone_masked.png", "", False, OriginalRef(filename="phone.jpg", type="input")
    )
    assert saved == Uploaded("phone_masked.png", "", W, H)
    with Image.open(inp / "phone_masked.png") as im:
        assert im.size == (W, H) and 0x0112 not in im.getexif()
        assert np.array_equal(np.asarray(im)[..., 3], alpha)
    sideways = upload_mask(
        files, mask_image((H, W))[0], "x.png", "", False, OriginalRef(filename="phone.jpg", type="input")
    )
    assert isinstance(sideways, UploadRefused) and "16x24" in sideways.message and "24x16" in sideways.message


def test_bad_masks_and_originals_are_refused_with_the_reason(files: FileService) -> None:
    inp, out = files.folders.input, files.folders.output
    inp.mkdir(parents=True)
    out.mkdir(parents=True)
    (inp / "face.png").write_bytes(encode(picture()))
    (out / "notes.png").write_bytes(b"not an image at all")
    face = OriginalRef(filename="face.png", type="input")
    data, _ = mask_image()

    def refused(d: bytes, ref: OriginalRef, name: str = "m.png", sub: str = "") -> UploadRefused:
        r = upload_mask(files, d, name, sub, False, ref)
        assert isinstance(r, UploadRefused), r
        return r

    r = refused(mask_image((W + 1, H))[0], face)
    assert r.reason == "bad" and r.message == (
        "the mask is 25x16 but the image 'face.png' is 24x16: a mask must be the size of the image it was painted on"
    )
    r = refused(b"GIF89a but not really", face)
    assert r.reason == "bad" and "'m.png' is not an image" in r.message
    r = refused(data, face, name="m.html")
    assert r.reason == "bad" and "image file extension" in r.message
    r = refused(data, OriginalRef(filename="notes.png", type="output"))
    assert r.reason == "bad" and r.message.startswith("original_ref: 'notes.png' is not an image")
    r = refused(data, OriginalRef(filename="gone.png", type="input"))
    assert r.reason == "missing" and "gone.png" in r.message
    for ref in (
        OriginalRef(filename="../input/face.png", type="output"),
        OriginalRef(filename="face.png", subfolder="../../", type="input"),
        OriginalRef(filename="face.png", subfolder=str(inp.parent), type="input"),
    ):
        assert refused(data, ref).reason == "bad", ref
    r = refused(data, face, sub="../escape")
    assert r.reason == "bad"
    assert sorted(p.name for p in inp.iterdir()) == ["face.png"]  # nothing written by any of them
    assert not (inp.parent / "escape").exists()


def test_original_ref_is_json_naming_the_image() -> None:
    assert parse_original_ref('{"filename": "a.png"}') == OriginalRef(filename="a.png", type="output")
    # ComfyUI's annotated names say the folder in the name
    assert parse_original_ref('{"filename": "a.png [input]"}') == OriginalRef(filename="a.png", type="input")
    for text, says in (
        ("a.png", "Invalid JSON"),
        ("{}", "filename: Field required"),
        ('{"filename": ""}', "filename"),
        ('{"filename": "a.png", "type": "models"}', "type"),
    ):
        r = parse_original_ref(text)
        assert isinstance(r, UploadRefused) and r.message.startswith("original_ref must be JSON"), text
        assert says in r.message, (text, r.message)


def test_a_saved_mask_feeds_load_images_mask(server: Server, http: httpx.Client) -> None:
    """Over HTTP, both routes; then LoadImage's MASK, made an image by MaskToImage, is 1 - alpha."""
    original = picture(seed=7)
    up = http.post("/atelier/v1/upload", files={"image": ("mface.png", encode(original), "image/png")})
    assert up.status_code == 200, up.text
    data, alpha = mask_image()
    ref = json.dumps({"filename": "mface.png", "subfolder": "", "type": "input"})
    r = http.post(
        "/atelier/v1/upload/mask",
        files={"image": ("mface_masked.png", data, "image/png")},
        data={"original_ref": ref, "subfolder": "masks"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "mface_masked.png",
        "subfolder": "masks",
        "type": "input",
        "width": W,
        "height": H,
    }
    comfy = http.post(
        "/upload/mask",
        files={"image": ("clipspace-mask-1.png", data, "image/png")},
        data={"original_ref": ref, "subfolder": "clipspace", "type": "input"},
    )
    assert comfy.status_code == 200 and comfy.json()["name"] == "clipspace-mask-1.png", comfy.text
    for route in ("/atelier/v1/upload/mask", "/upload/mask", "/api/upload/mask"):
        bad = [
            ({"image": ("m.png", mask_image((8, 8))[0], "image/png")}, {"original_ref": ref}, 400, "8x8"),
            ({"image": ("m.png", b"nope", "image/png")}, {"original_ref": ref}, 400, "not an image"),
            ({"image": ("m.png", data, "image/png")}, {"original_ref": "mface.png"}, 400, "original_ref"),
            (
                {"image": ("m.png", data, "image/png")},
                {"original_ref": json.dumps({"filename": "../../mface.png", "type": "input"})},
                400,
                "",
            ),
            (
                {"image": ("m.png", data, "image/png")},
                {"original_ref": json.dumps({"filename": "no.png"})},
                404,
                "no.png",
            ),
            ({"image": ("m.png", data, "image/png")}, {}, 422, ""),
        ]
        for files, form, status, says in bad:
            res = http.post(route, files=files, data=form)
            assert res.status_code == status, (route, form, res.text)
            assert says in res.json()["error"], (route, form, res.text)

    workflow = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "load": {"type": "LoadImage", "inputs": {"image": "masks/mface_masked.png"}},
            "asimage": {"type": "MaskToImage", "inputs": {"mask": {"node": "load", "output": "MASK"}}},
            "save": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "asimage", "output": "IMAGE"}, "filename_prefix": "maskcheck"},
            },
            "picture": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "load", "output": "IMAGE"}, "filename_prefix": "maskpic"},
            },
        },
    }
    job = http.post("/atelier/v1/jobs", json={"workflow": workflow})
    assert job.status_code == 201, job.text
    done = wait_job(http, job.json()["id"])
    assert done["status"] == "success", done
    saved = {node: o["images"][0] for node, o in done["outputs"].items()}
    with Image.open(server.folder("output") / saved["save"]["filename"]) as im:
        mask = np.asarray(im.convert("L"), dtype=np.int32)
    assert np.abs(mask - (255 - alpha.astype(np.int32))).max() <= 1
    with Image.open(server.folder("output") / saved["picture"]["filename"]) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(original))
