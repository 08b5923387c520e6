"""The cost of one IP-Adapter per sampler step: ``python bench/ipadapter.py``.

Builds the full SD1.5 UNet with random weights (or ``--tiny``: the test UNet), writes a random IP-Adapter
for it in the original ``.bin`` layout (Plus: 16 image tokens; ``--kind plain``: 4) and loads it through the
same code as a real file, then times one sampler step's network call (a cond + uncond batch, as CFG runs
it) through the MODEL handle, alternating the plain model and the model with the adapter, and prints the
median of each side by side with the ratio. Defaults: CPU fp32, 256 px, 5 repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.models.handles import ModelHandle  # noqa: E402
from atelier.engine.models.ipadapter import load_ipadapter  # noqa: E402
from atelier.engine.models.ipadapter_attention import IPAdapterPatch  # noqa: E402
from atelier.engine.sampling import ModelSampling  # noqa: E402
from atelier.engine.sampling.conditioning import CondEntry  # noqa: E402
from atelier.engine.sampling.guidance import ModelCall  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent: size / 8)")
    ap.add_argument("--kind", choices=["plus", "plain"], default="plus")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="the tiny test UNet instead of the full SD1.5 one")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    dtype = DTYPES[args.dtype or ("float16" if gpu else "float32")]
    torch.set_grad_enabled(False)

    from atelier.engine.models.tiny import build_random_sd15, build_tiny_models
    from atelier.engine.models.tiny_ipadapter import ipadapter_state, save_ipadapter

    if args.tiny:
        unet = build_tiny_models("sd15", device=args.device, dtype=dtype).unet
    else:
        unet = build_random_sd15(device=args.device, dtype=dtype).unet
    model = ModelHandle(unet=unet, sampling=ModelSampling.discrete("eps"), family="sd15")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_ipadapter(
            ipadapter_state(unet, args.kind, clip_hidden=1280, clip_projection=1024), Path(tmp) / "ip.bin"
        )
        adapter = load_ipadapter(path, device=args.device, dtype=dtype)
    cross = int(unet.config.cross_attention_dim)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 16 if args.kind == "plus" else 4, cross, generator=g)
    patch = IPAdapterPatch(adapter, unet, tokens, torch.zeros_like(tokens), weight=0.8)
    with_ip = model.with_wrapper(patch)

    h = w = args.size // 8
    x = torch.randn(2, 4, h, w, generator=g).to(args.device)
    entry = CondEntry(torch.zeros(1, 77, cross))
    call = ModelCall(
        x=x,
        timestep=torch.full((2,), 500.0, device=args.device),
        context=torch.randn(2, 77, cross, generator=g).to(args.device),
        added=None,
        sigma=torch.full((2,), 5.0),
        entries=(entry, entry),
        negative=(False, True),
        batch=1,
        area=(h, w, 0, 0),
    )
    times: dict[str, list[float]] = {"plain": [], "ip": []}
    for handle in (model, with_ip):  # warm-up
        handle.apply_model(call)
    for _ in range(args.repeat):
        for name, handle in (("plain", model), ("ip", with_ip)):
            sync(args.device)
            t0 = time.perf_counter()
            handle.apply_model(call)
            sync(args.device)
            times[name].append(time.perf_counter() - t0)
    plain, ip = statistics.median(times["plain"]), statistics.median(times["ip"])
    what = "tiny SD1.5 UNet" if args.tiny else "SD1.5 UNet (860M, random weights)"
    print(f"{what}, {args.device} {str(dtype).removeprefix('torch.')}, {args.size} px, cond+uncond batch")
    print(f"{'step (network call)':<32}{'median ms':>12}")
    print(f"{'plain':<32}{plain * 1000:>12.1f}")
    print(f"{f'with one IP-Adapter ({args.kind})':<32}{ip * 1000:>12.1f}")
    print(f"IP-Adapter cost per step: +{(ip / plain - 1) * 100:.1f}% ({(ip - plain) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
