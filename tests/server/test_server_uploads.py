"""The upload check reads the pixel count from the image header and refuses before decoding, without
touching PIL's process-wide ``Image.MAX_IMAGE_PIXELS``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from atelier.engine.folders import Folders
from atelier.engine.server.service_files import FileService, Limits, Uploaded, UploadRefused, image_size


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every decode (``load``) and full-file check (``verify``) PIL does."""
    calls: list[str] = []
    load, verify = ImageFile.ImageFile.load, PngImagePlugin.PngImageFile.verify

    def counted_load(self: ImageFile.ImageFile) -> object:
        calls.append("load")
        return load(self)

    def counted_verify(self: PngImagePlugin.PngImageFile) -> None:
        calls.append("verify")
        verify(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "verify", counted_verify)
    return calls


def test_over_the_limit_is_refused_from_the_header(decodes: list[str]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert image_size(png((40, 30)), max_pixels=1199) == "is 40x30: over 1199 pixels"
    assert decodes == []  # refused before any decoding
    assert image_size(png((40, 30)), max_pixels=1200) == (40, 30)
    assert decodes == ["verify", "load"]
    assert Image.MAX_IMAGE_PIXELS == limit


def test_limits_above_pils_own_bomb_limit_are_reported_not_raised() -> None:
    """PIL still refuses images over twice its global limit in ``open``; the check reports that."""
    side = int((2 * (Image.MAX_IMAGE_PIXELS or 0)) ** 0.5) + 2
    out = image_size(png((side, side), "1"), max_pixels=side * side)
    assert isinstance(out, str) and out.startswith(f"is over {side * side} pixels")


def test_the_service_writes_only_what_passes(tmp_path: Path) -> None:
    files = FileService(
        Folders(input=tmp_path / "input"), Limits(max_upload_bytes=10_000, max_image_pixels=100)
    )
    assert files.upload(png((10, 10)), "ok.png", "", False) == Uploaded("ok.png", "", 10, 10)
    refused = files.upload(png((11, 10)), "big.png", "", False)
    assert refused == UploadRefused("bad", "'big.png' is 11x10: over 100 pixels")
    assert files.upload(b"\0" * 10_001, "huge.png", "", False).reason == "too_large"  # type: ignore[union-attr]
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["ok.png"]
