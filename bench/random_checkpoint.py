"""Full-size random-weight checkpoints in the real single-file layout, for loading benchmarks.

``write_random_checkpoint("sd15" | "sdxl", out, dtype)`` writes a ``.safetensors`` file with the tensor names
and shapes of a real SD1.5 (UNet 860M, VAE 84M, CLIP-L 123M) or SDXL base (UNet 2.6B, VAE, CLIP-L, OpenCLIP-G)
checkpoint. Names and shapes come from the shipped configs: the modules are built on the meta device and
renamed to the original layout by ``layout.original_state_dict`` (which works on meta tensors), then the
file is written tensor by tensor (header first, then each tensor generated and written), so that memory
stays at one tensor however large the model: an SDXL file in fp16 (about 5 GB) never exists in memory.

Write into a temporary folder, never into the tree.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.engine.models.build import empty_text_encoder, empty_unet, empty_vae  # noqa: E402
from atelier.engine.models.info import family_config  # noqa: E402
from atelier.engine.models.layout import original_state_dict  # noqa: E402
from atelier.engine.models.tiny import _derived_seed, text_encoder_info  # noqa: E402

_ST_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64"}
_TEXT_ENCODERS = {"sd15": ["text_encoder"], "sdxl": ["text_encoder", "text_encoder_2"]}


def checkpoint_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Original-layout tensor name -> shape of a full-size ``family`` checkpoint (nothing allocated)."""
    unet_config = family_config(family, "unet")
    unet = empty_unet(unet_config)
    vae = empty_vae(family_config(family, "vae"))
    encoders = [empty_text_encoder(text_encoder_info(family, name)) for name in _TEXT_ENCODERS[family]]  # type: ignore[arg-type]
    state = original_state_dict(family, unet, vae, encoders, unet_config)
    return {name: tuple(t.shape) for name, t in state.items() if t.is_floating_point()}


def write_random_checkpoint(
    family: str, out: str | Path, dtype: torch.dtype = torch.float16, seed: int = 0
) -> Path:
    """Write a full-size random ``family`` checkpoint (``sd15`` or ``sdxl``) to ``out``; returns the path."""
    if family not in _TEXT_ENCODERS:
        raise ValueError(f"family must be one of {sorted(_TEXT_ENCODERS)}, got {family!r}")
    out = Path(out)
    shapes = checkpoint_shapes(family)
    width = torch.empty((), dtype=dtype).element_size()
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = width
        for d in shape:
            size *= d
        header[name] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(_derived_seed(seed, family))
    # drawing 2.6 G normal values takes minutes on a small CPU: tensors are cut from a pool of 4 M values at
    # random offsets instead (random enough to load and run; scales as in ``tiny._random_tensor``)
    pool = torch.randn(1 << 22, generator=generator)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in shapes.items():
            tensor = _pooled(pool, name, shape, generator).to(dtype).contiguous()
            f.write(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return out


def _pooled(
    pool: torch.Tensor, name: str, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    start = int(torch.randint(0, pool.numel(), (1,), generator=generator))
    flat = pool.roll(-start)
    if n > flat.numel():
        flat = flat.repeat(-(-n // flat.numel()))
    noise = flat[:n].reshape(shape)
    if name.endswith("bias"):
        return noise * 0.02
    if len(shape) == 1:
        return 1.0 + noise * 0.02
    return noise / (n // shape[0]) ** 0.5


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=sorted(_TEXT_ENCODERS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    a = ap.parse_args()
    t0 = time.perf_counter()
    path = write_random_checkpoint(a.family, a.out, getattr(torch, a.dtype))
    print(f"{path}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
