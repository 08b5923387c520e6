"""Cheap latent previews: the first latent of a batch through a linear latent-to-RGB map, as JPEG bytes.

This leaves the graph (it becomes a websocket frame), so it is one of the places that copy to the host.
"""

from __future__ import annotations

import io

import torch

# Approximate linear maps from the 4 latent channels to RGB, for cheap previews (published fits).
LATENT_RGB = {
    "sd15": [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
    "sdxl": [
        [0.3920, 0.4054, 0.4549],
        [-0.2634, -0.0196, 0.0653],
        [0.0568, 0.1687, -0.0755],
        [-0.3112, -0.2359, -0.2076],
    ],
}
LATENT_RGB["sdxl_refiner"] = LATENT_RGB["sdxl"]  # the same VAE
PREVIEW_MAX_SIDE = 512


def latent_preview(latent: torch.Tensor, family: str) -> tuple[bytes, int, int]:
    """JPEG bytes, width and height of the first latent of a batch through the latent-to-RGB map."""
    from PIL import Image

    factors = torch.tensor(LATENT_RGB.get(family, LATENT_RGB["sd15"]), dtype=torch.float32)
    z = latent[0, :4].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", z, factors)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    im = Image.fromarray(rgb)
    im = im.resize((im.width * 8, im.height * 8), Image.BILINEAR)
    im.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue(), im.width, im.height
