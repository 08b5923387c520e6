"""What an image file holds, read from its headers without decoding pixels: format, frames and each
frame's size. Uploads and image loaders hold it against the :class:`~.limits.Limits` before decoding.

Pillow reads frame counts from headers (GIF frame descriptors, APNG's ``acTL``, WebP's animation chunks,
TIFF's directories). GIF, APNG and WebP frames are drawn on one canvas, so each decodes to the canvas
size; TIFF pages have their own sizes, read from each page's directory (no pixel data).

PIL's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, process-wide) is never assigned here:
the limits are per engine and checked first; PIL's guard stays as a backstop above twice its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from PIL import Image

from .limits import Limits, Measure

#: bytes one pixel of an input image takes as a job holds it: float32 RGB plus a float32 mask
DECODED_BYTES_PER_PIXEL = 4 * 3 + 4


@dataclass(frozen=True)
class ImageProbe:
    format: str
    width: int  # the first frame's
    height: int
    frame_sizes: tuple[tuple[int, int], ...]

    @property
    def frames(self) -> int:
        return len(self.frame_sizes)

    def decoded_bytes(self, bytes_per_pixel: int) -> int:
        """Bytes all frames take decoded at ``bytes_per_pixel``."""
        return sum(w * h for w, h in self.frame_sizes) * bytes_per_pixel


def probe(im: Image.Image) -> ImageProbe:
    """Read the frames of an opened image from its headers. Leaves ``im`` on its first frame."""
    n = int(getattr(im, "n_frames", 1) or 1)
    first = im.size
    if n > 1 and im.format in ("TIFF", "MPO"):
        sizes = []
        for index in range(n):  # a TIFF seek reads the page's directory only
            im.seek(index)
            sizes.append(im.size)
        im.seek(0)
    else:
        sizes = [first] * n
    return ImageProbe(im.format or "", first[0], first[1], tuple(sizes))


def probe_file(source: str | Any | IO[bytes]) -> ImageProbe:
    """Open ``source`` (a path or a binary file) and :func:`probe` it."""
    with Image.open(source) as im:
        return probe(im)


def frame_measures(p: ImageProbe, bytes_per_pixel: int, input: str | None, name: str) -> list[Measure]:
    """The figures of an image file to hold against the limits: each frame's pixels (the largest one),
    its frame count and all frames decoded at ``bytes_per_pixel``. ``name`` names the file in messages."""
    largest = max(p.frame_sizes, key=lambda s: s[0] * s[1])
    which = "" if p.frames == 1 else f"a frame of {p.frames} "
    out = [
        Measure("pixels", largest[0] * largest[1], input, f"{name}: {which}{largest[0]}x{largest[1]} pixels"),
        Measure("frames", p.frames, input, f"{name}: {p.frames} frames"),
        Measure(
            "decoded_bytes",
            p.decoded_bytes(bytes_per_pixel),
            input,
            f"{name}: {p.frames} frame{'s' if p.frames != 1 else ''} of "
            f"{p.width}x{p.height} ({_gb(p.decoded_bytes(bytes_per_pixel))} decoded)",
        ),
    ]
    return out


def over_limits(measures: list[Measure], limits: Limits) -> list[str]:
    """Messages for the measures over their limits, naming the limit."""
    return [why for m in measures if (why := limits.exceeded(m)) is not None]


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
