"""Device memory with and without a budget: ``python bench/memory.py``.

Part 1 runs one workflow with two checkpoints and an upscaler (an SDXL base samples, its refiner finishes,
the refiner's VAE decodes, a 2x upscaler, a light hires pass with the base: tests/sd/vram_workflow.py) in
two fresh engines side by side: one without a budget, one with ``--budget-mb``. Each runs it twice: cold
(files read) and again with the output cache cleared (every node re-runs; models stay loaded, offloaded
parts come back by a copy). Printed: wall time of each run, the peak of device memory (CUDA: measured by
torch, ``max_memory_allocated``; elsewhere the bytes the budget accounted for: models deemed on the device
plus cached outputs there), offloads and reloads, and the ratios budget / none. Default: the tiny random
models (written to a temporary folder), on the CPU; ``--device cuda`` measures a card, ``--models-dir``
with ``--base/--refiner/--upscaler`` runs real files.

Part 2 (``--plan``, on by default) replays the same workflow's node sequence against a budget the size of
the default on a 12 GiB card (12 GiB less the reserve) with the real SDXL base, refiner and a 4x ESRGAN
built on the meta device (no memory: shapes only, at the dtypes an engine on CUDA loads them in), and
prints what moves at each node and the peak, to show that the three fit where they would not together.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.memory import GIB, DeviceBudget, default_capacity, module_bytes  # noqa: E402
from atelier.engine.runtime import Engine, EngineConfig, build_engine  # noqa: E402
from tests.sd.vram_workflow import BASE, REFINER, UPSCALER, two_checkpoints_and_upscaler, write_models  # noqa: E402

MIB = 1 << 20


def engine_for(root: Path, out: Path, device: str, budget_gib: float, dtype: str | None) -> Engine:
    engine = build_engine(
        EngineConfig(
            device=device,
            dtype=dtype,
            models_dir=root,
            output_dir=out / "out",
            input_dir=out / "in",
            temp_dir=out / "tmp",
            vram_budget_gb=budget_gib,
        )
    )
    engine.folders.ensure()
    return engine


def measure(engine: Engine, workflow: dict[str, Any], device: str) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for i in range(2):
        if i:
            engine.cache.clear()
        t0 = time.perf_counter()
        res = engine.executor.run(workflow)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if not res.ok:
            raise SystemExit(f"the workflow failed: {res.failure}")
    report = engine.memory.report()
    peak = torch.cuda.max_memory_allocated() if cuda else report.peak
    return {
        "cold": times[0],
        "warm": times[1],
        "peak": peak,
        "offloads": report.offloads,
        "reloads": report.reloads,
    }


def part1(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = args.models_dir or write_models(Path(tmp) / "models")
        wf = two_checkpoints_and_upscaler(
            size=args.size, steps=args.steps, base=args.base, refiner=args.refiner, upscaler=args.upscaler
        )
        rows = []
        for label, gib in (("no budget", 0.0), (f"budget {args.budget_mb:g} MiB", args.budget_mb / 1024)):
            engine = engine_for(root, Path(tmp) / label.split()[0], args.device, gib, args.dtype)
            rows.append((label, measure(engine, wf, args.device)))
            del engine
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    what = "measured by torch" if args.device.startswith("cuda") else "accounted by the budget"
    print(f"two checkpoints + upscaler, {args.size}px, {args.steps} steps, on {args.device} (peak {what})")
    print(f"{'':22} {'cold s':>8} {'warm s':>8} {'peak MiB':>9} {'offloads':>9} {'reloads':>8}")
    for label, r in rows:
        print(
            f"{label:22} {r['cold']:8.2f} {r['warm']:8.2f} {r['peak'] / MIB:9.1f} {r['offloads']:9d} "
            f"{r['reloads']:8d}"
        )
    (_, a), (_, b) = rows
    print(
        f"ratios budget / none: peak {b['peak'] / a['peak']:.2f}, cold time {b['cold'] / a['cold']:.2f}, "
        f"warm time {b['warm'] / a['warm']:.2f}"
    )


# -- part 2: the real sizes on a 12 GiB card ------------------------------------------------------------


def real_sizes() -> dict[str, torch.nn.Module]:
    """SDXL base and refiner parts and a 4x ESRGAN on the meta device, at the dtypes used on CUDA."""
    from spandrel.architectures.ESRGAN import ESRGAN
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from atelier.engine.models.build import build_empty, empty_unet, empty_vae
    from atelier.engine.models.info import family_config

    unet = family_config("sdxl", "unet")
    # the refiner's UNet (Stability's sd_xl_refiner.yaml: 384 channels x [1, 2, 4, 4], attention at the
    # middle two levels, depth 4, 64-wide heads, context 1280, 2560 pooled + size inputs)
    refiner = {
        **unet,
        "block_out_channels": [384, 768, 1536, 1536],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": 4,
        "attention_head_dim": [6, 12, 24, 24],
        "cross_attention_dim": 1280,
        "projection_class_embeddings_input_dim": 2560,
    }
    te1 = CLIPTextConfig(**family_config("sdxl", "text_encoder"))
    te2 = CLIPTextConfig(**family_config("sdxl", "text_encoder_2"))
    parts = {
        "base:unet": empty_unet(unet).half(),
        "base:text_encoders[0]": build_empty(lambda: CLIPTextModel(te1)).half(),
        "base:text_encoders[1]": build_empty(lambda: CLIPTextModelWithProjection(te2)).half(),
        "base:vae": empty_vae(family_config("sdxl", "vae")).bfloat16(),
        "refiner:unet": empty_unet(refiner).half(),
        "refiner:text_encoders[0]": build_empty(lambda: CLIPTextModelWithProjection(te2)).half(),
        "refiner:vae": empty_vae(family_config("sdxl", "vae")).bfloat16(),
        "4x-esrgan": build_empty(
            lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
        ).half(),
    }
    return parts


class Log:
    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.moves: list[str] = []

    def offload(self, module: Any) -> None:
        self.moves.append(f"-{self.names[id(module)]}")

    def reload(self, module: Any) -> None:
        self.moves.append(f"+{self.names[id(module)]}")


def part2() -> None:
    parts = real_sizes()
    card = 12 * GIB
    capacity = card - max(int(card * 0.25), 2 * GIB)  # what default_capacity gives a 12 GiB card
    assert default_capacity("cpu") is None
    log = Log({id(m): n for n, m in parts.items()})
    budget = DeviceBudget(capacity, "cuda", placement=log)
    total = sum(module_bytes(m) for m in parts.values())
    print(
        f"\nSDXL base + refiner + 4x ESRGAN at real sizes: {total / GIB:.2f} GiB of weights; budget "
        f"{capacity / GIB:.2f} GiB (a 12 GiB card less the reserve)"
    )
    for name, m in parts.items():
        print(
            f"  {name:26} {sum(p.numel() for p in m.parameters()) / 1e6:8.1f} M params {module_bytes(m) / GIB:6.2f} GiB"
        )
    base = [m for n, m in parts.items() if n.startswith("base:")]
    refiner = [m for n, m in parts.items() if n.startswith("refiner:")]
    steps = [
        ("load base", "register", base),
        ("load refiner", "register", refiner),
        ("load upscaler", "register", [parts["4x-esrgan"]]),
        ("encode prompts (base)", "use", [parts["base:text_encoders[0]"], parts["base:text_encoders[1]"]]),
        ("sample (base)", "use", [parts["base:unet"]]),
        ("encode prompts (refiner)", "use", [parts["refiner:text_encoders[0]"]]),
        ("refine", "use", [parts["refiner:unet"]]),
        ("decode (refiner VAE)", "use", [parts["refiner:vae"]]),
        ("upscale 4x", "use", [parts["4x-esrgan"]]),
        ("encode (base VAE)", "use", [parts["base:vae"]]),
        ("hires (base)", "use", [parts["base:unet"]]),
        ("decode (base VAE)", "use", [parts["base:vae"]]),
    ]
    print(f"  {'node':26} {'on device GiB':>13}  moves")
    for label, kind, modules in steps:
        before = len(log.moves)
        if kind == "register":
            for m in modules:
                budget.make_room(module_bytes(m))
                budget.register(m, log.names[id(m)])
        else:
            with budget.scope():
                budget.acquire(modules)
        print(f"  {label:26} {budget.models_on_device / GIB:13.2f}  {' '.join(log.moves[before:])}")
    print(
        f"  peak {budget.peak / GIB:.2f} GiB <= budget {capacity / GIB:.2f} GiB; all together would need "
        f"{total / GIB:.2f} GiB; {budget.offloads} offloads, {budget.reloads} reloads"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--budget-mb", type=float, default=20.0, help="the budget of the second engine (MiB)")
    p.add_argument("--models-dir", type=Path, default=None, help="real files (default: tiny random ones)")
    p.add_argument("--base", default=BASE)
    p.add_argument("--refiner", default=REFINER)
    p.add_argument("--upscaler", default=UPSCALER)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--no-plan", action="store_true", help="skip part 2 (the 12 GiB card plan)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads on the CPU (default 1: shared cores)"
    )
    args = p.parse_args()
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    part1(args)
    if not args.no_plan:
        part2()


if __name__ == "__main__":
    main()
