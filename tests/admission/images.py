"""Test images for admission control: animations too large to decode, written byte by byte so that
a 150-frame 2048x2048 GIF costs a few kilobytes and no encoding time."""

from __future__ import annotations

import io
import struct

from PIL import Image


def canvas_gif(width: int, height: int, frames: int) -> bytes:
    """A GIF89a of ``frames`` frames on a ``width`` x ``height`` canvas, each frame one pixel drawn at
    the top-left corner (legal: frames are sub-rectangles of the canvas). Every frame decodes to the
    canvas size, so the file is tiny but its frames are not."""
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2 entries
    out += bytes([0, 0, 0, 255, 255, 255])
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for i in range(frames):
        out += b"\x21\xf9\x04\x00\x04\x00\x00\x00"  # graphic control: 40 ms
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # a 1x1 frame at (0, 0)
        out += b"\x02\x02" + (b"\x44\x01" if i % 2 == 0 else b"\x4c\x01") + b"\x00"  # LZW: clear, i%2, end
    out += b"\x3b"
    return bytes(out)


def coloured_gif(width: int, height: int, colours: list[tuple[int, int, int]]) -> bytes:
    """A GIF with one full frame per colour (a gradient varies within each, so frames differ)."""
    frames = []
    for n, rgb in enumerate(colours):
        im = Image.new("RGB", (width, height), rgb)
        im.putpixel((n % width, 0), (255 - rgb[0], 255 - rgb[1], 255 - rgb[2]))
        frames.append(im.quantize(8))
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0, disposal=1)
    return buf.getvalue()
