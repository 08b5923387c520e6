"""Atelier against diffusers on the same weights: ``python bench/sampling.py`` (``--tiny`` on a CPU).

For each architecture (SD1.5 at 512², SDXL at 1024²; ``--tiny``: the tiny random models at 128²) a
random-weight checkpoint is written in the original single-file layout into a temp folder, then loaded
  * by Atelier engines through the real loader (CheckpointLoaderSimple -> CLIPTextEncode x2 ->
    EmptyLatentImage -> KSampler -> VAEDecode, through the executor with a fresh cache per run):
    ``plain`` (``--no-fast-path``), ``fast`` (the fast path, eager) and ``compiled`` (fast path +
    ``--compile MODE``);
  * by diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` built from the same file's
    modules (loaded by the same code, plain), with the matching scheduler: euler/normal ->
    EulerDiscreteScheduler fed Atelier's own sigmas, dpmpp_2m/karras -> DPMSolverMultistepScheduler
    (dpmsolver++, order 2, Karras sigmas; the sigma difference is printed).
Runs alternate, the median of ``--repeat`` is reported: it/s (sampler steps per second, from runs that
stop at the latent) and s/image (prompt encode + sampling + decode, divided by the batch), and the ratio
Atelier / diffusers-eager (> 1: Atelier is faster). Then Atelier's re-runs on one engine: fully cached,
seed changed, prompt changed. Defaults on CUDA: fp16, 20 steps, batch 1 and 4, both samplers, compile
``reduce-overhead``. Target: compiled it/s >= 1.25x diffusers eager fp16 at batch 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atelier.engine.node import Context, Node, Socket  # noqa: E402
from atelier.engine.runtime import Engine, EngineConfig, build_engine  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPT = "portrait of a woman, soft light, detailed face"
PROMPT_2 = "portrait of an old man, rim light, detailed skin"
NEGATIVE = "blurry, lowres"
#: Atelier sampler/scheduler -> how diffusers' scheduler is made
SAMPLERS = {"euler": ("euler", "normal"), "dpmpp_2m_karras": ("dpmpp_2m", "karras")}
TARGET = 1.25


def keep_nodes() -> tuple[type[Node], type[Node], list[Any]]:
    """Bench-only output nodes: one holds the decoded images (no PNG encoding, as diffusers'
    output_type="pt"), one ends the run at the sampled latent and keeps the last one (for the picture check)."""
    latents: list[Any] = []

    class KeepImage(Node):
        output_node = True
        inputs = (Socket("images", "IMAGE"),)

        def run(self, ctx: Context, images: Any) -> None:
            return None

    class KeepLatent(Node):
        output_node = True
        inputs = (Socket("samples", "LATENT"),)

        def run(self, ctx: Context, samples: Any) -> None:
            latents[:] = [samples["samples"]]
            return None

    return KeepImage, KeepLatent, latents


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def workflow(
    ckpt: str,
    size: int,
    batch: int,
    steps: int,
    cfg: float,
    sampler: str,
    *,
    decode: bool,
    seed: int = 1,
    prompt: str = PROMPT,
) -> dict[str, Any]:
    name, scheduler = SAMPLERS[sampler]
    nodes: dict[str, Any] = {
        "m": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "p": {"type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": {"node": "m", "output": 1}}},
        "n": {"type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": {"node": "m", "output": 1}}},
        "l": {"type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "k": {
            "type": "KSampler",
            "inputs": {
                "model": {"node": "m", "output": 0},
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": name,
                "scheduler": scheduler,
                "denoise": 1.0,
                "positive": {"node": "p", "output": 0},
                "negative": {"node": "n", "output": 0},
                "latent_image": {"node": "l", "output": 0},
            },
        },
    }
    if decode:
        nodes["d"] = {
            "type": "VAEDecode",
            "inputs": {"samples": {"node": "k", "output": 0}, "vae": {"node": "m", "output": 2}},
        }
        nodes["o"] = {"type": "KeepImage", "inputs": {"images": {"node": "d", "output": 0}}}
    else:
        nodes["o"] = {"type": "KeepLatent", "inputs": {"samples": {"node": "k", "output": 0}}}
    return {"format": "atelier/workflow", "version": 1, "nodes": nodes}


def make_engine(root: Path, device: str, dtype: str, *, fast: bool | None, compile: str | None) -> Engine:
    from atelier.engine.registry import default_registry

    registry = default_registry()
    keep_image, keep_latent, latents = keep_nodes()
    registry.add(keep_image, source="bench")
    registry.add(keep_latent, source="bench")
    cfg = EngineConfig(
        device=device,
        dtype=dtype,
        models_dir=root,
        output_dir=root / "out",
        input_dir=root / "in",
        temp_dir=root / "tmp",
        fast_path=fast,
        compile=compile,
        max_loaded_models=1,
    )
    engine = build_engine(cfg, registry=registry)
    engine.folders.ensure()
    engine.bench_latents = latents  # type: ignore[attr-defined]
    return engine


def timed(device: str, fn: Callable[[], Any]) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def run_atelier(engine: Engine, wf: dict[str, Any], *, fresh: bool = True) -> None:
    from atelier.engine.cache import OutputCache

    if fresh:
        engine.executor.cache = OutputCache()
    res = engine.executor.run(wf)
    assert res.ok, res.failure


def diffusers_pipeline(
    family: str, loaded: Any, sampler: str, sigmas: torch.Tensor
) -> tuple[Any, dict[str, Any]]:
    """The diffusers pipeline over ``loaded``'s modules with the scheduler matching ``sampler``, and the
    call arguments that make it walk ``sigmas`` (Atelier's schedule)."""
    import diffusers
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    diffusers.utils.logging.set_verbosity_error()
    common = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    extra: dict[str, Any] = {}
    if sampler == "euler":
        scheduler = EulerDiscreteScheduler(**common, timestep_spacing="linspace")
        extra["sigmas"] = sigmas.tolist()  # the very same walk, final 0 included
    else:
        scheduler = DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            use_karras_sigmas=True,
            final_sigmas_type="zero",
            lower_order_final=True,
        )
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=loaded.vae,
            text_encoder=loaded.text_encoders[0],
            text_encoder_2=loaded.text_encoders[1],
            tokenizer=loaded.tokenizers[0],
            tokenizer_2=loaded.tokenizers[1],
            unet=loaded.unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=loaded.vae,
            text_encoder=loaded.text_encoders[0],
            tokenizer=loaded.tokenizers[0],
            unet=loaded.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe, extra


def sigma_gap(pipe: Any, extra: dict[str, Any], steps: int, sigmas: torch.Tensor, device: str) -> float:
    """Largest relative difference between diffusers' sigmas and Atelier's for this run."""
    sch = pipe.scheduler
    if "sigmas" in extra:
        sch.set_timesteps(sigmas=extra["sigmas"], device=device)
    else:
        sch.set_timesteps(steps, device=device)
    theirs = sch.sigmas.detach().double().cpu()
    ours = sigmas.double()
    if theirs.shape != ours.shape:
        return float("inf")
    return float(((theirs - ours).abs() / ours.clamp(min=1e-3)).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    ap.add_argument("--tiny", action="store_true", help="tiny random models at small sizes (CPU smoke run)")
    ap.add_argument("--arch", default=None, help="sd15,sdxl (default: both; --tiny: sd15,sdxl)")
    ap.add_argument("--size", type=int, default=None, help="pixels (default 512 SD1.5 / 1024 SDXL; tiny 128)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--batch", default=None, help="batch sizes of one job, e.g. 1,4,8 (default 1,4)")
    ap.add_argument("--sampler", default="euler,dpmpp_2m_karras", help="euler, dpmpp_2m_karras")
    ap.add_argument(
        "--compile",
        default=None,
        help="compile MODE for the compiled variant, 'none' to skip (CUDA: reduce-overhead)",
    )
    ap.add_argument("--variants", default=None, help="of plain,fast,compiled (default all there are)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-reruns", action="store_true", help="skip the cached / seed / prompt re-run timings")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    dtype = args.dtype or ("float16" if gpu else "float32")
    steps = args.steps or (20 if gpu and not args.tiny else 4)
    batches = [int(b) for b in (args.batch or ("1,4" if not args.tiny else "1,2")).split(",")]
    samplers = args.sampler.split(",")
    archs = (args.arch or "sd15,sdxl").split(",")
    compile_mode = args.compile or ("reduce-overhead" if gpu else "none")
    variants = (args.variants or "plain,fast,compiled").split(",")
    if compile_mode == "none" and "compiled" in variants:
        variants.remove("compiled")
    torch.set_grad_enabled(False)
    print(
        f"device {args.device} ({torch.cuda.get_device_name() if gpu else 'cpu'}), torch {torch.__version__}, "
        f"{dtype}, {steps} steps, cfg {args.cfg}, median of {args.repeat} alternating runs"
    )
    summary: list[str] = []
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
            summary += bench_arch(
                arch, Path(tmp), args, dtype, steps, batches, samplers, variants, compile_mode
            )
    print("\nsummary")
    for line in summary:
        print("  " + line)
    return 0


def bench_arch(
    arch: str,
    root: Path,
    args: argparse.Namespace,
    dtype: str,
    steps: int,
    batches: list[int],
    samplers: list[str],
    variants: list[str],
    compile_mode: str,
) -> list[str]:
    from atelier.engine.models.checkpoint import load_checkpoint
    from atelier.engine.models.fast_path import fast_unet, vae_fallback
    from atelier.engine.models.tiny import write_random_checkpoint, write_tiny_checkpoint
    from atelier.engine.sampling.ksampler import schedule

    device = args.device
    size = args.size or (128 if args.tiny else (1024 if arch == "sdxl" else 512))
    ckpt = root / "checkpoints" / f"random-{arch}.safetensors"
    t0 = time.perf_counter()
    if args.tiny:
        write_tiny_checkpoint(arch, ckpt, seed=0)  # type: ignore[arg-type]
    else:
        write_random_checkpoint(arch, ckpt, seed=0, dtype=DTYPES[dtype])  # type: ignore[arg-type]
    print(
        f"\n== {arch} {'(tiny) ' if args.tiny else ''}{size}² -- random checkpoint written in {time.perf_counter() - t0:.1f} s"
    )

    engines: dict[str, Engine] = {}
    for v in variants:
        fast = {"plain": False, "fast": True, "compiled": True}[v]
        engines[v] = make_engine(
            root, device, dtype, fast=fast, compile=compile_mode if v == "compiled" else None
        )
    loaded = load_checkpoint(ckpt, device=device, dtype=DTYPES[dtype])  # diffusers' copy, plain
    from atelier.engine.models.handles import handles_from_checkpoint

    model_handle = handles_from_checkpoint(loaded)[0]
    lines: list[str] = []
    for sampler in samplers:
        name, scheduler_name = SAMPLERS[sampler]
        sigmas = schedule(model_handle, scheduler_name, name, steps)
        pipe, extra = diffusers_pipeline(arch, loaded, sampler, sigmas)
        print(
            f"-- {sampler}: diffusers {type(pipe.scheduler).__name__}, sigma gap {sigma_gap(pipe, extra, steps, sigmas, device):.2e}"
        )
        for batch in batches:
            res = {}
            for decode in (False, True):
                wf = workflow(ckpt.name, size, batch, steps, args.cfg, sampler, decode=decode)

                def theirs(
                    decode: bool = decode, batch: int = batch, pipe: Any = pipe, extra: Any = extra
                ) -> None:
                    g = torch.Generator("cpu").manual_seed(1)
                    pipe(
                        PROMPT,
                        negative_prompt=NEGATIVE,
                        num_inference_steps=steps,
                        guidance_scale=args.cfg,
                        height=size,
                        width=size,
                        num_images_per_prompt=batch,
                        generator=g,
                        output_type="pt" if decode else "latent",
                        **extra,
                    )

                runs: dict[str, Callable[[], None]] = {
                    v: (lambda e=engines[v], wf=wf: run_atelier(e, wf)) for v in variants
                }
                runs["diffusers"] = theirs
                t_warm = {k: timed(device, fn) for k, fn in runs.items()}  # warm-up (and compile)
                times: dict[str, list[float]] = {k: [] for k in runs}
                for _ in range(args.repeat):
                    for k, fn in runs.items():
                        times[k].append(timed(device, fn))
                res[decode] = {k: statistics.median(t) for k, t in times.items()}
                if "compiled" in t_warm and not decode:
                    print(
                        f"   batch {batch}: first compiled run (compiles the shape) {t_warm['compiled']:.1f} s"
                    )
            if "plain" in variants:
                ref = engines["plain"].bench_latents[0].float()  # type: ignore[attr-defined]
                gaps = {
                    v: float((engines[v].bench_latents[0].float() - ref).norm() / ref.norm())  # type: ignore[attr-defined]
                    for v in variants
                    if v != "plain"
                }
                print(
                    "   picture vs plain (relative L2 of the latent): "
                    + ", ".join(f"{v} {g:.1e}" for v, g in gaps.items())
                )
            ref_its = steps / res[False]["diffusers"]
            ref_img = res[True]["diffusers"] / batch
            print(f"   batch {batch}:   {'it/s':>8} {'x diff':>7}   {'s/image':>8} {'x diff':>7}")
            for k in [*variants, "diffusers"]:
                its, img = steps / res[False][k], res[True][k] / batch
                label = "diffusers (eager)" if k == "diffusers" else f"atelier {k}"
                print(f"   {label:<20} {its:8.2f} {its / ref_its:6.2f}x   {img:8.3f} {ref_img / img:6.2f}x")
            best = "compiled" if "compiled" in variants else ("fast" if "fast" in variants else variants[0])
            ratio = (steps / res[False][best]) / ref_its
            line = f"{arch} {size}² {sampler} batch {batch}: atelier {best} {ratio:.2f}x diffusers eager it/s"
            if best == "compiled" and batch == 1 and device.startswith("cuda") and not args.tiny:
                line += f"  [target >= {TARGET}x: {'MET' if ratio >= TARGET else 'NOT MET'}]"
            lines.append(line)
        del pipe, extra
    for v, e in engines.items():
        for path_key, obj in list(getattr(e.models, "_loaded", {}).items()):
            unet = getattr(obj, "unet", None)
            state = fast_unet(unet) if unet is not None else None
            fell = vae_fallback(getattr(obj, "vae", None))
            if state is not None or fell is not None:
                print(
                    f"   {v}: compiled shapes {len(state.compiled_shapes) if state else 0}, "
                    f"compiled calls {state.compiled_calls if state else 0}, eager calls {state.eager_calls if state else 0}"
                    + (f", VAE fell back to {fell} after an fp16 NaN" if fell is not None else "")
                )
            del path_key
    if not args.no_reruns:
        lines += reruns(engines, ckpt.name, size, steps, args, samplers[0], res_full=None)
    for e in engines.values():
        e.free()
    del loaded
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return lines


def reruns(
    engines: dict[str, Engine],
    ckpt: str,
    size: int,
    steps: int,
    args: argparse.Namespace,
    sampler: str,
    res_full: Any,
) -> list[str]:
    """Atelier's re-runs on one engine (its cache kept): the same job, a new seed, a new prompt."""
    device = args.device
    key = "compiled" if "compiled" in engines else ("fast" if "fast" in engines else next(iter(engines)))
    engine = engines[key]
    wf = workflow(ckpt, size, 1, steps, args.cfg, sampler, decode=True)
    from atelier.engine.cache import OutputCache

    engine.executor.cache = OutputCache()
    first = timed(device, lambda: run_atelier(engine, wf, fresh=False))
    cached = statistics.median(
        timed(device, lambda: run_atelier(engine, wf, fresh=False)) for _ in range(args.repeat)
    )
    seeds = [
        timed(
            device,
            lambda s=s: run_atelier(
                engine, workflow(ckpt, size, 1, steps, args.cfg, sampler, decode=True, seed=s), fresh=False
            ),
        )
        for s in range(2, 2 + args.repeat)
    ]
    prompts = [
        timed(
            device,
            lambda i=i: run_atelier(
                engine,
                workflow(
                    ckpt, size, 1, steps, args.cfg, sampler, decode=True, seed=9, prompt=f"{PROMPT_2} {i}"
                ),
                fresh=False,
            ),
        )
        for i in range(args.repeat)
    ]
    seed, prompt = statistics.median(seeds), statistics.median(prompts)
    print(f"-- re-runs on one engine ({key}, batch 1, {sampler}): first {first:.3f} s")
    print(
        f"   fully cached   {cached * 1000:9.1f} ms  ({first / max(cached, 1e-9):.0f}x faster than the first run)"
    )
    print(f"   seed change    {seed * 1000:9.1f} ms  (prompts cached)")
    print(f"   prompt change  {prompt * 1000:9.1f} ms  (model cached)")
    return [
        f"re-runs ({key}): cached {cached * 1000:.1f} ms, seed change {seed:.3f} s, prompt change {prompt:.3f} s"
    ]


if __name__ == "__main__":
    sys.exit(main())
