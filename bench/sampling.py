"""KSampler against diffusers' StableDiffusionPipeline on the same weights: ``python bench/sampling.py``.

Builds the full SD1.5 architecture with random weights in memory (UNet 860M, VAE, CLIP-L) once, then runs
the same prompt, seed, steps, cfg and resolution through
  * Atelier: a workflow (CLIPTextEncode x2 -> KSampler euler/normal -> VAEDecode) through the executor,
    with a fresh cache each repetition (so every node runs), progress and preview events on;
  * diffusers: StableDiffusionPipeline with EulerDiscreteScheduler over the very same modules,
alternating the two, and prints median times and the ratio (diffusers time / Atelier time; > 1 means
Atelier is faster). Defaults: CPU fp32, 256 px, 4 steps; on a GPU: ``--device cuda --dtype float16
--size 512 --steps 20``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.cache import OutputCache  # noqa: E402
from atelier.engine.executor import Executor  # noqa: E402
from atelier.engine.node import Context, Node, Output  # noqa: E402
from atelier.engine.registry import Registry  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPT = "portrait of a woman, soft light, detailed face"
NEGATIVE = "blurry, lowres"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    dtype = DTYPES[args.dtype or ("float16" if gpu else "float32")]
    size = args.size or (512 if gpu else 256)
    steps = args.steps or (20 if gpu else 4)
    torch.set_grad_enabled(False)

    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from atelier.engine.models.handles import handles_from_checkpoint
    from atelier.engine.models.tiny import build_random_sd15
    from atelier.nodes.conditioning import CLIPTextEncode
    from atelier.nodes.latent import EmptyLatentImage
    from atelier.nodes.sampling import KSampler
    from atelier.nodes.vae import VAEDecode

    t0 = time.perf_counter()
    loaded = build_random_sd15(seed=0, device=args.device, dtype=dtype)
    print(
        f"built random SD1.5 ({args.device}, {str(dtype).removeprefix('torch.')}) in {time.perf_counter() - t0:.1f} s"
    )
    handles = handles_from_checkpoint(loaded, "random-sd15")

    class RandomSD15(Node):
        """Bench-only: hands out the in-memory model."""

        outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

        def run(self, ctx: Context):
            return handles

    class Keep(Node):
        output_node = True
        from atelier.engine.node import Socket

        inputs = (Socket("images", "IMAGE"),)

        def run(self, ctx: Context, images):
            return None

    reg = Registry([RandomSD15, Keep, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode])
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "m": {"type": "RandomSD15"},
            "p": {
                "type": "CLIPTextEncode",
                "inputs": {"text": PROMPT, "clip": {"node": "m", "output": "CLIP"}},
            },
            "n": {
                "type": "CLIPTextEncode",
                "inputs": {"text": NEGATIVE, "clip": {"node": "m", "output": "CLIP"}},
            },
            "l": {"type": "EmptyLatentImage", "inputs": {"width": size, "height": size}},
            "k": {
                "type": "KSampler",
                "inputs": {
                    "model": {"node": "m", "output": "MODEL"},
                    "seed": 1,
                    "steps": steps,
                    "cfg": args.cfg,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "positive": {"node": "p", "output": 0},
                    "negative": {"node": "n", "output": 0},
                    "latent_image": {"node": "l", "output": 0},
                },
            },
            "d": {
                "type": "VAEDecode",
                "inputs": {"samples": {"node": "k", "output": 0}, "vae": {"node": "m", "output": "VAE"}},
            },
            "o": {"type": "Keep", "inputs": {"images": {"node": "d", "output": 0}}},
        },
    }
    events: list = []

    def atelier() -> float:
        ex = Executor(reg, OutputCache(), device=args.device)
        sync(args.device)
        t = time.perf_counter()
        res = ex.run(wf, on_event=events.append)
        sync(args.device)
        assert res.ok, res.failure
        return time.perf_counter() - t

    pipe = StableDiffusionPipeline(
        vae=loaded.vae,
        text_encoder=loaded.text_encoders[0],
        tokenizer=loaded.tokenizers[0],
        unet=loaded.unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            timestep_spacing="linspace",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()

    def diffusers_run() -> float:
        g = torch.Generator("cpu").manual_seed(1)
        sync(args.device)
        t = time.perf_counter()
        pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=args.cfg,
            height=size,
            width=size,
            generator=g,
            output_type="pt",
        )
        sync(args.device)
        return time.perf_counter() - t

    atelier()  # warm up both (kernels, allocator)
    diffusers_run()
    ours, theirs = [], []
    for _ in range(args.repeat):
        ours.append(atelier())
        theirs.append(diffusers_run())
    a, d = statistics.median(ours), statistics.median(theirs)
    print(
        f"{size} px, {steps} steps, cfg {args.cfg}, euler/normal, batch 1, median of {args.repeat} alternating runs"
    )
    print(f"  Atelier  (encode + KSampler + VAEDecode via the executor)  {a:8.2f} s")
    print(f"  diffusers StableDiffusionPipeline                         {d:8.2f} s")
    print(f"  ratio diffusers / Atelier: {d / a:.2f}x  ({'faster' if d > a else 'slower'})")
    last = [e for e in events if e.type == "node_finished"][-6:]
    print(
        "  Atelier node times (last run): "
        + ", ".join(f"{e.node_type} {e.elapsed_ms / 1000:.2f} s" for e in last)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
