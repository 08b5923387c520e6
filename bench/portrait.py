"""The portrait passes node by node: ``python bench/portrait.py``.

Runs Atelier's shipped pipelines through the real executor and nodes, every node executed (a fresh output
cache per run, the model loader warm), and prints each node's time and what each pass costs next to a
base portrait measured in the same run:
  * base:        workflows/portrait.json (txt2img) at --size, --steps;
  * face detail: workflows/fix_faces.json on a real photograph (skimage's astronaut, public domain) resized
                 to --size: RetinaFace finds the face, FaceDetailer re-paints its crop (3x the face box) at
                 about --size (guide_size --size/3), so it compares with the base portrait pixel for pixel;
  * upscale:     workflows/upscale_image.json on the same photograph at --upscale-input px through a
                 random-weight 4x ESRGAN of the real size (RRDBNet, 64 features, 23 blocks), tiled.
Twice: on the tiny random checkpoint (the engine's own overhead shows) and on the full-size SD1.5
architecture with random weights (the real kernels; skip with --tiny-only). Defaults: CPU fp32, 256 px,
4 steps; on a GPU: ``--device cuda --dtype float16 --size 512 --steps 20 --upscale-input 512``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
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

from atelier.engine import events as E  # noqa: E402
from atelier.engine.model_loader import ModelLoader  # noqa: E402
from atelier.engine.runtime import Engine, EngineConfig, build_engine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def write_inputs(root: Path, size: int, upscale_input: int) -> None:
    from PIL import Image

    try:
        from skimage.data import astronaut
    except ImportError:
        raise SystemExit(
            "bench/portrait.py needs scikit-image (the dev extra) for its public-domain photo"
        ) from None
    photo = Image.fromarray(astronaut())
    (root / "input").mkdir(parents=True, exist_ok=True)
    photo.resize((size, size), Image.LANCZOS).save(root / "input" / "face.png")
    photo.resize((upscale_input, upscale_input), Image.LANCZOS).save(root / "input" / "small.png")


def write_upscaler(folder: Path) -> str | None:
    """A random-weight 4x ESRGAN with the real architecture's size, in its real key layout."""
    try:
        from atelier.engine.models.spandrel_compat import spandrel

        spandrel()
        from spandrel.architectures.ESRGAN import ESRGAN
    except ImportError:
        return None
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.1)  # keep activations in range through 23 blocks of random weights
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "esrgan-x4.safetensors"))
    return "esrgan-x4.safetensors"


def run_timed(
    engine: Engine, wf: dict[str, Any], overrides: dict[str, Any], device: str
) -> tuple[float, list]:
    """Every node runs (fresh output cache); returns wall time and [(node, type, ms)]."""
    engine.cache.clear()
    events: list[E.Event] = []
    sync(device)
    t0 = time.perf_counter()
    res = engine.executor.run(copy.deepcopy(wf), overrides=overrides, on_event=events.append)
    sync(device)
    wall = time.perf_counter() - t0
    if not res.ok:
        detail = res.failure.message if res.failure else "; ".join(str(e) for e in res.errors)
        raise SystemExit(f"{wf['metadata']['name']}: {res.status}: {detail}")
    nodes = [(e.node, e.node_type, e.elapsed_ms) for e in events if isinstance(e, E.NodeFinished)]
    return wall, nodes


def random_sd15_engine(base: Engine, device: str, dtype: torch.dtype) -> tuple[Engine, str]:
    """The same engine with an extra node type standing in for the checkpoint loader: the full-size SD1.5
    architecture with random weights, built in memory once (writing 2 GB to disk would time the disk)."""
    from atelier.engine.models.handles import handles_from_checkpoint
    from atelier.engine.models.sockets import CLIP, MODEL, VAE
    from atelier.engine.models.tiny import build_random_sd15
    from atelier.engine.node import Choice, Context, Node, Output
    from atelier.engine.registry import Registry

    t0 = time.perf_counter()
    handles = handles_from_checkpoint(build_random_sd15(seed=0, device=device, dtype=dtype), "random-sd15")
    print(
        f"built random SD1.5 ({device}, {str(dtype).removeprefix('torch.')}) in {time.perf_counter() - t0:.1f} s"
    )

    class RandomSD15(Node):
        """Bench-only: hands out the in-memory full-size model."""

        inputs = (Choice("ckpt_name", ["random-sd15"]),)
        outputs = (Output(MODEL), Output(CLIP), Output(VAE))

        def run(self, ctx: Context, ckpt_name: str):
            return handles

    types = [base.registry.get(n) for n in base.registry]
    base.executor.registry = Registry([*types, RandomSD15])  # type: ignore[list-item]
    return base, "RandomSD15"


def pipelines(size: int, steps: int, upscaler: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    out = [
        ("base portrait", "portrait.json", {"width": size, "height": size, "steps": steps}),
        # guide_size is the face box's side; the crop (crop factor 3) is then worked at about --size
        ("face detail", "fix_faces.json", {"image": "face.png", "steps": steps, "guide_size": size // 3}),
    ]
    if upscaler is not None:
        out.append(
            ("4x model upscale", "upscale_image.json", {"image": "small.png", "upscale_model": upscaler})
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--upscale-input", type=int, default=None)
    ap.add_argument("--tiny-only", action="store_true", help="skip the full-size SD1.5 architecture")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    dtype_name = args.dtype or ("float16" if gpu else "float32")
    size = args.size or (512 if gpu else 256)
    steps = args.steps or (20 if gpu else 4)
    upscale_input = args.upscale_input or (512 if gpu else 96)
    torch.set_grad_enabled(False)

    from atelier.engine.models.tiny import write_tiny_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    write_tiny_checkpoint("sd15", tmp / "models" / "checkpoints" / "tiny15.safetensors", seed=0)
    write_inputs(tmp, size, upscale_input)
    upscaler = write_upscaler(tmp / "models" / "upscale_models")
    if upscaler is None:
        print("spandrel is not installed: the upscale pipeline is skipped")
    print(f"device {args.device}, {dtype_name}, {size} px, {steps} steps, upscale input {upscale_input} px")

    settings = [("tiny checkpoint", None)] + (
        [] if args.tiny_only else [("full-size SD1.5, random weights", "x")]
    )
    for label, full in settings:
        engine = build_engine(
            EngineConfig(
                device=args.device,
                dtype=dtype_name,
                models_dir=tmp / "models",
                output_dir=tmp / "output",
                input_dir=tmp / "input",
                temp_dir=tmp / "temp",
            ),
            models=ModelLoader(args.device, getattr(torch, dtype_name)),
        )
        engine.folders.ensure()
        loader_type = "CheckpointLoaderSimple"
        ckpt = "tiny15.safetensors"
        if full:
            engine, loader_type = random_sd15_engine(engine, args.device, getattr(torch, dtype_name))
            ckpt = "random-sd15"
        print(f"\n== {label}")
        times: dict[str, float] = {}
        for name, file, overrides in pipelines(size, steps, upscaler):
            wf = json.loads((WORKFLOWS / file).read_text())
            for node in wf["nodes"].values():
                if node["type"] == "CheckpointLoaderSimple":
                    node["type"] = loader_type
            if "checkpoint" in wf.get("parameters", {}):
                overrides = {**overrides, "checkpoint": ckpt}
            run_timed(engine, wf, overrides, args.device)  # warm: model loads, kernel selection
            wall, nodes = run_timed(engine, wf, overrides, args.device)
            times[name] = wall
            print(f"  {name} ({file}): {wall:.2f} s")
            for nid, node_type, ms in sorted(nodes, key=lambda n: -n[2]):
                if ms >= 1.0:
                    print(f"      {node_type:<24} {nid:<10} {ms / 1000:8.3f} s")
        base = times["base portrait"]
        for name, t in times.items():
            if name != "base portrait":
                print(f"  {name} / base portrait: {t / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
