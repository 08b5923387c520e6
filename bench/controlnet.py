"""The cost of one ControlNet (or T2I-Adapter) per sampler step, relative to the plain step:
``python bench/controlnet.py``.

For each model size (the tiny SD1.5-shaped test model, a mid-size SD1.5-shaped one with a quarter of
SD1.5's widths, and with ``--full`` SD1.5 itself), random weights built in memory, it times the guided
denoiser call a sampler makes per step (cond + uncond in one batched forward, cfg 7), alternating
without and with one ControlNet of the model's shape applied to both prompts, then with one full T2I-Adapter
of the model's widths instead, and prints the best times side by side with their ratios (with / without).
Defaults: CPU fp32, latent 32x32 (256 px), batch 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.models.build import empty_unet  # noqa: E402
from atelier.engine.models.controlnet import ControlHint, ControlNetHandle, with_hint  # noqa: E402
from atelier.engine.models.controlnet_files import ControlNetInfo  # noqa: E402
from atelier.engine.models.handles import ModelHandle  # noqa: E402
from atelier.engine.models.info import family_config  # noqa: E402
from atelier.engine.models.t2i_adapter import T2IAdapterHandle  # noqa: E402
from atelier.engine.models.t2i_adapter_files import T2IAdapterInfo  # noqa: E402
from atelier.engine.models.tiny import _TINY_UNET, _random_tensor, randomize  # noqa: E402
from atelier.engine.sampling.conditioning import CondEntry  # noqa: E402
from atelier.engine.sampling.guidance import CFGDenoiser  # noqa: E402
from atelier.engine.sampling.model_sampling import ModelSampling  # noqa: E402

SIZES = {
    "tiny": _TINY_UNET["sd15"],
    "mid": {"block_out_channels": [96, 192, 384, 384]},
    "full": {},
}


def build(size: str) -> tuple[ModelHandle, ControlNetHandle]:
    from diffusers import ControlNetModel

    config = {**family_config("sd15", "unet"), **SIZES[size]}
    unet = randomize(empty_unet(config), seed=0, tag="unet", device="cpu", dtype=torch.float32)
    net = ControlNetModel.from_unet(unet).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict(keep_vars=True).items():
            if name.startswith("controlnet_"):
                t.copy_(_random_tensor(name, tuple(t.shape), g))
    info = ControlNetInfo("<bench>", "sd15", "diffusers", dict(net.config))
    model = ModelHandle(unet=unet, sampling=ModelSampling.discrete("eps"), family="sd15", name=size)
    return model, ControlNetHandle(net, info, name=f"{size} controlnet")


def build_adapter(model: ModelHandle) -> T2IAdapterHandle:
    from diffusers import T2IAdapter

    config = {
        "adapter_type": "full_adapter",
        "channels": list(model.unet.config.block_out_channels),
        "num_res_blocks": 2,
        "downscale_factor": 8,
        "in_channels": 3,
    }
    net = T2IAdapter(**config).eval().requires_grad_(False)
    return T2IAdapterHandle(net, T2IAdapterInfo("<bench>", "sd15", "diffusers", config), name="adapter")


def time_step(denoiser: CFGDenoiser, x: torch.Tensor, sigma: torch.Tensor) -> float:
    start = time.perf_counter()
    denoiser(x, sigma)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=32, help="latent size (pixels / 8)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also the full-size SD1.5 architecture (slow on CPU)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = ["tiny", "mid", *(["full"] if args.full else [])]
    print(f"per-step guided denoiser call, CPU fp32, latent {args.latent}x{args.latent}, batch 1, cfg 7")
    print(
        f"{'model':<6} {'UNet params':>12} {'plain s':>9} {'+ControlNet s':>14} {'ratio':>6}"
        f" {'+T2I-Adapter s':>15} {'ratio':>6}"
    )
    for size in sizes:
        model, control = build(size)
        width = model.unet.config.cross_attention_dim
        g = torch.Generator().manual_seed(2)
        pos = [CondEntry(torch.randn(1, 77, width, generator=g))]
        neg = [CondEntry(torch.randn(1, 77, width, generator=g))]
        hint = ControlHint(control, torch.rand(1, args.latent * 8, args.latent * 8, 3, generator=g))
        plain = CFGDenoiser(model, pos, neg, 7.0)
        controlled = CFGDenoiser(model, with_hint(pos, hint), with_hint(neg, hint), 7.0)
        adapter_hint = ControlHint(build_adapter(model), hint.image)
        adapted = CFGDenoiser(model, with_hint(pos, adapter_hint), with_hint(neg, adapter_hint), 7.0)
        x = torch.randn(1, 4, args.latent, args.latent, generator=g) * 5
        sigma = torch.tensor([5.0])
        time_step(plain, x, sigma), time_step(controlled, x, sigma), time_step(adapted, x, sigma)  # warm-up
        a, b, c = [], [], []
        for _ in range(args.repeat):
            a.append(time_step(plain, x, sigma))
            b.append(time_step(controlled, x, sigma))
            c.append(time_step(adapted, x, sigma))
        ma, mb, mc = min(a), min(b), min(c)
        params = sum(p.numel() for p in model.unet.parameters()) / 1e6
        print(
            f"{size:<6} {params:>11.1f}M {ma:>9.4f} {mb:>14.4f} {mb / ma:>6.2f} {mc:>15.4f} {mc / ma:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
