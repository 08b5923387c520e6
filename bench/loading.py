"""Seconds from checkpoint file to ready modules, and a fresh process's time to first image:
``python bench/loading.py``.

For a full-size random SD1.5 and SDXL checkpoint in the real single-file layout (written by
``bench/random_checkpoint.py`` into a temporary folder, fp16), measured side by side in one run:
  * Atelier cold:     ``load_checkpoint`` (modules built on the meta device, each tensor read and cast once,
                      straight onto the device where safetensors can);
  * Atelier again:    the same file through an engine's model loader after it was dropped from the device
                      (``max_loaded=1``, another checkpoint loaded in between): the loader's host cache;
  * diffusers:        ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline.from_single_file`` on the same
                      file, configs from the repo's shipped ones (a local folder: ``config=``,
                      ``local_files_only=True``; no hub).
The file is read once before timing, so every contender finds it in the OS page cache (a cold disk adds
the same read time to each). Then ``atelier run`` of workflows/portrait.json on the tiny checkpoint in fresh
processes (twice: the second finds the checkpoint's hash in ``models/.atelier/hashes.json``), with the
phases: interpreter start, import, engine + parse + validate, checkpoint load, sampling, decode + save.

Defaults: CPU, fp32 (the CPU default) -- SDXL then needs about 14 GB: ``--dtype float16`` halves it and
``--skip-sdxl`` skips it; ``--dir`` keeps the written files for another run. On a GPU: ``--device cuda``
(fp16 default there).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from random_checkpoint import write_random_checkpoint  # noqa: E402

from atelier.engine.host_cache import HostCache  # noqa: E402
from atelier.engine.model_loader import ModelLoader  # noqa: E402
from atelier.engine.models.handles import checkpoint_loader  # noqa: E402
from atelier.engine.models.info import CONFIG_DIR, TOKENIZER_DIR  # noqa: E402
from atelier.engine.models.load import load_checkpoint  # noqa: E402
from atelier.engine.models.tiny import write_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_SCHEDULERS = {
    "sd15": {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    },
    "sdxl": {
        "_class_name": "EulerDiscreteScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "prediction_type": "epsilon",
    },
}


def diffusers_config_folder(family: str, out: Path) -> Path:
    """A diffusers pipeline folder without weights, from the repo's shipped configs (what ``config=`` wants)."""
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionPipeline" if family == "sd15" else "StableDiffusionXLPipeline",
        "scheduler": ["diffusers", _SCHEDULERS[family]["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    components = ["unet", "vae", "text_encoder"]
    tokenizers = ["tokenizer"]
    if family == "sd15":
        index.update(
            safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False
        )
    else:
        index.update(
            text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2=["transformers", "CLIPTokenizer"],
            force_zeros_for_empty_prompt=True,
        )
        components.append("text_encoder_2")
        tokenizers.append("tokenizer_2")
    (out / "model_index.json").write_text(json.dumps(index))
    for name in components:
        (out / name).mkdir(exist_ok=True)
        shutil.copy(CONFIG_DIR / family / name / "config.json", out / name / "config.json")
    for name in tokenizers:
        shutil.copytree(TOKENIZER_DIR, out / name, dirs_exist_ok=True)
        if name == "tokenizer_2":  # OpenCLIP-G pads with "!"
            cfg = json.loads((out / name / "tokenizer_config.json").read_text())
            cfg["pad_token"] = "!"
            (out / name / "tokenizer_config.json").write_text(json.dumps(cfg))
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(_SCHEDULERS[family]))
    return out


def read_once(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


#: CPU seconds (all threads) of each timed call, by its wall seconds: on a shared machine wall time also
#: counts waiting for a core, CPU time only the work
CPU: dict[float, float] = {}


def timed(fn: Any) -> tuple[float, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    CPU[wall] = time.process_time() - cpu
    return wall, result


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_family(
    family: str, path: Path, other: Path, work: Path, device: str, dtype: torch.dtype
) -> dict[str, float]:
    read_once(path)
    out: dict[str, float] = {}
    out["atelier cold"], loaded = timed(lambda: load_checkpoint(path, device=device, dtype=dtype))
    del loaded
    free()

    models = ModelLoader(device, dtype, max_loaded=1, host=HostCache(64 << 30, device))
    models.load(path, checkpoint_loader)
    models.load(other, checkpoint_loader)  # drops the big one from the device into host memory
    out["atelier again (host cache)"], again = timed(lambda: models.load(path, checkpoint_loader))
    assert models.loads == 2, "the second load read the file"
    del again
    models.unload_all()
    free()

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionPipeline if family == "sd15" else StableDiffusionXLPipeline
    config = diffusers_config_folder(family, work / f"diffusers-{family}")
    extra = {"safety_checker": None} if family == "sd15" else {}
    out["diffusers from_single_file"], pipe = timed(
        lambda: cls.from_single_file(
            str(path), config=str(config), local_files_only=True, torch_dtype=dtype, **extra
        ).to(device)
    )
    del pipe
    free()
    return out


_CHILD = r"""
import json, sys, time
t0 = time.time()
from atelier.engine import cli
t1 = time.time()
code = cli.main(sys.argv[1:])
print(json.dumps({"t0": t0, "t1": t1, "code": code, "end": time.time()}))
"""


def first_image(models: Path, work: Path, device: str, python: str = sys.executable) -> dict[str, float]:
    """Phases of a fresh ``atelier run`` process (portrait, tiny checkpoint, 64 px, 2 steps) run by
    ``python`` (another interpreter: another Atelier checkout, for a before/after)."""
    events = work / "events.jsonl"
    args = [
        "run", str(ROOT / "workflows" / "portrait.json"), "--models-dir", str(models), "--device", device,
        "--output-dir", str(work / "output"), "--set", "steps=2", "--set", "width=64", "--set", "height=64",
        "--events", str(events), "-q",
    ]  # fmt: skip
    started = time.time()
    proc = subprocess.run([python, "-c", _CHILD, *args], capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"atelier run failed:\n{proc.stderr[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    job_start = next(e["ts"] for e in evs if e["type"] == "job_started")
    done = {e["node"]: e for e in evs if e["type"] == "node_finished"}
    return {
        "interpreter start": child["t0"] - started,
        "import atelier.engine.cli": child["t1"] - child["t0"],
        "engine + parse + validate + plan": job_start - child["t1"],
        "checkpoint load": done["loader"]["elapsed_ms"] / 1000,
        "text encode": (done["positive"]["elapsed_ms"] + done["negative"]["elapsed_ms"]) / 1000,
        "sampling": done["sampler"]["elapsed_ms"] / 1000,
        "decode + save": (done["decode"]["elapsed_ms"] + done["save"]["elapsed_ms"]) / 1000,
        "total (process start to exit)": child["end"] - started,
    }


def first_server_image(
    models: Path, work: Path, device: str, python: str = sys.executable
) -> dict[str, float]:
    """A fresh ``atelier serve``: seconds until it answers, and until its first portrait (tiny checkpoint,
    64 px, 2 steps, submitted as soon as it answers) is done."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(tempfile.mkdtemp(dir=work, prefix="serve-"))
    args = ["serve", "--port", str(port), "--database", str(root / "a.db"), "--models-dir", str(models)]
    args += ["--device", device, "--output-dir", str(root / "out"), "--input-dir", str(root / "in")]
    args += ["--temp-dir", str(root / "tmp")]
    base = f"http://127.0.0.1:{port}/atelier/v1"
    started = time.time()
    proc = subprocess.Popen(
        [python, "-c", "from atelier.engine.cli import main; raise SystemExit(main())", *args],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def call(path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    try:
        while True:
            if proc.poll() is not None or time.time() - started > 300:
                raise SystemExit(f"the server did not start ({python})")
            try:
                call("/system")
                break
            except OSError:
                time.sleep(0.05)
        ready = time.time() - started
        workflow = json.loads((ROOT / "workflows" / "portrait.json").read_text())
        values = {"checkpoint": "atelier-tiny-sd15.safetensors", "steps": 2, "width": 64, "height": 64}
        job = call("/jobs", {"workflow": workflow, "overrides": values})["id"]
        while (status := call(f"/jobs/{job}")["status"]) in ("queued", "running"):
            time.sleep(0.05)
        if status != "success":
            raise SystemExit(f"the server's first job ended {status}")
        return {"answers": ready, "first image done": time.time() - started}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None)
    ap.add_argument(
        "--skip-sdxl", action="store_true", help="SD1.5 only (SDXL needs ~7 GB fp16 / 14 GB fp32)"
    )
    ap.add_argument("--skip-full", action="store_true", help="only the fresh-process phases")
    ap.add_argument(
        "--dir", type=Path, default=None, help="keep the random checkpoints here (default: a temp dir)"
    )
    ap.add_argument(
        "--before",
        default=None,
        help="the Python of another Atelier checkout (e.g. main's .venv/bin/python): its fresh-process phases too",
    )
    args = ap.parse_args()
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float32 if args.device == "cpu" else torch.float16)
    )
    with tempfile.TemporaryDirectory(prefix="atelier-loading-") as tmp:
        work = Path(tmp)
        files = args.dir or work
        files.mkdir(parents=True, exist_ok=True)
        tiny = write_tiny_checkpoint("sd15", files / "tiny.safetensors", seed=0, dtype=torch.float16)
        print(
            f"device {args.device}, weights {str(dtype).removeprefix('torch.')}, files fp16, torch {torch.__version__}"
        )
        families = [] if args.skip_full else ["sd15"] + ([] if args.skip_sdxl else ["sdxl"])
        for family in families:
            path = files / f"{family}-random.safetensors"
            if not path.exists():
                t, _ = timed(lambda p=path, f=family: write_random_checkpoint(f, p, torch.float16))
                print(f"wrote {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {t:.0f} s")
            res = bench_family(family, path, tiny, work, args.device, dtype)
            print(f"\n{family} full size, random weights: seconds to ready on {args.device}")
            base = res["diffusers from_single_file"]
            print(f"  {'':<30} {'wall s':>8} {'cpu s':>8}   speed-up over diffusers (wall, cpu)")
            for name, seconds in res.items():
                cpu = CPU[seconds]
                print(
                    f"  {name:<30} {seconds:8.2f} {cpu:8.2f}   {base / max(seconds, 1e-4):6.1f}x "
                    f"{CPU[base] / max(cpu, 1e-4):6.1f}x"
                )
            if family == "sd15":
                from atelier.engine.hashing import sha256_of_file

                t, _ = timed(lambda p=path: sha256_of_file(p))
                print(
                    f"  whole-file sha256 (what a saved image records): {t:.2f} s -- paid by the first SaveImage "
                    "of every fresh process before; now once per file version (models/.atelier/hashes.json), "
                    "read in the background from planning"
                )
            free()

        models = work / "models"
        (models / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny, models / "checkpoints" / "atelier-tiny-sd15.safetensors")
        print("\nfresh process, `atelier run` portrait on the tiny checkpoint (64 px, 2 steps): seconds")
        columns: dict[str, list[dict[str, float]]] = {"this": [], "before": []}
        for _ in range(2):  # interleaved, so that both meet the same machine
            if args.before:
                columns["before"].append(first_image(models, work, args.device, args.before))
            columns["this"].append(first_image(models, work, args.device))
        heads = [(name, i) for name in ("before", "this") for i in range(len(columns[name]))]
        print(f"  {'phase':<34}" + "".join(f" {name + ' #' + str(i + 1):>10}" for name, i in heads))
        for phase in columns["this"][0]:
            print(f"  {phase:<34}" + "".join(f" {columns[name][i][phase]:10.2f}" for name, i in heads))
        for name, i in heads:
            run = columns[name][i]
            before = sum(v for k, v in run.items() if k.startswith(("interpreter", "import", "engine")))
            total = run["total (process start to exit)"]
            print(f"  {name} #{i + 1}: {before:.2f} s before the first node, {total:.2f} s in all")
        if args.before:
            ratio = sum(r["total (process start to exit)"] for r in columns["before"]) / sum(
                r["total (process start to exit)"] for r in columns["this"]
            )
            print(f"  time to first image, before / this: {ratio:.2f}x")

        print("\nfresh `atelier serve`, seconds from process start (first job submitted once it answers)")
        for i in range(2):  # interleaved, as above
            servers = (
                {"before": args.before, "this": sys.executable} if args.before else {"this": sys.executable}
            )
            for name, python in servers.items():
                res = first_server_image(models, work, args.device, python)
                print(
                    f"  {name} #{i + 1}: answers after {res['answers']:6.2f} s, "
                    f"first image done after {res['first image done']:6.2f} s"
                )


if __name__ == "__main__":
    main()
