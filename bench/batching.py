"""Cross-job batching: images/s of N queued jobs batched vs one after another: ``python bench/batching.py``.

N txt2img jobs (each its own seed, prompt and cfg; same model, size, sampler, steps) run through the executor
  * sequentially: ``Executor.run`` once per job (how jobs ran before batching);
  * batched: ``Executor.run_many`` over all N (the server's worker and the CLI's sweeps do this): one KSampler
    step loop for all, each job's VAE decode on its own;
alternating the two, with the loader and prompts cached (as in a queue of seed/prompt variations), and prints
the median images/s of each and the ratio (batched / sequential; > 1 means batching is faster), for N = 4, 8.

Default: the tiny random SD1.5 checkpoint on the CPU (64 px, 4 steps), read through the real loader. On a GPU:
``python bench/batching.py --real --device cuda`` builds the full-size SD1.5 architecture with random weights
(fp16, 512 px, 20 steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.cache import OutputCache  # noqa: E402
from atelier.engine.executor import Executor, JobSpec  # noqa: E402
from atelier.engine.node import Context, Node, Output, Socket  # noqa: E402
from atelier.engine.registry import Registry  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPTS = [
    "portrait of a woman, soft light",
    "a man with a beard, studio photo",
    "an old sailor",
    "a child laughing",
]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_handles(args: argparse.Namespace, dtype: torch.dtype) -> Any:
    from atelier.engine.models.handles import handles_from_checkpoint

    if args.real:
        from atelier.engine.models.tiny import build_random_sd15

        loaded = build_random_sd15(seed=0, device=args.device, dtype=dtype)
        return handles_from_checkpoint(loaded, "random-sd15")
    from atelier.engine.models.checkpoint import load_checkpoint
    from atelier.engine.models.tiny import write_tiny_checkpoint

    path = Path(tempfile.mkdtemp(prefix="atelier-bench-")) / "tiny15.safetensors"
    write_tiny_checkpoint("sd15", path, seed=0)
    loaded = load_checkpoint(path, device=args.device, dtype=dtype, vae_dtype=None, compute_hash=False)
    return handles_from_checkpoint(loaded, "tiny15")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="full-size random SD1.5 (for a GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--jobs", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    dtype = DTYPES[args.dtype or ("float16" if gpu else "float32")]
    size = args.size or (512 if args.real else 64)
    steps = args.steps or (20 if args.real else 4)
    torch.set_grad_enabled(False)

    from atelier.nodes.conditioning import CLIPTextEncode
    from atelier.nodes.latent import EmptyLatentImage
    from atelier.nodes.sampling import KSampler
    from atelier.nodes.vae import VAEDecode

    t0 = time.perf_counter()
    handles = load_handles(args, dtype)
    print(
        f"model ready ({'real-size' if args.real else 'tiny'} SD1.5, {args.device}, {dtype}) in {time.perf_counter() - t0:.1f} s"
    )

    class BenchModel(Node):
        """Bench-only: hands out the model loaded above."""

        outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

        def run(self, ctx: Context) -> Any:
            return handles

    class Keep(Node):
        output_node = True
        inputs = (Socket("images", "IMAGE"),)

        def run(self, ctx: Context, images: Any) -> None:
            return None

    reg = Registry([BenchModel, Keep, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode])

    def workflow(n: int, seed: int) -> dict:
        clip = {"node": "m", "output": "CLIP"}
        return {
            "format": "atelier/workflow",
            "version": 1,
            "nodes": {
                "m": {"type": "BenchModel"},
                "p": {"type": "CLIPTextEncode", "inputs": {"text": PROMPTS[n % len(PROMPTS)], "clip": clip}},
                "n": {"type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": clip}},
                "l": {"type": "EmptyLatentImage", "inputs": {"width": size, "height": size}},
                "k": {
                    "type": "KSampler",
                    "inputs": {
                        "model": {"node": "m", "output": "MODEL"},
                        "seed": seed,
                        "steps": steps,
                        "cfg": 5.0 + n % 3,
                        "sampler_name": args.sampler,
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

    ex = Executor(reg, OutputCache(), device=args.device)
    seed = [0]

    def jobs(count: int) -> list[dict]:
        seed[0] += count  # new seeds each round: the samplers and decoders run, the prompts come cached
        return [workflow(n, seed[0] + n) for n in range(count)]

    def sequential(count: int) -> float:
        wfs = jobs(count)
        sync(args.device)
        t = time.perf_counter()
        for w in wfs:
            assert ex.run(w).ok
        sync(args.device)
        return count / (time.perf_counter() - t)

    def batched(count: int) -> float:
        wfs = jobs(count)
        sync(args.device)
        t = time.perf_counter()
        assert all(r.ok for r in ex.run_many([JobSpec(w) for w in wfs]))
        sync(args.device)
        return count / (time.perf_counter() - t)

    sequential(2)  # warm up: the prompts are encoded and cached, kernels chosen
    batched(2)
    print(f"{size} px, {steps} steps, {args.sampler}; images/s, median of {args.repeat}")
    for count in args.jobs:
        ex.max_batch = count
        seq, bat = [], []
        for _ in range(args.repeat):
            seq.append(sequential(count))
            bat.append(batched(count))
        s, b = statistics.median(seq), statistics.median(bat)
        print(f"N={count}: sequential {s:.2f} img/s, batched {b:.2f} img/s, ratio {b / s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
